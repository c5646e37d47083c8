#!/usr/bin/env python3
"""Counts what the last ctest run in a build folder ran, from Testing/Temporary/LastTest.log:
ctest entries, Catch2 test cases and assertions. Exits 1 if an entry of a Catch2 program ran no
assertion: a filter that matched nothing ("No tests ran"), a test case without one, or a program
that died before Catch2's summary; or if an entry that prints Catch2's summary runs a program that
was not registered through nixproc_catch_tests. The Catch2 programs are listed in the build
folder's catch2-programs.txt (tests/CMakeLists.txt); other entries (fixtures, fuzzers) are counted,
and ctest judges them. packaging/test.sh runs this after each ctest run.

    count-assertions.py [--name NAME] (--preset PRESET | BUILD_DIR)
"""
import argparse
import json
import os
import re
import sys

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CATCH_SUMMARY = re.compile(r"All tests passed \((\d+) assertions? in (\d+) test cases?\)|"
                           r"test cases: +(\d+) \|[^\n]*\nassertions: +(?:(- none -)|(\d+) \|([^\n]*))|"
                           r"(No tests ran)")


def preset_build_dir(name):
    """binaryDir of the configure preset behind test preset NAME (CMakePresets.json)."""
    with open(os.path.join(SOURCE_DIR, "CMakePresets.json")) as f:
        presets = json.load(f)
    test = next((p for p in presets.get("testPresets", []) if p["name"] == name), None)
    configure_name = test["configurePreset"] if test else name
    configure = next(p for p in presets["configurePresets"] if p["name"] == configure_name)
    return configure["binaryDir"].replace("${sourceDir}", SOURCE_DIR)


def program_of(command):
    """The program of a LastTest.log "Command:" line: "/path/prog" "arg" ..."""
    m = re.match(r'"([^"]*)"', command)
    return m.group(1) if m else command.split(" ")[0]


def entries(log_text):
    """(name, program, output, status line) of each entry in LastTest.log, in the order they ended."""
    found = []
    lines = log_text.split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^\d+/\d+ Test: (.*)$", lines[i])
        if not m:
            i += 1
            continue
        name, program = m.group(1), ""
        while i < len(lines) and lines[i] != "Output:":
            if lines[i].startswith("Command: "):
                program = program_of(lines[i][len("Command: "):])
            i += 1
        i += 2  # "Output:" and the dashes under it
        start = i
        while i < len(lines) and lines[i] != "<end of output>":
            i += 1
        output = "\n".join(lines[start:i])
        status = ""
        while i < len(lines) and not re.match(r"^\d+/\d+ Test: ", lines[i]):
            if lines[i].startswith("Test ") and not lines[i].startswith("Test time"):  # Test Passed.
                status = lines[i]
                break
            i += 1
        found.append((name, program, output, status))
    return found


def catch_totals(output):
    """(test cases, assertions passed, why it ran none or None) from the last Catch2 console
    summary in the output."""
    cases = passed = 0
    empty = "no Catch2 summary in its output: it died, or timed out"
    for m in CATCH_SUMMARY.finditer(output):
        if m.group(1):
            cases, passed, empty = int(m.group(2)), int(m.group(1)), None
        elif m.group(3):
            cases = int(m.group(3))
            p = re.search(r"(\d+) passed", m.group(6) or "")
            passed = int(p.group(1)) if p else 0
            empty = "assertions: - none -" if m.group(4) else None
        else:
            cases, passed, empty = 0, 0, m.group(7)
    # --warn NoAssertions counts the missing assertion as a failed one.
    missing = re.search(r"^No assertions in (?:test case|section) .*$", output, re.M)
    if missing:
        empty = missing.group(0)
    return cases, passed, empty


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", help="what to call the run in the summary (default: the preset or folder)")
    parser.add_argument("--preset", help="the ctest preset whose build folder to read")
    parser.add_argument("build_dir", nargs="?")
    args = parser.parse_args()
    if bool(args.preset) == bool(args.build_dir):
        parser.error("give either --preset or BUILD_DIR")
    build_dir = preset_build_dir(args.preset) if args.preset else args.build_dir
    name = args.name or args.preset or build_dir

    with open(os.path.join(build_dir, "catch2-programs.txt")) as f:
        catch_programs = {line.strip() for line in f if line.strip()}
    log_path = os.path.join(build_dir, "Testing", "Temporary", "LastTest.log")
    with open(log_path, errors="replace") as f:
        ran = entries(f.read())

    catch_entries = cases = assertions = failed = 0
    problems = []
    for entry, program, output, status in ran:
        if status != "Test Passed.":
            failed += 1
        if program not in catch_programs:
            if CATCH_SUMMARY.search(output):
                problems.append(f"'{entry}' runs {program}, a Catch2 program not registered through nixproc_catch_tests")
            continue
        catch_entries += 1
        entry_cases, passed, why_empty = catch_totals(output)
        cases += entry_cases
        assertions += passed
        if why_empty:
            problems.append(f"'{entry}' ran no assertion ({why_empty})")

    print(f"== {name}: {len(ran)} ctest entries run: {catch_entries} of Catch2 programs with {cases} test cases "
          f"and {assertions} assertions passed, {len(ran) - catch_entries} others; {failed} entries failed")
    for problem in problems:
        print(f"== {name}: FAILED: {problem}")
    if not ran:
        print(f"== {name}: FAILED: {log_path} records no entry")
    return 1 if problems or not ran else 0


if __name__ == "__main__":
    sys.exit(main())
