# The Debian package, made from a build folder by CPack:
#   cmake -S SOURCE -B BUILD -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF
#   cpack -G DEB --config BUILD/CPackConfig.cmake -B OUT
# (cpack first builds what is out of date in BUILD: its `preinstall` step builds `all`, the test
# programs too unless BUILD_TESTING is OFF) gives OUT/nixproc-init_VERSION_ARCH.deb with
#   /usr/sbin/nixproc-init                          the init, statically linked and stripped
#   /usr/share/nixproc-init/{init.yaml,supervisord.conf}   the configuration examples
#   /usr/share/doc/nixproc-init/{README.md,copyright}
# and nothing else: check-contents.cmake stops cpack when install() has put anything more in (a
# test program, the demo's web app), or when the init is not a static program.
# Included from the top-level CMakeLists.txt, after every install() rule, as OPTIONAL: the image
# build (packaging/docker/Dockerfile) copies only what compiles the init, not packaging/deb.

install(FILES ${PROJECT_SOURCE_DIR}/README.md ${CMAKE_CURRENT_LIST_DIR}/copyright
        DESTINATION share/doc/nixproc-init)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME nixproc-init)
# CPack takes the version from project(): CMAKE_PROJECT_VERSION.
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "init (PID 1) for Nix-deployed multi-process containers")
# Lines of at most 76 columns: with the space CPack puts first, under the 80 Debian allows.
string(JOIN "\n" CPACK_PACKAGE_DESCRIPTION
  "nixproc-init is the ENTRYPOINT of a container whose services are deployed"
  "with the Nix process management framework. It reaps every zombie, forwards"
  "signals, stops everything within the engine's grace period and exits with"
  "the right status. It starts the image's process manager (supervisord, s6-rc,"
  "sysvinit or disnix), runs the first deployment once the manager is ready,"
  "and deploys again when processes.nix is edited inside the container. With a"
  "command and no configuration it is a plain init for that command."
  ""
  "The configuration examples are in /usr/share/nixproc-init.")
set(NIXPROC_DEB_MAINTAINER "nixproc-init maintainers <nixproc-init@localhost>" CACHE STRING
    "The Maintainer field of the Debian package (cpack -G DEB)")
set(CPACK_PACKAGE_CONTACT "${NIXPROC_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${NIXPROC_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # nixproc-init_0.1.0_amd64.deb
# No Depends: daemon/CMakeLists.txt links the init with -static, so it has no program interpreter
# and needs no shared library (check-contents.cmake checks it); it calls no NSS function
# (getpwnam, getaddrinfo), the one way a static glibc program loads libc's modules at run time.
# dpkg-shlibdeps would find nothing to depend on in a static program: it is not run.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)
# The build machine's own architecture, as dpkg names it (amd64, arm64...).
find_program(NIXPROC_DPKG dpkg)
if(NIXPROC_DPKG)
  execute_process(COMMAND ${NIXPROC_DPKG} --print-architecture
                  OUTPUT_VARIABLE CPACK_DEBIAN_PACKAGE_ARCHITECTURE OUTPUT_STRIP_TRAILING_WHITESPACE)
endif()
# Stripped, as Debian ships programs: 38 MB with RelWithDebInfo's debug information, 3.7 MB without.
set(CPACK_STRIP_FILES ON)
set(CPACK_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS
    OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
# The sanitizer build refuses to be packaged (refuse-sanitizer.cmake, read by cpack): its init is
# a dynamic ASan program, slow and dependent on libasan, not what a .deb should install.
set(CPACK_NIXPROC_SANITIZE ${NIXPROC_SANITIZE})
set(CPACK_PROJECT_CONFIG_FILE ${CMAKE_CURRENT_LIST_DIR}/refuse-sanitizer.cmake)
set(CPACK_PRE_BUILD_SCRIPTS ${CMAKE_CURRENT_LIST_DIR}/check-contents.cmake)
include(CPack)
