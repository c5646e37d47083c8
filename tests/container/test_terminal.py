#!/usr/bin/env python3
"""The images used from a terminal, the way README tells users to: `exec -it … vi` on the demo's
model, and `run -it nixproc-init bash` with job control. The terminal is a pseudo-terminal this
file drives (the engine's client runs on it as a user's would, the pty its controlling terminal).
    test_terminal.py ENGINE STATE SCENARIO"""
import difflib
import fcntl
import os
import re
import signal
import struct
import subprocess
import termios
import threading
import time

import containers
from containers import INIT_IMAGE, Failed, start_demo

# What a terminal shows that is not text: CSI and OSC sequences, charset and keypad switches.
ESCAPES = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78cDEHM]|[\x0e\x0f\x07]")
# bash's prompt, set once bash answers: quoted apart when sent, so the echo of the command that
# sets it never matches the prompt itself.
PROMPT = "nixproc-test$ "
SET_PROMPT = "PS1='nixproc-''test$ '\r"
PROMPT_RE = re.escape(PROMPT)


class Terminal:
    """ARGV on a pseudo-terminal of its own (ROWS x COLS), as a user's shell runs it: `setsid -c`
    makes the pty its controlling terminal. Everything it writes is kept, with the time it arrived;
    waits end early when it has exited."""

    def __init__(self, argv, env, rows=24, cols=80):
        master, slave = os.openpty()
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.argv = argv
        self.started = time.monotonic()
        # setsid: a new session, and the pty as its controlling terminal (-c); not a process group
        # leader here, so it needs no fork and its exit status is the engine client's.
        self.process = subprocess.Popen(["setsid", "--ctty", *argv], stdin=slave, stdout=slave, stderr=slave,
                                        env=env, close_fds=True)
        os.close(slave)
        self.fd = master
        self.output = bytearray()
        self._changed = threading.Condition()
        self._eof = False
        self._exit_code = None
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._wait, daemon=True).start()

    def _read(self):
        while True:
            try:
                data = os.read(self.fd, 4096)
            except OSError:  # EIO: no process holds the pty's other side any more
                data = b""
            with self._changed:
                if not data:
                    self._eof = True
                    self._changed.notify_all()
                    return
                self.output += data
                self._changed.notify_all()

    def _wait(self):
        code = self.process.wait()
        with self._changed:
            self._exit_code = code
            self._changed.notify_all()

    def send(self, keys):
        os.write(self.fd, keys.encode() if isinstance(keys, str) else keys)

    def mark(self):
        """A place in the output: wait_for(..., since=mark) looks only at what came after it."""
        with self._changed:
            return len(self.output)

    def text(self, since=0):
        """The output after SINCE, without the terminal's control sequences and carriage returns."""
        with self._changed:
            raw = bytes(self.output[since:])
        return ESCAPES.sub(b"", raw).replace(b"\r", b"").decode(errors="replace")

    def wait_for(self, pattern, timeout=30, since=0, what=None):
        """Waits for PATTERN in the text written after SINCE; returns the match. Ends early,
        failing, when the program exits (and has nothing more to write)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = regex.search(self.text(since))
                if found:
                    return found
                if self._exit_code is not None and self._eof:
                    raise Failed(f"waiting for /{pattern}/ ({what or 'on the terminal'}): "
                                 f"{' '.join(self.argv[:3])} exited with {self._exit_code}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failed(f"no /{pattern}/ on the terminal within {timeout} s ({what or ''}); "
                                 f"its last output: {self.text(since)[-600:]!r}")
                self._changed.wait(min(left, 0.5))

    def wait_exit(self, timeout=30):
        """The program's exit code, once it has exited and its last output has been read."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._exit_code is None or not self._eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failed(f"{' '.join(self.argv[:3])} still runs {timeout} s on; its last output: "
                                 f"{self.text()[-600:]!r}")
                self._changed.wait(min(left, 0.5))
            return self._exit_code

    def close(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        try:
            os.close(self.fd)
        except OSError:
            pass


class TerminalExec:
    """`ENGINE exec -it CONTAINER ARGV...` on a Terminal; for containers.main, what it printed is its
    log and removing it ends the client."""

    def __init__(self, checks, container, *argv):
        self.name = f"exec -it {container.name} {' '.join(argv)}"
        self.terminal = Terminal(checks.engine.command("exec", "-it", container.name, *argv), checks.engine.env)
        checks.containers.append(self)

    def text(self):
        return self.terminal.text()

    def remove(self):
        self.terminal.close()


class TerminalRun:
    """`ENGINE run -it IMAGE COMMAND...` on a Terminal: the container a user runs in the
    foreground. Removed at the end (containers.main removes it with the others)."""

    def __init__(self, checks, image, *command):
        self.engine = checks.engine
        self.name = f"nixproc-test-tty-{os.getpid()}-{len(checks.containers)}"
        checks.containers.append(self)
        self.terminal = Terminal(self.engine.command("run", "-it", "--name", self.name, image, *command), self.engine.env)

    def text(self):
        return self.terminal.text()

    def inspect(self, template):
        return self.engine.run("inspect", "--format", template, self.name).stdout.strip()

    def processes(self):
        """{pid: (comm, state, ppid, pgrp, tpgid)} of the container's processes, from /proc (the
        init image has no ps): the terminal's side of job control, seen from outside."""
        out = self.engine.run("exec", self.name, "sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null",
                              check=False, timeout=30).stdout
        table = {}
        for line in out.splitlines():
            found = re.match(r"(\d+) \((.*)\) (\S) (-?\d+) (-?\d+) -?\d+ -?\d+ (-?\d+)", line)
            if found:
                pid, comm, state, ppid, pgrp, tpgid = found.groups()
                table[int(pid)] = (comm, state, int(ppid), int(pgrp), int(tpgid))
        return table

    def await_processes(self, condition, what, timeout=20):
        """Polls the container's processes until CONDITION(table) holds (nothing in the container
        tells the host when a job has started or stopped); ends early when `run` has exited."""
        deadline = time.monotonic() + timeout
        table = {}
        while time.monotonic() < deadline:
            table = self.processes()
            if condition(table):
                return table
            if self.terminal.process.poll() is not None:
                raise Failed(f"waiting for {what}: {self.engine.name} run exited with {self.terminal.process.returncode}")
            time.sleep(0.1)
        raise Failed(f"{what}: not within {timeout} s; the processes: {table}")

    def remove(self):
        self.terminal.close()
        self.engine.run("rm", "-f", self.name, check=False, timeout=60)


# The walk-through's edit as a user types it in vi (vim-tiny, 'compatible': no autoindent): the
# webapp2 block opened above nginx's, then webapp2 added to nginx's list. No key right after Esc
# is '[' or 'O', which would make Esc the start of a key code.
WEBAPP2_BLOCK = ('  webapp2 = rec {\r'
                 '    port = ids.webappPorts.webapp2 or 0;\r'
                 '    dnsName = "webapp2.local";\r'
                 '    pkg = constructors.webapp { inherit port; instanceSuffix = "2"; };\r'
                 '  };\r')
VI_KEYS = [
    "/^  nginx = rec {\r",        # to nginx's block
    "O" + WEBAPP2_BLOCK + "\x1b",  # open a line above it, type the block and a blank line, Esc
    "/webapps = \\[ webapp \\]\r",  # to nginx's list of web apps
    "f]iwebapp2 \x1b",             # before its ']': "webapp2 "
]


def edit_with_vi(engine, checks):
    demo = start_demo(checks, "vi")
    expected = demo.exec("cat", "/usr/share/nixproc-init/demo/processes-with-webapp2.nix").stdout
    mark = demo.mark()
    vi = TerminalExec(checks, demo, "vi", "/etc/nixproc/processes.nix").terminal
    # The editor's screen, with the file on it, before the first key.
    vi.wait_for(r"nginxReverseProxyHostBased", timeout=30, what="vi showing processes.nix")
    vi.wait_for(r'"/etc/nixproc/processes\.nix"', timeout=30, what="vi's message naming the file")
    checks.check(True, "vi shows /etc/nixproc/processes.nix through exec -it")
    typing = vi.mark()
    for keys in VI_KEYS:
        vi.send(keys)
    # The last edit on vi's screen: every key has been read.
    vi.wait_for(r"webapp2 \];", since=typing, what="vi showing the edited list of web apps")
    typed = vi.mark()
    # Typed, not saved: vi's swap file (.processes.nix.swp) must not have started a deployment.
    checks.check(not demo.lines_matching(r"deploy #2", since=mark),
                 "opening and editing in vi (its swap file) deploys nothing before :wq")
    vi.send(":wq\r")
    saved = time.monotonic()
    code = vi.wait_exit(timeout=30)
    checks.check(code == 0, f"vi exits after :wq and exec -it passes on its status 0 (it is {code})")
    written = re.search(r'"/etc/nixproc/processes\.nix" .*written', vi.text(typed))
    checks.check(written is not None, f"vi says the file was written: {written and written.group(0)!r}")
    edited = demo.exec("cat", "/etc/nixproc/processes.nix").stdout
    # The example differs in its opening comment only.
    body = lambda text: [line for line in text.splitlines() if not line.startswith("#")]  # noqa: E731
    difference = "\n".join(difflib.unified_diff(body(expected), body(edited), "expected", "saved", lineterm=""))
    checks.check(not difference, f"the file vi saved is the walk-through's edit (processes-with-webapp2.nix){difference}")
    _, plan, _ = demo.wait_for(r"deploy #2: [+~=]", timeout=120, since=mark, fail=r"deploy #2: failed")
    checks.check("+webapp2" in plan and "~nginx" in plan and "=webapp" in plan,
                 f"the log shows deploy #2's plan: +webapp2 ~nginx =webapp ({plan})")
    demo.wait_for(r"deploy #2: done", timeout=60, since=mark, fail=r"deploy #2: failed")
    answered = demo.wait_answer("webapp2.local", "Simple test webapp")
    checks.timing("vi :wq → webapp2 answers", answered - saved)
    checks.check(demo.get("webapp.local")[0] == 200, "webapp.local still answers")
    checks.check(not demo.lines_matching(r"deploy #3", since=mark),
                 "one save in vi is one deployment (no deploy #3)")


def bash_job_control(engine, checks):
    run = TerminalRun(checks, INIT_IMAGE, "bash")
    tty = run.terminal
    # Any output at all means bash is reading; then the prompt this test recognises.
    tty.wait_for(r"\S", timeout=60, what="bash's first prompt")
    at = tty.mark()
    tty.send(SET_PROMPT)
    tty.wait_for(PROMPT_RE, since=at, what="the prompt nixproc-test$")
    checks.check(True, f"{engine.name} run -it {INIT_IMAGE} bash gives an interactive bash")

    def command(line, answer, what):
        """Sends LINE, then awaits ANSWER in its output and the prompt after it; returns ANSWER's match."""
        at = tty.mark()
        tty.send(line + "\r")
        found = tty.wait_for(answer, since=at, what=what)
        tty.wait_for(answer + r"[\s\S]*" + PROMPT_RE, since=at, what=f"the prompt after {what}")
        return found

    pid1 = command("echo \"pid1=[$(tr '\\0' ' ' </proc/1/cmdline)]\"", r"pid1=\[([^\]$]*)\]", "/proc/1/cmdline").group(1)
    checks.check(pid1.split()[:2] == ["/usr/sbin/nixproc-init", "bash"],
                 f"bash sees PID 1 as /usr/sbin/nixproc-init with bash as its command ({pid1!r})")
    shell = int(command("echo \"shell=$$\"", r"shell=(\d+)", "echo $$").group(1))
    checks.check(shell != 1, f"bash is a child of the init, not PID 1 (pid {shell})")

    table = run.processes()
    checks.check(shell in table and table[shell][3] == shell and table[shell][4] == shell,
                 f"bash leads its own process group and holds the terminal's foreground: {table.get(shell)}")
    checks.check(1 in table and table[1][3] != table[1][4],
                 f"the init (PID 1) is not in the terminal's foreground group: {table.get(1)}")

    # sleep in the foreground: Ctrl-Z only once it holds the terminal (before, bash would get it).
    tty.send("sleep 1000\r")

    def sleep_of(table):
        return next((pid for pid, p in table.items() if p[0] == "sleep" and p[2] == shell), None)

    table = run.await_processes(lambda t: sleep_of(t) and t[sleep_of(t)][4] == t[sleep_of(t)][3] == sleep_of(t)
                                and t[sleep_of(t)][1] != "T", "sleep 1000 holding the terminal's foreground")
    sleep = sleep_of(table)
    checks.check(True, f"sleep 1000 (pid {sleep}) runs in the foreground, its own group holding the terminal")

    at = tty.mark()
    tty.send("\x1a")
    tty.wait_for(r"Stopped\s+sleep 1000[\s\S]*" + PROMPT_RE, since=at, what="Ctrl-Z: bash's Stopped and its prompt")
    table = run.await_processes(lambda t: sleep in t and t[sleep][1] == "T", "sleep stopped by Ctrl-Z")
    checks.check(table[1][1] != "T" and table[shell][1] != "T",
                 f"Ctrl-Z stopped sleep only: the init {table[1]} and bash {table[shell]} run on")
    checks.check(table[shell][4] == shell, f"the terminal's foreground is bash's again: {table[shell]}")
    command("jobs", r"\[1\]\+\s+Stopped\s+sleep 1000", "jobs listing the stopped sleep")
    checks.check(True, "jobs lists [1]+ Stopped sleep 1000")

    tty.send("fg\r")
    run.await_processes(lambda t: sleep in t and t[sleep][1] != "T" and t[sleep][4] == sleep,
                        "sleep continued by fg and holding the terminal")
    checks.check(True, "fg continues sleep in the foreground")

    at = tty.mark()
    tty.send("\x03")
    tty.wait_for(PROMPT_RE, since=at, what="the prompt after Ctrl-C")
    table = run.await_processes(lambda t: sleep not in t, "sleep ended by Ctrl-C")
    status = command("echo \"status=$?\"", r"status=(\d+)", "echo $?").group(1)
    checks.check(status == "130", f"Ctrl-C ended sleep with SIGINT (bash says $? = {status}: 128 + 2)")
    again = int(command("echo \"shell=$$\"", r"shell=(\d+)", "echo $$ after Ctrl-C").group(1))
    pid1 = command("echo \"pid1=[$(tr '\\0' ' ' </proc/1/cmdline)]\"", r"pid1=\[([^\]$]*)\]", "/proc/1/cmdline").group(1)
    checks.check(again == shell and pid1.startswith("/usr/sbin/nixproc-init "),
                 f"Ctrl-C reached sleep alone: the same bash (pid {again}) answers and PID 1 is still the init ({pid1!r})")
    checks.check(run.inspect("{{.State.Running}}") == "true", "the container still runs after Ctrl-C")

    # Ctrl-C at the prompt: bash's own, the init (not in the foreground group) never sees it.
    at = tty.mark()
    tty.send("\x03")
    tty.wait_for(PROMPT_RE, since=at, what="the prompt after Ctrl-C at the prompt")
    again = int(command("echo \"shell=$$\"", r"shell=(\d+)", "echo $$ after Ctrl-C at the prompt").group(1))
    checks.check(again == shell, "Ctrl-C at the prompt leaves bash and the init running")

    tty.send("exit 3\r")
    code = tty.wait_exit(timeout=30)
    checks.check(code == 3, f"exit 3 in bash makes {engine.name} run exit 3 (it exits {code})")
    recorded = run.inspect("{{.State.ExitCode}}")
    checks.check(recorded == "3", f"the engine records the container's exit code 3 ({recorded})")


def ctrl_z_without_shell(engine, checks):
    """`run -it IMAGE CMD` where CMD is no shell: nothing above PID 1 can `fg` what Ctrl-Z stops."""
    run = TerminalRun(checks, INIT_IMAGE, "bash", "-c", 'while read -r line; do echo "got:$line"; done')
    tty = run.terminal
    tty.send("one\r")
    tty.wait_for(r"got:one", timeout=60, what="the command's answer to a line")
    table = run.processes()
    reader = next((pid for pid, p in table.items() if p[2] == 1 and p[0] == "bash"), None)
    checks.check(reader is not None and table[reader][4] == table[reader][3] == reader,
                 f"the command holds the terminal's foreground: {table.get(reader)}")
    at = tty.mark()
    tty.send("\x1a")
    tty.send("two\r")
    # Stopped for good, it would never read "two" (and Ctrl-C would stay pending).
    tty.wait_for(r"got:two", timeout=10, since=at, what="the command reading on after Ctrl-Z")
    table = run.processes()
    checks.check(reader in table and table[reader][1] != "T",
                 f"after Ctrl-Z the command runs on and reads the terminal: {table.get(reader)}")
    tty.send("\x03")
    code = tty.wait_exit(timeout=30)
    checks.check(code == 128 + signal.SIGINT, f"Ctrl-C ends it and {engine.name} run exits 130 (it exits {code})")


containers.main({
    "edit-with-vi": edit_with_vi,
    "bash-job-control": bash_job_control,
    "ctrl-z-without-shell": ctrl_z_without_shell,
})
