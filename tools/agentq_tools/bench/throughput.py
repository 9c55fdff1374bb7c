"""Benchmark 4: jobs per second at saturation, against what the cores allow.

Inference-dominated jobs (the three reference sources with no latency, each running a fixed
amount of inference) are enqueued all at once, with 1 and then 2 worker processes. The limit is
``cores / CPU-seconds of inference per job``, the CPU measured by the jobs themselves in the same
run. Each worker's resident memory, pool included, is sampled while it works.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

from agentq.settings import Settings
from agentq.sources import REFERENCE_SOURCES
from agentq_tools.bench.cluster import Cluster, client_settings, peak_rss
from agentq_tools.bench.config import BenchConfig
from agentq_tools.bench.executors import units_for
from agentq_tools.bench.report import Figure
from agentq_tools.bench.waiting import run_batch
from producer.client import Client


async def _saturate(settings: Settings, jobs: int) -> dict[str, Any]:
    async with Client(settings) as client:
        request = client.validate("How busy can the workers get?", sources=list(REFERENCE_SOURCES))
        await run_batch(client, [request] * 2)  # warm-up, not measured
        batch = await run_batch(client, [request] * jobs, timeout=300)
    timings = [r.timing for r in batch.results.values() if r.timing is not None]
    cpu_per_job = statistics.fmean(t.inference_cpu_s for t in timings)
    return {"jobs": jobs, "wall_s": batch.wall_s, "jobs_per_s": jobs / batch.wall_s, "cpu_s_per_job": cpu_per_job}


def run(
    cfg: BenchConfig, calibration: dict[str, float], redis_url: str, log_dir: Path
) -> tuple[dict[str, Any], list[Figure]]:
    """Saturate 1 and 2 workers; compare jobs/s with cores / CPU-s per job."""
    cores = cfg.pool_size
    units = units_for(cfg.throughput_inference_cpu_s, calibration)
    settings = client_settings(redis_url)
    worker_settings: dict[str, object] = {
        "time_scale": 1.0,
        "inference_units": units,
        "source_latency_s": dict.fromkeys(REFERENCE_SOURCES, 0.0),
        "pool_size": cores,
    }
    by_workers: dict[str, Any] = {}
    for workers in cfg.worker_counts:
        with Cluster(redis_url, log_dir, **worker_settings) as cluster:
            procs = cluster.add(workers)
            with peak_rss([p.pid for p in procs]) as peaks:
                measured = asyncio.run(_saturate(settings, cfg.throughput_jobs))
            limit = cores / measured["cpu_s_per_job"]
            measured["limit_jobs_per_s"] = limit
            measured["fraction_of_limit"] = measured["jobs_per_s"] / limit
            measured["peak_rss_mb"] = [peaks[p.pid] / 2**20 for p in procs]
            by_workers[str(workers)] = measured
    result = {
        "cores": cores,
        "units_per_inference": units,
        "sources_per_job": len(REFERENCE_SOURCES),
        "max_jobs_per_worker": settings.max_jobs,
        "by_workers": by_workers,
    }
    return result, _figures(result)


def _figures(r: dict[str, Any]) -> list[Figure]:
    figs = []
    for workers, m in r["by_workers"].items():
        figs.append(
            Figure(
                "throughput",
                f"{workers} worker(s): jobs/s ({m['cpu_s_per_job']:.2f} CPU-s/job)",
                m["jobs_per_s"],
                "jobs/s",
                f"limit {r['cores']} cores / CPU-s = {m['limit_jobs_per_s']:.2f}",
            )
        )
        figs.append(
            Figure(
                "throughput",
                f"{workers} worker(s): fraction of limit",
                m["fraction_of_limit"],
                "",
                "≥ 0.90",
                m["fraction_of_limit"] >= 0.9,
                "the worker's event loop, arq's polling, JSON and Redis need CPU on the same 2 cores, and the "
                "batch's fill and drain leave a core idle for a moment",
            )
        )
        figs.append(
            Figure("throughput", f"{workers} worker(s): peak RSS per worker incl. pool", max(m["peak_rss_mb"]), "MiB")
        )
    return figs
