#!/usr/bin/env python3
"""nixproc-init's Debian package (packaging/deb, `cpack -G DEB`) installed, run as PID 1 and
removed in a clean container of the base image: Debian 12 minbase, without nixproc-init.
    test_deb.py ENGINE STATE SCENARIO

The .deb is made by cpack from a build folder of this source, into STATE/deb/SCENARIO (each
scenario its own, so that scenarios may run at once). The build folder is NIXPROC_BUILD_DIR, or
else the build folder STATE is in (ctest gives BUILD/tests/container/ENGINE). cpack first builds
what is out of date there (its preinstall step builds `all`): nothing, after the build ctest runs.
The container tests are not registered in the sanitizer build, whose cpack refuses anyway.
"""
import glob
import os
import shutil
import subprocess
import time

import containers
from containers import Container, Failed

BASE_IMAGE = "nixproc/debian:bookworm-base"  # packaging/docker/build-images.sh imports it
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# cpack first builds what is out of date: under ctest, nothing (ctest runs after the build), and
# it only stages and compresses (~2 s); within the default 300 s of nixproc_container_test.
CPACK_S = 240
# What the package holds (packaging/deb/CPackConfig.cmake), and nothing more.
FILES = [
    "/usr/sbin/nixproc-init",
    "/usr/sbin/nixproc-initctl",
    "/usr/share/doc/nixproc-init/README.md",
    "/usr/share/doc/nixproc-init/copyright",
    "/usr/share/nixproc-init/init.yaml",
    "/usr/share/nixproc-init/supervisord.conf",
]
FOLDERS = ["/usr/share/nixproc-init", "/usr/share/doc/nixproc-init"]


def check(checks, condition, what, detail=""):
    """checks.check, with DETAIL (a command's output) said only when the check fails."""
    checks.check(condition, what if condition else f"{what}\n{detail}")


def cache_entries(build_dir):
    entries = {}
    with open(os.path.join(build_dir, "CMakeCache.txt")) as f:
        for line in f:
            name, sep, value = line.rstrip("\n").partition("=")
            if sep and not name.startswith(("#", "//")):
                entries[name.split(":")[0]] = value
    return entries


def build_dir_of(state):
    """NIXPROC_BUILD_DIR, or the build folder of this source that STATE is in."""
    if os.environ.get("NIXPROC_BUILD_DIR"):
        return os.path.abspath(os.environ["NIXPROC_BUILD_DIR"])
    folder = os.path.abspath(state)
    while folder != os.path.dirname(folder):
        cache = os.path.join(folder, "CMakeCache.txt")
        if os.path.exists(cache) and os.path.realpath(cache_entries(folder).get("CMAKE_HOME_DIRECTORY", "")) \
                == os.path.realpath(SOURCE_DIR):
            return folder
        folder = os.path.dirname(folder)
    raise Failed(f"{state} is in no build folder of {SOURCE_DIR}: set NIXPROC_BUILD_DIR to one "
                 "(configured without NIXPROC_SANITIZE)")


def make_deb(engine, checks):
    """cpack -G DEB into STATE/deb/SCENARIO; returns (folder holding only the .deb, its path, version)."""
    build_dir = build_dir_of(engine.state)
    version = cache_entries(build_dir)["CMAKE_PROJECT_VERSION"]
    out = os.path.join(engine.state, "deb", checks.scenario)
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    cpack = subprocess.run(["cpack", "-G", "DEB", "--config", os.path.join(build_dir, "CPackConfig.cmake"),
                            "-B", os.path.join(out, "cpack")],
                           cwd=build_dir, capture_output=True, text=True, timeout=CPACK_S)
    check(checks, cpack.returncode == 0, f"cpack -G DEB in {build_dir} succeeds", cpack.stdout + cpack.stderr)
    checks.timing("cpack -G DEB", time.monotonic() - started)
    made = glob.glob(os.path.join(out, "cpack", "*.deb"))
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    name = f"nixproc-init_{version}_{arch}.deb"
    checks.check([os.path.basename(p) for p in made] == [name], f"cpack made one package, {name} (made: {made})")
    # A folder with the package alone, for `-v FOLDER:/deb` and /deb/*.deb.
    folder = os.path.join(out, "mount")
    os.makedirs(folder)
    deb = shutil.copy(made[0], folder)

    fields = {f: subprocess.run(["dpkg-deb", "--field", deb, f], capture_output=True, text=True).stdout.strip()
              for f in ("Package", "Version", "Architecture", "Section", "Maintainer", "Depends", "Pre-Depends")}
    checks.check(fields["Package"] == "nixproc-init" and fields["Version"] == version
                 and fields["Architecture"] == arch and fields["Section"] == "admin" and fields["Maintainer"],
                 f"the control fields: nixproc-init, version {version} from project(), {arch}, section admin, a maintainer ({fields})")
    checks.check(fields["Depends"] == "" and fields["Pre-Depends"] == "",
                 f"no Depends: the init is static ({fields['Depends']!r}, {fields['Pre-Depends']!r})")
    listing = subprocess.run(["dpkg-deb", "--contents", deb], capture_output=True, text=True, check=True).stdout
    files = sorted(line.split()[-1].lstrip(".") for line in listing.splitlines() if not line.startswith("d"))
    check(checks, files == FILES, "the package holds the init, its configuration examples and docs, nothing else",
          listing)
    return folder, deb, version


def in_container(container, script, what, must_pass=True):
    """Runs SCRIPT with sh -c in CONTAINER; checks its status is 0 when MUST_PASS. Returns the result."""
    result = container.exec("sh", "-c", script, check=False)
    if must_pass:
        check(container.checks, result.returncode == 0, what, f"exit {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def install_and_remove(engine, checks):
    """dpkg -i in a clean container: the files are where dpkg -L says, the init runs; dpkg -r
    takes every one of them away again."""
    _, deb, version = make_deb(engine, checks)
    # PID 1 of the clean container: a shell that ends on the engine's SIGTERM (a bare sleep as PID 1
    # ignores it, and `rm -f` would wait its 10 s for nothing).
    box = Container(checks, BASE_IMAGE, command=("sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"),
                    publish=False, hint="deb")
    before = in_container(box, "command -v nixproc-init || dpkg -s nixproc-init", "", must_pass=False)
    check(checks, before.returncode != 0, "the base image has no nixproc-init", before.stdout)

    engine.run("cp", deb, f"{box.name}:/tmp/")
    started = time.monotonic()
    install = in_container(box, f"dpkg -i /tmp/{os.path.basename(deb)}", "dpkg -i installs the package")
    checks.timing("dpkg -i", time.monotonic() - started)
    said = install.stdout + install.stderr
    check(checks, "depend" not in said.lower() and "warning" not in said.lower(),
          "dpkg -i names no missing dependency and warns of nothing", said)
    status = in_container(box, "dpkg-query -W -f '${Status}' nixproc-init", "dpkg-query knows the package").stdout
    checks.check(status == "install ok installed", f"dpkg says nixproc-init is installed ({status!r})")

    listed = in_container(box, "dpkg -L nixproc-init", "dpkg -L lists the package").stdout.split()
    check(checks, all(path in listed for path in FILES), "dpkg -L lists the init, the examples and the docs",
          "\n".join(listed))
    in_container(box, " && ".join(f"test -f {p}" for p in FILES), "the init, the examples and the docs are installed")

    found = in_container(box, "command -v nixproc-init", "nixproc-init is on PATH").stdout.strip()
    checks.check(found == "/usr/sbin/nixproc-init", f"nixproc-init on PATH is /usr/sbin/nixproc-init ({found!r})")
    said = in_container(box, "nixproc-init --version", "nixproc-init --version exits 0").stdout.strip()
    checks.check(said == f"nixproc-init {version}", f"nixproc-init --version prints the project's version {version} ({said!r})")
    in_container(box, "nixproc-init --check-config -c /usr/share/nixproc-init/init.yaml",
                 "the installed init accepts the installed example init.yaml (--check-config)")

    in_container(box, "dpkg -r nixproc-init", "dpkg -r removes the package")
    gone = in_container(box, " && ".join(f"test ! -e {p}" for p in FILES + FOLDERS) + " && ! command -v nixproc-init",
                        "", must_pass=False)
    checks.check(gone.returncode == 0, "dpkg -r takes away the init, the examples, the docs and their folders")
    after = in_container(box, "dpkg-query -W -f '${Status}' nixproc-init", "", must_pass=False)
    checks.check(after.returncode != 0 or after.stdout.startswith("unknown ok not-installed")
                 or after.stdout.startswith("deinstall ok not-installed"),
                 f"dpkg no longer has nixproc-init installed ({after.stdout!r}{after.stderr!r})")


def sanitizer_build_refused(engine, checks):
    """cpack in a build folder configured with NIXPROC_SANITIZE=ON stops before it builds
    anything, saying why, and makes no package. (No container: it runs under each engine only
    because every scenario here does.)"""
    folder = os.path.join(engine.state, "deb", checks.scenario)
    shutil.rmtree(folder, ignore_errors=True)
    build_dir = os.path.join(folder, "build")
    configure = subprocess.run(["cmake", "-S", SOURCE_DIR, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Debug",
                                "-DNIXPROC_SANITIZE=ON", "-DBUILD_TESTING=OFF"],
                               capture_output=True, text=True, timeout=300)
    check(checks, configure.returncode == 0, "a sanitizer build folder configures", configure.stdout + configure.stderr)
    started = time.monotonic()
    cpack = subprocess.run(["cpack", "-G", "DEB", "--config", os.path.join(build_dir, "CPackConfig.cmake"),
                            "-B", os.path.join(folder, "cpack")],
                           cwd=build_dir, capture_output=True, text=True, timeout=CPACK_S)
    said = cpack.stdout + cpack.stderr
    check(checks, cpack.returncode != 0 and "NIXPROC_SANITIZE=ON" in said and "must not be packaged" in said,
          "cpack fails, saying the sanitizer build must not be packaged", said)
    checks.check(time.monotonic() - started < 60 and not os.path.exists(os.path.join(build_dir, "daemon", "nixproc-init")),
                 "it refused before building the init")
    checks.check(not glob.glob(os.path.join(folder, "cpack", "*.deb")), "no package was made")


# Installs the package from the bind-mounted folder and makes the init PID 1 of the container,
# with a main child that prints PID 1's command line and exits 7.
PID1_SCRIPT = ("dpkg -i /deb/*.deb >/dev/null && "
               "exec nixproc-init -- sh -c 'printf \"pid 1: %s\\n\" \"$(tr \"\\0\" \" \" </proc/1/cmdline)\"; exit 7'")


def pid1_exit_status(engine, checks):
    """`ENGINE run -v DEB:/deb BASE sh -c 'dpkg -i /deb/*.deb && exec nixproc-init -- COMMAND'`:
    the installed init is PID 1 and the container exits with its main child's status."""
    folder, _, _ = make_deb(engine, checks)
    started = time.monotonic()
    box = Container(checks, BASE_IMAGE, "-v", f"{folder}:/deb:ro", command=("sh", "-c", PID1_SCRIPT),
                    publish=False, hint="deb-pid1")
    status = engine.run("wait", box.name, timeout=120).stdout.strip()
    checks.timing("run (dpkg -i, nixproc-init as PID 1) → exit", time.monotonic() - started)
    _, said, _ = box.wait_for(r"^pid 1: ", timeout=10)
    checks.check(said.split()[2:4] == ["nixproc-init", "--"], f"the installed nixproc-init is PID 1 ({said!r})")
    checks.check(status == "7", f"the container exits 7, its main child's status, passed on by the init (it exited {status})")


containers.main({
    "install-and-remove": install_and_remove,
    "pid1-exit-status": pid1_exit_status,
    "sanitizer-build-refused": sanitizer_build_refused,
})
