"""The fetch policy that composes the shared cache, breaker, adaptive timeout, retries and rate limits.

Order for one source of one query: a cache hit ends it at once (no upstream call, no token); an
open circuit skips it (``circuit_open``); otherwise the timeout is chosen (adaptive once there are
enough samples) and the fetch runs under retries, each attempt taking a rate-limit token first
(``rate_limited`` if none comes in time), reporting its latency and its success or failure to the
shared state, and the text that finally arrives is cached.

Every Redis call here is bookkeeping around the fetch, never a reason to lose it: each is bounded
by :data:`REDIS_OP_TIMEOUT_S`, and if it fails the fetch goes on as if that feature were off. When
Redis itself is the trouble (unreachable, or too slow), every policy Redis call of the worker process
is skipped for :data:`REDIS_BACKOFF_S` (see :class:`RedisHealth`), so an outage costs a query at most
one bounded call per source, not one per feature and attempt; it is logged once per back-off period.

Only failures that say something about the upstream's health reach the circuit breaker: timeouts,
:class:`~agentq.errors.TransientSourceError` and connection errors, the same ones the retries retry
(:func:`~worker.job.resilience.retry.is_transient`). A permanent error (a 4xx, a body we cannot read, the
simulated sources' injected failures) means the upstream answered, so it neither counts towards
opening the circuit nor resets the count.

A source may turn any of these off for itself (``Source.policies``): what it turns off is skipped
for it, with no Redis call, whatever the settings say.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeVar

from agentq.connection import connections_of
from agentq.contract import QuestionRequest, SourceOutcome
from agentq.errors import REDIS_DOWN
from agentq.protocol.keys import Keys
from worker.job.fanout import SourceSkipped
from worker.job.resilience.adaptive import LatencyWindow
from worker.job.resilience.breaker import CircuitBreaker, Verdict
from worker.job.resilience.cache import SourceCache
from worker.job.resilience.ratelimit import RateLimited, RateLimits
from worker.job.resilience.retry import is_transient, with_retries

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from agentq.settings import Settings
    from agentq.sources import Source, SourceContext

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Longest one bookkeeping Redis call may take before the fetch goes on without it.
REDIS_OP_TIMEOUT_S = 1.0
#: After Redis failed a bookkeeping call (down or too slow), how long every policy skips Redis.
REDIS_BACKOFF_S = 5.0


class RedisHealth:
    """Whether the policies may use one Redis now: after a failure, not for :data:`REDIS_BACKOFF_S`.

    A bookkeeping call during an outage burns its whole :data:`REDIS_OP_TIMEOUT_S` (the worker's
    pool retries with back-off inside it), and a fetch makes several; without a back-off a Redis
    outage would cost every source of every query seconds of its deadline. :class:`ResilientFetch`
    is built per job, so this state must outlive it: one instance per connection pool (one per
    worker process), found by :meth:`of`. Hand-written because it is a timestamp and a flag; a
    circuit-breaker library for this would itself need somewhere to keep its state.
    """

    _by_pool: ClassVar[weakref.WeakKeyDictionary[object, RedisHealth]] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self.down_until = 0.0  # time.monotonic() before which Redis is not asked
        self.failing = False  # a failure was logged and no call has succeeded since

    @classmethod
    def of(cls, redis: Redis) -> RedisHealth:
        """The health of ``redis``'s connection pool, shared by every policy built on it."""
        return cls._by_pool.setdefault(connections_of(redis), cls())

    def available(self) -> bool:
        return time.monotonic() >= self.down_until

    def failed(self, what: str, exc: BaseException) -> None:
        """Start a back-off period (logged once) unless one is already running."""
        if not self.available():
            return  # a concurrent call failed first and has already said so
        self.down_until, self.failing = time.monotonic() + REDIS_BACKOFF_S, True
        log.warning("Redis failed the %s (%r); source policies go on without Redis for %gs", what, exc, REDIS_BACKOFF_S)

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            log.warning("Redis answers again; source policies use it again")


@dataclass(frozen=True)
class _Policies:
    """The parts of :class:`ResilientFetch` that apply to one source (None: off, no Redis call)."""

    cache: SourceCache | None
    breaker: CircuitBreaker | None
    latencies: LatencyWindow | None
    limits: RateLimits | None
    retries: int


class ResilientFetch:
    """The Redis-backed :class:`~worker.job.fanout.FetchPolicy`; cheap to build, holds no per-query state."""

    def __init__(self, settings: Settings, redis: Redis, keys: Keys | None = None) -> None:
        s = self.settings = settings
        keys = keys or s.keys
        self.health = RedisHealth.of(redis)
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

    def _for(self, source: Source) -> _Policies:
        """The policies that apply to ``source``: those the settings turn on, less those it turns off."""
        p = source.policies
        return _Policies(
            cache=self.cache if p.cache else None,
            breaker=self.breaker if p.breaker else None,
            latencies=self.latencies if p.adaptive_timeout else None,
            limits=self.limits if p.rate_limit and self.limits and self.limits.limit_of(source.name) else None,
            retries=self.settings.source_retries if p.retries else 0,
        )

    async def fetch(
        self, source: Source, request: QuestionRequest, ctx: SourceContext, outcome: SourceOutcome, deadline: float
    ) -> str:
        """Return the source's text for ``request`` (see the module docstring for the order)."""
        name, question = source.name, request.question
        policies = self._for(source)
        cache, breaker = policies.cache, policies.breaker
        if cache is None:
            outcome.cache = "off"
        elif request.no_cache:
            outcome.cache = "bypass"
        else:
            cached: str | bool | None = await self._guard("cache read", lambda: cache.get(name, question), False)
            if isinstance(cached, str):
                outcome.cache = "hit"
                return cached
            outcome.cache = "miss" if cached is None else "off"

        timeout = await self._timeout(name, request, outcome, policies.latencies)
        if breaker is not None:
            verdict = await self._guard("circuit breaker", lambda: breaker.allow(name, timeout + 1.0), None)
            if verdict is not None:
                outcome.circuit = verdict.state
                if verdict.state == "open":
                    raise SourceSkipped("circuit_open", _open_reason(verdict))

        text = await with_retries(
            lambda: self._attempt(source, question, ctx, outcome, timeout, deadline, policies),
            retries=policies.retries,
            backoff_s=self.settings.retry_backoff_s,
            backoff_max_s=self.settings.retry_backoff_max_s,
            attempt_timeout_s=timeout,
            deadline=deadline,
        )
        if cache is not None:
            await self._guard("cache write", lambda: cache.put(name, question, text), None)
        return text

    async def _timeout(
        self, name: str, request: QuestionRequest, outcome: SourceOutcome, latencies: LatencyWindow | None
    ) -> float:
        """The per-attempt timeout: adaptive when there are enough samples, else the fixed one."""
        fixed = outcome.timeout_s or self.settings.source_timeout_s
        if latencies is None:
            return fixed
        s = self.settings
        ceiling = min(s.adaptive_timeout_max_s or fixed, s.max_source_timeout_s, request.source_timeout_s or math.inf)
        adaptive = await self._guard(
            "adaptive timeout", lambda: latencies.timeout(name, floor=s.adaptive_timeout_min_s, ceiling=ceiling), None
        )
        if adaptive is None:
            return fixed
        outcome.timeout_s, outcome.timeout_mode = adaptive, "adaptive"
        return adaptive

    async def _attempt(
        self,
        source: Source,
        question: str,
        ctx: SourceContext,
        o: SourceOutcome,
        timeout: float,
        deadline: float,
        policies: _Policies,
    ) -> str:
        """One call to the upstream: breaker check (on a retry), rate-limit token, timed fetch, bookkeeping."""
        name, breaker = source.name, policies.breaker
        o.attempts += 1
        if o.attempts > 1 and breaker is not None:
            verdict = await self._guard("circuit breaker", lambda: breaker.allow(name, timeout + 1.0), None)
            if verdict is not None and verdict.state == "open":
                raise SourceSkipped("circuit_open", f"{_open_reason(verdict)} (opened during retries)")
        if policies.limits is not None:
            o.rate_limit_wait_s += await self._token(policies.limits, name, latest_start=deadline - timeout)
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                text = await source.fetch_text(question, ctx)
        except Exception as exc:
            timed_out = isinstance(exc, TimeoutError)
            o.attempt_errors.append(f"timeout after {timeout:g}s" if timed_out else f"{type(exc).__name__}: {exc}")
            if is_transient(exc):  # a permanent error says the upstream answered: not the breaker's business
                await self._report(policies, name, ok=False, seconds=timeout if timed_out else None)
            raise
        await self._report(policies, name, ok=True, seconds=time.monotonic() - started)
        return text

    async def _token(self, limits: RateLimits, name: str, *, latest_start: float) -> float:
        """Wait for a rate-limit token; ``rate_limited`` if none comes in time, unlimited if Redis fails."""
        if not self.health.available():
            return 0.0
        t0 = time.monotonic()
        try:
            waited = await limits.acquire(name, latest_start=latest_start, redis_timeout_s=REDIS_OP_TIMEOUT_S)
        except RateLimited as exc:
            raise SourceSkipped("rate_limited", str(exc)) from exc
        except Exception as exc:
            self._failed(f"rate limiter of {name} (fetching without a token)", exc)
            return time.monotonic() - t0
        self.health.succeeded()
        return waited

    async def _report(self, policies: _Policies, name: str, *, ok: bool, seconds: float | None) -> None:
        """Tell the shared state how an attempt went: its latency sample and the breaker."""
        latencies, breaker = policies.latencies, policies.breaker
        calls: list[Awaitable[object]] = []
        if latencies is not None and seconds is not None:
            calls.append(self._guard("latency sample", lambda: latencies.record(name, seconds), None))
        if breaker is not None:
            report = breaker.success if ok else breaker.failure
            calls.append(self._guard("circuit breaker", lambda: report(name), None))
        await asyncio.gather(*calls)

    async def _guard(self, what: str, call: Callable[[], Awaitable[T]], fallback: T) -> T:
        """Await a bookkeeping call, or return ``fallback`` at once while Redis is backing off.

        On any failure (Redis down, slow, odd data) log and return ``fallback``; a failure of Redis
        itself also starts a back-off period (:class:`RedisHealth`).
        """
        if not self.health.available():
            return fallback
        try:
            async with asyncio.timeout(REDIS_OP_TIMEOUT_S):
                result = await call()
        except Exception as exc:
            self._failed(what, exc)
            return fallback
        self.health.succeeded()
        return result

    def _failed(self, what: str, exc: Exception) -> None:
        if isinstance(exc, REDIS_DOWN):
            self.health.failed(what, exc)
        else:
            log.warning("%s failed (%r); going on without it", what, exc)


def _open_reason(verdict: Verdict) -> str:
    return f"circuit open after {verdict.failures} consecutive failures; next probe in {verdict.retry_in_s:.1f}s"
