#!/usr/bin/env python3
"""Health as the engines and Kubernetes ask it: the image's HEALTHCHECK and the probe commands of
packaging/kubernetes/nixproc-demo.yaml, read from the manifest and run in the demo image.
   test_health.py ENGINE STATE SCENARIO

docker runs the image's HEALTHCHECK itself, here every HEALTH_INTERVAL_S (--health-interval; the
image's command, timeout, start period and retries stay). podman would run it from a systemd
timer, which a machine without systemd as PID 1 does not have: the test runs `podman healthcheck
run` itself, once per interval, as the timer would. podman takes no --health-* option without
--health-cmd (it keeps the image's check whole), so it gets the image's command and retries again
with --health-interval=disable (no timer) and a start period of PODMAN_START_PERIOD_S: podman
ignores every failed check within the start period, even after a success (docker counts them from
the first success on), and with the image's 120 s a broken edit in the first two minutes would
never read unhealthy.
"""
import json
import os
import re
import sys
import time

try:
    import yaml
except ImportError:  # Debian's python3-yaml is /usr/bin/python3's; CMake may have found another python3
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3", *sys.argv])
    raise

import containers
from containers import DEMO_IMAGE, FIRST_DEPLOYMENT_S, Container, Failed
from engine import SOURCE_DIR

MANIFEST = os.path.join(SOURCE_DIR, "packaging/kubernetes/nixproc-demo.yaml")
WEBAPP2_MODEL = os.path.join(SOURCE_DIR, "packaging/demo/processes-with-webapp2.nix")
HEALTH_INTERVAL_S = 2
PODMAN_START_PERIOD_S = 5
RETRIES = 3  # the image's --retries


def manifest():
    """(readiness argv, liveness argv, [(name, value)] environment, {key: text} ConfigMap data) of
    the manifest's Deployment, as the kubelet would read them."""
    with open(MANIFEST, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = [(e["name"], str(e["value"])) for e in container.get("env", [])]
    return (container["readinessProbe"]["exec"]["command"], container["livenessProbe"]["exec"]["command"],
            env, configmap["data"])


def image_healthcheck(engine):
    """The demo image's HEALTHCHECK: {"Test": [...], "Interval": ns, "Timeout": ns, ...}."""
    template = "{{json .Config.Healthcheck}}" if engine.name == "docker" else "{{json .HealthCheck}}"
    return json.loads(engine.run("image", "inspect", "--format", template, DEMO_IMAGE).stdout or "null") or {}


def health_run_args(engine):
    if engine.name == "docker":
        return ["--health-interval", f"{HEALTH_INTERVAL_S}s"]
    image = image_healthcheck(engine)
    test = image.get("Test") or []
    if test[:1] != ["CMD"]:
        raise Failed(f"the image's HEALTHCHECK is not an exec form CMD: {image}")
    return ["--health-cmd", json.dumps(test[1:]), "--health-interval", "disable",
            "--health-timeout", f"{image['Timeout'] // 10**9}s", "--health-retries", str(image["Retries"]),
            "--health-start-period", f"{PODMAN_START_PERIOD_S}s"]


def health(demo):
    """The engine's health record: {"Status": ..., "FailingStreak": ..., "Log": [...]}."""
    return json.loads(demo.inspect("{{json .State.Health}}") or "null") or {}


def wait_health(engine, demo, wanted, timeout):
    """Waits until the engine says WANTED (healthy, unhealthy); for podman, runs the check once per
    interval as its timer would. Returns the health record. Ends early when the container stops."""
    deadline = time.monotonic() + timeout
    while True:
        if engine.name == "podman":
            engine.run("healthcheck", "run", demo.name, check=False, timeout=30)
        record = health(demo)
        if record.get("Status") == wanted:
            return record
        if not demo.running():
            raise Failed(f"waiting for health '{wanted}': the container stopped")
        if time.monotonic() > deadline:
            raise Failed(f"health is not '{wanted}' within {timeout} s: {json.dumps(record)[-1500:]}")
        time.sleep(HEALTH_INTERVAL_S if engine.name == "podman" else 0.2)


def one_line(result):
    """The probe's output as the engines and the kubelet keep it: stdout and stderr together."""
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def probe(checks, demo, argv, status, pattern, what):
    """Runs ARGV (a probe command of the manifest) by exec; checks its exit STATUS and that it says
    one line matching PATTERN."""
    began = time.monotonic()
    result = demo.exec(*argv, check=False)
    took = time.monotonic() - began
    lines = one_line(result)
    checks.check(result.returncode == status and len(lines) == 1 and re.search(pattern, lines[0]),
                 f"{what}: `{' '.join(argv)}` exits {result.returncode} (wanted {status}) in {took:.2f} s through exec, "
                 f"saying one line /{pattern}/: {lines}")
    return lines[0]


def healthy_after_first_deployment(engine, checks):
    ready, live, _, _ = manifest()
    demo = Container(checks, DEMO_IMAGE, *health_run_args(engine), hint="health")
    status = health(demo).get("Status")
    checks.check(status == "starting", f"right after run -d the engine's health is 'starting' (it is {status!r})")
    image = image_healthcheck(engine)
    checks.check(image.get("Test") == ["CMD", *ready] and image.get("Retries") == RETRIES,
                 f"the image's HEALTHCHECK runs the manifest's readiness command {ready} with {RETRIES} retries ({image})")
    running = json.loads(demo.inspect("{{json .Config.Healthcheck}}") or "null") or {}
    checks.check(running.get("Test") == image["Test"], f"the container runs the image's check ({running.get('Test')})")

    _, _, done = demo.wait_for(r"deploy #1: done", timeout=FIRST_DEPLOYMENT_S, fail=r"deploy #1: (failed|refused)")
    checks.timing("run -d → deploy #1 done", done - demo.started)
    record = wait_health(engine, demo, "healthy", timeout=FIRST_DEPLOYMENT_S)
    healthy = time.monotonic()
    checks.timing("deploy #1 done → healthy", healthy - done)
    last = record["Log"][-1]
    checks.check(last["ExitCode"] == 0 and "deploy #1 succeeded" in last["Output"],
                 f"the engine's last check exited 0 saying deploy #1 succeeded ({last['Output'].strip()!r})")
    failed = [entry["Output"] for entry in record["Log"] if entry["ExitCode"] != 0]
    checks.check(all(len(out.strip().splitlines()) == 1 for out in failed),
                 f"the checks that ran before, if any, failed saying why in one line ({failed})")

    probe(checks, demo, ready, 0, r"deploy #1 succeeded", "ready")
    probe(checks, demo, live, 0, r".", "live")
    demo.wait_answer("webapp.local", "Simple test webapp")
    checks.check(True, "webapp.local answers")


def broken_edit_unready(engine, checks):
    ready, live, _, _ = manifest()
    demo = Container(checks, DEMO_IMAGE, *health_run_args(engine), hint="unready")
    demo.wait_for(r"deploy #1: done", timeout=FIRST_DEPLOYMENT_S, fail=r"deploy #1: (failed|refused)")
    wait_health(engine, demo, "healthy", timeout=60)
    checks.check(True, "healthy after deploy #1")
    original = demo.exec("cat", "/etc/nixproc/processes.nix").stdout

    # Not Nix (written in place, as test_deploy.py's first broken save): the check fails deploy #2.
    mark = demo.mark()
    demo.exec("sh", "-c", "cat > /etc/nixproc/processes.nix", input=original.replace("rec {", "rec {{", 1))
    demo.wait_for(r"deploy #2: .*failed", timeout=60, since=mark, fail=r"deploy #2: done")
    probe(checks, demo, ready, 1, r"deploy #2\b.*failed", "not ready after the broken edit, naming the failed deployment")
    probe(checks, demo, live, 0, r".", "still live after the broken edit")
    record = wait_health(engine, demo, "unhealthy", timeout=(RETRIES + 2) * HEALTH_INTERVAL_S + 30)
    last = record["Log"][-1]
    checks.check(last["ExitCode"] == 1 and "deploy #2" in last["Output"] and record["FailingStreak"] >= RETRIES,
                 f"the engine says unhealthy after {record['FailingStreak']} failed checks, the last naming deploy #2 "
                 f"({last['Output'].strip()!r})")
    status, _ = demo.get("webapp.local")
    checks.check(status == 200, "webapp.local still answers (the services of deploy #1 run on)")

    # Put back: the deployed model again, nothing to deploy, ready again.
    mark = demo.mark()
    demo.exec("sh", "-c", "cat > /etc/nixproc/processes.nix", input=original)
    demo.wait_for(r"unchanged since deployment #1", timeout=60, since=mark, fail=r"deploy #3")
    probe(checks, demo, ready, 0, r"deploy #1 succeeded", "ready again once the model is put back")
    wait_health(engine, demo, "healthy", timeout=(RETRIES + 2) * HEALTH_INTERVAL_S + 30)
    checks.check(True, "the engine says healthy again")


# -- the ConfigMap as the kubelet lays it out ------------------------------------------------------

def write_configmap(folder, data, generation):
    """The kubelet's atomic writer: a timestamped folder with the files, ..data swapped to it by a
    rename, one link per key through ..data; the previous timestamped folder removed."""
    stamp = f"..2026_01_01_00_00_0{generation}.{1000 + generation}"
    os.makedirs(os.path.join(folder, stamp), mode=0o755)
    os.chmod(os.path.join(folder, stamp), 0o755)
    for key, text in data.items():
        path = os.path.join(folder, stamp, key)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, 0o644)
    old = os.readlink(os.path.join(folder, "..data")) if os.path.islink(os.path.join(folder, "..data")) else None
    os.symlink(stamp, os.path.join(folder, "..data_tmp"))
    os.rename(os.path.join(folder, "..data_tmp"), os.path.join(folder, "..data"))
    for key in data:
        if not os.path.islink(os.path.join(folder, key)):
            os.symlink(os.path.join("..data", key), os.path.join(folder, key))
    if old:
        for name in os.listdir(os.path.join(folder, old)):
            os.unlink(os.path.join(folder, old, name))
        os.rmdir(os.path.join(folder, old))


def configmap_volume(engine, checks):
    ready, live, env, data = manifest()
    folder = os.path.join(engine.state, f"configmap-{os.getpid()}")
    os.makedirs(folder)
    os.chmod(folder, 0o1777)  # as the kubelet's tmpfs for a ConfigMap
    write_configmap(folder, data, 1)
    env_args = [a for name, value in env for a in ("-e", f"{name}={value}")]
    try:
        # The control socket's folder as the manifest has it: in memory, 0700 (its init container's chmod).
        demo = Container(checks, DEMO_IMAGE, *health_run_args(engine), "-v", f"{folder}:/etc/nixproc:ro", *env_args,
                         "--tmpfs", "/run/nixproc-init:mode=0700", hint="configmap")
        demo.wait_for(r"deploy #1: done", timeout=FIRST_DEPLOYMENT_S, fail=r"deploy #1: (failed|refused)")
        checks.check(True, f"the manifest's ConfigMap, laid out as the kubelet does (..data, mode 1777, read-only), "
                           f"deploys with the manifest's environment {env}")
        written = demo.exec("touch", "/etc/nixproc/x", check=False)
        checks.check(written.returncode != 0, "the model folder is read-only in the container, as the kubelet mounts it")
        probe(checks, demo, ready, 0, r"deploy #1 succeeded", "ready")
        probe(checks, demo, live, 0, r".", "live")
        demo.wait_answer("webapp.local", "Simple test webapp")

        mark = demo.mark()
        with open(WEBAPP2_MODEL, encoding="utf-8") as f:
            write_configmap(folder, dict(data, **{"processes.nix": f.read()}), 2)
        _, plan, _ = demo.wait_for(r"deploy #2: [+~=]", timeout=60, since=mark, fail=r"deploy #2: (failed|refused)")
        checks.check("+webapp2" in plan, f"the kubelet's ..data swap deploys the new model: {plan}")
        demo.wait_for(r"deploy #2: done", timeout=60, since=mark, fail=r"deploy #2: failed")
        demo.wait_answer("webapp2.local", "Simple test webapp")
        probe(checks, demo, ready, 0, r"deploy #2 succeeded", "ready after the update")
    finally:
        for root, folders, files in os.walk(folder, topdown=False):
            for name in files + folders:
                path = os.path.join(root, name)
                os.unlink(path) if os.path.islink(path) or not os.path.isdir(path) else os.rmdir(path)
        os.rmdir(folder)


containers.main({
    "healthy-after-first-deployment": healthy_after_first_deployment,
    "broken-edit-unready": broken_edit_unready,
    "configmap-volume": configmap_volume,
})
