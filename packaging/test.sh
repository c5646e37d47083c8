#!/bin/sh
# Installs what is missing, builds, and runs the whole test suite: once as released
# (RelWithDebInfo) and once under AddressSanitizer + UndefinedBehaviorSanitizer. After each ctest
# run it counts what ran (ctest entries, test cases, assertions, from ctest's LastTest.log) and
# fails if an entry ran no assertion (tests/support/count-assertions.py), so a test that silently
# runs nothing cannot pass. Stops at the first preset that fails.
# Run as root from the repository (the integration tests create PID namespaces).
#   packaging/test.sh [PRESET...]     default: "default asan"
set -eu
cd "$(dirname "$0")/.."
packaging/install-deps.sh
presets=${*:-default asan}
started=$(date +%s)
counts=""
for preset in $presets; do
    echo "== $preset: configure, build, test" >&2
    packaging/build.sh "$preset"
    tested=$(date +%s)
    ctest_status=0
    ctest --preset "$preset" -j "$(nproc)" || ctest_status=$?
    count_status=0
    count=$(tests/support/count-assertions.py --preset "$preset") || count_status=$?
    echo "$count"
    echo "== $preset: ctest took $(($(date +%s) - tested)) s; ctest exit status $ctest_status"
    counts="$counts$(echo "$count" | head -n 1)
"
    if [ "$ctest_status" -ne 0 ] || [ "$count_status" -ne 0 ]; then
        echo "== $preset: FAILED (ctest's list of failed tests is above)" >&2
        exit 1
    fi
done
printf '%s' "$counts"
echo "== all passed: $presets, in $(($(date +%s) - started)) s"
