"""arq: the worker's settings (``arq agentq_tools.bench.peer_apps.arq_app.WorkerSettings``) and a driver.

arq's defaults otherwise, pickle included; ``BENCH_POLL_DELAY_S`` is its poll delay (0.5 s by default).
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any, ClassVar

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import func

from agentq_tools.bench.peer_apps.common import ENV, ready_key, reference
from agentq_tools.bench.peer_apps.common import create_pool as create_inference_pool

QUEUE_KEY = "arq:queue"


async def noop(ctx: dict[str, Any]) -> None:
    """Nothing."""


async def reference_query(ctx: dict[str, Any]) -> dict[str, Any]:
    """The reference design."""
    return await reference(ctx["pool"])


async def startup(ctx: dict[str, Any]) -> None:
    ctx["pool"] = create_inference_pool()
    await ctx["redis"].set(ready_key(), 1, ex=600)


async def shutdown(ctx: dict[str, Any]) -> None:
    pool: cf.Executor | None = ctx.get("pool")
    if pool is not None:
        pool.shutdown()


class WorkerSettings:
    """arq's worker settings."""

    functions: ClassVar[list[Any]] = [func(noop, name="noop"), func(reference_query, name="reference_query")]
    redis_settings = RedisSettings.from_dsn(ENV.redis_url)
    on_startup = startup
    on_shutdown = shutdown
    poll_delay = ENV.poll_delay_s


class Driver:
    """Enqueues with arq's own client; unfinished jobs are those still in arq's queue."""

    def __init__(self) -> None:
        self.pool: ArqRedis | None = None

    async def __aenter__(self) -> Driver:
        self.pool = await create_pool(RedisSettings.from_dsn(ENV.redis_url))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.pool is not None:
            await self.pool.aclose()

    async def enqueue(self, function: str) -> None:
        assert self.pool is not None
        await self.pool.enqueue_job(function)

    async def unfinished(self, enqueued: int) -> int:
        assert self.pool is not None
        return int(await self.pool.zcard(QUEUE_KEY))
