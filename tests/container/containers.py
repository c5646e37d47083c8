"""What the container tests share: a running container of an image, its log followed as it is
written (`ENGINE logs -f`), waits that end early when the container stops, checks that count, and
the timings each test prints (and adds to STATE/timings.txt for README).

A scenario file ends with `containers.main(SCENARIOS)`: run as `FILE ENGINE STATE SCENARIO`, it
runs SCENARIOS[SCENARIO](engine, checks) and exits 0 only when it passed at least one check and
failed none; on a failure it prints why and the log of every container the scenario started.
"""
import http.client
import os
import re
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine import Engine  # noqa: E402

DEMO_IMAGE = "nixproc-demo:latest"
INIT_IMAGE = "nixproc-init:latest"
FIRST_DEPLOYMENT_S = 120

# The edit of README's walk-through, as one `sed -i` (GNU sed: a temp file renamed over the model):
# webapp2 before nginx, and nginx routing webapp2.local to it.
ADD_WEBAPP2 = [
    "sed", "-i",
    "-e", r"/^  nginx = rec {/i\  webapp2 = rec {\n    port = ids.webappPorts.webapp2 or 0;\n"
          r"    dnsName = \"webapp2.local\";\n"
          r"    pkg = constructors.webapp { inherit port; instanceSuffix = \"2\"; };\n  };\n",
    "-e", "s/webapps = \\[ webapp \\];/webapps = [ webapp webapp2 ];/",
    "/etc/nixproc/processes.nix",
]


class Failed(Exception):
    """A check that did not hold, or a wait that ended without what it waited for."""


class Checks:
    def __init__(self, engine, scenario):
        self.engine = engine
        self.scenario = scenario
        self.passed = 0
        self.containers = []

    def check(self, condition, what):
        if not condition:
            raise Failed(what)
        self.passed += 1
        print(f"  ok {self.passed}: {what}", flush=True)

    def timing(self, what, seconds):
        """Prints a measured time and records it in STATE/timings.txt (one line a measure)."""
        line = f"{self.engine.name}: {what}: {seconds:.2f} s"
        print(f"  timing: {line}", flush=True)
        with open(os.path.join(self.engine.state, "timings.txt"), "a") as f:
            f.write(f"{self.scenario}: {line}\n")


class Container:
    """`ENGINE run -d` of IMAGE with RUN_ARGS and COMMAND; port 8080 published on a free port of
    127.0.0.1. Its log is read as it comes, each line with the monotonic time it arrived."""

    def __init__(self, checks, image, *run_args, command=(), publish=True, hint="t"):
        self.checks = checks
        self.engine = checks.engine
        self.name = f"nixproc-test-{hint}-{os.getpid()}-{len(checks.containers)}"
        self.lines = []  # (arrival time, text)
        self._changed = threading.Condition()
        self._follower = None
        checks.containers.append(self)
        publish_args = ["-p", "127.0.0.1::8080"] if publish else []
        self.started = time.monotonic()
        self.engine.run("run", "-d", "--name", self.name, *publish_args, *run_args, image, *command, timeout=120)
        self._follow()

    # -- the log ---------------------------------------------------------------------------------

    def _follow(self):
        """(Re)starts `logs -f`: it ends when the container stops, and is started again after a
        `start`; lines already read are skipped by count (the engines replay the whole log)."""
        seen = len(self.lines)
        self._ended = False
        follower = subprocess.Popen(self.engine.command("logs", "-f", self.name), env=self.engine.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        self._follower = follower

        def read():
            replayed = 0
            for line in follower.stdout:
                if replayed < seen:
                    replayed += 1
                    continue
                with self._changed:
                    self.lines.append((time.monotonic(), line.rstrip("\n")))
                    self._changed.notify_all()
            with self._changed:
                self._ended = True
                self._changed.notify_all()

        threading.Thread(target=read, daemon=True).start()

    def started_again(self):
        """After `ENGINE start`: follows the log of the new run."""
        self._follow()

    def mark(self):
        """A place in the log: wait_for(..., since=mark) looks only at what came after it."""
        with self._changed:
            return len(self.lines)

    def text(self, since=0):
        with self._changed:
            return "\n".join(t for _, t in self.lines[since:])

    def wait_for(self, pattern, timeout=60, since=0, fail=None):
        """Waits for a log line matching PATTERN after SINCE; returns (index, text, arrival). Ends
        early, failing, when the log ends (the container stopped) or a line matches FAIL."""
        regex, failing = re.compile(pattern), re.compile(fail) if fail else None
        deadline = time.monotonic() + timeout
        index = since
        with self._changed:
            while True:
                while index < len(self.lines):
                    arrival, text = self.lines[index]
                    if regex.search(text):
                        return index, text, arrival
                    if failing and failing.search(text):
                        raise Failed(f"waiting for /{pattern}/, the log said instead: {text}")
                    index += 1
                if self._ended:
                    raise Failed(f"waiting for /{pattern}/: the log ended (the container stopped)")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failed(f"no log line /{pattern}/ within {timeout} s")
                self._changed.wait(min(left, 0.5))

    def lines_matching(self, pattern, since=0):
        regex = re.compile(pattern)
        with self._changed:
            return [t for _, t in self.lines[since:] if regex.search(t)]

    # -- the container ---------------------------------------------------------------------------

    def inspect(self, template):
        return self.engine.run("inspect", "--format", template, self.name).stdout.strip()

    def running(self):
        return self.inspect("{{.State.Running}}") == "true"

    def exec(self, *argv, check=True, input=None, timeout=60):
        return self.engine.run("exec", *(["-i"] if input is not None else []), self.name, *argv,
                               check=check, input=input, timeout=timeout)

    def host_port(self, port=8080):
        """The 127.0.0.1 port the engine published PORT on."""
        out = self.engine.run("port", self.name, f"{port}/tcp").stdout.strip().splitlines()[0]
        return int(out.rsplit(":", 1)[1])

    def get(self, host, port=8080, timeout=2):
        """GET / with Host: HOST through the published port: (status, body) or (None, why)."""
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.host_port(port), timeout=timeout)
            connection.request("GET", "/", headers={"Host": host})
            response = connection.getresponse()
            return response.status, response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as e:
            return None, str(e)

    def wait_answer(self, host, contains, timeout=30, port=8080):
        """Polls the service until its page contains CONTAINS (nothing in the container tells
        the host when nginx has reloaded); ends early when the container stops."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            status, body = self.get(host, port)
            if status == 200 and contains in body:
                return time.monotonic()
            last = (status, body[:200])
            if not self.running():
                raise Failed(f"waiting for {host} to answer: the container stopped")
            time.sleep(0.1)
        raise Failed(f"{host} did not answer with '{contains}' within {timeout} s (last: {last})")

    def remove(self):
        self.engine.run("rm", "-f", self.name, check=False, timeout=60)
        if self._follower and self._follower.poll() is None:
            self._follower.kill()


def start_demo(checks, hint, *run_args, what="run -d"):
    """A container of the demo image (RUN_ARGS before the image) whose first deployment is done
    and whose web app answers through the published port."""
    demo = Container(checks, DEMO_IMAGE, *run_args, hint=hint)
    _, _, done = demo.wait_for(r"deploy #1: done", timeout=FIRST_DEPLOYMENT_S, fail=r"deploy #1: (failed|refused)")
    checks.timing(f"{what} → deploy #1 done", done - demo.started)
    demo.wait_answer("webapp.local", "Simple test webapp")
    checks.check(True, "webapp.local answers through the published port")
    return demo


def main(scenarios):
    if len(sys.argv) != 4 or sys.argv[3] not in scenarios:
        raise SystemExit(f"usage: {sys.argv[0]} docker|podman STATE SCENARIO\nscenarios: {', '.join(scenarios)}")
    name, state, scenario = sys.argv[1:]
    engine = Engine(name, state)
    checks = Checks(engine, scenario)
    print(f"{name}: {scenario}", flush=True)
    status = 0
    try:
        scenarios[scenario](engine, checks)
        if checks.passed == 0:
            print("FAILED: the scenario passed no check", flush=True)
            status = 1
    except Exception as e:  # noqa: BLE001 - every failure prints the containers' logs
        status = 1
        print(f"FAILED: {e}", flush=True)
        if not isinstance(e, Failed):
            traceback.print_exc()
        for container in checks.containers:
            print(f"---- log of {container.name} ----\n{container.text()}\n---- end of log ----", flush=True)
    finally:
        for container in checks.containers:
            container.remove()
    if status == 0:
        print(f"{name}: {scenario}: {checks.passed} checks passed", flush=True)
    sys.exit(status)
