#!/bin/sh
# The main job: installs what is missing, builds, and runs nixproc-init as PID 1 of a new PID
# namespace (what `docker run` gives it). Its main child starts two daemons that double-fork
# away, leaves a zombie-to-be behind, shows the process table, and exits: the init reaps the
# orphans, stops what is left with SIGTERM, and exits with the child's status.
set -eu
cd "$(dirname "$0")/.."
packaging/install-deps.sh
packaging/build.sh default >/dev/null
exec unshare --pid --fork --mount-proc build/daemon/nixproc-init -t 3 -- sh -c '
    echo "main child: pid $$ in a new PID namespace"
    (sleep 1000 &) ; (sleep 1001 &)          # two daemons, re-parented to PID 1 at once
    (sh -c "exit 0" &)                       # an orphan that exits: PID 1 must reap it
    ps -o pid,ppid,pgid,stat,comm
    echo "main child: exiting with status 3"
    exit 3'
