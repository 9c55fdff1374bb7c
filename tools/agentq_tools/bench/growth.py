"""Benchmark 5: how latency grows with the number of sources and with the size of a burst.

Sources: one query fanning out to 3, 5, 10 and 20 sources (the reference three, then copies of
them from ``agentq_tools.sources``), each source ~2 s of inference at time_scale 1, one worker.
Burst: 10, 100 and 1,000 small reference queries enqueued at once, two workers; each job's
latency is enqueue → the caller learns it is done.
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
from agentq_tools.bench.report import Figure, spread
from agentq_tools.bench.waiting import run_batch
from agentq_tools.demo import REFERENCE_QUESTION
from agentq_tools.sources import first_sources
from producer.client import Client


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = slope * x + intercept``."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return slope, my - slope * mx


async def _sources(settings: Settings, sizes: tuple[int, ...], repeats: int) -> list[dict[str, Any]]:
    rows = []
    async with Client(settings) as client:
        await client.result(await client.enqueue(REFERENCE_QUESTION, sources=list(REFERENCE_SOURCES)), timeout=60)
        for n in sizes:
            runs = []
            inference_walls: list[float] = []
            for _ in range(repeats):
                job_id = await client.enqueue(REFERENCE_QUESTION, sources=list(first_sources(n)), deadline_s=30.0)
                result = await client.result(job_id, timeout=120)
                if result.timing is not None:
                    runs.append(result.timing)
                    inference_walls += [o.inference_s for o in result.sources if o.inference_s is not None]
            rows.append(
                {
                    "sources": n,
                    "total_s": statistics.median(t.total_s for t in runs),
                    "floor_s": statistics.median(t.critical_path_s for t in runs),
                    "sequential_estimate_s": statistics.median(t.sequential_estimate_s for t in runs),
                    "inference_cpu_s": statistics.median(t.inference_cpu_s for t in runs),
                    "inference_s_mean": statistics.fmean(i for i in inference_walls) if inference_walls else 0.0,
                }
            )
    return rows


async def _bursts(settings: Settings, sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    async with Client(settings) as client:
        request = client.validate(REFERENCE_QUESTION, sources=list(REFERENCE_SOURCES))
        await run_batch(client, [request] * 4)  # warm-up
        for n in sizes:
            batch = await run_batch(client, [request] * n, timeout=300)
            rows.append(
                {
                    "jobs": n,
                    "wall_s": batch.wall_s,
                    "jobs_per_s": n / batch.wall_s,
                    "latency_s": spread(batch.latencies()),
                }
            )
    return rows


def run(
    cfg: BenchConfig, calibration: dict[str, float], redis_url: str, log_dir: Path
) -> tuple[dict[str, Any], list[Figure]]:
    """Grow the sources, then the burst; fit the law each follows."""
    ref_units = units_for(cfg.reference_inference_cpu_s, calibration)
    settings = client_settings(redis_url)
    common = {"inference_units": ref_units, "pool_size": cfg.pool_size, "max_deadline_s": 60.0}
    with Cluster(redis_url, log_dir, time_scale=cfg.growth_time_scale, **common) as cluster:
        cluster.add(1)
        sources = asyncio.run(_sources(settings, cfg.growth_sources, cfg.growth_repeats))
    with Cluster(redis_url, log_dir, time_scale=cfg.burst_time_scale, **common) as cluster:
        cluster.add(max(cfg.worker_counts))
        bursts = asyncio.run(_bursts(settings, cfg.burst_sizes))

    # Fit where inference, not the slowest fetch, sets the pace: more than two sources per core.
    big = [r for r in sources if r["sources"] > 2 * cfg.pool_size] or sources
    slope, intercept = fit_line([r["sources"] for r in big], [r["total_s"] for r in big])
    per_source_wall = statistics.fmean(r["inference_s_mean"] for r in big)
    b_slope, b_intercept = fit_line([r["jobs"] for r in bursts], [r["latency_s"]["p50"] for r in bursts])
    result: dict[str, Any] = {
        "sources": {
            "time_scale": cfg.growth_time_scale,
            "workers": 1,
            "pool_size": cfg.pool_size,
            "rows": sources,
            "fit": {
                "slope_s_per_source": slope,
                "intercept_s": intercept,
                "expected_slope_s": per_source_wall / cfg.pool_size,
                "fitted_sources": [r["sources"] for r in big],
            },
        },
        "burst": {
            "time_scale": cfg.burst_time_scale,
            "workers": max(cfg.worker_counts),
            "rows": bursts,
            "fit": {"p50_slope_s_per_job": b_slope, "p50_intercept_s": b_intercept},
        },
    }
    result["laws"] = laws(result)
    return result, _figures(result)


def laws(r: dict[str, Any]) -> dict[str, str]:
    """One sentence per growth chart: the law its points follow, with the fitted numbers."""
    s, b = r["sources"], r["burst"]
    fit, bfit = s["fit"], b["fit"]
    top = b["rows"][-1]
    return {
        "sources": (
            f"Latency follows the critical path: while the slowest fetch dominates it barely moves, and once "
            f"the sources' inference outweighs it, it grows linearly, {fit['slope_s_per_source']:.3f} s per extra "
            f"source at time_scale {s['time_scale']:g} (fitted on {', '.join(map(str, fit['fitted_sources']))} "
            f"sources), the order of one inference's wall time ({fit['expected_slope_s'] * s['pool_size']:.3f} s) "
            f"divided by the {s['pool_size']} cores ({fit['expected_slope_s']:.3f} s)."
        ),
        "burst": (
            f"Latency grows linearly with the burst, as queueing theory says for a fixed service rate: the median "
            f"job waits about half the burst's service time, {bfit['p50_slope_s_per_job'] * 1000:.1f} ms per job in "
            f"the burst, since {b['workers']} workers serve about {top['jobs_per_s']:.0f} jobs/s."
        ),
    }


def _figures(r: dict[str, Any]) -> list[Figure]:
    figs = [
        Figure(
            "growth",
            f"{row['sources']} sources: latency",
            row["total_s"],
            "s",
            f"floor {row['floor_s']:.2f} s (x{row['total_s'] / row['floor_s']:.3f})",
        )
        for row in r["sources"]["rows"]
    ]
    for row in r["burst"]["rows"]:
        lat = row["latency_s"]
        figs.append(
            Figure(
                "growth",
                f"burst of {row['jobs']:,}: p50 latency (max {lat['max']:.2f} s)",
                lat["p50"],
                "s",
                f"{row['jobs_per_s']:.0f} jobs/s",
            )
        )
    return figs
