"""Adaptive timeouts: a source's timeout follows its recent latencies, shared by every worker.

Each worker pushes the duration of every fetch attempt onto a Redis list per source, capped at
the newest ``window`` entries (LPUSH then LTRIM, pipelined: under concurrency the list may hold a
few entries more for a moment, and the next trim caps it again).
Once ``min_samples`` are there, the timeout is p95 × 1.5, clamped to ``[floor, ceiling]``.

An attempt that timed out is recorded as a sample equal to its timeout (its real latency was at
least that). Without it a source that became slower than its adaptive timeout would only ever
time out, add no samples, and keep its too-short timeout for good; with it the estimate grows
until answers arrive again.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from agentq.protocol.keys import Keys

#: The timeout is this many times the 95th percentile of recent latencies.
FACTOR = 1.5


class LatencyWindow:
    """The recent fetch durations of each source, and the timeout they suggest."""

    def __init__(self, redis: Redis, keys: Keys, *, window: int, min_samples: int, ttl_s: int = 86400) -> None:
        self.redis, self.keys = redis, keys
        self.window, self.min_samples, self.ttl_s = window, min_samples, ttl_s

    async def record(self, source: str, seconds: float) -> None:
        """Add one attempt's duration (or its timeout, if it timed out)."""
        key = self.keys.latencies(source)
        # No MULTI: pushes and trims of other workers may interleave, and the list still ends capped.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(key, f"{seconds:.6f}")
            pipe.ltrim(key, 0, self.window - 1)
            pipe.expire(key, self.ttl_s)
            await pipe.execute()

    async def samples(self, source: str) -> list[float]:
        """The newest ``window`` durations, newest first."""
        raw: list[bytes] = await self.redis.lrange(self.keys.latencies(source), 0, self.window - 1)  # type: ignore[misc]
        return [float(v) for v in raw]

    async def timeout(self, source: str, *, floor: float, ceiling: float) -> float | None:
        """p95 × 1.5 clamped to ``[floor, ceiling]``, or None while there are too few samples."""
        samples = await self.samples(source)
        if len(samples) < max(2, self.min_samples):
            return None
        return min(max(p95(samples) * FACTOR, floor), ceiling)


def p95(samples: list[float]) -> float:
    """The 95th percentile (inclusive method: never beyond the largest sample)."""
    return statistics.quantiles(samples, n=20, method="inclusive")[18]
