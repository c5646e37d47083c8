#!/usr/bin/env python3
"""Prints the Debian archive entries this machine's apt uses, one "URI SUITE COMPONENT..." a line,
for the suites of one release (default bookworm: bookworm, bookworm-updates, bookworm-security),
read from /etc/apt/sources.list and /etc/apt/sources.list.d/*.list and *.sources (deb822). Only
"deb" entries whose suite belongs to the release; the first line's URI is the mirror for
debootstrap. No address is kept in the repository: the images use whatever mirror the host uses.
Exits 1, naming the files read, when none is found.

    apt-mirror.py [RELEASE] [--root DIR]
"""
import glob
import os
import sys


def one_line_entries(path):
    """deb [options] URI SUITE COMPONENT... (sources.list(5), one-line style)."""
    with open(path, errors="replace") as f:
        for line in f:
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            if words and words[0].startswith("["):
                while words and not words[0].endswith("]"):
                    words = words[1:]
                words = words[1:]
            if len(words) >= 2:
                yield words[0], words[1], words[2:]


def deb822_entries(path):
    """Stanzas of Types/URIs/Suites/Components (sources.list(5), deb822 style); Enabled: no skips."""
    with open(path, errors="replace") as f:
        text = f.read()
    for stanza in text.split("\n\n"):
        fields, key = {}, None
        for line in stanza.split("\n"):
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                yield uri, suite, fields.get("components", "").split()


def main():
    args = sys.argv[1:]
    root = "/"
    if "--root" in args:
        i = args.index("--root")
        root = args[i + 1]
        del args[i:i + 2]
    release = args[0] if args else "bookworm"
    etc = os.path.join(root, "etc/apt")
    files = [os.path.join(etc, "sources.list")] + sorted(glob.glob(os.path.join(etc, "sources.list.d/*.list")))
    deb822 = sorted(glob.glob(os.path.join(etc, "sources.list.d/*.sources")))
    found = []
    for path in files + deb822:
        if not os.path.isfile(path):
            continue
        reader = deb822_entries if path.endswith(".sources") else one_line_entries
        for uri, suite, components in reader(path):
            if (suite == release or suite.startswith(release + "-")) and (uri, suite) not in [(u, s) for u, s, _ in found]:
                found.append((uri, suite, components or ["main"]))
    if not found:
        print(f"apt-mirror.py: no 'deb' entry for {release} in {', '.join(files + deb822) or etc}", file=sys.stderr)
        return 1
    # The release itself first: its URI is the one debootstrap fetches from.
    found.sort(key=lambda e: e[1] != release)
    for uri, suite, components in found:
        print(uri, suite, " ".join(components))
    return 0


if __name__ == "__main__":
    sys.exit(main())
