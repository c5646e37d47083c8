#!/usr/bin/env python3
"""The container engines the container tests run under, each kept apart from the host's own:

    docker   dockerd started here, with its own socket, exec root and data root
             (--iptables=false --ip6tables=false: it leaves the host's firewall alone; a bridge
             of its own, not docker0, which a dockerd of the host may own)
    podman   its own containers.conf (runtime runc: crun fails on this host's hybrid cgroups; the
             ulimits root may set here) and storage.conf (its own graph and run roots)

The images and the engines' storage are kept between runs in NIXPROC_IMAGE_CACHE's parent
(default /var/cache/nixproc-init), so that only a changed source rebuilds an image.

As a program it is the ctest fixture of the container tests (tests/container/CMakeLists.txt):

    engine.py start ENGINE STATE     start the engine (docker: dockerd, ready in a few seconds)
    engine.py images ENGINE STATE    packaging/docker/build-images.sh ENGINE against it
    engine.py stop ENGINE STATE      stop it (docker: dockerd and its containerd)

STATE is a folder of the build tree for the engine's sockets, configuration and log. The tests
import it: Engine(name, state).command(...) is the engine's argv, Engine.env its environment.
"""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.dirname(os.environ.get("NIXPROC_IMAGE_CACHE", "/var/cache/nixproc-init/images"))
# The clients that come with the engines Debian installs (docker.io's docker speaks the API of its
# dockerd; another docker client earlier on PATH may default to BuildKit, which needs buildx).
DOCKER = "/usr/bin/docker"
PODMAN = "/usr/bin/podman"
DOCKERD_READY_S = 60


def log(message):
    print(f"engine.py: {message}", file=sys.stderr, flush=True)


def dockerd_using(data_root):
    """The pid of a running dockerd whose --data-root is DATA_ROOT, or None (two would corrupt it)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == "dockerd" and "--data-root" in argv:
            i = argv.index("--data-root")
            if i + 1 < len(argv) and os.path.realpath(argv[i + 1]) == os.path.realpath(data_root):
                return int(pid)
    return None


class Engine:
    def __init__(self, name, state):
        if name not in ("docker", "podman"):
            raise SystemExit(f"engine.py: unknown engine '{name}' (docker or podman)")
        self.name = name
        self.state = os.path.abspath(state)
        self.run_dir = f"/run/nixproc-test-{name}-{hashlib.sha256(self.state.encode()).hexdigest()[:12]}"
        self.env = dict(os.environ)
        self.env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin:" + self.env.get("PATH", "")
        if name == "docker":
            # A unix socket path must fit in 108 bytes: the exec root (containerd's sockets) and the
            # API socket live in /run, named after the state folder so that two trees differ.
            self.socket = os.path.join(self.run_dir, "docker.sock")
            self.env["DOCKER_HOST"] = f"unix://{self.socket}"
            self.env.pop("DOCKER_CONTEXT", None)
            self.env["DOCKER_CONFIG"] = os.path.join(self.state, "client")
        else:
            self.env["CONTAINERS_CONF"] = os.path.join(self.state, "containers.conf")
            self.env["CONTAINERS_STORAGE_CONF"] = os.path.join(self.state, "storage.conf")
            self.env["CONTAINERS_REGISTRIES_CONF"] = os.path.join(self.state, "registries.conf")

    def command(self, *args):
        """The engine's argv for `ENGINE ARGS...`."""
        return [DOCKER if self.name == "docker" else PODMAN, *args]

    def run(self, *args, check=True, timeout=120, input=None):
        """Runs `ENGINE ARGS...` to its end; returns the CompletedProcess (text, both outputs)."""
        result = subprocess.run(self.command(*args), env=self.env, capture_output=True, text=True,
                                timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}")
        return result

    # -- the fixture ---------------------------------------------------------------------------

    def start(self):
        os.makedirs(self.state, exist_ok=True)
        if self.name == "docker":
            self._start_dockerd()
        else:
            self._write_podman_conf()
        info = self.run("info", timeout=60)
        log(f"{self.name} is ready: {info.stdout.count(chr(10))} lines of `{self.name} info`")

    def _start_dockerd(self):
        self._stop_dockerd()  # one left by an earlier run that was killed
        data_root = os.path.join(CACHE, "docker")
        os.makedirs(data_root, exist_ok=True)
        other = dockerd_using(data_root)
        if other:
            raise SystemExit(f"engine.py: dockerd (pid {other}) of another tree or run already uses {data_root}: "
                             "stop it first, or give this run another NIXPROC_IMAGE_CACHE")
        os.makedirs(self.run_dir, exist_ok=True)
        log_path = os.path.join(self.state, "dockerd.log")
        argv = ["dockerd", "--data-root", data_root, "--exec-root", os.path.join(self.run_dir, "exec"),
                "--pidfile", os.path.join(self.run_dir, "dockerd.pid"), "-H", f"unix://{self.socket}",
                "--iptables=false", "--ip6tables=false", "--bridge", self._make_bridge()]
        with open(log_path, "w") as out:
            dockerd = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                       start_new_session=True)
        started = time.monotonic()
        while True:
            if dockerd.poll() is not None:
                raise SystemExit(f"engine.py: dockerd exited with status {dockerd.returncode}:\n{open(log_path).read()[-4000:]}")
            if os.path.exists(self.socket) and self.run("version", check=False, timeout=10).returncode == 0:
                break
            if time.monotonic() - started > DOCKERD_READY_S:
                raise SystemExit(f"engine.py: dockerd did not answer in {DOCKERD_READY_S} s:\n{open(log_path).read()[-4000:]}")
            time.sleep(0.2)
        log(f"dockerd (pid {dockerd.pid}) answers on {self.socket} after {time.monotonic() - started:.1f} s")

    def _bridge_name(self):
        return "nxp" + self.run_dir.rsplit("-", 1)[1][:12]  # at most 15 characters, as Linux wants

    def _make_bridge(self):
        """A bridge of this dockerd's own (not docker0, which a dockerd of the host may own), with a
        /24 of 10.200-249.x.0 picked by the state folder; published ports reach it through
        docker-proxy on the host, nothing is routed further (--iptables=false)."""
        name = self._bridge_name()
        h = bytes.fromhex(self.run_dir.rsplit("-", 1)[1][:4])
        address = f"10.{200 + h[0] % 50}.{h[1]}.1/24"
        if subprocess.run(["ip", "link", "show", name], capture_output=True).returncode != 0:
            for argv in (["ip", "link", "add", "name", name, "type", "bridge"],
                         ["ip", "addr", "add", address, "dev", name], ["ip", "link", "set", name, "up"]):
                result = subprocess.run(argv, capture_output=True, text=True)
                if result.returncode != 0:
                    raise SystemExit(f"engine.py: {' '.join(argv)}: {result.stderr.strip()}")
        return name

    def _stop_dockerd(self):
        pidfile = os.path.join(self.run_dir, "dockerd.pid")
        try:
            pid = int(open(pidfile).read().strip())
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except (OSError, ValueError):
            pid, cmdline = None, []
        if not cmdline or os.path.basename(cmdline[0]) != b"dockerd":
            self._remove_bridge_and_run_dir()
            return
        # The containers first, so that dockerd's own shutdown has nothing to wait for.
        names = self.run("ps", "-aq", check=False, timeout=30).stdout.split()
        if names:
            self.run("rm", "-f", *names, check=False, timeout=120)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.1)
        if os.path.exists(f"/proc/{pid}"):
            log(f"dockerd (pid {pid}) still runs 30 s after SIGTERM: SIGKILL")
            os.kill(pid, signal.SIGKILL)
        log(f"dockerd (pid {pid}) stopped")
        self._remove_bridge_and_run_dir()

    def _remove_bridge_and_run_dir(self):
        subprocess.run(["ip", "link", "del", self._bridge_name()], capture_output=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _write_podman_conf(self):
        storage = os.path.join(CACHE, "podman")
        os.makedirs(storage, exist_ok=True)
        # What build-images.sh and demo.sh pass (packaging/docker/podman-limits.sh says why).
        flags = subprocess.run([os.path.join(SOURCE_DIR, "packaging/docker/podman-limits.sh")],
                               capture_output=True, text=True, check=True).stdout.split()
        ulimits = ", ".join(f'"{value}"' for option, value in zip(flags[::2], flags[1::2]) if option == "--ulimit")
        with open(self.env["CONTAINERS_CONF"], "w") as f:
            f.write('[containers]\n'
                    f'default_ulimits = [{ulimits}]\n'
                    '[engine]\n'
                    '# crun fails on this host\'s hybrid cgroups (v1 + unified)\n'
                    'runtime = "runc"\n'
                    f'[network]\nnetwork_config_dir = "{os.path.join(self.state, "networks")}"\n')
        with open(self.env["CONTAINERS_STORAGE_CONF"], "w") as f:
            f.write(f'[storage]\ndriver = "overlay"\ngraphroot = "{os.path.join(storage, "graph")}"\n'
                    f'runroot = "{self.run_dir}"\n')
        # No registry: a name that is not local must fail, not be looked up on docker.io.
        with open(self.env["CONTAINERS_REGISTRIES_CONF"], "w") as f:
            f.write('unqualified-search-registries = []\nshort-name-mode = "permissive"\n')

    def stop(self):
        if self.name == "docker":
            self._stop_dockerd()
        else:
            names = self.run("ps", "-aq", check=False, timeout=30).stdout.split()
            if names:
                self.run("rm", "-f", *names, check=False, timeout=120)
            # Its run root is volatile state, as /run is after a reboot: nothing of it is left on
            # the host once no container runs (its storage stays in the cache).
            if not any(os.path.ismount(os.path.join(root, d)) for root, dirs, _ in os.walk(self.run_dir) for d in dirs):
                shutil.rmtree(self.run_dir, ignore_errors=True)

    def build_images(self):
        started = time.monotonic()
        result = subprocess.run([os.path.join(SOURCE_DIR, "packaging/docker/build-images.sh"), self.name],
                                env=self.env)
        if result.returncode != 0:
            raise SystemExit(f"engine.py: build-images.sh {self.name} failed with status {result.returncode}")
        log(f"images built for {self.name} in {time.monotonic() - started:.0f} s")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("start", "images", "stop"):
        raise SystemExit(__doc__)
    action, name, state = sys.argv[1:]
    engine = Engine(name, state)
    {"start": engine.start, "images": engine.build_images, "stop": engine.stop}[action]()


if __name__ == "__main__":
    main()
