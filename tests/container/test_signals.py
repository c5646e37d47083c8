#!/usr/bin/env python3
"""Signals sent to the demo container (`kill -s SIG`) and COMMANDs given to it, as a user does
them.   test_signals.py ENGINE STATE SCENARIO"""
import containers
from containers import DEMO_IMAGE, Container

FIRST_DEPLOYMENT_S = 120
WITHHELD = "{} not forwarded to supervisord: it has no handler for it and would die"
# supervisord's answer to SIGUSR2 (supervisor/supervisord.py handle_signal), on its stdout.
REOPENED = r"received SIGUSR2 indicating log reopen request"


def start_demo(checks, hint, *run_args):
    """A demo container whose first deployment is done and whose web app answers."""
    demo = Container(checks, DEMO_IMAGE, *run_args, hint=hint)
    _, _, done = demo.wait_for(r"deploy #1: done", timeout=FIRST_DEPLOYMENT_S, fail=r"deploy #1: failed")
    checks.timing("run -d → deploy #1 done", done - demo.started)
    demo.wait_answer("webapp.local", "Simple test webapp")
    return demo


def kill_usr1(engine, checks):
    """`kill -s USR1` (and ALRM) used to kill supervisord and with it the container (exit 138)."""
    demo = start_demo(checks, "sigusr1")
    for round in (1, 2):
        mark = demo.mark()
        engine.run("kill", "-s", "USR1", demo.name)
        engine.run("kill", "-s", "ALRM", demo.name)
        # USR2 is one supervisord handles: its answer, after the two, shows it is still there.
        engine.run("kill", "-s", "USR2", demo.name)
        demo.wait_for(REOPENED, timeout=30, since=mark, fail=r"supervisord \(pid \d+\) killed by")
        checks.check(True, f"round {round}: supervisord answered SIGUSR2 after SIGUSR1 and SIGALRM")
    for signal in ("SIGUSR1", "SIGALRM"):
        said = demo.lines_matching(WITHHELD.format(signal))
        checks.check(len(said) == 1, f"the log says once, of two, that {signal} was not forwarded, and why ({len(said)} times)")
    checks.check(demo.running(), "the container still runs")
    status, body = demo.get("webapp.local")
    checks.check(status == 200 and "Simple test webapp" in body, "webapp.local still answers")
    checks.check(not demo.lines_matching(r"killed by SIG"), "nothing was killed by a signal")


def command_not_the_manager(engine, checks):
    """`run -d nixproc-demo sleep 600`: the COMMAND replaces supervisord's command; said at once."""
    other = Container(checks, DEMO_IMAGE, command=("sleep", "600"), hint="cmdsleep")
    _, line, _ = other.wait_for(r"COMMAND sleep replaces supervisord's command", timeout=30)
    checks.check("nixproc-init still waits for /var/run/supervisor.sock and deploys; for a plain shell use --entrypoint "
                 "or NIXPROC_INIT_PROCESS_MANAGER=none" in line, f"the log says what the init still does, and how else ({line})")
    checks.check(other.running(), "the container runs")


def shell_as_command(engine, checks):
    """A shell as COMMAND that does not start supervisord runs under a plain init: no wait for
    the socket, no deployment (step_timeout_s made 2 s: both would show before the shell ends)."""
    shell = Container(checks, DEMO_IMAGE, "-e", "NIXPROC_INIT_MANAGER_STEP_TIMEOUT_S=2",
                      command=("sh", "-c", "echo shell-ready; sleep 5; echo shell-done"), hint="cmdsh")
    _, line, _ = shell.wait_for(r"COMMAND sh replaces supervisord's command", timeout=30)
    checks.check("is a shell that does not start supervisord: nixproc-init runs it as a plain init (no wait for "
                 "/var/run/supervisor.sock, no deployments, every signal passed on)" in line,
                 f"the log says the shell runs under a plain init ({line})")
    shell.wait_for(r"shell-done", timeout=30)
    said = shell.text()
    checks.check("not ready" not in said and "deploy #" not in said and "supervisord started" not in said,
                 "no wait for supervisord, no deployment, nothing said to have started")


containers.main({
    "kill-usr1": kill_usr1,
    "command-not-the-manager": command_not_the_manager,
    "shell-as-command": shell_as_command,
})
