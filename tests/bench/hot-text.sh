#!/bin/bash
# Makes daemon/hot-text.ld: the code nixproc-init runs from exec to idle, which the link lays out
# first in .text (daemon/CMakeLists.txt says why). Two scenarios, both as PID 1 of a PID namespace:
# `plain` (`-q -- sleep`, what bench.sh measures) and `managed` (the sysvinit backend after its boot
# deployment, with the switch stand-in, as soak.sh); plain's code comes first. For each build:
#   1. valgrind --tool=lackey traces each scenario up to idle (every instruction: the bulk);
#   2. then, in rounds over all builds, the real binary: perf records its page faults up to idle,
#      what faulted outside the hot section is added, nixproc-init is linked again; until a round
#      adds nothing (valgrind hides the vDSO, whose set-up glibc runs, and its CPU picks glibc's
#      string functions; a path that depends on timing may show in one run of several).
# Give both a RelWithDebInfo (-O2: the default preset, the Debian and Nix packages) and a Release
# build (-O3: the container images): their functions differ. Entries already in the file stay, in
# their order (FRESH=1 starts from an empty list). Then `bench.sh rss-breakdown BUILD` shows what is
# resident and whether anything ran outside the list.
# Run as root after building nixproc-init:  tests/bench/hot-text.sh BUILD_DIR...   (default: build)
#   ROUNDS=5 (at most), RUNS=3 (real runs of each scenario per round)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
builds=()
for b in "${@:-build}"; do builds+=("$(realpath "$b")"); done
ld=$repo/daemon/hot-text.ld
layout=$repo/tests/bench/rss_layout.py
ROUNDS=${ROUNDS:-5}
RUNS=${RUNS:-3}
for tool in valgrind perf python3; do
    command -v "$tool" >/dev/null || { echo "hot-text: $tool is needed" >&2; exit 2; }
done
for b in "${builds[@]}"; do
    [ -x "$b/daemon/nixproc-init" ] && [ -f "$b/daemon/nixproc-init.map" ] ||
        { echo "hot-text: build nixproc-init in $b first (no daemon/nixproc-init and its .map)" >&2; exit 2; }
done
. "$repo/tests/bench/idle-init.sh"
tmp=$(mktemp -d)
trap 'idle_stop KILL; rm -rf "$tmp"' EXIT

# Waits until FILE has not grown for a second (the traced init sits in epoll_wait), 60 s at most.
settled() {
    local size=-1 now
    for _ in $(seq 60); do
        now=$(stat -c %s "$1")
        [ "$now" = "$size" ] && return 0
        size=$now
        sleep 1
    done
    echo "hot-text: $1 still grows after 60 s" >&2
    return 1
}

# The page faults of one real run of a scenario up to idle (not its stop): pid ... ip=ADDRESS, of
# the init itself (not its children before their exec, nor other processes).
faults_of() { # faults_of SCENARIO-FUNCTION ARGS...
    perf record -q -a -e exceptions:page_fault_user -o "$tmp/perf.data" -- sleep 600 >/dev/null 2>&1 &
    local rec=$! pid
    sleep 1 # perf is recording
    "$@"
    pid=$IDLE_PID
    sleep 1
    kill -INT "$rec"
    wait "$rec" || true
    idle_stop
    perf script -i "$tmp/perf.data" -F pid,trace 2>/dev/null | awk -v p="$pid" '$1 == p'
}

# Adds to $ld from INPUTS (hot-ld arguments) on BUILD's map; true when something was added.
add() { # add BUILD INPUTS...
    local build=$1 keep=()
    shift
    [ -f "$ld" ] && keep=(--keep "$ld")
    python3 "$layout" hot-ld "$build/daemon/nixproc-init.map" "${keep[@]}" "$@" > "$tmp/hot-text.ld"
    cmp -s "$tmp/hot-text.ld" "$ld" && return 1
    cp "$tmp/hot-text.ld" "$ld"
}

if [ "${FRESH:-0}" = 1 ]; then # a list of nothing but the static constructors (never an empty script:
    # without INSERT, ld would take it for the whole layout)
    python3 "$layout" hot-ld "${builds[0]}/daemon/nixproc-init.map" > "$tmp/hot-text.ld"
    cp "$tmp/hot-text.ld" "$ld"
fi
lackey="valgrind --tool=lackey --trace-mem=yes"
for build in "${builds[@]}"; do
    init=$build/daemon/nixproc-init
    cmake --build "$build" --target nixproc-init >/dev/null
    echo "hot-text: $init under valgrind, plain..." >&2
    idle_plain $lackey --log-file="$tmp/plain.trace" "$init" -q --
    settled "$tmp/plain.trace"
    idle_stop KILL
    echo "hot-text: $init under valgrind, managed..." >&2
    idle_managed "$tmp" $lackey --log-file="$tmp/managed.trace" "$init"
    settled "$tmp/managed.trace"
    idle_stop KILL
    add "$build" --trace plain:"$tmp/plain.trace" --trace managed:"$tmp/managed.trace" || true
done
for round in $(seq "$ROUNDS"); do
    added=0
    for build in "${builds[@]}"; do
        init=$build/daemon/nixproc-init
        cmake --build "$build" --target nixproc-init >/dev/null
        : > "$tmp/plain.faults"
        : > "$tmp/managed.faults"
        for _ in $(seq "$RUNS"); do
            faults_of idle_plain "$init" -q -- >> "$tmp/plain.faults"
            faults_of idle_managed "$tmp" "$init" >> "$tmp/managed.faults"
        done
        ! add "$build" --faults plain:"$tmp/plain.faults" --faults managed:"$tmp/managed.faults" || added=1
    done
    if [ "$added" = 0 ]; then
        echo "hot-text: $ld is complete (round $round)" >&2
        exit 0
    fi
done
for build in "${builds[@]}"; do cmake --build "$build" --target nixproc-init >/dev/null; done
echo "hot-text: still adding after $ROUNDS rounds" >&2
exit 1
