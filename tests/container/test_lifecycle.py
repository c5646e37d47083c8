#!/usr/bin/env python3
"""The demo container's life as the engine drives it: `stop` (with and without a process that
ignores SIGTERM), `start` again, `pause`/`unpause` in the middle of a debounce, `kill -s HUP`.
   test_lifecycle.py ENGINE STATE SCENARIO"""
import datetime
import os
import re
import signal
import subprocess
import time

import containers
from containers import ADD_WEBAPP2, Failed, start_demo

# Both engines give a container 10 s between the stop signal and their own SIGKILL (docker stop's
# -t, podman's stop_timeout); the demo's init.yaml keeps shutdown.grace_s at its default, 8.
ENGINE_GRACE_S = 10
INIT_GRACE_S = 8
# What nixproc-init says as it exits (lib/init/Init.cpp, finish()).
EXITING = r"exiting with status (\d+) \((\d+) orphans reaped\)"


def whole_log(demo):
    """The container's log as the engine kept it, both streams in the order they were written
    (read after the container stopped: the follower may not have read its last lines yet)."""
    result = subprocess.run(demo.engine.command("logs", demo.name), env=demo.engine.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", timeout=60)
    return [line for line in result.stdout.splitlines() if line.strip()]


def timed_stop(checks, demo):
    """`ENGINE stop` (the engines' default 10 s before their SIGKILL); returns how long it took."""
    began = time.monotonic()
    demo.engine.run("stop", demo.name, timeout=ENGINE_GRACE_S + 50)
    return time.monotonic() - began


def check_clean_exit(checks, demo):
    """The exit status the engine saw is the init's own 0: not 137 (its SIGKILL), not OOM."""
    waited = demo.engine.run("wait", demo.name, timeout=60).stdout.strip().splitlines()
    checks.check(waited and waited[-1] == "0", f"`{demo.engine.name} wait` gives exit code 0 (it gave {waited})")
    code = demo.inspect("{{.State.ExitCode}}")
    checks.check(code == "0", f"inspect's State.ExitCode is 0 (it is {code}; 137 would be a SIGKILL)")
    oom = demo.inspect("{{.State.OOMKilled}}")
    checks.check(oom == "false", f"inspect's State.OOMKilled is false (it is {oom})")
    log = whole_log(demo)
    checks.check(log and "exiting with status 0" in log[-1],
                 f"the log ends with nixproc-init's own 'exiting with status 0' (its last line: {log[-1:] or 'none'})")
    return log


def wait_until(condition, timeout, what):
    """Polls CONDITION (no event tells the host about a process inside the container)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise Failed(f"{what}: not within {timeout} s")


def nothing_for(demo, pattern, seconds, since):
    """True when no log line matches PATTERN for SECONDS after SINCE: an absence can only be
    watched for a while. Ends early, False, at the first match."""
    try:
        demo.wait_for(pattern, timeout=seconds, since=since)
        return False
    except Failed as e:
        if "the log ended" in str(e):
            raise
        return True


# -- the scenarios -------------------------------------------------------------------------------

def init_stop_seconds(log):
    """From the init's "SIGTERM received" to its "exiting", by the timestamps of its own lines: the
    part of a stop that is the init's (the rest is the engine's own work)."""
    stamps = {}
    for line in log:
        found = re.match(r"(\S+) nixproc-init \w+: (SIGTERM received|exiting with status)", line)
        if found:
            stamps.setdefault(found.group(2), datetime.datetime.fromisoformat(found.group(1)))
    if len(stamps) != 2:
        raise Failed(f"the log lacks the init's SIGTERM or exit line: {stamps}")
    return (stamps["exiting with status"] - stamps["SIGTERM received"]).total_seconds()


def stop(engine, checks):
    demo = start_demo(checks, "stop")
    took = timed_stop(checks, demo)
    checks.timing("stop", took)
    log = check_clean_exit(checks, demo)
    own = init_stop_seconds(log)
    checks.timing("stop: SIGTERM → the init exits (its log)", own)
    # supervisord acts on a signal when its loop next wakes (once a second), and sees its programs
    # gone at the wake after: 1 to 2 s.
    checks.check(own < 5, f"the init exited {own:.1f} s after the SIGTERM: supervisord stopped the services at once")
    checks.check(took < INIT_GRACE_S, f"stop took {took:.1f} s: within the init's grace (nothing held it up)")
    checks.check(any("SIGTERM received: stopping (grace 8 s)" in line for line in log),
                 "the log shows the init took the engine's SIGTERM as a stop, with its 8 s grace")
    checks.check(not any("grace of" in line and "is over" in line for line in log),
                 "the init needed no SIGKILL of its own: supervisord stopped everything within the grace")


def sleep_status(checks, demo):
    """PPid and SigIgn of the one `sleep` in the container, once it runs."""
    wait_until(lambda: demo.exec("pgrep", "-x", "sleep", check=False).returncode == 0, 10, "the sleep started")
    status = demo.exec("sh", "-c", "grep -E '^(PPid|SigIgn):' /proc/$(pgrep -x sleep)/status").stdout
    fields = dict(line.split(":\t") for line in status.strip().splitlines())
    checks.check(int(fields["SigIgn"], 16) & (1 << (signal.SIGTERM - 1)), f"the sleep ignores SIGTERM (SigIgn {fields['SigIgn']})")
    return int(fields["PPid"])


def check_stop_outlasting_term(checks, demo, what):
    """`stop` while a process ignores SIGTERM: the init's grace, then the init's own SIGKILL, all
    before the engine's; the exit status stays the init's 0."""
    took = timed_stop(checks, demo)
    checks.timing(f"stop with {what} ignoring SIGTERM", took)
    log = check_clean_exit(checks, demo)
    own = init_stop_seconds(log)
    checks.timing(f"stop with {what} ignoring SIGTERM: SIGTERM → the init exits (its log)", own)
    checks.check(INIT_GRACE_S - 0.5 <= own < INIT_GRACE_S + 1,
                 f"the init exited {own:.1f} s after the SIGTERM: it gave the leftover its {INIT_GRACE_S} s grace, then no more")
    # The exit status 0 above says the engine's SIGKILL never came (it would be 137). The engine's
    # own work around the stop (podman's clean-up: up to 1.5 s here under load) comes on top.
    checks.check(took < ENGINE_GRACE_S + 2, f"stop took {took:.1f} s: the engine's {ENGINE_GRACE_S} s and its own clean-up")
    checks.check(any("stopping the processes left behind" in line for line in log),
                 "the log shows the init asked what was left behind to stop")
    checks.check(any(f"grace of {INIT_GRACE_S} s is over: SIGKILL to everything left" in line for line in log),
                 "the log shows the init, not the engine, killed what was left when its grace ended")


def stop_exec_term_ignored(engine, checks):
    demo = start_demo(checks, "stopexec")
    # A process started by exec (as a user starts a worker by hand), which ignores SIGTERM: its
    # parent is the engine's shim, outside the container's PID namespace, so it is no descendant of
    # the init, and the kernel SIGKILLs it when PID 1 exits.
    engine.run("exec", "-d", demo.name, "sh", "-c", "trap '' TERM; exec sleep 1000")
    ppid = sleep_status(checks, demo)
    checks.check(ppid == 0, f"the exec'd sleep's parent is outside the container (PPid {ppid})")
    check_stop_outlasting_term(checks, demo, "an exec'd process")


def stop_orphan_term_ignored(engine, checks):
    demo = start_demo(checks, "stoporphan")
    # A daemon started through exec: the shell exits, its `sleep` is orphaned and adopted by PID 1
    # (the shim, outside the PID namespace, cannot adopt it). SIG_IGN is inherited across fork and exec.
    demo.exec("sh", "-c", "trap '' TERM; sleep 1000 >/dev/null 2>&1 &")
    ppid = sleep_status(checks, demo)
    checks.check(ppid == 1, f"the orphaned sleep was adopted by PID 1 (PPid {ppid})")
    check_stop_outlasting_term(checks, demo, "an orphan")


def stop_exec_term_handled(engine, checks):
    demo = start_demo(checks, "stopexecterm")
    # A worker started by exec that cleans up on SIGTERM, and says so in the container's log (the
    # init's stderr, which the engine collects).
    engine.run("exec", "-d", demo.name, "sh", "-c",
               "trap 'echo exec worker: SIGTERM, saved and stopping > /proc/1/fd/2; exit 0' TERM; "
               "while :; do sleep 0.2; done")
    wait_until(lambda: demo.exec("pgrep", "-f", "while :", check=False).returncode == 0, 10, "the worker started")
    took = timed_stop(checks, demo)
    checks.timing("stop with an exec'd worker that stops on SIGTERM", took)
    log = check_clean_exit(checks, demo)
    checks.check(any("exec worker: SIGTERM, saved and stopping" in line for line in log),
                 "the exec'd worker got SIGTERM and stopped on its own before the init exited")
    own = init_stop_seconds(log)
    checks.timing("stop with an exec'd worker: SIGTERM → the init exits (its log)", own)
    checks.check(own < 5, f"the init exited {own:.1f} s after the SIGTERM: as soon as the worker was gone, not after its grace")


def stop_exec_shell(engine, checks):
    demo = start_demo(checks, "stopshell")
    # `docker exec -it NAME bash` left open in a terminal while the container is stopped: an
    # interactive bash ignores SIGTERM, and ends on SIGHUP (its terminal hanging up).
    controller, terminal = os.openpty()
    shell = subprocess.Popen(engine.command("exec", "-it", demo.name, "bash"), env=engine.env, stdin=terminal,
                             stdout=terminal, stderr=terminal, start_new_session=True)
    os.close(terminal)
    try:
        wait_until(lambda: demo.exec("pgrep", "-x", "bash", check=False).returncode == 0, 20, "the exec'd bash started")
        took = timed_stop(checks, demo)
        checks.timing("stop with an exec -it bash open", took)
        log = check_clean_exit(checks, demo)
        own = init_stop_seconds(log)
        checks.timing("stop with an exec -it bash open: SIGTERM → the init exits (its log)", own)
        checks.check(own < 5, f"the init exited {own:.1f} s after the SIGTERM: the shell ended on the SIGHUP that "
                              "followed, without the grace")
        checks.check(not any("grace of" in line and "is over" in line for line in log), "nothing needed a SIGKILL")
        ended = shell.wait(timeout=30)
        checks.check(ended is not None, f"the exec -it client ended (status {ended})")
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
        os.close(controller)


def start_again(engine, checks):
    demo = start_demo(checks, "start")
    took = timed_stop(checks, demo)
    checks.timing("stop", took)
    check_clean_exit(checks, demo)
    # The follower of the first run has read its last line (then its log ended): the lines from
    # MARK on are the new run's (`logs -f` replays the first run's, which are skipped by count).
    demo.wait_for(EXITING, timeout=30)
    mark = demo.mark()
    engine.run("start", demo.name, timeout=60)
    started = time.monotonic()
    demo.started_again()
    demo.wait_for(r"supervisord started", timeout=60, since=mark)
    _, _, said = demo.wait_for(r"processes\.nix unchanged since deployment #1: nothing to deploy at boot",
                               timeout=60, since=mark, fail=r"deploy #2")
    checks.check(True, "the new run's log says processes.nix is unchanged since deployment #1: nothing to deploy")
    answered = demo.wait_answer("webapp.local", "Simple test webapp")
    checks.timing("start → webapp.local answers", answered - started)
    checks.check(demo.inspect("{{.RestartCount}}") in ("0", "<no value>", ""), "the engine did not restart it on its own")
    checks.check(not demo.lines_matching(r"deploy #\d+", since=mark), "the new run deployed nothing: no 'deploy #N' line")
    pid1 = demo.exec("cat", "/proc/1/cmdline").stdout.split("\0")[0]
    checks.check(pid1 == "/usr/sbin/nixproc-init", f"PID 1 of the new run is nixproc-init (it is {pid1!r})")


DEBOUNCE_S = 4


def pause_in_debounce(engine, checks):
    # A long debounce, so that the pause surely falls inside it; debug, so that the log says when
    # the watcher saw the save and armed its timer (lib/deploy/ModelWatcher.cpp).
    demo = start_demo(checks, "pause", "-e", f"NIXPROC_INIT_WATCH_DEBOUNCE_MS={DEBOUNCE_S * 1000}",
                      "-e", "NIXPROC_INIT_LOG_LEVEL=debug")
    mark = demo.mark()
    demo.exec(*ADD_WEBAPP2)
    _, _, seen = demo.wait_for(rf"processes\.nix saved: deploying after {DEBOUNCE_S * 1000} ms of quiet",
                               timeout=10, since=mark)
    engine.run("pause", demo.name)
    paused = time.monotonic()
    checks.check(paused - seen < DEBOUNCE_S,
                 f"paused {paused - seen:.1f} s after the init saw the save: within its {DEBOUNCE_S} s debounce")
    state = demo.inspect("{{.State.Status}}")
    checks.check(state == "paused", f"the container is paused (State.Status {state})")
    # Held paused until the debounce's deadline is 3 s past. A frozen process's CLOCK_MONOTONIC
    # runs on, so the init's timer is overdue when it thaws: what matters is that a deadline that
    # passed while frozen neither deploys while frozen (nothing runs) nor is lost, nor fires twice
    # at the thaw. The 3 s also leave time for a deployment to show in the log had the freeze not
    # held. The absence is watched in the log for that time (it ends early at a `deploy #2`).
    hold = seen + DEBOUNCE_S + 3 - time.monotonic()
    checks.check(nothing_for(demo, r"deploy #2", hold, since=mark),
                 f"nothing was deployed while paused ({hold:.1f} s, past the end of the debounce)")
    still = demo.inspect("{{.State.Status}}")
    checks.check(still == "paused", f"the container was still paused at the end (State.Status {still})")
    unpaused = time.monotonic()
    engine.run("unpause", demo.name)
    _, line, began = demo.wait_for(r"deploy #2: ", timeout=30, since=mark)
    checks.check("processes.nix changed" in line and began >= unpaused,
                 f"one deployment follows the unpause, for the edit: {line}")
    checks.timing("unpause → deploy #2 begins", began - unpaused)
    demo.wait_for(r"deploy #2: done", timeout=120, since=mark, fail=r"deploy #2: (failed|interrupted|timed out)")
    answered = demo.wait_answer("webapp2.local", "Simple test webapp")
    checks.timing("unpause → webapp2 answers", answered - unpaused)
    checks.check(demo.get("webapp.local")[0] == 200, "webapp.local still answers")
    # A doubled deployment would follow within a debounce of the first one's end.
    after = demo.mark()
    checks.check(nothing_for(demo, r"deploy #3", DEBOUNCE_S + 2, since=after),
                 f"no second deployment followed ({DEBOUNCE_S + 2} s watched after deploy #2 ended)")
    plans = demo.lines_matching(r"deploy #2: [+~=-]", since=mark)
    checks.check(len(plans) == 1 and "+webapp2" in plans[0], f"deploy #2 added webapp2: {plans}")


def hup_redeploys(engine, checks):
    demo = start_demo(checks, "hup")
    webapp = demo.exec("pgrep", "-x", "webapp").stdout.split()
    mark = demo.mark()
    engine.run("kill", "-s", "HUP", demo.name)
    sent = time.monotonic()
    # SIGHUP means "deploy now", even a model unchanged since the last deployment (DeployQueue's
    # deployNow, a forced request): a user who sends it wants a deployment, not a fingerprint.
    _, line, _ = demo.wait_for(r"deploy #2: ", timeout=30, since=mark)
    checks.check(line.endswith("deploy #2: asked for by SIGHUP"), f"the log says SIGHUP asked for deploy #2 ({line})")
    _, plan, _ = demo.wait_for(r"deploy #2: [+~=-]", timeout=120, since=mark, fail=r"deploy #2: (failed|interrupted)")
    checks.check(plan.endswith("deploy #2: =nginx =webapp"), f"the plan shows nothing changed: =nginx =webapp ({plan})")
    _, _, done = demo.wait_for(r"deploy #2: done", timeout=60, since=mark, fail=r"deploy #2: (failed|interrupted)")
    checks.timing("kill -s HUP → deploy #2 done", done - sent)
    checks.check(demo.get("webapp.local")[0] == 200, "webapp.local still answers")
    again = demo.exec("pgrep", "-x", "webapp").stdout.split()
    checks.check(webapp and again == webapp, f"the unchanged webapp was not restarted (pid {webapp} before, {again} after)")
    checks.check(not demo.lines_matching(r"SIGHUP not forwarded|HUP ignored", since=mark),
                 "the HUP was taken as a redeploy, not forwarded to supervisord")
    checks.check(demo.running(), "the container still runs")


def hup_deploys_edit(engine, checks):
    # With the watcher off, SIGHUP is how an edit gets deployed (config/init.yaml, watch.enabled).
    demo = start_demo(checks, "hupedit", "-e", "NIXPROC_INIT_WATCH_ENABLED=false")
    mark = demo.mark()
    demo.exec(*ADD_WEBAPP2)
    # Nothing tells that an edit was not noticed: the log is watched for as long as a save takes
    # to deploy with the watcher on (the debounce, 250 ms, and the start of a deployment).
    checks.check(nothing_for(demo, r"deploy #2", 3, since=mark), "with watch.enabled false the edit alone deploys nothing")
    engine.run("kill", "-s", "HUP", demo.name)
    sent = time.monotonic()
    _, line, _ = demo.wait_for(r"deploy #2: ", timeout=30, since=mark)
    checks.check(line.endswith("deploy #2: asked for by SIGHUP"), f"the log says SIGHUP asked for deploy #2 ({line})")
    _, plan, _ = demo.wait_for(r"deploy #2: [+~=-]", timeout=120, since=mark, fail=r"deploy #2: (failed|interrupted)")
    checks.check(plan.endswith("deploy #2: +webapp2 ~nginx =webapp"), f"the plan is the edit's: +webapp2 ~nginx =webapp ({plan})")
    demo.wait_for(r"deploy #2: done", timeout=60, since=mark, fail=r"deploy #2: (failed|interrupted)")
    answered = demo.wait_answer("webapp2.local", "Simple test webapp")
    checks.timing("kill -s HUP → webapp2 answers", answered - sent)
    checks.check(demo.get("webapp.local")[0] == 200, "webapp.local still answers")


containers.main({
    "stop": stop,
    "stop-exec-term-ignored": stop_exec_term_ignored,
    "stop-orphan-term-ignored": stop_orphan_term_ignored,
    "stop-exec-term-handled": stop_exec_term_handled,
    "stop-exec-shell": stop_exec_shell,
    "start-again": start_again,
    "pause-in-debounce": pause_in_debounce,
    "hup-redeploys": hup_redeploys,
    "hup-deploys-edit": hup_deploys_edit,
})
