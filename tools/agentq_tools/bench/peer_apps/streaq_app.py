"""streaq: the worker (``streaq run agentq_tools.bench.peer_apps.streaq_app:worker``) and a driver."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from streaq import Worker  # type: ignore[import-not-found]

from agentq_tools.bench.peer_apps.common import ENV, create_pool, ready_key, reference

RESULTS_KEY = "streaq:default:index:results"


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[cf.Executor | None]:
    pool = create_pool()
    await worker.redis.set(ready_key(), "1", ex=600)
    try:
        yield pool
    finally:
        if pool is not None:
            pool.shutdown()


worker = Worker(redis_url=ENV.redis_url, lifespan=lifespan)


async def _noop() -> None:
    """Nothing."""


async def _reference_query() -> dict[str, Any]:
    """The reference design."""
    return await reference(worker.context)


noop = worker.task(name="noop")(_noop)
reference_query = worker.task(name="reference_query")(_reference_query)
TASKS = {"noop": noop, "reference_query": reference_query}


class Driver:
    """Enqueues with streaq's own client; unfinished jobs are those without a result yet."""

    def __init__(self) -> None:
        self.results_before = 0

    async def __aenter__(self) -> Driver:
        await worker.__aenter__()
        self.results_before = int(await worker.redis.zcard(RESULTS_KEY))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await worker.__aexit__(None, None, None)

    async def enqueue(self, function: str) -> None:
        await TASKS[function].enqueue()

    async def unfinished(self, enqueued: int) -> int:
        return enqueued - (int(await worker.redis.zcard(RESULTS_KEY)) - self.results_before)
