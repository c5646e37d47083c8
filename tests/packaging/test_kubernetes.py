#!/usr/bin/env python3
"""packaging/kubernetes/ read as Kubernetes would read it, and held against what it must agree with
(no cluster runs here):

    test_kubernetes.py --init NIXPROC_INIT [--source-dir DIR] manifest
        the manifest's checks, against the repository (or a copy of it in DIR)
    test_kubernetes.py --init NIXPROC_INIT [--source-dir DIR] broken-copies
        each check fails on a copy broken the way it guards against

What the init does with the manifest's configuration is asked of the init itself: the ConfigMap's
init.yaml, with the container's environment and arguments, goes through `nixproc-init
--check-config`, whose output gives the grace, the state folder, the control socket and the model
as the init would use them in the pod.
"""
import argparse
import copy
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # Debian's python3-yaml is /usr/bin/python3's; CMake may have found another python3
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3", *sys.argv])
    raise

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANIFEST = "packaging/kubernetes/nixproc-demo.yaml"
KUSTOMIZATION = "packaging/kubernetes/kustomization.yaml"
DOCKERFILE = "packaging/docker/Dockerfile"
BUILD_IMAGES = "packaging/docker/build-images.sh"
# Liveness must not restart a container whose node is only busy (a Nix build in it): at least this
# long of consecutive misses, each allowed this long.
LIVENESS_TOLERANCE_S = 30
PROBE_TIMEOUT_MIN_S = 2
# The kubelet's SIGKILL at least this long after the init's own (Docker's 10 s against 8 s).
GRACE_MARGIN_S = 2


class Failed(Exception):
    pass


class Sources:
    """What the checks read, loaded once; a broken copy is a Sources changed in memory."""

    def __init__(self, source_dir, init):
        self.source_dir = source_dir
        self.init = init

        def read(path):
            with open(os.path.join(source_dir, path), encoding="utf-8") as f:
                return f.read()

        self.read = read
        self.manifest_text = read(MANIFEST)
        self.docs = [d for d in yaml.safe_load_all(self.manifest_text) if d is not None]
        self.kustomization = yaml.safe_load(read(KUSTOMIZATION))
        self.dockerfile = read(DOCKERFILE)
        self.build_images = read(BUILD_IMAGES)
        self.cmakelists = read("CMakeLists.txt")
        spec = importlib.util.spec_from_file_location(
            "sync_configmap", os.path.join(source_dir, "packaging/kubernetes/sync-configmap.py"))
        self.sync = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.sync)

    def one(self, kind):
        found = [d for d in self.docs if d.get("kind") == kind]
        if len(found) != 1:
            raise Failed(f"{MANIFEST} has {len(found)} {kind} documents, not one")
        return found[0]

    def pod(self):
        return self.one("Deployment")["spec"]["template"]["spec"]

    def container(self):
        containers = self.pod()["containers"]
        if len(containers) != 1:
            raise Failed(f"the Deployment's pod has {len(containers)} containers, not one")
        return containers[0]

    def effective_config(self):
        """`nixproc-init --check-config` on the ConfigMap's init.yaml with the container's
        environment and arguments: the configuration as the init in the pod reads it."""
        container = self.container()
        if "command" in container:
            raise Failed(f"the container replaces the image's ENTRYPOINT (command: {container['command']}): nixproc-init must stay PID 1")
        data = self.one("ConfigMap").get("data", {})
        if "init.yaml" not in data:
            raise Failed("the ConfigMap has no init.yaml: the image's /etc/nixproc/init.yaml is hidden by the mount, "
                         "and the init would start as a plain init")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        for variable in container.get("env", []):
            if "value" not in variable:
                raise Failed(f"environment variable {variable.get('name')} has no literal value: the test cannot know it")
            env[variable["name"]] = str(variable["value"])
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "init.yaml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(data["init.yaml"])
            argv = [self.init, "-c", path, "--check-config", *map(str, container.get("args", []))]
            result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise Failed(f"{shlex.join(argv)} refused the pod's configuration (exit {result.returncode}): {result.stderr.strip()}")
        return yaml.safe_load(result.stdout)


# -- the checks ------------------------------------------------------------------------------------
# Each takes the Sources, raises Failed with what is wrong, or returns what it found.

def dockerfile_stages(text):
    """{stage name: [instruction lines]}, continuation lines joined."""
    stages, current = {}, None
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = match.group(1)
            stages[current] = []
        elif current:
            stages[current].append(line)
    return stages


def initctl_path(s, stage="demo"):
    """Where the Dockerfile's STAGE installs nixproc-initctl."""
    stages = dockerfile_stages(s.dockerfile)
    if stage not in stages:
        raise Failed(f"{DOCKERFILE} has no stage '{stage}'")
    for line in stages[stage]:
        words = line.split()
        if words[0].upper() == "COPY" and any(w.startswith("--from=") for w in words):
            paths = [w for w in words[1:] if not w.startswith("--")]
            sources, destination = paths[:-1], paths[-1]
            for source in sources:
                if os.path.basename(source) == "nixproc-initctl":
                    return destination + "nixproc-initctl" if destination.endswith("/") else destination
    raise Failed(f"{DOCKERFILE}: stage '{stage}' does not copy nixproc-initctl from the build stage")


def check_probes(s):
    path = initctl_path(s)
    container = s.container()
    wanted = {"readinessProbe": [path, "health", "--ready"], "livenessProbe": [path, "health", "--live"]}
    for probe, argv in wanted.items():
        got = container.get(probe, {}).get("exec", {}).get("command")
        if got != argv:
            raise Failed(f"the {probe} runs {got}, not {argv} (nixproc-initctl where {DOCKERFILE} installs it)")
    # The image's own HEALTHCHECK is the readiness probe, so that the container tests, which run
    # the image's HEALTHCHECK, exercise the same command.
    healthchecks = [l for l in dockerfile_stages(s.dockerfile)["demo"] if l.upper().startswith("HEALTHCHECK")]
    if len(healthchecks) != 1 or not _healthcheck_is(healthchecks[0], wanted["readinessProbe"]):
        raise Failed(f"{DOCKERFILE}'s demo stage has HEALTHCHECK {healthchecks}, not CMD {wanted['readinessProbe']}")
    return f"readiness {wanted['readinessProbe']}, liveness {wanted['livenessProbe']}, the image's HEALTHCHECK the readiness command"


def _healthcheck_is(line, argv):
    match = re.search(r"\bCMD\s+(\[.*\])\s*$", line)
    return bool(match) and yaml.safe_load(match.group(1)) == argv


def check_probe_timing(s):
    container = s.container()
    if any("--ready" in (container.get(p, {}).get("exec", {}).get("command") or []) for p in ("livenessProbe", "startupProbe")):
        raise Failed("a liveness or startup probe asks for readiness: a long first deployment would get the container killed")
    live, ready = container["livenessProbe"], container["readinessProbe"]
    tolerance = live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
    if tolerance < LIVENESS_TOLERANCE_S:
        raise Failed(f"liveness restarts after {tolerance} s of misses, under {LIVENESS_TOLERANCE_S} s: a busy node would restart it")
    for name, probe in (("liveness", live), ("readiness", ready)):
        if probe.get("timeoutSeconds", 1) < PROBE_TIMEOUT_MIN_S:
            raise Failed(f"the {name} probe's timeout is {probe.get('timeoutSeconds', 1)} s, under {PROBE_TIMEOUT_MIN_S} s")
    return f"liveness restarts after {tolerance} s of misses; timeouts {live.get('timeoutSeconds')} s and {ready.get('timeoutSeconds')} s"


def check_grace(s):
    config = s.effective_config()
    grace = float(config["shutdown"]["grace_s"])
    period = s.pod().get("terminationGracePeriodSeconds")
    if period is None or period < grace + GRACE_MARGIN_S:
        raise Failed(f"terminationGracePeriodSeconds is {period}: the init's shutdown.grace_s in the pod is {grace:g} s "
                     f"(nixproc-init --check-config), and the kubelet's SIGKILL must come at least {GRACE_MARGIN_S} s later")
    return f"terminationGracePeriodSeconds {period} > the init's grace {grace:g} s"


def check_configmap(s):
    configmap = s.one("ConfigMap")
    data = configmap.get("data", {})
    files = s.sync.FILES
    if sorted(data) != sorted(files):
        raise Failed(f"the ConfigMap holds {sorted(data)}, not {sorted(files)}")
    for key, path in files.items():
        if data[key] != s.read(path):
            raise Failed(f"the ConfigMap's {key} differs from {path} (run packaging/kubernetes/sync-configmap.py)")
    diff = s.sync.stale(os.path.join(s.source_dir, MANIFEST), s.source_dir)
    if diff:
        raise Failed(f"the ConfigMap's text is not what sync-configmap.py writes:\n{diff}")
    return f"{', '.join(files)} equal {', '.join(files.values())}"


def mounts_by_path(s, container):
    volumes = {v["name"]: v for v in s.pod().get("volumes", [])}
    out = {}
    for mount in container.get("volumeMounts", []):
        if mount["name"] not in volumes:
            raise Failed(f"the mount {mount['mountPath']} names volume '{mount['name']}', which the pod does not have")
        out[mount["mountPath"].rstrip("/") or "/"] = (mount, volumes[mount["name"]])
    return out


def covering(mounts, path):
    """The mount whose folder holds PATH (the deepest), or None."""
    best = None
    for mount_path, entry in mounts.items():
        if path == mount_path or path.startswith(mount_path + "/"):
            if best is None or len(mount_path) > len(best[0]):
                best = (mount_path, entry)
    return best


def check_volumes(s):
    config = s.effective_config()
    container = s.container()
    mounts = mounts_by_path(s, container)
    configmap = s.one("ConfigMap")["metadata"]["name"]

    model_folder = os.path.dirname(config["processes"])
    found = covering(mounts, model_folder)
    if not found or found[0] != model_folder or found[1][1].get("configMap", {}).get("name") != configmap:
        raise Failed(f"the model's folder {model_folder} is not the ConfigMap {configmap} mounted there (found {found and found[0]})")
    # The ConfigMap's folder is 1777 but read-only, which the init's trust check accepts as it is.
    if config["deploy"]["allow_insecure_model"]:
        raise Failed("the pod's configuration sets deploy.allow_insecure_model: the ConfigMap's read-only folder needs no such "
                     "override, and it would let a writable model folder through")

    kept = {}
    for what, path in (("the state folder", config["state_dir"]), ("the Nix store and profiles", "/nix"),
                       ("the profile", config["profile"]),
                       ("supervisord's conf.d", os.path.join(os.path.dirname(config["manager"]["config"]), "conf.d"))):
        found = covering(mounts, path)
        if not found:
            raise Failed(f"{what} ({path}) is on no volume: lost at every container restart")
        mount, volume = found[1]
        if "emptyDir" not in volume and "persistentVolumeClaim" not in volume:
            raise Failed(f"{what} ({path}) is on volume '{volume['name']}', which is neither an emptyDir nor a claim")
        kept[what] = volume["name"]
    if len(set(kept.values())) != 1:
        raise Failed(f"what a deployment leaves is on different volumes, not kept and lost together: {kept}")

    socket = config.get("control", {}).get("socket")
    if not socket:
        raise Failed("the init in the pod has no control socket (control.socket), which the probes need")
    found = covering(mounts, os.path.dirname(socket))
    if not found or found[1][1].get("emptyDir", {}).get("medium") != "Memory":
        raise Failed(f"the control socket's folder {os.path.dirname(socket)} is not on an emptyDir in memory (found {found and found[0]})")

    # The kubelet makes emptyDir folders and subPaths 0777: the init container makes them first.
    init_containers = s.pod().get("initContainers", [])
    script = " ".join(" ".join(map(str, c.get("command", []) + c.get("args", []))) for c in init_containers)
    init_mounts = {m["name"]: m["mountPath"].rstrip("/") for c in init_containers for m in c.get("volumeMounts", [])}
    for mount_path, (mount, volume) in mounts.items():
        if "emptyDir" not in volume:
            continue
        if volume["name"] not in init_mounts:
            raise Failed(f"{mount_path} is an emptyDir (mode 0777) that no init container gives its mode")
        folder = init_mounts[volume["name"]] + ("/" + mount["subPath"] if mount.get("subPath") else "")
        if not re.search(r"chmod\s+0?7[0-5][0-5]\s+(\S+\s+)*?" + re.escape(folder) + r"(\s|$)", script):
            raise Failed(f"no init container chmods {folder} (mounted at {mount_path}) to a mode without group or other write")
    return (f"{model_folder} is the ConfigMap; {', '.join(kept)} on volume '{next(iter(kept.values()))}'; "
            f"{os.path.dirname(socket)} in memory; each emptyDir folder's mode set by an init container")


def check_image(s):
    match = re.search(r"^project\(nixproc-init VERSION ([0-9.]+)", s.cmakelists, re.MULTILINE)
    if not match:
        raise Failed("CMakeLists.txt has no project(nixproc-init VERSION ...)")
    if "for target in init demo" not in s.build_images or '--tag "nixproc-$target:$version"' not in s.build_images:
        raise Failed(f"{BUILD_IMAGES} no longer tags nixproc-demo:$version as this test expects")
    image = f"nixproc-demo:{match.group(1)}"
    pod = s.pod()
    for container in pod.get("initContainers", []) + pod["containers"]:
        if container.get("image") != image:
            raise Failed(f"container {container.get('name')} runs {container.get('image')}, not {image} as {BUILD_IMAGES} tags it")
        if container.get("imagePullPolicy") != "IfNotPresent":
            raise Failed(f"container {container.get('name')} has imagePullPolicy {container.get('imagePullPolicy')}, "
                         "not IfNotPresent (the image is loaded onto the node, from no registry)")
    return f"{image}, IfNotPresent"


def check_workload(s):
    deployment, service = s.one("Deployment"), s.one("Service")
    if deployment["spec"].get("replicas") != 1:
        raise Failed(f"the Deployment has {deployment['spec'].get('replicas')} replicas, not 1")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for what, selector in (("the Deployment's", deployment["spec"]["selector"]["matchLabels"]), ("the Service's", service["spec"]["selector"])):
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            raise Failed(f"{what} selector {selector} does not select the pod's labels {labels}")
    ports = {p.get("name"): p["containerPort"] for p in s.container().get("ports", [])}
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        if port["port"] == 8080 and (ports.get(target) if isinstance(target, str) else target) == 8080:
            break
    else:
        raise Failed(f"the Service has no port 8080 reaching the container's 8080 (its ports {service['spec']['ports']}, the container's {ports})")
    resources = s.kustomization.get("resources", [])
    if "nixproc-demo.yaml" not in resources:
        raise Failed(f"{KUSTOMIZATION} does not list nixproc-demo.yaml (it lists {resources})")
    return "1 replica, selectors match, Service 8080 → 8080, kustomization lists the manifest"


CHECKS = [
    ("the probes run nixproc-initctl health --ready and --live where the Dockerfile installs it, as its HEALTHCHECK does", check_probes),
    ("liveness never asks for readiness and tolerates a busy node", check_probe_timing),
    ("terminationGracePeriodSeconds is above the init's grace in the pod", check_grace),
    ("the ConfigMap holds the demo's files, as sync-configmap.py writes them", check_configmap),
    ("the mounts cover the model (trusted as it is), the state folder, /nix, the profile, conf.d and the socket's folder", check_volumes),
    ("the image is the one build-images.sh tags, pulled only if not present", check_image),
    ("one replica, the Service reaches port 8080, the kustomization lists the manifest", check_workload),
]


def run_checks(s, quiet=False):
    """[(sentence, None or why it failed)] for every check."""
    out = []
    for sentence, check in CHECKS:
        try:
            found = check(s)
            out.append((sentence, None))
            if not quiet:
                print(f"  ok {len(out)}: {sentence}: {found}", flush=True)
        except (Failed, KeyError, TypeError, AttributeError) as e:
            why = str(e) if isinstance(e, Failed) else f"{type(e).__name__}: {e}"
            out.append((sentence, why))
            if not quiet:
                print(f"  FAILED: {sentence}: {why}", flush=True)
    return out


# -- broken copies ----------------------------------------------------------------------------------

def probe(s, name):
    return s.container()[name]["exec"]["command"]


def set_env(s, name, value):
    s.container().setdefault("env", []).append({"name": name, "value": value})


def drop_mount(s, path):
    s.container()["volumeMounts"] = [m for m in s.container()["volumeMounts"] if m["mountPath"] != path]


def edit_configmap(s, key, edit):
    data = s.one("ConfigMap")["data"]
    data[key] = edit(data[key])


# (what is broken, how, a word the failure must say)
BROKEN = [
    ("readiness asks for liveness", lambda s: probe(s, "readinessProbe").__setitem__(2, "--live"), "readinessProbe"),
    ("liveness asks for readiness", lambda s: probe(s, "livenessProbe").__setitem__(2, "--ready"), "readiness"),
    ("the probes run a client where the image has none", lambda s: probe(s, "readinessProbe").__setitem__(0, "/usr/bin/nixproc-initctl"), "readinessProbe"),
    ("the Dockerfile installs the client elsewhere",
     lambda s: setattr(s, "dockerfile", s.dockerfile.replace("/build/daemon/nixproc-initctl /usr/sbin/", "/build/daemon/nixproc-initctl /usr/local/sbin/")), "readinessProbe"),
    ("the Dockerfile's HEALTHCHECK runs --live",
     lambda s: setattr(s, "dockerfile", s.dockerfile.replace('"health", "--ready"]', '"health", "--live"]')), "HEALTHCHECK"),
    ("liveness gives up after 3 s", lambda s: s.container()["livenessProbe"].update(periodSeconds=1, failureThreshold=3), "busy node"),
    ("a startup probe asks for readiness", lambda s: s.container().__setitem__("startupProbe", {"exec": {"command": ["/usr/sbin/nixproc-initctl", "health", "--ready"]}}), "startup"),
    ("terminationGracePeriodSeconds equals the grace", lambda s: s.pod().__setitem__("terminationGracePeriodSeconds", 8), "terminationGracePeriodSeconds is 8"),
    ("terminationGracePeriodSeconds left at nothing", lambda s: s.pod().pop("terminationGracePeriodSeconds"), "terminationGracePeriodSeconds is None"),
    ("the ConfigMap's init.yaml sets a grace of 40 s",
     lambda s: edit_configmap(s, "init.yaml", lambda t: t + "shutdown:\n  grace_s: 40\n"), "grace_s in the pod is 40"),
    ("the container's environment sets a grace of 60 s", lambda s: set_env(s, "NIXPROC_INIT_SHUTDOWN_GRACE_S", "60"), "grace_s in the pod is 60"),
    ("the container's arguments set a grace of 45 s", lambda s: s.container().__setitem__("args", ["--grace", "45"]), "grace_s in the pod is 45"),
    ("the container replaces the ENTRYPOINT", lambda s: s.container().__setitem__("command", ["/bin/sh"]), "ENTRYPOINT"),
    ("the ConfigMap's processes.nix differs from the demo's",
     lambda s: edit_configmap(s, "processes.nix", lambda t: t.replace("webapp.local", "webapp.example")), "processes.nix differs"),
    ("the ConfigMap lacks ids.nix", lambda s: s.one("ConfigMap")["data"].pop("ids.nix"), "ConfigMap holds"),
    ("the ConfigMap lacks init.yaml", lambda s: s.one("ConfigMap")["data"].pop("init.yaml"), "plain init"),
    ("the manifest's text is not the generator's", lambda s: setattr(s, "source_dir", _stale_copy(s)), "sync-configmap.py writes"),
    ("/etc/nixproc is not mounted", lambda s: drop_mount(s, "/etc/nixproc"), "/etc/nixproc"),
    ("the state folder is not mounted", lambda s: drop_mount(s, "/var/lib/nixproc-init"), "state folder"),
    ("/nix is not mounted", lambda s: drop_mount(s, "/nix"), "/nix"),
    ("conf.d is not mounted", lambda s: drop_mount(s, "/etc/supervisor/conf.d"), "conf.d"),
    ("the state folder has a volume of its own",
     lambda s: (s.pod()["volumes"].append({"name": "state", "emptyDir": {}}),
                next(m for m in s.container()["volumeMounts"] if m["mountPath"] == "/var/lib/nixproc-init").update(name="state", subPath=None)),
     "different volumes"),
    ("the trust check is turned off", lambda s: set_env(s, "NIXPROC_INIT_DEPLOY_ALLOW_INSECURE_MODEL", "true"), "allow_insecure_model"),
    ("the control socket is moved out of its volume", lambda s: set_env(s, "NIXPROC_INIT_CONTROL_SOCKET", "/var/run/initctl.sock"), "control socket"),
    ("the control socket is turned off", lambda s: set_env(s, "NIXPROC_INIT_CONTROL_SOCKET", ""), "no control socket"),
    ("the control volume is on disk", lambda s: next(v for v in s.pod()["volumes"] if v["name"] == "control").__setitem__("emptyDir", {}), "in memory"),
    ("the init container leaves the state folder 0777",
     lambda s: s.pod()["initContainers"][0].__setitem__("command", [a.replace("/deployed/nixproc-init /control", "/control") for a in s.pod()["initContainers"][0]["command"]]),
     "nixproc-init"),
    ("no init container", lambda s: s.pod().pop("initContainers"), "no init container"),
    ("the image is tagged 0.0.9", lambda s: s.container().__setitem__("image", "nixproc-demo:0.0.9"), "nixproc-demo:0.0.9"),
    ("the image is :latest", lambda s: s.container().__setitem__("image", "nixproc-demo:latest"), "nixproc-demo:latest"),
    ("the image is pulled always", lambda s: s.container().__setitem__("imagePullPolicy", "Always"), "IfNotPresent"),
    ("two replicas", lambda s: s.one("Deployment")["spec"].__setitem__("replicas", 2), "replicas"),
    ("the Service targets port 80", lambda s: s.one("Service")["spec"]["ports"][0].__setitem__("targetPort", 80), "8080"),
    ("the Service selects another app", lambda s: s.one("Service")["spec"].__setitem__("selector", {"app": "other"}), "Service's selector"),
    ("the kustomization lists nothing", lambda s: s.kustomization.__setitem__("resources", []), "kustomization"),
]

_stale_dirs = []


def _stale_copy(s):
    """A source folder whose manifest has the ConfigMap's text edited (a comment in a value)."""
    folder = tempfile.mkdtemp(prefix="k8s-stale-")
    _stale_dirs.append(folder)
    for path in [MANIFEST, "packaging/kubernetes/sync-configmap.py", *s.sync.FILES.values()]:
        os.makedirs(os.path.dirname(os.path.join(folder, path)), exist_ok=True)
        text = s.read(path)
        if path == MANIFEST:
            text = text.replace("  processes.nix: |\n", "  processes.nix: |\n    # edited by hand\n", 1)
        with open(os.path.join(folder, path), "w", encoding="utf-8") as f:
            f.write(text)
    return folder


def broken_copies(source_dir, init):
    pristine = Sources(source_dir, init)
    failures = [r for r in run_checks(pristine, quiet=True) if r[1]]
    if failures:
        raise SystemExit(f"the manifest's own checks fail, so broken copies prove nothing: {failures}")
    missed = 0
    for what, breaking, word in BROKEN:
        s = copy.copy(pristine)
        s.docs, s.kustomization = copy.deepcopy(pristine.docs), copy.deepcopy(pristine.kustomization)
        breaking(s)
        failed = [(sentence, why) for sentence, why in run_checks(s, quiet=True) if why]
        said = [why for _, why in failed if word in why]
        if said:
            print(f"  ok: {what}: caught: {said[0].splitlines()[0]}", flush=True)
        else:
            missed += 1
            print(f"  MISSED: {what}: no check said '{word}' (failures: {failed or 'none'})", flush=True)
    for folder in _stale_dirs:
        subprocess.run(["rm", "-rf", folder], check=False)
    return missed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--init", required=True, help="the nixproc-init binary (for --check-config)")
    parser.add_argument("--source-dir", default=SOURCE_DIR)
    parser.add_argument("mode", choices=["manifest", "broken-copies"])
    args = parser.parse_args()
    if args.mode == "manifest":
        results = run_checks(Sources(args.source_dir, args.init))
        failed = sum(1 for _, why in results if why)
        print(f"{len(results) - failed} passed, {failed} failed", flush=True)
        sys.exit(1 if failed else 0)
    missed = broken_copies(args.source_dir, args.init)
    print(f"{len(BROKEN) - missed} broken copies caught, {missed} missed", flush=True)
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
