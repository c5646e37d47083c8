# Read by cpack before it makes any package (CPACK_PROJECT_CONFIG_FILE, packaging/deb/CPackConfig.cmake).
if(CPACK_NIXPROC_SANITIZE)
  message(FATAL_ERROR
    "nixproc-init: this build folder was configured with -DNIXPROC_SANITIZE=ON: its init is an "
    "AddressSanitizer+UBSan program (dynamically linked, needing libasan and libubsan, slow) and "
    "must not be packaged. Package a build configured without it, e.g.\n"
    "  cmake -S SOURCE -B BUILD -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF\n"
    "  cpack -G DEB --config BUILD/CPackConfig.cmake")
endif()
