"""Run every benchmark in order, print the table, write the JSON summary and the charts."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from agentq_tools.bench import (
    bursts,
    executors,
    fairness,
    growth,
    peers,
    queue,
    redisload,
    report,
    throughput,
    workload,
)
from agentq_tools.bench.config import BenchConfig, machine_info
from agentq_tools.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[3]
#: Wide enough for the table when the output is a file or a pipe (as under make).
console = Console(width=None if sys.stdout.isatty() else 130)


def run_bench(
    *, quick: bool, out: Path, redis_url: str | None = None, publish: Path | None = None, with_peers: bool = False
) -> dict[str, Any]:
    """Run the whole benchmark; return its summary (also written to ``out``).

    Without ``redis_url`` a throw-away redis-server is started: the benchmark empties Redis
    between its parts, so never point it at a Redis that holds anything of value. ``publish``
    (full runs only) receives a copy of the summary, table and charts, plus a README. A full run
    installs the peers (arq, SAQ, streaq) into a side environment; a quick one only ``with_peers``.
    """
    cfg = BenchConfig.make(quick, peers=with_peers)
    started = time.monotonic()
    figures: list[report.Figure] = []
    summary: dict[str, Any] = {
        "schema_version": report.SCHEMA_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine_info(cfg.workload_time_scale),
        "config": cfg.as_dict(),
    }
    m = summary["machine"]
    console.print(
        f"[bold]agentq bench[/] ({'quick' if quick else 'full'}) on Python {m['python_version']}, "
        f"{m['usable_cpus']} cores, {m['executor_kind']} pool"
    )
    with contextlib.ExitStack() as stack:
        if redis_url is None:
            redis_url = stack.enter_context(EmbeddedRedis()).url
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agentq-bench-")))

        with _step("calibrating the inference cost"):
            calibration = executors.calibrate()
        summary["machine"]["calibration"] = calibration
        with _step("2. executors"):
            summary["executors"], figs = executors.run(cfg, calibration)
        executor_figures = figs
        with _step("1. one reference query"):
            summary["workload"], figs = workload.run(cfg, calibration, redis_url, log_dir)
        figures += figs + executor_figures
        with _step("3. queue overhead and Redis cost per job"):
            summary["queue"], figs = queue.run(cfg, redis_url, log_dir)
        figures += figs
        with _step("4. throughput at saturation"):
            summary["throughput"], figs = throughput.run(cfg, calibration, redis_url, log_dir)
        figures += figs
        with _step("5. growth"):
            summary["growth"], figs = growth.run(cfg, calibration, redis_url, log_dir)
        figures += figs
        with _step("6. the peers: no-op bursts and the reference query on arq, SAQ, streaq and ours"):
            summary["peers"], figs = peers.run(cfg, calibration, redis_url, log_dir)
        figures += figs
        venv = Path(summary["peers"]["environment"]) if summary["peers"]["environment"] else None
        with _step("7. Redis load of idle workers, wake-up"):
            summary["redis"], figs = redisload.run(cfg, redis_url, log_dir, venv)
        figures += figs
        with _step("8. bursts, with and without admission"):
            summary["bursts"], figs = bursts.run(cfg, calibration, redis_url, log_dir)
        figures += figs
        with _step("9. fair share across tenants"):
            summary["fairness"], figs = fairness.run(cfg, redis_url, log_dir)
        figures += figs

    summary["duration_s"] = time.monotonic() - started
    title = (
        f"agentq bench ({'quick' if quick else 'full'}), Python {m['python_version']}, {m['usable_cpus']} cores, "
        f"{m['executor_kind']} pool, {summary['generated_at']}, {summary['duration_s']:.0f} s"
    )
    summary["figures"] = figures
    report.write(out, summary, figures, title)
    _charts(summary, out)
    console.print(report.table(figures, title))
    for name, law in summary["growth"]["laws"].items():
        console.print(f"[bold]law ({name}):[/] {law}", highlight=False)
    console.print(f"wrote {out}/summary.json, table.md, table.txt and the charts", highlight=False)
    if publish is not None and not quick:
        _publish(out, publish, summary, figures, title)
        console.print(f"published to {publish}, and the README's Performance section", highlight=False)
    return summary


def _charts(summary: dict[str, Any], out: Path) -> None:
    from agentq_tools.bench.charts import draw_all

    try:
        draw_all(summary, out)
    except ImportError:
        console.print("[yellow]no charts: matplotlib is missing (pip install -e '.[bench]')[/]")


def _publish(out: Path, docs: Path, summary: dict[str, Any], figures: list[report.Figure], title: str) -> None:
    """Copy a full run into ``docs``, write its page, and put its headline figures in the README."""
    from agentq_tools.bench.charts import CHARTS
    from agentq_tools.bench.docs import performance_section, readme, with_performance

    docs.mkdir(parents=True, exist_ok=True)
    for name in ("summary.json", "table.md", "table.txt", *CHARTS):
        if (out / name).exists():
            shutil.copy2(out / name, docs / name)
    (docs / "README.md").write_text(readme(summary, figures, title))
    project_readme = ROOT / "README.md"
    published = json.loads((docs / "summary.json").read_text())  # exactly what the README test reads back
    project_readme.write_text(with_performance(project_readme.read_text(), performance_section(published)))


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    t0 = time.monotonic()
    with console.status(f"{what}..."):
        yield
    console.print(f"  {what}: {time.monotonic() - t0:.1f} s", highlight=False)


def main(argv: list[str] | None = None) -> None:
    """``agentq-bench [--quick] [--out DIR] [--publish DIR]``."""
    parser = argparse.ArgumentParser(prog="agentq-bench", description="Run the benchmarks on a throw-away Redis.")
    parser.add_argument("--quick", action="store_true", help="a small run (seconds) that checks everything works")
    parser.add_argument("--out", default="bench-results", help="where to write summary.json, tables, charts")
    parser.add_argument("--publish", default=None, help="also copy a full run's results and README here")
    parser.add_argument("--peers", action="store_true", help="with --quick: install and run the peers too")
    args = parser.parse_args(argv)
    publish = Path(args.publish) if args.publish else None
    run_bench(quick=args.quick, out=Path(args.out), publish=publish, with_peers=args.peers)


if __name__ == "__main__":
    main()
