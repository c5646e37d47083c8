# nixproc-init built from this source tree with nixpkgs, callPackage style:
#
#   nix-build -E 'with import <nixpkgs> {}; callPackage ./packaging/nix/default.nix {}'
#
# What the CMake build needs (CMakeLists.txt, lib/CMakeLists.txt, daemon/CMakeLists.txt):
# - Boost >= 1.81, headers only, found as a CMake package (find_package(Boost 1.81 CONFIG)),
#   Process v1 on std::filesystem (BOOST_PROCESS_USE_STD_FS). Pass `boost = boost181;` where the
#   default boost has moved Process v1 elsewhere.
# - yaml-cpp and pugixml as static archives: find_library(libyaml-cpp.a / libpugixml.a REQUIRED).
#   nixpkgs' yaml-cpp builds a shared library unless `static = true`
#   (pkgs/by-name/ya/yaml-cpp/package.nix: YAML_BUILD_SHARED_LIBS = !static); pugixml is static
#   unless `shared = true` (pkgs/by-name/pu/pugixml/package.nix), the override only pins it.
# - spdlog's headers with an external fmt: lib/log/LoggingRuntime.cpp compiles both
#   (SPDLOG_COMPILED_LIB, SPDLOG_FMT_EXTERNAL); nixpkgs' spdlog is built with
#   SPDLOG_FMT_EXTERNAL=ON and propagates fmt (pkgs/by-name/sp/spdlog/package.nix).
# - daemon/CMakeLists.txt links nixproc-init with -static: glibc's static archives.
# - Catch2 v2 (nixpkgs' catch2; catch2_3 is v3) only with withUnitTests.
#
# The tests are off by default: the integration and end-to-end tests need root, PID namespaces
# and Nix, which the build sandbox has none of. withUnitTests = true builds them and runs only
# the `unit` label in the check phase.
{ lib
, stdenv
, cmake
, boost
, yaml-cpp
, pugixml
, spdlog
, fmt
, catch2
, glibc
, withUnitTests ? false
}:

let
  yaml-cpp-static = yaml-cpp.override { static = true; };
  pugixml-static = pugixml.override { shared = false; };

  root = toString ../..;
  # The source without this repository's build folders (build, build-asan, build-*).
  src = lib.cleanSourceWith {
    src = lib.cleanSource ../..;
    filter = path: type: !(type == "directory" && lib.hasPrefix "${root}/build" (toString path));
  };
in
stdenv.mkDerivation {
  pname = "nixproc-init";
  version = "0.1.0"; # project(nixproc-init VERSION ...) in CMakeLists.txt
  inherit src;

  nativeBuildInputs = [ cmake ];
  buildInputs = [ boost yaml-cpp-static pugixml-static spdlog fmt glibc.static ]
    ++ lib.optional withUnitTests catch2;

  cmakeFlags = [
    "-DCMAKE_BUILD_TYPE=RelWithDebInfo"
    "-DNIXPROC_SANITIZE=OFF"
    "-DBUILD_TESTING=${if withUnitTests then "ON" else "OFF"}"
  ];

  doCheck = withUnitTests;
  checkPhase = ''
    runHook preCheck
    ctest -L unit --output-on-failure
    runHook postCheck
  '';

  # cmake --install: $out/sbin/nixproc-init, $out/share/nixproc-init/{init.yaml,supervisord.conf}.

  meta = {
    description = "PID 1 for Nix-deployed multi-process containers";
    # The repository states no licence yet: none is claimed here.
    platforms = lib.platforms.linux;
    mainProgram = "nixproc-init";
  };
}
