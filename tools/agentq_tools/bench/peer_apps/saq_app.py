"""SAQ: the worker's settings (``saq agentq_tools.bench.peer_apps.saq_app.settings``) and a driver."""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

from saq import Queue  # type: ignore[import-not-found]

from agentq_tools.bench.peer_apps.common import ENV, create_pool, ready_key, reference

INCOMPLETE_KEY = "saq:default:incomplete"


async def noop(ctx: dict[str, Any]) -> None:
    """Nothing."""


async def reference_query(ctx: dict[str, Any]) -> dict[str, Any]:
    """The reference design."""
    return await reference(ctx["pool"])


async def startup(ctx: dict[str, Any]) -> None:
    ctx["pool"] = create_pool()
    await ctx["worker"].queue.redis.set(ready_key(), 1, ex=600)


async def shutdown(ctx: dict[str, Any]) -> None:
    pool: cf.Executor | None = ctx.get("pool")
    if pool is not None:
        pool.shutdown()


settings: dict[str, Any] = {
    "queue": Queue.from_url(ENV.redis_url),
    "functions": [noop, reference_query],
    "startup": startup,
    "shutdown": shutdown,
}


class Driver:
    """Enqueues with SAQ's own client; unfinished jobs are those in SAQ's incomplete set."""

    def __init__(self) -> None:
        self.queue: Any = None

    async def __aenter__(self) -> Driver:
        self.queue = Queue.from_url(ENV.redis_url)
        await self.queue.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.queue.disconnect()

    async def enqueue(self, function: str) -> None:
        await self.queue.enqueue(function)

    async def unfinished(self, enqueued: int) -> int:
        return int(await self.queue.redis.zcard(INCOMPLETE_KEY))
