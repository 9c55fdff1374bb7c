"""What every peer's app shares: its settings, the reference design, the pool, the ready mark."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import multiprocessing
import os
from dataclasses import dataclass
from typing import Any

from worker.pool.bag_of_words import analyse

#: The reference latencies, seconds at time_scale 1 (``worker.job.sources.simulated``).
LATENCY_S = {"weather": 2.0, "news": 1.5, "knowledge_base": 3.0}
#: A worker sets ``<READY_KEY><pid>`` once it can take jobs (its pool warm).
READY_KEY = "bench:ready:"
#: Concurrent enqueues of a driver, as ``bench.peers`` does for ours.
ENQUEUE_CONCURRENCY = 50


@dataclass(frozen=True)
class Env:
    """The run's settings, from ``BENCH_*`` environment variables set by ``bench.peers``."""

    redis_url: str
    time_scale: float
    units: int
    pool_size: int
    question: str
    texts: dict[str, str]
    poll_delay_s: float

    @classmethod
    def read(cls) -> Env:
        e = os.environ
        return cls(
            redis_url=e.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
            time_scale=float(e.get("BENCH_TIME_SCALE", "0.2")),
            units=int(e.get("BENCH_UNITS", "1")),
            pool_size=int(e.get("BENCH_POOL_SIZE", "0")),
            question=e.get("BENCH_QUESTION", "?"),
            texts=json.loads(e.get("BENCH_TEXTS", "{}")),
            poll_delay_s=float(e.get("BENCH_POLL_DELAY_S", "0.5")),
        )


ENV = Env.read()


def create_pool() -> cf.Executor | None:
    """The kind of pool ours picks (interpreters on 3.14+, else processes), warmed; None without a size."""
    if not ENV.pool_size:
        return None
    pool: cf.Executor
    if hasattr(cf, "InterpreterPoolExecutor"):
        pool = cf.InterpreterPoolExecutor(max_workers=ENV.pool_size)
    else:
        pool = cf.ProcessPoolExecutor(max_workers=ENV.pool_size, mp_context=multiprocessing.get_context("forkserver"))
    n = ENV.pool_size
    list(pool.map(analyse, ["warm"] * n, ["up"] * n, [{"units": 1}] * n))
    return pool


async def reference(pool: cf.Executor | None) -> dict[str, Any]:
    """The reference design: every fetch at once (TaskGroup), then every inference at once in the pool."""

    async def fetch(name: str) -> str:
        await asyncio.sleep(LATENCY_S[name] * ENV.time_scale)
        return ENV.texts.get(name, name)

    async with asyncio.TaskGroup() as group:
        fetched = {name: group.create_task(fetch(name)) for name in LATENCY_S}
    loop = asyncio.get_running_loop()
    params = {"units": ENV.units}
    outputs = await asyncio.gather(
        *(loop.run_in_executor(pool, analyse, ENV.question, task.result(), params) for task in fetched.values())
    )
    return {name: output["summary"] for name, output in zip(fetched, outputs, strict=True)}


def ready_key() -> str:
    """This worker process's ready mark."""
    return f"{READY_KEY}{os.getpid()}"
