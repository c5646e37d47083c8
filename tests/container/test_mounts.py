#!/usr/bin/env python3
"""The model passed in from the host with `-v`, as a single file and as its folder, edited on the
host the two ways editors save: in place (the same file) and replaced (`sed -i`: a temporary file
renamed over it).   test_mounts.py ENGINE STATE SCENARIO"""
import os
import shutil
import subprocess
import tempfile
import time

import containers
from containers import ADD_WEBAPP2, start_demo

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.normpath(os.path.join(HERE, "..", ".."))
MODEL = "/etc/nixproc/processes.nix"
# The same edit, as the demo ships it, for a write in place.
WITH_WEBAPP2 = os.path.join(SOURCE, "packaging/demo/processes-with-webapp2.nix")


class HostFolder:
    """A folder of the host holding the demo's /etc/nixproc (the model, its imports and init.yaml),
    root's and mode 0755 as the trust check wants, removed at the end."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="nixproc-test-mounts-")
        os.chmod(self.path, 0o755)
        for name in ("processes.nix", "ids.nix", "constructors.nix"):
            shutil.copy(os.path.join(SOURCE, "packaging/demo", name), self.path)
        shutil.copy(os.path.join(SOURCE, "packaging/docker/demo/init.yaml"), self.path)
        for name in os.listdir(self.path):
            os.chmod(os.path.join(self.path, name), 0o644)
        self.model = os.path.join(self.path, "processes.nix")

    def write_in_place(self, text):
        """Saved as mcedit or `cat >` do: the same file, truncated and written."""
        with open(self.model, "r+") as f:
            f.write(text)
            f.truncate()

    def sed_i(self, argv):
        """ARGV (`sed -i … /etc/nixproc/processes.nix`) run here on the model: saved as GNU sed -i
        does, a temporary file in the folder renamed over it."""
        subprocess.run(argv[:-1] + [self.model], check=True)

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)


def single_file_mount(engine, checks):
    host = HostFolder()
    try:
        demo = start_demo(checks, "mountf", "-v", f"{host.model}:{MODEL}", what="run -d with the model mounted")
        _, said, _ = demo.wait_for(r"is a single-file bind mount", timeout=5)
        checks.check(MODEL in said and "sed -i" in said and "bind-mount the folder" in said,
                     f"one line at start says the model is a single-file bind mount and what is not seen through it ({said})")

        # Written in place on the host: the file the container sees is the same one.
        mark = demo.mark()
        with open(WITH_WEBAPP2) as f:
            host.write_in_place(f.read())
        saved = time.monotonic()
        _, started, _ = demo.wait_for(r"deploy #2: ", timeout=30, since=mark)
        checks.check("deploy #2: processes.nix changed" in started, f"a host write in place is deployed, named ({started})")
        demo.wait_for(r"deploy #2: done", timeout=120, since=mark, fail=r"deploy #2: (failed|refused)")
        answered = demo.wait_answer("webapp2.local", "Simple test webapp")
        checks.timing("host write in place through a single-file mount → webapp2 answers", answered - saved)

        # Replaced on the host (sed -i): the container keeps the old file; one warning says so.
        mark = demo.mark()
        host.sed_i(["sed", "-i", "$a # replaced on the host", MODEL])
        _, warned, _ = demo.wait_for(r"was replaced or removed on the host", timeout=30, since=mark)
        checks.check(MODEL in warned and "restart" in warned and "bind-mount the folder" in warned,
                     f"a host sed -i gives a warning that says the container sees the old file, and what to do ({warned})")
        seen = demo.exec("tail", "-n", "1", MODEL).stdout
        checks.check("replaced on the host" not in seen, f"the container still sees the old file ({seen.strip()!r})")
        host.sed_i(["sed", "-i", "$a # replaced again", MODEL])  # the old file is not touched again: no second warning
        # A save inside the container, after the host's: read in order, so both were handled.
        demo.exec("sh", "-c", f"echo '# saved inside' >> {MODEL}")
        demo.wait_for(r"deploy #3: done", timeout=120, since=mark, fail=r"deploy #3: (failed|refused)")
        checks.check(len(demo.lines_matching(r"was replaced or removed on the host")) == 1,
                     "the replacement is said once")
        checks.check(len(demo.lines_matching(r"is a single-file bind mount")) == 1, "the mount is named once")
    finally:
        host.remove()


def folder_mount_sed(engine, checks):
    host = HostFolder()
    try:
        demo = start_demo(checks, "mountd", "-v", f"{host.path}:/etc/nixproc", what="run -d with the model mounted")
        checks.check(not demo.lines_matching(r"single-file bind mount"), "a folder mount is not named a single-file one")
        mark = demo.mark()
        # sed -i on the host: its rename is an event of the folder, which the container shares.
        host.sed_i(ADD_WEBAPP2)
        saved = time.monotonic()
        _, started, _ = demo.wait_for(r"deploy #2: ", timeout=30, since=mark)
        checks.check("deploy #2: processes.nix changed" in started, f"host sed -i through a folder mount is deployed ({started})")
        demo.wait_for(r"deploy #2: done", timeout=120, since=mark, fail=r"deploy #2: (failed|refused)")
        answered = demo.wait_answer("webapp2.local", "Simple test webapp")
        checks.timing("host sed -i through a folder mount → webapp2 answers", answered - saved)
        # A second sed -i of ids.nix only: the deployment names it.
        mark = demo.mark()
        host_ids = os.path.join(host.path, "ids.nix")
        subprocess.run(["sed", "-i", "$a # touched", host_ids], check=True)
        _, started, _ = demo.wait_for(r"deploy #3: |unchanged since", timeout=30, since=mark)
        checks.check("deploy #3: ids.nix changed" in started, f"a sed -i of ids.nix is deployed, named ({started})")
        demo.wait_for(r"deploy #3: done", timeout=120, since=mark, fail=r"deploy #3: (failed|refused)")
    finally:
        host.remove()


containers.main({
    "single-file-mount": single_file_mount,
    "folder-mount-sed": folder_mount_sed,
})
