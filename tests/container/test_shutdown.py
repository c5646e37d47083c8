#!/usr/bin/env python3
"""`stop` while a deployment's switch is stopped (kill -STOP): the init continues it with its
SIGTERM, so the container stops in about a second rather than after the 8 s grace, and the
deployment is recorded and logged as interrupted; the next start deploys it again.
   test_shutdown.py ENGINE STATE SCENARIO"""
import os
import tempfile
import time

import containers
from containers import FIRST_DEPLOYMENT_S, Failed, start_demo

ENGINE_GRACE_S = 10
INIT_GRACE_S = 8
WEBAPP2_MODEL = "/usr/share/nixproc-init/demo/processes-with-webapp2.nix"
STATE_FILE = "/var/lib/nixproc-init/state.yaml"
# Inside the container: waits (6 s at most) for the demo's switch (a bash script), stops it with
# SIGSTOP, and leaves its pid in /tmp/stopped-switch for the test to find.
STOPPER = ('for i in $(seq 300); do p=$(pgrep -f "^/bin/bash .*nixproc-supervisord-switch"); '
           'if [ -n "$p" ]; then kill -STOP $p; echo $p > /tmp/stopped-switch; exit; fi; sleep 0.02; done')


def wait_until(condition, timeout, what):
    """Polls CONDITION every 50 ms (nothing in the container tells the host); fails after TIMEOUT."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise Failed(f"{what}: not within {timeout} s")


def stopped_switch(engine, checks):
    demo = start_demo(checks, "stopswitch")
    engine.run("exec", "-d", demo.name, "sh", "-c", STOPPER)
    mark = demo.mark()
    demo.exec("cp", WEBAPP2_MODEL, "/etc/nixproc/processes.nix")
    demo.wait_for(r"deploy #2: processes.nix changed", timeout=30, since=mark)
    pid = wait_until(lambda: demo.exec("cat", "/tmp/stopped-switch", check=False).stdout.strip(), 10,
                     "the switch of deploy #2 stopped by kill -STOP")
    state = demo.exec("ps", "-o", "stat=", "-p", pid).stdout.strip()
    checks.check(state.startswith("T"), f"the switch (pid {pid}) is stopped (ps stat {state!r})")
    checks.check(not demo.lines_matching(r"deploy #2: (done|failed|interrupted)", since=mark),
                 "deploy #2 has not ended: its switch is held stopped")

    began = time.monotonic()
    engine.run("stop", demo.name, timeout=ENGINE_GRACE_S + 50)
    took = time.monotonic() - began
    checks.timing("stop with the switch stopped", took)
    checks.check(took < 4, f"stop took {took:.1f} s, not the init's {INIT_GRACE_S} s grace: the switch saw its SIGTERM")
    checks.check(demo.inspect("{{.State.ExitCode}}") == "0", "the container exited 0 (the init's own status)")
    logs = engine.run("logs", demo.name)
    log = logs.stdout + logs.stderr
    checks.check("deploy #2: interrupted after" in log, "the log says deploy #2 was interrupted")
    checks.check("is over: SIGKILL" not in log, "the init needed no SIGKILL of its own")

    with tempfile.TemporaryDirectory() as folder:
        copy = os.path.join(folder, "state.yaml")
        engine.run("cp", f"{demo.name}:{STATE_FILE}", copy)
        with open(copy) as f:
            recorded = f.read()
    checks.check("outcome: interrupted" in recorded and "outcome: running" not in recorded,
                 "state.yaml records deploy #2 as interrupted, none as running")

    mark = demo.mark()
    engine.run("start", demo.name)
    demo.started_again()
    demo.wait_for(r"deploy #2 did not finish \(interrupted\): deploying again", timeout=60, since=mark)
    checks.check(True, "the next start reads deploy #2 as interrupted and deploys again")
    demo.wait_for(r"deploy #3: done", timeout=FIRST_DEPLOYMENT_S, since=mark, fail=r"deploy #3: (failed|interrupted)")
    demo.wait_answer("webapp2.local", "Simple test webapp")
    checks.check(True, "webapp2.local answers after deploy #3")


containers.main({
    "stopped-switch": stopped_switch,
})
