"""Benchmarks 3 and 6: the queue's own cost, on jobs that do (almost) nothing.

A zero-work job asks one source whose latency is set to 0 and runs one work unit of inference
(the least the job accepts: about a millisecond of CPU, measured and reported). Benchmark 3
sends them one at a time through the real client and splits each job's latency into
enqueue → start (the caller's clock before ``enqueue`` to the worker's ``started_at``) and
finish → caller-has-result (the worker's ``finished_at`` to ``Client.result`` returning).
Benchmark 6 sends 1,000 at once and times the whole batch, with 1 and then 2 workers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from agentq.settings import Settings, get_settings
from agentq_tools.bench.cluster import Cluster
from agentq_tools.bench.config import BenchConfig
from agentq_tools.bench.report import Figure, spread
from agentq_tools.bench.waiting import run_batch
from producer.client import Client

NOOP_SOURCE = "weather"
#: Published by SAQ's README for 1,000 no-op jobs (a different machine): the reference points.
SAQ_REPORTED_S = {"saq": 0.41, "arq": 5.02, "rq": 15.1}


def zero_work_settings() -> dict[str, object]:
    """Worker settings that make a job as small as the job allows."""
    return {
        "time_scale": 1.0,
        "inference_units": 1,
        "source_latency_s": {NOOP_SOURCE: 0.0},
        "health_check_interval_s": 1,
    }


async def _one_at_a_time(settings: Settings, jobs: int) -> dict[str, Any]:
    to_start: list[float] = []
    to_caller: list[float] = []
    totals: list[float] = []
    cpu: list[float] = []
    async with Client(settings) as client:
        request = client.validate("zero-work job", sources=[NOOP_SOURCE])
        for i in range(jobs + 5):
            t_enqueue = time.time()
            job_id = await client.enqueue_request(request)
            result = await client.result(job_id, timeout=30)
            t_caller = time.time()
            if i < 5 or result.timing is None:  # the first few warm connections up
                continue
            to_start.append(1000 * (result.timing.started_at.timestamp() - t_enqueue))
            to_caller.append(1000 * (t_caller - result.timing.finished_at.timestamp()))
            totals.append(1000 * (t_caller - t_enqueue))
            cpu.append(1000 * result.timing.inference_cpu_s)
    return {
        "jobs": len(totals),
        "enqueue_to_start_ms": spread(to_start),
        "finish_to_caller_ms": spread(to_caller),
        "end_to_end_ms": spread(totals),
        "job_inference_cpu_ms": spread(cpu),
        "arq_default_poll_delay_ms": 500,
    }


async def _batch(settings: Settings, jobs: int) -> dict[str, Any]:
    async with Client(settings) as client:
        request = client.validate("no-op job", sources=[NOOP_SOURCE])
        batch = await run_batch(client, [request] * jobs, timeout=120)
    failed = sum(r.status != "ok" for r in batch.results.values())
    return {"jobs": jobs, "total_s": batch.wall_s, "jobs_per_s": jobs / batch.wall_s, "failed": failed}


def run(cfg: BenchConfig, redis_url: str, log_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[Figure]]:
    """Queue overhead with one worker, then 1,000 no-op jobs with 1 and 2 workers."""
    settings = get_settings(redis_url=redis_url)
    noop: dict[str, Any] = {"jobs": cfg.noop_jobs, "by_workers": {}, "saq_readme_s": SAQ_REPORTED_S}
    with Cluster(redis_url, log_dir, pool_size=cfg.pool_size, **zero_work_settings()) as cluster:
        cluster.add(1)
        queue = asyncio.run(_one_at_a_time(settings, cfg.queue_jobs))
        queue["poll_delay_s"] = settings.poll_delay_s
        for workers in cfg.worker_counts:
            cluster.add(workers - len(cluster.procs))
            noop["by_workers"][str(workers)] = asyncio.run(_batch(settings, cfg.noop_jobs))
    noop["max_jobs_per_worker"] = settings.max_jobs
    return queue, noop, _figures(queue, noop)


def _figures(q: dict[str, Any], n: dict[str, Any]) -> list[Figure]:
    poll = f"arq polls the queue every {q['poll_delay_s'] * 1000:g} ms (poll_delay), so pickup waits up to that"
    start, back = q["enqueue_to_start_ms"], q["finish_to_caller_ms"]
    figs = [
        Figure(
            "queue", f"enqueue→start p50 ({q['jobs']} jobs)", start["p50"], "ms", "≤ 10 ms", start["p50"] <= 10, poll
        ),
        Figure("queue", "enqueue→start p95", start["p95"], "ms"),
        Figure("queue", "enqueue→start p99", start["p99"], "ms", "≤ 50 ms", start["p99"] <= 50, poll),
        Figure(
            "queue",
            "finish→caller-has-result p50",
            back["p50"],
            "ms",
            "≤ 10 ms",
            back["p50"] <= 10,
            "arq stores the result after the job returns, then the worker publishes; the caller then GETs it",
        ),
        Figure("queue", "finish→caller-has-result p95", back["p95"], "ms"),
        Figure(
            "queue",
            "finish→caller-has-result p99",
            back["p99"],
            "ms",
            "≤ 50 ms",
            back["p99"] <= 50,
            "scheduling noise on 2 shared cores",
        ),
        Figure("queue", "zero-work job's inference CPU (1 unit)", q["job_inference_cpu_ms"]["p50"], "ms"),
    ]
    for workers, r in n["by_workers"].items():
        figs.append(
            Figure(
                "noop",
                f"{n['jobs']:,} no-op jobs, {workers} worker(s)",
                r["total_s"],
                "s",
                f"SAQ README: saq {SAQ_REPORTED_S['saq']} s, arq {SAQ_REPORTED_S['arq']} s",
            )
        )
    return figs
