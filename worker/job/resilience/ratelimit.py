"""Rate limits per source that hold across every worker: a moving window in Redis.

Built on the ``limits`` library (its asyncio Redis storage on redis-py, sharing the worker's
connection pool): its moving window keeps the timestamps of the last N calls in one Redis list and
admits a call atomically in a Lua script, so "N per period" holds in *every* window of that length,
however many workers take tokens. ``limits`` answers "may I, now?"; waiting is ours: a refused
caller sleeps until the oldest call in the window leaves it (``get_window_stats().reset_time``),
then asks again, and gives up as soon as the wait would make its fetch miss the deadline.

Clocks: ``limits`` stamps each call with the caller's ``time.time()`` (not Redis's ``TIME``), so the
limit is exact among workers on one host; across hosts whose clocks differ by up to d seconds it
holds as N per (period - d). Hosts must run NTP (docs/sources.md, "Source policies").
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter

from agentq.connection import limits_storage

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from agentq.protocol.keys import Keys


class RateLimited(Exception):
    """No token could be had before the latest moment the fetch could still start."""


def parse_limit(value: int | str) -> RateLimitItem:
    """A setting's value as a limit: an integer is requests per second, a string is ``limits``
    notation (``"100/minute"``, ``"5 per 2 seconds"``)."""
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"a rate limit must be > 0 requests per second, got {value}")
        return parse(f"{value}/second")
    return parse(value)


class RateLimits:
    """Per-source limits; sources without one are unlimited."""

    def __init__(self, redis: Redis, keys: Keys, limits: dict[str, int | str]) -> None:
        self.items = {name: parse_limit(value) for name, value in limits.items()}
        self.limiter = MovingWindowRateLimiter(limits_storage(redis, keys.rate_limit_prefix))

    def limit_of(self, source: str) -> RateLimitItem | None:
        return self.items.get(source)

    async def acquire(self, source: str, *, latest_start: float, redis_timeout_s: float = 1.0) -> float:
        """Take one token for ``source``, waiting for it if need be; return the seconds waited.

        ``latest_start`` is the ``time.monotonic()`` instant after which the call would be useless;
        :class:`RateLimited` is raised at once if the next token comes later than that.
        """
        item = self.items.get(source)
        if item is None:
            return 0.0
        t0 = time.monotonic()
        while True:
            async with asyncio.timeout(redis_timeout_s):
                if await self.limiter.hit(item, source):
                    return time.monotonic() - t0
                stats = await self.limiter.get_window_stats(item, source)
            # A little jitter so waiters of several workers do not all ask at the same instant.
            wait = max(stats.reset_time - time.time(), 0.001) + random.uniform(0, 0.005)
            if time.monotonic() + wait > latest_start:
                raise RateLimited(
                    f"rate limit {item} reached; the next token comes in {wait:.2f}s, too late for the deadline"
                )
            await asyncio.sleep(wait)
