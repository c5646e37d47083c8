#!/bin/sh
# Prints podman's --ulimit flags where root may not raise a limit (no CAP_SYS_RESOURCE, as on this
# project's machines): podman's defaults for root are above the hard limits, and every RUN step and
# run fails with "error setting rlimit". Open files: this shell's hard limit. Processes: that, but
# at most kernel.pid_max, to which podman lowers its own limit before it starts the runtime.
# From /proc/self/limits, as `ulimit` has no portable option for processes.
# Used by build-images.sh and demo.sh --in podman.
set -eu
awk -v pid_max="$(cat /proc/sys/kernel/pid_max)" '
    function hard(v) { return v == "unlimited" ? -1 : v + 0 }
    /^Max open files/ { files = hard($(NF-1)) }
    /^Max processes/  { procs = hard($(NF-1)); if (procs < 0 || procs > pid_max) procs = pid_max }
    END { printf "--ulimit nofile=%d:%d --ulimit nproc=%d:%d\n", files, files, procs, procs }' /proc/self/limits
