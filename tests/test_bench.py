"""The benchmark's smoke test: a quick run through a real redis-server and real workers.

Benchmarks are not tests: nothing here asserts a timing target, only that a run completes and
writes what it promises (the JSON summary with its stable keys, the tables, the PNG charts).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentq_tools.bench.charts import CHARTS
from agentq_tools.bench.report import SUMMARY_KEYS
from agentq_tools.bench.runner import run_bench

pytestmark = pytest.mark.e2e

BENCH = str(Path(sys.executable).with_name("agentq-bench"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_bench_writes_summary_tables_and_charts(redis_url: str, tmp_path: Path) -> None:
    """A quick run completes against real Redis and workers and writes JSON, tables and every chart."""
    run_bench(quick=True, out=tmp_path, redis_url=redis_url)

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["quick"] is True
    for key in ("cpu_count", "python_version", "executor_kind", "time_scale", "calibration"):
        assert key in summary["machine"]
    assert {"ratios", "median_s", "timeline"} <= set(summary["workload"])
    assert {"serial", "pools"} <= set(summary["executors"])
    assert {"enqueue_to_start_ms", "finish_to_caller_ms", "per_job"} <= set(summary["queue"])
    assert set(summary["throughput"]["by_workers"]) == {"1", "2"}
    assert {"sources", "burst", "laws"} <= set(summary["growth"])
    assert set(summary["peers"]["by_workers"]) == {"1", "2"} and "ours" in summary["peers"]["by_workers"]["1"]
    assert summary["peers"]["environment"] is None  # --quick leaves the peers out unless asked
    assert [(row["workers"], row["shards"]) for row in summary["redis"]["rows"]] == [(1, 1), (2, 1), (2, 6)]
    assert {run["config"] for run in summary["bursts"]["runs"].values()} == {"admission", "max_jobs_1", "max_jobs_4"}
    assert summary["figures"]
    for figure in summary["figures"]:
        assert set(figure) == {"benchmark", "name", "value", "unit", "target", "met", "limit"}
    assert (tmp_path / "table.md").read_text().count("|") > 10
    for chart in CHARTS:
        assert (tmp_path / chart).read_bytes().startswith(PNG_MAGIC), chart


def test_bench_command_is_wired() -> None:
    """``agentq-bench --help`` offers --quick, --out, --publish and --peers."""
    shown = subprocess.run([BENCH, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for option in ("--quick", "--out", "--publish", "--peers"):
        assert option in shown.stdout
