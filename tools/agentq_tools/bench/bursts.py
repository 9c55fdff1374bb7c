"""Benchmark 8: bursts bigger than the cores can serve, with and without deadline-aware admission.

Reference jobs (three sources, the reference latencies and inference at ``workload_time_scale``)
with a deadline of ``burst_deadline_s`` are enqueued all at once. A burst's size is a multiple of
what the cores can serve within one deadline: ``cores × deadline / CPU-s per job``, the CPU
measured by a first job run alone (which also teaches admission the costs). Each configuration
runs with one worker and with two (each with a pool of as many interpreters as there are cores):

- ours as configured by default: admission on (``max_jobs`` 4 at most);
- admission off, ``max_jobs`` 1: never two jobs at once;
- admission off, ``max_jobs`` 4: the former default.

Goodput is the share of jobs that end ``ok`` (every source ok); throughput counts those jobs per
second from the first enqueue to the last completion, against the core limit ``cores / CPU-s per
job`` (the CPU the burst's own jobs report).
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

from agentq.settings import Settings
from agentq.sources import REFERENCE_SOURCES
from agentq_tools.bench.cluster import Cluster, client_settings
from agentq_tools.bench.config import BenchConfig
from agentq_tools.bench.executors import units_for
from agentq_tools.bench.report import Figure
from agentq_tools.bench.waiting import run_batch
from agentq_tools.demo import REFERENCE_QUESTION
from producer.client import Client

#: Targets (issue 12), at the headline burst.
MIN_GOODPUT = 0.95
MIN_FRACTION_OF_LIMIT = 0.90
CONFIGS: tuple[tuple[str, str, dict[str, object]], ...] = (
    ("admission", "admission (defaults)", {"admission": True}),
    ("max_jobs_1", "max_jobs 1", {"admission": False, "max_jobs": 1}),
    ("max_jobs_4", "max_jobs 4", {"admission": False, "max_jobs": 4}),
)


async def _bursts(settings: Settings, cfg: BenchConfig, cores: int) -> dict[str, Any]:
    async with Client(settings) as client:
        alone = await client.ask(client.validate(f"{REFERENCE_QUESTION} alone", sources=list(REFERENCE_SOURCES)))
        assert alone.timing is not None
        cpu_alone = alone.timing.inference_cpu_s
        per_deadline = cores * cfg.burst_deadline_s / cpu_alone
        rows = []
        for multiple in cfg.burst_multiples:
            jobs = max(1, round(multiple * per_deadline))
            requests = [
                client.validate(
                    f"{REFERENCE_QUESTION} {multiple} {i}",
                    sources=list(REFERENCE_SOURCES),
                    deadline_s=cfg.burst_deadline_s,
                )
                for i in range(jobs)
            ]
            batch = await run_batch(client, requests, timeout=600)
            results = list(batch.results.values())
            ok = sum(r.status == "ok" for r in results)
            cpu = statistics.fmean(r.timing.inference_cpu_s for r in results if r.timing is not None)
            limit = cores / cpu
            rows.append(
                {
                    "multiple": multiple,
                    "jobs": jobs,
                    "ok": ok,
                    "partial": sum(r.status == "partial" for r in results),
                    "failed": sum(r.status == "failed" for r in results),
                    "goodput": ok / jobs,
                    "wall_s": batch.wall_s,
                    "ok_jobs_per_s": ok / batch.wall_s,
                    "cpu_s_per_job": cpu,
                    "limit_jobs_per_s": limit,
                    "fraction_of_limit": ok / batch.wall_s / limit,
                }
            )
    return {"alone_s": alone.timing.total_s, "cpu_s_alone": cpu_alone, "per_deadline": per_deadline, "rows": rows}


def run(
    cfg: BenchConfig, calibration: dict[str, float], redis_url: str, log_dir: Path
) -> tuple[dict[str, Any], list[Figure]]:
    """Each configuration with 1 and 2 workers, bursts of each multiple."""
    scale, cores = cfg.workload_time_scale, cfg.pool_size
    units = units_for(cfg.reference_inference_cpu_s, calibration)
    settings = client_settings(redis_url)
    runs: dict[str, Any] = {}
    for key, label, options in CONFIGS:
        for workers in cfg.worker_counts:
            with Cluster(
                redis_url, log_dir, time_scale=scale, inference_units=units, pool_size=cores, **options
            ) as cluster:
                cluster.add(workers)
                measured = asyncio.run(_bursts(settings, cfg, cores))
            runs[f"{key}/{workers}"] = {"config": key, "label": label, "workers": workers, **measured}
    result = {
        "time_scale": scale,
        "deadline_s": cfg.burst_deadline_s,
        "cores": cores,
        "headline_multiple": cfg.burst_headline,
        "runs": runs,
    }
    return result, _figures(result)


def _figures(r: dict[str, Any]) -> list[Figure]:
    figs = []
    for run in r["runs"].values():
        row = next((x for x in run["rows"] if x["multiple"] == r["headline_multiple"]), run["rows"][-1])
        name = f"{run['label']}, {run['workers']} worker(s), burst of {row['jobs']} ({row['multiple']:g}×)"
        ours = run["config"] == "admission"
        figs.append(
            Figure(
                "bursts",
                f"{name}: goodput",
                row["goodput"],
                "",
                f"≥ {MIN_GOODPUT:.2f}" if ours else "",
                row["goodput"] >= MIN_GOODPUT if ours else None,
                "the cost estimates come from this worker's recent jobs; when other work takes the shared cores "
                "in the middle of a burst, jobs admitted before it run slower than estimated",
            )
        )
        figs.append(
            Figure(
                "bursts",
                f"{name}: ok jobs/s / core limit ({row['limit_jobs_per_s']:.2f}/s)",
                row["fraction_of_limit"],
                "",
                f"≥ {MIN_FRACTION_OF_LIMIT:.2f}" if ours else "",
                row["fraction_of_limit"] >= MIN_FRACTION_OF_LIMIT if ours else None,
                "the pool idles while the first jobs fetch and while the last ones finish; the estimates keep "
                "a margin (admission_margin plus one standard deviation) that leaves a core free at times",
            )
        )
    return figs
