"""`make repeat` (agentq_tools.repeat): the JUnit reports read back, and the summary that names each failure."""

from __future__ import annotations

from pathlib import Path

from agentq_tools.repeat import Run, parse_report, summary

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4">
<testcase classname="tests.test_a" name="test_ok" time="0.1"/>
<testcase classname="tests.test_a" name="test_bad" time="0.2">
  <failure message="AssertionError: assert 12 &lt;= 10&#10;second line">traceback</failure></testcase>
<testcase classname="tests.test_a" name="test_fixture" time="0.0"><error message="failed on setup">tb</error></testcase>
<testcase classname="tests.test_a" name="test_skip" time="0.0"><skipped message="3.14 only"/></testcase>
</testsuite></testsuites>
"""


def test_a_report_gives_the_counts_and_the_first_line_of_each_message(tmp_path: Path) -> None:
    """Failures and errors are told apart, each keyed by its test id, with its message's first line."""
    path = tmp_path / "run-1.xml"
    path.write_text(REPORT)
    counts, failures = parse_report(path)
    assert counts == {"tests": 4, "failures": 1, "errors": 1, "skipped": 1}
    assert failures == {
        "tests.test_a::test_bad": "AssertionError: assert 12 <= 10",
        "tests.test_a::test_fixture (error)": "failed on setup",
    }
    assert parse_report(tmp_path / "missing.xml") == ({}, {})


def test_the_summary_groups_failures_by_test_and_names_runs_that_failed_outside_any_test() -> None:
    """A test that failed twice is listed once with both runs; a run with no failing test but a bad exit
    (a warning at the session's end) is shown with its last lines."""
    runs = [
        Run(1, 1, 10.0, {"tests": 2, "failures": 1}, {"t::flaky": "assert 12 <= 10"}),
        Run(2, 0, 9.0, {"tests": 2}),
        Run(3, 1, 11.0, {"tests": 2, "failures": 1}, {"t::flaky": "assert 11 <= 10"}),
        Run(4, 1, 12.0, {"tests": 2}, tail="ResourceWarning: unclosed <socket.socket>\n"),
    ]
    text = summary(runs)
    assert "4 runs: 1 passed, 3 failed" in text
    assert "t::flaky: failed in 2 of 4 runs\n  run 1: assert 12 <= 10\n  run 3: assert 11 <= 10" in text
    assert "run 4: it failed outside any test (exit 1)" in text and "ResourceWarning: unclosed" in text
    assert runs[3].outside_tests and not runs[0].outside_tests and runs[1].passed
