"""Benchmark 9: fair share across tenants, through a real Redis and real workers.

Jobs here wait on one source (``weather`` at ``fair_time_scale``: a fetch of a known length) and
run the no-op analysis, so one job lasts about as long as its fetch and the workers can run
``fair_max_jobs`` each at once. Three measures:

- **a backlog and a few jobs**: tenant A enqueues ``fair_backlog`` jobs, then tenant B
  ``fair_few``. B's p99 enqueue→start, beside one job's duration (its median ``total_s``): with
  fair share, and with first in, first out (both callers the default tenant, one queue, as before
  tenants), where B waits behind A's backlog. Once B's jobs are done, A's are purged.
- **weights 3:1**: two tenants with ``fair_weighted`` jobs each, weights 3 and 1: the ratio of
  their starts among the first starts while both have a backlog.
- **a lone tenant**: zero-work jobs of one tenant other than the default, beside the same jobs of
  the default tenant (today's single queue): jobs/s, rounds interleaved, medians compared.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

from agentq.contract import JobResult
from agentq.settings import Settings
from agentq_tools.bench.cluster import Cluster, client_settings
from agentq_tools.bench.config import BenchConfig
from agentq_tools.bench.report import Figure
from agentq_tools.bench.waiting import Batch, run_batch
from producer.client import Client

#: Targets (issue 19).
MAX_WAIT_IN_JOBS = 2.0
WEIGHTS = {"heavy": 3.0, "light": 1.0}
SHARE_TOLERANCE = 0.10
MIN_LONE_RATIO = 0.95


def _own(batch: Batch) -> list[JobResult]:
    """The batch's own jobs' results (its subscription hears every job's end, other callers' too)."""
    return [batch.results[j] for j in batch.enqueued_at if j in batch.results]


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def _backlog_then_few(settings: Settings, cfg: BenchConfig, a_tenant: str, b_tenant: str) -> dict[str, Any]:
    """A's backlog, then B's few: B's waits and durations; A's leftovers purged once B is done."""
    async with Client(settings, tenant=a_tenant) as a, Client(settings, tenant=b_tenant) as b:
        gate = asyncio.Semaphore(50)

        async def one(i: int) -> None:
            async with gate:
                await a.enqueue_request(a.validate(f"backlog {i}", sources=["weather"], analysis="noop"))

        await asyncio.gather(*(one(i) for i in range(cfg.fair_backlog)))
        requests = [b.validate(f"few {i}", sources=["weather"], analysis="noop") for i in range(cfg.fair_few)]
        batch = await run_batch(b, requests, timeout=600)
        purged, _ = await a.purge(tenant=a_tenant if a_tenant != b_tenant else None)
    results = _own(batch)
    waits = [r.timing.queue_wait_s or 0.0 for r in results if r.timing is not None]
    durations = [r.timing.total_s for r in results if r.timing is not None]
    return {
        "b_jobs": len(results),
        "b_wait_p99_s": _p99(waits),
        "b_wait_max_s": max(waits),
        "job_s": statistics.median(durations),
        "a_purged": len(purged),
    }


async def _weighted(settings: Settings, cfg: BenchConfig) -> dict[str, Any]:
    """Both tenants' jobs at once; the shares of the first starts, while both still have a backlog."""
    async with Client(settings, tenant="heavy") as heavy, Client(settings, tenant="light") as light:
        per = cfg.fair_weighted
        requests = {
            c: [c.validate(f"{c.tenant} {i}", sources=["weather"], analysis="noop") for i in range(per)]
            for c in (heavy, light)
        }
        batches = await asyncio.gather(*(run_batch(c, r, timeout=600) for c, r in requests.items()))
    results: list[JobResult] = [r for batch in batches for r in _own(batch) if r.timing is not None]
    results.sort(key=lambda r: r.timing.started_at)  # type: ignore[union-attr]
    # Both have a backlog until the heavier tenant's last job starts: count the starts before it.
    window = round(per * sum(WEIGHTS.values()) / max(WEIGHTS.values()) * 0.9)
    first = results[:window]
    counts = {t: sum(r.job_id.startswith(f"{t}_") for r in first) for t in WEIGHTS}
    return {"window": window, "starts": counts, "ratio": counts["heavy"] / max(1, counts["light"])}


async def _jobs_per_s(settings: Settings, tenant: str, n: int) -> float:
    async with Client(settings, tenant=tenant) as client:
        requests = [client.validate(f"zero {i}", sources=["noop"], analysis="noop") for i in range(n)]
        batch = await run_batch(client, requests, timeout=600)
    return n / batch.wall_s


def run(cfg: BenchConfig, redis_url: str, log_dir: Path) -> tuple[dict[str, Any], list[Figure]]:
    """Each measure on workers of its own (``Cluster`` empties Redis after each)."""
    settings = client_settings(redis_url)
    io_jobs = {"time_scale": cfg.fair_time_scale, "admission": False, "max_jobs": cfg.fair_max_jobs}
    result: dict[str, Any] = {
        "time_scale": cfg.fair_time_scale,
        "workers": cfg.fair_workers,
        "max_jobs": cfg.fair_max_jobs,
        "backlog": cfg.fair_backlog,
        "few": cfg.fair_few,
    }
    for key, (a_tenant, b_tenant) in (("fair", ("team-a", "team-b")), ("fifo", ("default", "default"))):
        with Cluster(redis_url, log_dir, **io_jobs) as cluster:
            cluster.add(cfg.fair_workers)
            result[key] = asyncio.run(_backlog_then_few(settings, cfg, a_tenant, b_tenant))
    with Cluster(redis_url, log_dir, tenant_weights=WEIGHTS, **io_jobs) as cluster:
        cluster.add(cfg.fair_workers)
        result["weighted"] = asyncio.run(_weighted(settings, cfg))
    rates: dict[str, list[float]] = {"default": [], "solo": []}
    with Cluster(redis_url, log_dir) as cluster:
        cluster.add(1)
        for _ in range(cfg.fair_rounds):
            for tenant in rates:
                rates[tenant].append(asyncio.run(_jobs_per_s(settings, tenant, cfg.fair_lone_jobs)))
    result["lone"] = {t: {"jobs_per_s": r, "median": statistics.median(r)} for t, r in rates.items()}
    result["lone"]["ratio"] = result["lone"]["solo"]["median"] / result["lone"]["default"]["median"]
    return result, _figures(result)


def _figures(r: dict[str, Any]) -> list[Figure]:
    fair, fifo, weighted = r["fair"], r["fifo"], r["weighted"]
    setup = f"{r['backlog']} of A's, then {r['few']} of B's, {r['workers']} workers x {r['max_jobs']}"
    lo, hi = 3 * (1 - SHARE_TOLERANCE), 3 * (1 + SHARE_TOLERANCE)
    return [
        Figure(
            "fairness",
            f"{setup}: B's p99 enqueue→start / one job ({fair['job_s']:.2f} s), fair share",
            fair["b_wait_p99_s"] / fair["job_s"],
            "jobs",
            f"≤ {MAX_WAIT_IN_JOBS:g}",
            fair["b_wait_p99_s"] / fair["job_s"] <= MAX_WAIT_IN_JOBS,
        ),
        Figure(
            "fairness",
            f"{setup}: B's p99 enqueue→start / one job ({fifo['job_s']:.2f} s), first in first out",
            fifo["b_wait_p99_s"] / fifo["job_s"],
            "jobs",
            "",
            None,
            "one queue: B waits behind A's backlog",
        ),
        Figure(
            "fairness",
            f"weights 3:1, starts while both have a backlog ({weighted['window']}): heavy / light",
            weighted["ratio"],
            "",
            f"{lo:.1f} to {hi:.1f}",
            lo <= weighted["ratio"] <= hi,
        ),
        Figure(
            "fairness",
            "a lone tenant's zero-work jobs/s / the default tenant's (today's single queue)",
            r["lone"]["ratio"],
            "",
            f"≥ {MIN_LONE_RATIO:.2f}",
            r["lone"]["ratio"] >= MIN_LONE_RATIO,
        ),
    ]
