# Run by cpack on the staged files, before it makes the package (CPACK_PRE_BUILD_SCRIPTS,
# packaging/deb/CPackConfig.cmake). The package is the init, its client nixproc-initctl, its
# configuration examples and its docs: anything else that an install() rule stages (a test program, the demo's web app) stops
# cpack here, and so does a program that is not static (the package declares no Depends).
set(expected
  usr/sbin/nixproc-init
  usr/sbin/nixproc-initctl
  usr/share/doc/nixproc-init/README.md
  usr/share/doc/nixproc-init/copyright
  usr/share/nixproc-init/init.yaml
  usr/share/nixproc-init/supervisord.conf)
set(staged_root "${CPACK_TEMPORARY_INSTALL_DIRECTORY}")
file(GLOB_RECURSE staged LIST_DIRECTORIES false RELATIVE "${staged_root}" "${staged_root}/*")
list(SORT staged)
set(unexpected ${staged})
list(REMOVE_ITEM unexpected ${expected})
set(missing ${expected})
list(REMOVE_ITEM missing ${staged})
if(unexpected OR missing)
  list(JOIN unexpected "\n  " unexpected_lines)
  list(JOIN missing "\n  " missing_lines)
  message(FATAL_ERROR "nixproc-init's .deb holds the init, nixproc-initctl, its configuration examples and docs only "
    "(packaging/deb/check-contents.cmake).\nStaged but not expected:\n  ${unexpected_lines}\n"
    "Expected but not staged:\n  ${missing_lines}")
endif()

foreach(program nixproc-init nixproc-initctl)
  set(init "${staged_root}/usr/sbin/${program}")
  execute_process(COMMAND readelf --program-headers --dynamic --wide "${init}"
                  OUTPUT_VARIABLE elf ERROR_VARIABLE elf_error RESULT_VARIABLE elf_status)
  if(NOT elf_status EQUAL 0)
    message(FATAL_ERROR "readelf could not read the staged ${init}: ${elf_error}")
  endif()
  if(elf MATCHES "INTERP|\\(NEEDED\\)")
    message(FATAL_ERROR "the staged ${init} is dynamically linked, but the package declares no "
      "Depends (packaging/deb/CPackConfig.cmake): build it without NIXPROC_SANITIZE, as "
      "daemon/CMakeLists.txt links it with -static.\n${elf}")
  endif()
endforeach()
