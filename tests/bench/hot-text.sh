#!/bin/bash
# Makes daemon/hot-text.ld: the code nixproc-init runs from exec to idle, which the link lays out
# first in .text (daemon/CMakeLists.txt says why). Three scenarios, as PID 1 of a PID namespace, their
# code in this order: `plain` (`-q -- sleep`, what bench.sh measures), `managed` (the sysvinit backend
# up to the end of its boot deployment, with the switch stand-in, as soak.sh) and `probed` (that
# init answering nixproc-initctl health, status and history, as Docker's and Kubernetes' probes and
# an operator ask). For each build:
#   1. valgrind --tool=lackey traces each scenario up to idle (every instruction: the bulk);
#   2. then, in rounds over all builds, the real binary: perf records its page faults up to idle,
#      what faulted outside the hot section is added, nixproc-init is linked again; until a round
#      adds nothing (valgrind hides the vDSO, whose set-up glibc runs, and its CPU picks glibc's
#      string functions; a path that depends on timing may show in one run of several).
# Give both a RelWithDebInfo (-O2: the default preset, the Debian and Nix packages) and a Release
# build (-O3: the container images): their functions differ. Entries already in the file stay, in
# their order (FRESH=1 starts from an empty list). Then `bench.sh rss-breakdown BUILD` shows what is
# resident and whether anything ran outside the list.
# Run as root after building nixproc-init and nixproc-initctl:  tests/bench/hot-text.sh BUILD_DIR...
# (default: build)
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
    [ -x "$b/daemon/nixproc-init" ] && [ -f "$b/daemon/nixproc-init.map" ] && [ -x "$b/daemon/nixproc-initctl" ] ||
        { echo "hot-text: build nixproc-init and nixproc-initctl in $b first" >&2; exit 2; }
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

# The page faults of the init (IDLE_PID: not its children before their exec, nor other processes)
# from perf_start to perf_stop: pid ... ip=ADDRESS per line.
perf_start() {
    perf record -q -a -e exceptions:page_fault_user -o "$tmp/perf.data" -- sleep 600 >/dev/null 2>&1 &
    perf_pid=$!
    sleep 1 # perf is recording
}
perf_stop() {
    sleep 1
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    perf script -i "$tmp/perf.data" -F pid,trace 2>/dev/null | awk -v p="$IDLE_PID" '$1 == p'
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
    cmake --build "$build" --target nixproc-init nixproc-initctl >/dev/null
    echo "hot-text: $init under valgrind, plain..." >&2
    idle_plain $lackey --log-file="$tmp/plain.trace" "$init" -q --
    settled "$tmp/plain.trace"
    idle_stop KILL
    echo "hot-text: $init under valgrind, managed and probed..." >&2
    idle_managed "$tmp" $lackey --log-file="$tmp/trace" "$init"
    settled "$tmp/trace"
    cp "$tmp/trace" "$tmp/managed.trace" # then what the probes add to the trace
    idle_probe "$build/daemon/nixproc-initctl"
    settled "$tmp/trace"
    idle_stop KILL
    tail -c +"$(($(stat -c %s "$tmp/managed.trace") + 1))" "$tmp/trace" > "$tmp/probed.trace"
    add "$build" --trace plain:"$tmp/plain.trace" --trace managed:"$tmp/managed.trace" \
        --trace probed:"$tmp/probed.trace" || true
done
for round in $(seq "$ROUNDS"); do
    added=0
    for build in "${builds[@]}"; do
        init=$build/daemon/nixproc-init
        cmake --build "$build" --target nixproc-init >/dev/null
        : > "$tmp/plain.faults"
        : > "$tmp/managed.faults"
        : > "$tmp/probed.faults"
        for _ in $(seq "$RUNS"); do
            perf_start
            idle_plain "$init" -q --
            perf_stop >> "$tmp/plain.faults"
            idle_stop
            perf_start
            idle_managed "$tmp" "$init"
            perf_stop >> "$tmp/managed.faults"
            perf_start
            idle_probe "$build/daemon/nixproc-initctl"
            perf_stop >> "$tmp/probed.faults"
            idle_stop
        done
        ! add "$build" --faults plain:"$tmp/plain.faults" --faults managed:"$tmp/managed.faults" \
            --faults probed:"$tmp/probed.faults" || added=1
    done
    if [ "$added" = 0 ]; then
        echo "hot-text: $ld is complete (round $round)" >&2
        exit 0
    fi
done
for build in "${builds[@]}"; do cmake --build "$build" --target nixproc-init >/dev/null; done
echo "hot-text: still adding after $ROUNDS rounds" >&2
exit 1
