#!/bin/sh
# Installs what is missing, builds, and runs the whole test suite: once as released
# (RelWithDebInfo) and once under AddressSanitizer + UndefinedBehaviorSanitizer.
# Run as root from the repository (the integration tests create PID namespaces).
#   packaging/test.sh [PRESET...]     default: "default asan"
set -eu
cd "$(dirname "$0")/.."
packaging/install-deps.sh
presets=${*:-default asan}
for preset in $presets; do
    echo "== $preset: configure, build, test" >&2
    packaging/build.sh "$preset"
    ctest --preset "$preset" -j "$(nproc)"
done
