#!/bin/bash
# Side-by-side benchmark of nixproc-init against tini, dumb-init and catatonit (Debian's), each as
# PID 1 of its own PID namespace, in one run. Prints a Markdown table with each figure's ratio to
# tini; then the deployment latency table (tests/bench/DeployLatency.cpp).
# Run as root after a build:  tests/bench/bench.sh [BUILD_DIR]   (default: build)
#   start-up  `INIT -- /bin/true`, median of $RUNS runs (hyperfine, no shell)
#   reap      `INIT -- testkit orphans 10000`: create 10,000 orphans until none is a zombie, median of 5
#   RSS       VmRSS of the init while its child sleeps
#   wakeups   voluntary context switches of the idle init over $IDLE seconds
# tests/bench/bench.sh rss-breakdown [BUILD_DIR]: what is resident in each idle init, one at a time
# (/proc/PID/smaps_rollup), nixproc-init also as the sysvinit backend after its boot deployment, and
# then once asked what probes ask (nixproc-initctl health, status, history); then, for nixproc-init,
# its mappings and its binary's resident pages by component (rss_layout.py, from the link map), and
# any code that ran outside daemon/hot-text.ld (then run tests/bench/hot-text.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=tables
[ "${1:-}" = rss-breakdown ] && { mode=rss-breakdown; shift; }
build=${1:-build}
RUNS=${RUNS:-300}
IDLE=${IDLE:-10}
testkit=$build/tests/testkit
[ "$mode" = rss-breakdown ] || [ -x "$testkit" ] || { echo "bench: build first ($testkit missing)" >&2; exit 2; }
ns="unshare --pid --fork --mount-proc"
declare -A cmd=(
    [nixproc-init]="$(realpath "$build/daemon/nixproc-init") -q --"
    [tini]="$(command -v tini) -s --"
    [dumb-init]="$(command -v dumb-init) --"
    [catatonit]="$(command -v catatonit) --"
)
inits=(nixproc-init tini dumb-init catatonit)

if [ "$mode" = rss-breakdown ]; then
    . tests/bench/idle-init.sh
    tmp=$(mktemp -d)
    trap 'idle_stop KILL; rm -rf "$tmp"' EXIT
    fields=(Rss Pss Private_Dirty Private_Clean Shared_Clean Anonymous)
    rollup() { # the fields of /proc/$1/smaps_rollup, as table cells
        local f
        for f in "${fields[@]}"; do printf ' %s |' "$(awk -v k="$f:" '$1 == k {print $2}' "/proc/$1/smaps_rollup")"; done
    }
    details=()
    # A binary just linked is dirty page cache until written back, which smaps counts as Private_Dirty.
    sync "$(realpath "$build/daemon/nixproc-init")"
    echo "| init (idle, KiB) |$(printf ' %s |' "${fields[@]}")"
    echo "|---|$(printf -- '---|%.0s' "${fields[@]}")"
    row() { # row NAME: the table row of the idle init; for nixproc-init, its breakdown below the table
        echo "| $1 |$(rollup "$IDLE_PID")"
        if [[ $1 == nixproc-init* ]]; then
            details+=("### $1" "$(python3 tests/bench/rss_layout.py breakdown "$build/daemon/nixproc-init.map" "$IDLE_PID")")
        fi
    }
    for i in "${inits[@]}"; do
        idle_plain ${cmd[$i]}
        sleep 1 # let start-up settle, as below
        row "$i"
        idle_stop
    done
    idle_managed "$tmp" "$(realpath "$build/daemon/nixproc-init")"
    row "nixproc-init (sysvinit, deployed)"
    if [ -x "$build/daemon/nixproc-initctl" ]; then
        idle_probe "$build/daemon/nixproc-initctl"
        row "nixproc-init (sysvinit, deployed, then asked health, status, history)"
    fi
    idle_stop
    echo "(one init at a time; Shared_Clean: pages of a file others map too, such as libc.so's)"
    printf '\n%s\n' "${details[@]}"
    exit 0
fi

tmp=$(mktemp -d)
declare -A pid
# The idle nixproc-init's control socket, its own (not the host's /run/nixproc-init): what the
# client rows below ask. Exported, not through env(1), whose own exec would count as start-up.
export NIXPROC_INIT_CONTROL_SOCKET=$tmp/control.sock
# Stop the idle inits the way Docker does: SIGTERM to the namespace's PID 1.
trap 'rm -rf "$tmp"; for p in "${pid[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait' EXIT

median_ms() { # hyperfine JSON → median in ms
    python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["results"][0]["median"]*1000))' "$1"
}

echo "bench: start-up ($RUNS runs each) and reaping (5 runs each)..." >&2
for i in "${inits[@]}"; do
    hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$tmp/$i.start.json" "$ns ${cmd[$i]} /bin/true" >/dev/null 2>&1
    hyperfine -N --warmup 1 --runs 5 --export-json "$tmp/$i.reap.json" "$ns ${cmd[$i]} $testkit orphans 10000" >/dev/null 2>&1
done

echo "bench: idle RSS and wake-ups over $IDLE s, all four at once..." >&2
for i in "${inits[@]}"; do
    $ns ${cmd[$i]} sleep 100000 &
    outer=$!
    # The namespace's PID 1 is unshare's only child; wait for it to have exec'd the init and
    # started its own child.
    for _ in $(seq 500); do
        p=$(cat /proc/$outer/task/$outer/children 2>/dev/null | tr -d ' ')
        if [ -n "$p" ] && [ -n "$(cat /proc/$p/task/$p/children 2>/dev/null)" ]; then pid[$i]=$p; break; fi
        sleep 0.01
    done
done
sleep 1 # let start-up settle before counting
declare -A ctx0 ctx rss
status() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
for i in "${inits[@]}"; do ctx0[$i]=$(status "${pid[$i]}" voluntary_ctxt_switches); done
sleep "$IDLE"
for i in "${inits[@]}"; do
    ctx[$i]=$(( $(status "${pid[$i]}" voluntary_ctxt_switches) - ctx0[$i] ))
    rss[$i]=$(status "${pid[$i]}" VmRSS)
done

ratio() { python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print("%.2f×" % (a/b) if b else ("1.00×" if a==b else "∞"))' "$1" "$2"; }
declare -A start reap
for i in "${inits[@]}"; do start[$i]=$(median_ms "$tmp/$i.start.json"); reap[$i]=$(median_ms "$tmp/$i.reap.json"); done

echo "| init | start-up (median, ms) | reap 10,000 orphans (ms) | idle RSS (KiB) | wake-ups in ${IDLE} s idle |"
echo "|---|---|---|---|---|"
for i in "${inits[@]}"; do
    printf '| %s | %s (%s) | %s (%s) | %s (%s) | %s |\n' "$i" \
        "${start[$i]}" "$(ratio "${start[$i]}" "${start[tini]}")" \
        "${reap[$i]}" "$(ratio "${reap[$i]}" "${reap[tini]}")" \
        "${rss[$i]}" "$(ratio "${rss[$i]}" "${rss[tini]}")" \
        "${ctx[$i]}"
done
echo "(ratios to tini in parentheses; $(nproc) cores, $(uname -r))"

# A probe's cost: nixproc-initctl started, connected, answered, as Docker's HEALTHCHECK and a
# Kubernetes exec probe run it, next to starting /bin/true (what any exec probe costs at least).
echo >&2 "bench: nixproc-initctl against the idle nixproc-init ($RUNS runs each)..."
ctl="$(realpath "$build/daemon/nixproc-initctl") --socket $tmp/control.sock"
declare -A probe=([true]=/bin/true [live]="$ctl health --live" [ready]="$ctl health --ready" [status]="$ctl status")
declare -A probe_ms
for k in true live ready status; do
    hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$tmp/probe.$k.json" "${probe[$k]}" >/dev/null 2>&1
    probe_ms[$k]=$(median_ms "$tmp/probe.$k.json")
done
echo
echo "| client (median, ms, fork + exec + round trip) | /bin/true | health --live | health --ready | status |"
echo "|---|---|---|---|---|"
printf '| nixproc-initctl | %s | %s | %s | %s |\n' "${probe_ms[true]}" "${probe_ms[live]}" "${probe_ms[ready]}" "${probe_ms[status]}"

echo >&2 "bench: deployment latency (100 saves, twice)..."
echo
"$build/tests/deploy-latency" 100
