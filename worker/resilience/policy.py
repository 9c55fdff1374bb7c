"""The fetch policy that composes the shared cache, breaker, adaptive timeout, retries and rate limits.

Order for one source of one query: a cache hit ends it at once (no upstream call, no token); an
open circuit skips it (``circuit_open``); otherwise the timeout is chosen (adaptive once there are
enough samples) and the fetch runs under retries, each attempt taking a rate-limit token first
(``rate_limited`` if none comes in time), reporting its latency and its success or failure to the
shared state, and the text that finally arrives is cached.

Every Redis call here is bookkeeping around the fetch, never a reason to lose it: each is bounded
by :data:`REDIS_OP_TIMEOUT_S`, and if it fails the fetch goes on as if that feature were off
(logged as a warning).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from worker.contract import Keys, QuestionRequest, SourceOutcome
from worker.fanout import SourceSkipped
from worker.resilience.adaptive import LatencyWindow
from worker.resilience.breaker import CircuitBreaker, Verdict
from worker.resilience.cache import SourceCache
from worker.resilience.ratelimit import RateLimited, RateLimits
from worker.resilience.retry import with_retries

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from worker.settings import Settings
    from worker.sources import Source, SourceContext

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Longest one bookkeeping Redis call may take before the fetch goes on without it.
REDIS_OP_TIMEOUT_S = 1.0


class ResilientFetch:
    """The Redis-backed :class:`~worker.fanout.FetchPolicy`; cheap to build, holds no per-query state."""

    def __init__(self, settings: Settings, redis: Redis, keys: Keys | None = None) -> None:
        s = self.settings = settings
        keys = keys or Keys(s.key_prefix)
        self.cache = SourceCache(redis, keys, s.cache_ttl_s) if s.cache_ttl_s > 0 else None
        self.breaker = (
            CircuitBreaker(redis, keys, s.breaker_failures, s.breaker_cooldown_s) if s.breaker_failures > 0 else None
        )
        self.latencies = (
            LatencyWindow(redis, keys, window=s.adaptive_window, min_samples=s.adaptive_min_samples)
            if s.adaptive_timeouts
            else None
        )
        self.limits = RateLimits(redis, keys, s.rate_limits) if s.rate_limits else None

    async def fetch(
        self, source: Source, request: QuestionRequest, ctx: SourceContext, outcome: SourceOutcome, deadline: float
    ) -> str:
        """Return the source's text for ``request`` (see the module docstring for the order)."""
        name, question = source.name, request.question
        if self.cache is None:
            outcome.cache = "off"
        elif request.no_cache:
            outcome.cache = "bypass"
        else:
            cached = await self._guard("cache read", self.cache.get(name, question), False)
            if isinstance(cached, str):
                outcome.cache = "hit"
                return cached
            outcome.cache = "miss" if cached is None else "off"

        timeout = await self._timeout(name, request, outcome)
        if self.breaker is not None:
            verdict = await self._guard("circuit breaker", self.breaker.allow(name, timeout + 1.0), None)
            if verdict is not None:
                outcome.circuit = verdict.state
                if verdict.state == "open":
                    raise SourceSkipped("circuit_open", _open_reason(verdict))

        text = await with_retries(
            lambda: self._attempt(source, question, ctx, outcome, timeout, deadline),
            retries=self.settings.source_retries,
            backoff_s=self.settings.retry_backoff_s,
            backoff_max_s=self.settings.retry_backoff_max_s,
            attempt_timeout_s=timeout,
            deadline=deadline,
        )
        if self.cache is not None:
            await self._guard("cache write", self.cache.put(name, question, text), None)
        return text

    async def _timeout(self, name: str, request: QuestionRequest, outcome: SourceOutcome) -> float:
        """The per-attempt timeout: adaptive when there are enough samples, else the fixed one."""
        fixed = outcome.timeout_s or self.settings.source_timeout_s
        if self.latencies is None:
            return fixed
        s = self.settings
        ceiling = min(s.adaptive_timeout_max_s or fixed, s.max_source_timeout_s, request.source_timeout_s or math.inf)
        adaptive = await self._guard(
            "adaptive timeout", self.latencies.timeout(name, floor=s.adaptive_timeout_min_s, ceiling=ceiling), None
        )
        if adaptive is None:
            return fixed
        outcome.timeout_s, outcome.timeout_mode = adaptive, "adaptive"
        return adaptive

    async def _attempt(
        self, source: Source, question: str, ctx: SourceContext, o: SourceOutcome, timeout: float, deadline: float
    ) -> str:
        """One call to the upstream: breaker check (on a retry), rate-limit token, timed fetch, bookkeeping."""
        name = source.name
        o.attempts += 1
        if o.attempts > 1 and self.breaker is not None:
            verdict = await self._guard("circuit breaker", self.breaker.allow(name, timeout + 1.0), None)
            if verdict is not None and verdict.state == "open":
                raise SourceSkipped("circuit_open", f"{_open_reason(verdict)} (opened during retries)")
        if self.limits is not None and self.limits.limit_of(name) is not None:
            o.rate_limit_wait_s += await self._token(name, latest_start=deadline - timeout)
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                text = await source.fetch(question, ctx)
            if not isinstance(text, str):
                raise TypeError(f"source returned {type(text).__name__}, not str")
        except Exception as exc:
            timed_out = isinstance(exc, TimeoutError)
            o.attempt_errors.append(f"timeout after {timeout:g}s" if timed_out else f"{type(exc).__name__}: {exc}")
            await self._report(name, ok=False, seconds=timeout if timed_out else None)
            raise
        await self._report(name, ok=True, seconds=time.monotonic() - started)
        return text

    async def _token(self, name: str, *, latest_start: float) -> float:
        """Wait for a rate-limit token; ``rate_limited`` if none comes in time, unlimited if Redis fails."""
        assert self.limits is not None
        t0 = time.monotonic()
        try:
            return await self.limits.acquire(name, latest_start=latest_start, redis_timeout_s=REDIS_OP_TIMEOUT_S)
        except RateLimited as exc:
            raise SourceSkipped("rate_limited", str(exc)) from exc
        except Exception as exc:
            log.warning("rate limiter failed for %s (%r); fetching without a token", name, exc)
            return time.monotonic() - t0

    async def _report(self, name: str, *, ok: bool, seconds: float | None) -> None:
        """Tell the shared state how an attempt went: its latency sample and the breaker."""
        calls: list[Awaitable[object]] = []
        if self.latencies is not None and seconds is not None:
            calls.append(self._guard("latency sample", self.latencies.record(name, seconds), None))
        if self.breaker is not None:
            report = self.breaker.success(name) if ok else self.breaker.failure(name)
            calls.append(self._guard("circuit breaker", report, None))
        await asyncio.gather(*calls)

    async def _guard(self, what: str, call: Awaitable[T], fallback: T) -> T:
        """Await a bookkeeping call; on any failure (Redis down, slow, odd data) log and return ``fallback``."""
        try:
            async with asyncio.timeout(REDIS_OP_TIMEOUT_S):
                return await call
        except Exception as exc:
            log.warning("%s failed (%r); going on without it", what, exc)
            return fallback


def _open_reason(verdict: Verdict) -> str:
    return f"circuit open after {verdict.failures} consecutive failures; next probe in {verdict.retry_in_s:.1f}s"
