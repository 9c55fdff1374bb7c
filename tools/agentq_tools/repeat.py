"""`make repeat`: run a chosen test, file, marker or suite N times, each in a pytest session of its own,
and list every failure with its message.

``python -m agentq_tools.repeat --times 10 -- -m e2e tests/test_cancel.py`` (what follows ``--`` goes
to pytest as is). Each run is a new process, as in CI: a failure that only shows at the end of a
session (a warning turned into an error by the unraisable-exception check, a leaked process) counts,
which pytest-repeat's or pytest-flakefinder's repetitions inside one session cannot show. Each run
writes a JUnit XML report; the summary groups the failures by test, with the run numbers and the
first line of each message, and names runs that failed outside any test (by their exit code and
the end of their output). Exit code 0 only if every run passed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

#: pytest's exit codes: all passed; none was collected (a typo in a test id, a marker that selects nothing).
PASSED, NO_TESTS = 0, 5


@dataclass
class Run:
    """One pytest session: its exit code, its time, its failing tests and their messages."""

    number: int
    returncode: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    tail: str = ""

    @property
    def passed(self) -> bool:
        return self.returncode == PASSED

    @property
    def outside_tests(self) -> bool:
        """The session failed, yet no test did: collection, a warning at the end, an internal error."""
        return not self.passed and not self.failures


def parse_report(path: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Counts (tests, failures, errors, skipped) and each failed test's id and first message line."""
    counts: dict[str, int] = defaultdict(int)
    failures: dict[str, str] = {}
    if not path.exists():
        return dict(counts), failures
    for case in ET.parse(path).getroot().iter("testcase"):
        counts["tests"] += 1
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        for kind in ("failure", "error"):
            problem = case.find(kind)
            if problem is not None:
                counts[kind + "s"] += 1
                text = (problem.get("message") or problem.text or kind).strip()
                failures[f"{test_id} ({kind})" if kind == "error" else test_id] = text.splitlines()[0][:300]
        if case.find("skipped") is not None:
            counts["skipped"] += 1
    return dict(counts), failures


def run_once(number: int, pytest_args: list[str], report_dir: Path, python: str) -> Run:
    """One pytest session; its output goes to this terminal as it comes, its report to ``report_dir``."""
    report = report_dir / f"run-{number}.xml"
    command = [python, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={report}", *pytest_args]
    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    returncode = proc.wait()
    counts, failures = parse_report(report)
    return Run(number, returncode, time.monotonic() - start, counts, failures, "".join(lines[-15:]))


def summary(runs: list[Run]) -> str:
    """What failed, in how many runs and how: the text printed at the end."""
    out = [f"\n===== {len(runs)} runs: {sum(r.passed for r in runs)} passed, {sum(not r.passed for r in runs)} failed"]
    for run in runs:
        c = run.counts
        verdict = "passed" if run.passed else f"FAILED (exit {run.returncode})"
        out.append(
            f"run {run.number:>3}: {verdict:<18} {c.get('tests', 0)} tests, {c.get('failures', 0)} failed, "
            f"{c.get('errors', 0)} errors, {c.get('skipped', 0)} skipped, {run.seconds:.0f} s"
        )
    by_test: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for run in runs:
        for test_id, message in run.failures.items():
            by_test[test_id].append((run.number, message))
    for test_id, seen in sorted(by_test.items(), key=lambda item: -len(item[1])):
        out.append(f"\n{test_id}: failed in {len(seen)} of {len(runs)} runs")
        out += [f"  run {number}: {message}" for number, message in seen]
    for run in runs:
        if run.outside_tests:
            why = "no test was collected" if run.returncode == NO_TESTS else "it failed outside any test"
            out.append(f"\nrun {run.number}: {why} (exit {run.returncode}); its last lines:")
            out += ["  " + line for line in run.tail.rstrip().splitlines()]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], usage="%(prog)s [--times N] -- PYTEST_ARGS")
    parser.add_argument("--times", type=int, default=10, help="how many sessions to run (default 10)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to run pytest with")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed to pytest as is, after --")
    args = parser.parse_args(argv)
    pytest_args = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    if args.times < 1:
        parser.error("--times must be at least 1")
    runs = []
    with tempfile.TemporaryDirectory(prefix="agentq-repeat-") as reports:
        for number in range(1, args.times + 1):
            print(f"===== run {number} of {args.times}: pytest {' '.join(pytest_args)}", flush=True)
            runs.append(run_once(number, pytest_args, Path(reports), args.python))
    print(summary(runs))
    return 0 if all(r.passed for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
