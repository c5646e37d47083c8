#!/bin/bash
# Soak: 1,000 edits of processes.nix under a real nixproc-init (PID 1 of its own PID namespace,
# sysvinit, the nixproc-sysvinit-switch stand-in of tests/standins, deploy.check with
# nix-instantiate --parse when Nix is there). The edits come in bursts (sizes 1, 3, 1, 5, 1, 10,
# again and again, cut at each 100th edit), saved back to back in three editor styles (write in
# place, alone only; temp file renamed over; sed -i); after each burst the script waits for the
# burst's last content to be deployed.
#
#   lost edit   a burst whose last content is not what the switch deployed last, 60 s after the
#               burst (the contents in between may be coalesced away: that is the point)
#
# It samples the init's VmRSS and open fds after the boot deployment, every 100 edits (once that
# burst is deployed, so the init is idle) and at the end, prints a table and a verdict, and exits
# non-zero unless: 0 lost edits, 0 failed deployments, RSS growth below RSS_BOUND_KB, the same fd
# count at the end as at the start. It stops by itself: SOAK_TIMEOUT seconds at most in all.
#
# Run as root after a build:  tests/bench/soak.sh [NIXPROC_INIT]   (default: build/daemon/nixproc-init)
#   EDITS=1000 RSS_BOUND_KB=1024 SOAK_TIMEOUT=1800 DEBOUNCE_MS=20 BURST_TIMEOUT=60
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
init_bin=$(realpath "${1:-$repo/build/daemon/nixproc-init}")
EDITS=${EDITS:-1000}
RSS_BOUND_KB=${RSS_BOUND_KB:-1024}
SOAK_TIMEOUT=${SOAK_TIMEOUT:-1800}
DEBOUNCE_MS=${DEBOUNCE_MS:-20}
BURST_TIMEOUT=${BURST_TIMEOUT:-60}
[ -x "$init_bin" ] || { echo "soak: $init_bin is not an executable (build first, or give its path)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "soak: needs root (unshare --pid)" >&2; exit 2; }

tmp=$(mktemp -d /tmp/nixproc-soak-XXXXXX)
model=$tmp/etc/nixproc/processes.nix
records=$tmp/deployed # one line per deployed model, written by the stand-in
log=$tmp/init.log     # the init's stderr, as read
mkdir -p "$(dirname "$model")"
unshare_pid= pid1=
cleanup() {
    # Only what this script started: the namespace's init (everything in it dies with it), then unshare.
    [ -n "$pid1" ] && kill -KILL "$pid1" 2>/dev/null || true
    [ -n "$unshare_pid" ] && wait "$unshare_pid" 2>/dev/null || true
    exec 3<&- 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
deadline=$((SECONDS + SOAK_TIMEOUT))

content() { printf '{\n  webapp = "%s";\n  nginx = "1";\n}\n' "$1"; }
recorded() { content "$1" | tr '\n' ' '; } # the stand-in's one-line record of a model

check="[]"
command -v nix-instantiate >/dev/null && check="[nix-instantiate, --parse]"
content boot > "$model"
cat > "$tmp/init.yaml" <<EOF
process_manager: sysvinit
processes: $model
profile: $tmp/profile
state_dir: $tmp/state
watch:
  debounce_ms: $DEBOUNCE_MS
deploy:
  command: [nixproc-sysvinit-switch]
  check: $check
bootstrap:
  channel: ""
EOF

# The init's log through a FIFO: waiting for a line is a blocking read with a deadline, not a poll.
mkfifo "$tmp/log.fifo"
PATH="$repo/tests/standins:/usr/sbin:/usr/bin:/sbin:/bin" NIXPROC_STANDIN_LOG=$records \
    unshare --pid --fork --mount-proc "$init_bin" -c "$tmp/init.yaml" 2>"$tmp/log.fifo" &
unshare_pid=$!
exec 3<"$tmp/log.fifo"

# Reads the log until a line matches the extended regex $1; false at EOF or after $2 seconds.
await_log() {
    local until=$((SECONDS + $2)) line
    while [ "$SECONDS" -lt "$until" ] && [ "$SECONDS" -lt "$deadline" ]; do
        if ! IFS= read -r -t "$((until - SECONDS))" -u 3 line; then
            [ -n "$line" ] && printf '%s\n' "$line" >> "$log" # a timeout leaves a partial line
            return 1
        fi
        printf '%s\n' "$line" >> "$log"
        [[ $line =~ $1 ]] && return 0
    done
    return 1
}

# How many deployments ended so far, in the log as read: done, and anything else.
done_count() { grep -cE 'deploy #[0-9]+: done' "$log" || true; }
failed_count() { grep -cE 'deploy #[0-9]+: (failed|timed out|refused|interrupted)' "$log" || true; }
await_deployment() { # a deployment's end within $1 seconds; false if none
    await_log 'deploy #[0-9]+: (done|failed|timed out|refused|interrupted)' "$1"
}

# Waits until the switch has deployed the model whose webapp is $1.
await_deployed() {
    local want until=$((SECONDS + BURST_TIMEOUT))
    want=$(recorded "$1")
    while [ "$SECONDS" -lt "$until" ]; do
        [ -f "$records" ] && [ "$(tail -n 1 "$records")" = "$want" ] && return 0
        await_deployment "$((until - SECONDS))" || return 1
    done
    return 1
}

# Edit $1 in one of three editor styles. Within a burst only the atomic ones: a write in place
# (truncate, then write) can be read half done when an earlier save's debounce ends just between
# the two, and the check rightly fails that momentary empty model; alone, it cannot be.
save() {
    local style=$(($1 % 3))
    [ "$2" -gt 1 ] && [ "$style" = 0 ] && style=1
    case $style in
        0) content "edit$1" > "$model" ;;                                  # write in place
        1) content "edit$1" > "$model.tmp" && mv -f "$model.tmp" "$model" ;; # temp renamed over
        2) sed -i "s/webapp = \"[^\"]*\"/webapp = \"edit$1\"/" "$model" ;;  # sed -i (the same)
    esac
}

await_log 'sysvinit started' 60 || { echo "soak: the init did not start; its log:" >&2; cat "$log" >&2; exit 1; }
pid1=$(tr -d ' ' < "/proc/$unshare_pid/task/$unshare_pid/children") # the namespace's PID 1: unshare's only child
await_deployed boot || { echo "soak: no boot deployment; the init's log:" >&2; cat "$log" >&2; exit 1; }

rss() { awk '$1 == "VmRSS:" {print $2}' "/proc/$pid1/status"; }
fds() { find "/proc/$pid1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
rows=() rss0=$(rss) fds0=$(fds) rss_max=0 fds_bad=0
sample() {
    local r f
    r=$(rss) f=$(fds)
    [ "$r" -gt "$rss_max" ] && rss_max=$r
    [ "$f" -ne "$fds0" ] && fds_bad=$((fds_bad + 1))
    rows+=("| $1 | $(done_count) | $(failed_count) | $2 | $r | $f |")
}
sample 0 0
started=$SECONDS

edit=0 lost=0 bursts=0 sizes=(1 3 1 5 1 10) next_sample=100
while [ "$edit" -lt "$EDITS" ] && [ "$SECONDS" -lt "$deadline" ]; do
    size=${sizes[$((bursts % ${#sizes[@]}))]}
    [ $((edit + size)) -gt "$next_sample" ] && size=$((next_sample - edit))
    [ $((edit + size)) -gt "$EDITS" ] && size=$((EDITS - edit))
    for _ in $(seq "$size"); do
        edit=$((edit + 1))
        save "$edit" "$size"
    done
    bursts=$((bursts + 1))
    if ! await_deployed "edit$edit"; then
        lost=$((lost + 1))
        echo "soak: burst $bursts (edits up to $edit) was not deployed within $BURST_TIMEOUT s" >&2
    fi
    if [ "$edit" -ge "$next_sample" ] || [ "$edit" -ge "$EDITS" ]; then
        sample "$edit" "$lost"
        next_sample=$((next_sample + 100))
    fi
done
duration=$((SECONDS - started))

echo "| edits | deployments (boot included) | failed | lost edits | VmRSS (KiB) | open fds |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
rss_end=$(rss) fds_end=$(fds)
growth=$((rss_end - rss0))
echo
echo "$edit edits in $bursts bursts in ${duration} s, ${SECONDS} s with the init's start and boot deployment ($(nproc) cores, $(uname -r), debounce ${DEBOUNCE_MS} ms, check: $check)"
echo "lost edits: $lost; deployments: $(done_count) done, $(failed_count) failed; VmRSS ${rss0} → ${rss_end} KiB (growth ${growth} KiB, peak sample ${rss_max} KiB, bound ${RSS_BOUND_KB}); open fds ${fds0} → ${fds_end}"

# A clean stop is part of the soak: SIGTERM, exit 0 (SIGKILL if it is not gone in 30 s).
kill -TERM "$pid1"
( trap 'kill "$s"; exit' TERM; sleep 30 & s=$!; wait "$s"; kill -KILL "$pid1" ) >/dev/null 2>&1 &
watchdog=$! # stopped below with its sleep, which would otherwise hold our stdout for 30 s
status=0
wait "$unshare_pid" || status=$?
kill "$watchdog" 2>/dev/null || true
pid1= unshare_pid=
cat <&3 >> "$log" # the rest of the log: the writer is gone, so this ends
failed=$(failed_count)
ok=true
[ "$edit" -eq "$EDITS" ] || { echo "FAIL: only $edit of $EDITS edits within SOAK_TIMEOUT ${SOAK_TIMEOUT} s"; ok=false; }
[ "$lost" -eq 0 ] || { echo "FAIL: $lost lost edits"; ok=false; }
[ "$failed" -eq 0 ] || { echo "FAIL: $failed failed deployments"; ok=false; }
[ "$growth" -lt "$RSS_BOUND_KB" ] || { echo "FAIL: RSS grew by $growth KiB (bound $RSS_BOUND_KB)"; ok=false; }
[ "$fds_end" -eq "$fds0" ] && [ "$fds_bad" -eq 0 ] || { echo "FAIL: open fds changed ($fds0 → $fds_end, $fds_bad samples differ)"; ok=false; }
[ "$status" -eq 0 ] || { echo "FAIL: the init exited with $status after SIGTERM"; ok=false; }
if $ok; then echo "PASS"; else echo "the init's log: $log (kept)"; trap - EXIT; exit 1; fi
