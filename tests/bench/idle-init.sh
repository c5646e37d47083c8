# Sourced by bench.sh and hot-text.sh: starts an init as PID 1 of its own PID namespace and waits
# until it idles. Each function sets IDLE_PID (the namespace's PID 1) and IDLE_OUTER (unshare, the
# process to wait for); stop with idle_stop. Needs root (unshare --pid).

# idle_plain ARGV...: the init runs `sleep 100000`; idle once it has started that child.
idle_plain() {
    unshare --pid --fork --mount-proc "$@" sleep 100000 >/dev/null 2>&1 &
    IDLE_OUTER=$! IDLE_PID=
    local p
    for _ in $(seq 3000); do # 30 s: under valgrind the start-up is slow
        p=$(tr -d ' ' < "/proc/$IDLE_OUTER/task/$IDLE_OUTER/children" 2>/dev/null || true)
        if [ -n "$p" ] && [ -n "$(cat "/proc/$p/task/$p/children" 2>/dev/null)" ]; then IDLE_PID=$p; return 0; fi
        kill -0 "$IDLE_OUTER" 2>/dev/null || break
        sleep 0.01
    done
    echo "idle-init: $* did not start its child" >&2
    return 1
}

# idle_managed PARENT ARGV...: the init runs ARGV -c DIR/init.yaml, the sysvinit backend with the
# switch stand-in of tests/standins (no Nix needed) and a two-process model, as tests/bench/soak.sh,
# in a new folder DIR under PARENT (IDLE_DIR; its log is DIR/init.log); idle once the boot
# deployment has ended (it must succeed).
idle_managed() {
    local dir repo
    dir=$(mktemp -d "$1/managed.XXXXXX")
    IDLE_DIR=$dir
    shift
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    mkdir -p "$dir/etc"
    printf '{\n  webapp = "1";\n  nginx = "1";\n}\n' > "$dir/etc/processes.nix"
    cat > "$dir/init.yaml" <<EOF
process_manager: sysvinit
processes: $dir/etc/processes.nix
profile: $dir/profile
state_dir: $dir/state
deploy:
  command: [nixproc-sysvinit-switch]
  check: []
bootstrap:
  channel: ""
control:
  socket: $dir/control.sock
EOF
    PATH="$repo/tests/standins:/usr/sbin:/usr/bin:/sbin:/bin" \
        unshare --pid --fork --mount-proc "$@" -c "$dir/init.yaml" >/dev/null 2>"$dir/init.log" &
    IDLE_OUTER=$! IDLE_PID=
    for _ in $(seq 1200); do # 120 s: under valgrind the start-up is slow
        if grep -qsE 'deploy #1: (done|failed|timed out|refused|interrupted)' "$dir/init.log"; then
            grep -qE 'deploy #1: done' "$dir/init.log" || break
            IDLE_PID=$(tr -d ' ' < "/proc/$IDLE_OUTER/task/$IDLE_OUTER/children")
            sleep 1 # the deployment's children reaped, the last lines logged
            return 0
        fi
        kill -0 "$IDLE_OUTER" 2>/dev/null || break
        sleep 0.1
    done
    echo "idle-init: no successful boot deployment; the init's log:" >&2
    cat "$dir/init.log" >&2
    return 1
}

# idle_probe CTL: asks the init of idle_managed, through CTL (nixproc-initctl), what Docker's and
# Kubernetes' probes and an operator ask: health (it must be ready), health --live, status,
# status --json, history.
idle_probe() {
    local ctl=$1 command
    "$ctl" --socket "$IDLE_DIR/control.sock" health >/dev/null || { echo "idle-init: the init is not ready" >&2; return 1; }
    for command in "health --live" status "status --json" history; do
        # shellcheck disable=SC2086 # the command and its option
        "$ctl" --socket "$IDLE_DIR/control.sock" $command >/dev/null
    done
}

# idle_stop [SIGNAL]: stops the namespace's PID 1 (SIGTERM, as docker stop) and waits for unshare.
idle_stop() {
    [ -n "${IDLE_PID:-}" ] && kill "-${1:-TERM}" "$IDLE_PID" 2>/dev/null || true
    [ -n "${IDLE_OUTER:-}" ] && wait "$IDLE_OUTER" 2>/dev/null || true
    IDLE_PID= IDLE_OUTER=
}
