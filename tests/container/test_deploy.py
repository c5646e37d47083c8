#!/usr/bin/env python3
"""The demo image as a user runs it: `run -d`, edits with `exec`, the deployments in `logs`, the
services answering through `-p`.   test_deploy.py ENGINE STATE SCENARIO"""
import time

import containers
from containers import ADD_WEBAPP2, start_demo


def first_deployment(engine, checks):
    demo = start_demo(checks, "run")
    checks.check(demo.lines_matching(r"deploy #1: \+nginx \+webapp$"), "the log shows deploy #1's plan: +nginx +webapp")
    pid1 = demo.exec("cat", "/proc/1/cmdline").stdout.split("\0")[0]
    checks.check(pid1 == "/usr/sbin/nixproc-init", f"PID 1 in the container is /usr/sbin/nixproc-init (it is {pid1!r})")
    ps = demo.exec("ps", "-eo", "pid,ppid,stat,comm").stdout
    checks.check(" Z" not in ps and "<defunct>" not in ps, f"no zombie in the container:\n{ps}")
    ready = demo.wait_for(r"supervisord is ready \(/var/run/supervisor.sock answers")[0]
    first = demo.wait_for(r"deploy #1")[0]
    checks.check(ready < first, "the log says supervisord's socket answered before deploy #1 began")


def edit_with_sed(engine, checks):
    demo = start_demo(checks, "sed")
    mark = demo.mark()
    demo.exec(*ADD_WEBAPP2)
    saved = time.monotonic()
    _, plan, _ = demo.wait_for(r"deploy #2: [+~=]", timeout=120, since=mark, fail=r"deploy #2: failed")
    checks.check("+webapp2" in plan and "~nginx" in plan and "=webapp" in plan,
                 f"the log shows deploy #2's plan: +webapp2 ~nginx =webapp ({plan})")
    demo.wait_for(r"deploy #2: done", timeout=60, since=mark, fail=r"deploy #2: failed")
    answered = demo.wait_answer("webapp2.local", "Simple test webapp")
    checks.timing("sed -i → webapp2 answers", answered - saved)
    checks.check(demo.get("webapp.local")[0] == 200, "webapp.local still answers")


def broken_edits(engine, checks):
    demo = start_demo(checks, "broken")
    original = demo.exec("cat", "/etc/nixproc/processes.nix").stdout

    # Written in place (the same inode, as `cat >` or mcedit save), and not even Nix syntax: the
    # check (nix-instantiate --parse) refuses it before the switch runs.
    mark = demo.mark()
    demo.exec("sh", "-c", "cat > /etc/nixproc/processes.nix", input=original.replace("rec {", "rec {{", 1))
    _, failed, _ = demo.wait_for(r"deploy #2: .*failed", timeout=60, since=mark, fail=r"deploy #2: done")
    checks.check("the running services are as they were" in failed,
                 f"a model that does not parse fails deploy #2 before the switch, services untouched ({failed})")
    checks.check(demo.lines_matching(r"error: syntax error", since=mark),
                 "the log shows Nix's own parse error")
    checks.check(demo.get("webapp.local")[0] == 200, "webapp.local still answers after the broken save")

    # It parses, but ids.nix has no webapp3 port: only evaluating it (the switch's nix-build)
    # fails. Saved as a new file renamed over the model.
    mark = demo.mark()
    demo.exec("sh", "-c", "cat > /etc/nixproc/processes.nix.new && mv /etc/nixproc/processes.nix.new /etc/nixproc/processes.nix",
              input=original.replace("port = ids.webappPorts.webapp or 0;", "port = ids.webappPorts.webapp3;"))
    _, failed, _ = demo.wait_for(r"deploy #3: .*failed", timeout=120, since=mark, fail=r"deploy #3: done")
    checks.check("deploy.check" not in failed and demo.lines_matching(r"attribute 'webapp3' missing", since=mark),
                 f"the model passes the check, and the switch's failure shows Nix's evaluation error ({failed})")
    status, body = demo.get("webapp.local")
    checks.check(status == 200 and "Simple test webapp" in body, "webapp.local still answers after the failed switch")
    checks.check(demo.running(), "the container still runs")

    # Put back as it was: the deployed model again, so there is nothing to deploy.
    mark = demo.mark()
    demo.exec("sh", "-c", "cat > /etc/nixproc/processes.nix", input=original)
    _, said, _ = demo.wait_for(r"unchanged since deployment #1|deploy #4", timeout=60, since=mark)
    checks.check("unchanged since deployment #1" in said, f"the model put back is recognised as deployed ({said})")


containers.main({
    "first-deployment": first_deployment,
    "edit-with-sed": edit_with_sed,
    "broken-edits": broken_edits,
})
