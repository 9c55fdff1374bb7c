"""Unit tests of the source policies' logic (``worker.job.resilience``) on fakeredis (Lua via lupa).

The same code runs against the real redis-server and real workers in ``test_resilience_e2e.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions

from agentq.contract import QuestionRequest, SourceOutcome
from agentq.errors import SourceError, TransientSourceError
from agentq.protocol.keys import Keys
from agentq.settings import Settings
from agentq.sources import Source, SourceContext
from worker.job.fanout import SourceSkipped
from worker.job.resilience import ResilientFetch, policy
from worker.job.resilience.adaptive import LatencyWindow, p95
from worker.job.resilience.breaker import CircuitBreaker
from worker.job.resilience.cache import SourceCache, normalise, question_digest
from worker.job.resilience.ratelimit import RateLimited, RateLimits, parse_limit
from worker.job.resilience.retry import is_transient, with_retries

KEYS = Keys("agentq")
#: Breaker cool-downs and probe leases in these tests: the steps between two sleeps (a few Redis
#: calls) must finish inside one even on a loaded machine; each sleep outlasts one by a little.
COOLDOWN_S = 0.5
PAST_IT_S = COOLDOWN_S + 0.05


async def no_sleep(seconds: float) -> None:
    """tenacity's sleep in tests: back-offs take no time."""


# --------------------------------------------------------------------------------- cache
def test_normalised_questions_share_a_digest() -> None:
    """Case, runs of whitespace and compatibility forms (NFKC) do not change the cache key."""
    assert normalise("  Will it  RAIN\tin\nParis? ") == "will it rain in paris?"
    assert question_digest("ﬁne ＰＡＲＩＳ") == question_digest("fine paris")  # ligature, full-width
    assert question_digest("Straße") == question_digest("STRASSE")  # casefold, not lower
    assert question_digest("rain in Paris") != question_digest("rain in Rome")


async def test_cache_round_trip_with_ttl(fake_redis: Any) -> None:
    """A put is read back under the normalised question, as JSON, with the TTL; junk is a miss."""
    cache = SourceCache(fake_redis, KEYS, ttl_s=60)
    assert await cache.get("news", "Rain?") is None
    await cache.put("news", "Rain?", "News says rain.")
    assert await cache.get("news", "  rain? ") == "News says rain."
    key = KEYS.cache("news", question_digest("rain?"))
    assert json.loads(await fake_redis.get(key))["text"] == "News says rain."
    assert 0 < await fake_redis.ttl(key) <= 60
    assert await cache.get("weather", "Rain?") is None  # per source
    await fake_redis.set(key, json.dumps([1, 2]))
    assert await cache.get("news", "rain?") is None


# --------------------------------------------------------------------------------- retries
def test_transient_errors() -> None:
    """Timeouts, transient upstream errors and broken connections are retried; the rest are not."""
    assert is_transient(TimeoutError()) and is_transient(TransientSourceError("503"))
    assert is_transient(ConnectionResetError())
    assert not is_transient(SourceError("injected")) and not is_transient(ValueError())


async def test_retries_until_success_then_stops() -> None:
    """A transient failure is retried; a permanent one and the attempt budget end the retries."""
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientSourceError("503")
        return "ok"

    kw: dict[str, Any] = {"backoff_s": 0.01, "backoff_max_s": 1, "attempt_timeout_s": 0.1, "sleep": no_sleep}
    far = time.monotonic() + 60
    assert await with_retries(flaky, retries=2, deadline=far, **kw) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(TransientSourceError):
        await with_retries(flaky, retries=1, deadline=far, **kw)
    assert len(calls) == 2

    async def permanent() -> str:
        calls.append(1)
        raise SourceError("bad request")

    calls.clear()
    with pytest.raises(SourceError):
        await with_retries(permanent, retries=5, deadline=far, **kw)
    assert len(calls) == 1


async def test_no_retry_that_cannot_finish_before_the_deadline() -> None:
    """A retry starts only if its back-off plus its whole timeout fit before the deadline."""
    calls: list[float] = []
    attempt_s = 0.3

    async def times_out() -> str:
        calls.append(time.monotonic())
        await asyncio.sleep(attempt_s)
        raise TimeoutError

    # Room for the first attempt and two retries (0.9 s), not five; a first attempt that overruns
    # by up to 0.45 s (a loaded machine) still leaves room for one retry.
    deadline = time.monotonic() + 3.5 * attempt_s
    with pytest.raises(TimeoutError):
        await with_retries(
            times_out, retries=5, backoff_s=0.001, backoff_max_s=0.001, attempt_timeout_s=attempt_s, deadline=deadline
        )
    assert 2 <= len(calls) <= 3
    assert all(t + attempt_s <= deadline for t in calls[1:])  # every retry could finish in time
    assert time.monotonic() + attempt_s > deadline  # and one more could not have


async def test_retry_after_hint_lengthens_the_backoff() -> None:
    """An upstream's Retry-After is honoured when it is longer than the computed back-off."""
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    async def busy() -> str:
        if not slept:
            raise TransientSourceError("429", retry_after_s=0.7)
        return "ok"

    await with_retries(
        busy,
        retries=1,
        backoff_s=0.01,
        backoff_max_s=1,
        attempt_timeout_s=0.1,
        deadline=time.monotonic() + 9,
        sleep=record,
    )
    assert slept == [0.7]


@pytest.mark.parametrize("draw", [0.0, 0.999999, None], ids=["no-jitter", "full-jitter", "random"])
async def test_backoff_is_exponential_with_bounded_jitter(draw: float | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before retry n the wait is b*2^(n-1) plus jitter in [0, b], the sum capped at the maximum."""
    if draw is not None:  # tenacity's wait_random draws random.random(); pin it to the bounds
        monkeypatch.setattr(random, "random", lambda: draw)
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    async def down() -> str:
        raise TransientSourceError("503")

    b, cap = 0.1, 1.0
    with pytest.raises(TransientSourceError):
        await with_retries(
            down, retries=6, backoff_s=b, backoff_max_s=cap, attempt_timeout_s=0.1,
            deadline=time.monotonic() + 60, sleep=record,
        )  # fmt: skip
    assert len(slept) == 6
    for n, wait in enumerate(slept, start=1):
        low, high = min(b * 2 ** (n - 1), cap), min(b * 2 ** (n - 1) + b, cap)
        assert low - 1e-9 <= wait <= high + 1e-9, (n, wait)
    if draw == 0.0:
        assert slept == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    elif draw is not None:
        assert slept == pytest.approx([0.2, 0.3, 0.5, 0.9, 1.0, 1.0], abs=1e-5)
    else:
        assert len({round(w - b * 2 ** (n - 1), 9) for n, w in enumerate(slept[:4], start=1)}) > 1  # jitter varies


# --------------------------------------------------------------------------------- breaker
async def test_breaker_opens_probes_once_and_closes(fake_redis: Any) -> None:
    """K failures open it for every worker; after the cool-down exactly one probe goes; success closes."""
    one, two = (CircuitBreaker(fake_redis, KEYS, threshold=3, cooldown_s=COOLDOWN_S) for _ in range(2))
    assert (await one.allow("news", 1.0)).state == "closed"
    await one.failure("news")
    await two.failure("news")
    await one.success("news")  # a success resets the count: failures must be consecutive
    for breaker in (one, two, one):
        verdict = await breaker.failure("news")
    assert verdict.state == "open" and verdict.failures == 3
    blocked = await two.allow("news", 1.0)  # the other "worker" sees it open
    assert blocked.state == "open" and 0 < blocked.retry_in_s <= COOLDOWN_S
    assert (await two.allow("weather", 1.0)).state == "closed"  # per source
    await asyncio.sleep(PAST_IT_S)
    assert (await one.allow("news", 1.0)).state == "half_open"  # the probe
    assert (await two.allow("news", 1.0)).state == "open"  # nobody else while it runs
    await one.success("news")
    assert (await two.allow("news", 1.0)).state == "closed"
    assert await fake_redis.exists(KEYS.breaker("news")) == 0


async def test_failed_probe_reopens_and_lost_probe_is_replaced(fake_redis: Any) -> None:
    """A probe's failure re-opens the circuit; a probe that never reports is replaced after its lease."""
    breaker = CircuitBreaker(fake_redis, KEYS, threshold=1, cooldown_s=COOLDOWN_S)
    lease = COOLDOWN_S
    await breaker.failure("kb")
    await asyncio.sleep(PAST_IT_S)
    assert (await breaker.allow("kb", lease)).state == "half_open"
    assert (await breaker.failure("kb")).state == "open"
    assert (await breaker.allow("kb", lease)).state == "open"
    await asyncio.sleep(PAST_IT_S)
    assert (await breaker.allow("kb", lease)).state == "half_open"  # probe, then silence
    assert (await breaker.allow("kb", lease)).state == "open"  # nobody else during its lease
    await asyncio.sleep(PAST_IT_S)
    assert (await breaker.allow("kb", lease)).state == "half_open"  # lease over: a new probe
    assert await fake_redis.ttl(KEYS.breaker("kb")) > 0


async def test_breaker_ignores_a_late_success_while_open(fake_redis: Any) -> None:
    """A success reported while the circuit is open (a call begun before it opened) does not close it."""
    breaker = CircuitBreaker(fake_redis, KEYS, threshold=2, cooldown_s=COOLDOWN_S)
    await breaker.failure("news")
    await breaker.failure("news")
    late = await breaker.success("news")
    assert (late.state, late.failures) == ("open", 2) and 0 < late.retry_in_s <= COOLDOWN_S
    assert (await breaker.allow("news", 1.0)).state == "open"
    await asyncio.sleep(PAST_IT_S)
    assert (await breaker.allow("news", 1.0)).state == "half_open"
    assert (await breaker.success("news")).state == "closed"  # the probe's success does close it
    assert (await breaker.allow("news", 1.0)).state == "closed"


# --------------------------------------------------------------------------------- adaptive
async def test_adaptive_timeout_needs_samples_and_clamps(fake_redis: Any) -> None:
    """No timeout below min_samples; then p95 x 1.5 within [floor, ceiling]; the window is capped."""
    window = LatencyWindow(fake_redis, KEYS, window=10, min_samples=5)
    for ms in (100, 100, 100, 100):
        await window.record("news", ms / 1000)
    assert await window.timeout("news", floor=0.01, ceiling=5) is None
    await window.record("news", 0.2)
    samples = await window.samples("news")
    assert samples[0] == 0.2 and len(samples) == 5
    assert await window.timeout("news", floor=0.01, ceiling=5) == pytest.approx(p95(samples) * 1.5)
    assert p95(samples) <= 0.2
    assert await window.timeout("news", floor=1.0, ceiling=5) == 1.0
    assert await window.timeout("news", floor=0.01, ceiling=0.05) == 0.05
    for _ in range(20):
        await window.record("news", 0.05)
    assert len(await window.samples("news")) == 10
    assert await window.timeout("news", floor=0.01, ceiling=5) == pytest.approx(0.075)


# --------------------------------------------------------------------------------- rate limits
def test_rate_limit_notation() -> None:
    """An integer is per second; strings use the limits library's notation."""
    assert (parse_limit(5).amount, parse_limit(5).get_expiry()) == (5, 1)
    assert parse_limit("100/minute").get_expiry() == 60
    with pytest.raises(ValueError):
        parse_limit(0)


async def test_rate_limit_is_shared_and_waits(fake_redis: Any) -> None:
    """Two limiters on one Redis share 3 tokens per second; a refused caller waits for the window."""
    a, b = RateLimits(fake_redis, KEYS, {"news": 3, "kb": 1}), RateLimits(fake_redis, KEYS, {"news": 3})
    far = time.monotonic() + 10
    first = time.monotonic()
    waits = [await limiter.acquire("news", latest_start=far) for limiter in (a, b, a)]
    # No wait is a few Redis calls, a wait lasts until the window moves on (~1 s): 0.5 s tells them apart.
    assert max(waits) < 0.5
    waited = await b.acquire("news", latest_start=far)
    assert waited >= 0.5 and time.monotonic() - first >= 0.95  # the 4th token: once the 1st left its 1 s window
    assert await a.acquire("kb", latest_start=far) < 0.5
    with pytest.raises(RateLimited, match="too late"):
        await a.acquire("kb", latest_start=time.monotonic() + 0.1)
    assert await a.acquire("weather", latest_start=far) == 0.0  # no limit, no wait


# --------------------------------------------------------------------------------- the policy
def policy_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"retry_backoff_s": 0.001, "adaptive_timeout_min_s": 0.01}
    return Settings(**(base | overrides))


class Upstream:
    """A source whose answers are scripted per call: an exception to raise or a delay then text."""

    def __init__(self, *script: BaseException | float) -> None:
        self.script, self.calls = list(script), 0

    async def __call__(self, question: str, ctx: SourceContext) -> str:
        self.calls += 1
        step = self.script.pop(0) if self.script else 0.0
        if isinstance(step, BaseException):
            raise step
        await asyncio.sleep(step)
        return f"answer to {question}"


async def fetch(
    policy: ResilientFetch, upstream: Upstream, question: str = "rain?", *, deadline_s: float = 10, **request: Any
) -> SourceOutcome:
    """One policy fetch of source ``news``; the outcome, with status and error as the fan-out sets them."""
    s = policy.settings
    o = SourceOutcome(name="news", timeout_s=request.get("source_timeout_s") or s.source_timeout_s)
    try:
        o.data = await policy.fetch(
            Source("news", upstream),
            QuestionRequest(question=question, **request),
            SourceContext(s, "job-1"),
            o,
            time.monotonic() + deadline_s,
        )
        o.status = "ok"
    except SourceSkipped as skipped:
        o.status, o.error = skipped.status, str(skipped)  # type: ignore[assignment]
    except TimeoutError:
        o.status = "timeout"
    except Exception as exc:
        o.status, o.error = "error", repr(exc)
    return o


async def test_policy_cache_hit_miss_bypass_off(fake_redis: Any) -> None:
    """Miss fetches and stores; the same question again is a hit without a call; no_cache bypasses."""
    policy, up = ResilientFetch(policy_settings(), fake_redis), Upstream()
    first = await fetch(policy, up, "Rain in Paris?")
    assert (first.status, first.cache, first.attempts, up.calls) == ("ok", "miss", 1, 1)
    hit = await fetch(policy, up, "rain  in PARIS?")
    assert (hit.status, hit.cache, hit.attempts, up.calls) == ("ok", "hit", 0, 1)
    assert hit.data == first.data
    bypass = await fetch(policy, up, "Rain in Paris?", no_cache=True)
    assert (bypass.cache, bypass.attempts, up.calls) == ("bypass", 1, 2)
    off = await fetch(ResilientFetch(policy_settings(cache_ttl_s=0), fake_redis), up, "Rain in Paris?")
    assert (off.cache, off.attempts, up.calls) == ("off", 1, 3)


async def test_policy_never_caches_failures(fake_redis: Any) -> None:
    """A failed fetch leaves nothing in the cache: the next query calls the upstream again."""
    policy, up = ResilientFetch(policy_settings(source_retries=0), fake_redis), Upstream(SourceError("down"))
    assert (await fetch(policy, up)).status == "error"
    again = await fetch(policy, up)
    assert (again.status, again.cache, up.calls) == ("ok", "miss", 2)


async def test_policy_retries_and_records_attempts(fake_redis: Any) -> None:
    """A timeout then a 503 are retried; the attempts and their errors are in the outcome."""
    policy = ResilientFetch(policy_settings(adaptive_timeouts=False), fake_redis)
    up = Upstream(1.0, TransientSourceError("503"), 0.0)
    o = await fetch(policy, up, source_timeout_s=0.05)
    assert (o.status, o.attempts, up.calls) == ("ok", 3, 3)
    assert o.attempt_errors == ["timeout after 0.05s", "TransientSourceError: 503"]
    permanent = await fetch(policy, Upstream(SourceError("400")), "other?")
    assert (permanent.status, permanent.attempts) == ("error", 1)


async def test_policy_opens_circuit_and_skips(fake_redis: Any) -> None:
    """After K failed calls (retries count) the source is skipped as circuit_open, without a call."""
    s = policy_settings(source_retries=1, breaker_failures=3, breaker_cooldown_s=30, cache_ttl_s=0)
    policy = ResilientFetch(s, fake_redis)
    down = Upstream(*[TransientSourceError("503")] * 10)
    first = await fetch(policy, down)
    assert (first.status, first.attempts, first.circuit) == ("error", 2, "closed")
    second = await fetch(policy, down)  # its 1st call is the 3rd failure: the retry finds it open
    assert (second.status, second.attempts) == ("circuit_open", 2) and "opened during retries" in (second.error or "")
    calls = down.calls
    third = await fetch(ResilientFetch(s, fake_redis), down)  # another worker's policy, same Redis
    assert (third.status, third.attempts, third.circuit, down.calls) == ("circuit_open", 0, "open", calls)
    assert "circuit open after 3 consecutive failures" in (third.error or "")


async def test_policy_breaker_counts_only_upstream_trouble(fake_redis: Any) -> None:
    """Permanent errors (a 4xx, an injected failure) never open the circuit; timeouts and 5xx do."""
    s = policy_settings(source_retries=0, breaker_failures=2, cache_ttl_s=0, adaptive_timeouts=False)
    policy = ResilientFetch(s, fake_redis)
    refused = Upstream(SourceError("404"), SourceError("news: injected failure (source_fail)"), SourceError("400"))
    assert [(await fetch(policy, refused)).status for _ in range(3)] == ["error"] * 3
    assert await fake_redis.exists(KEYS.breaker("news")) == 0  # nothing counted
    unwell = Upstream(1.0, TransientSourceError("503"))
    assert [(await fetch(policy, unwell, source_timeout_s=0.05)).status for _ in range(2)] == ["timeout", "error"]
    skipped = await fetch(policy, unwell)
    assert (skipped.status, skipped.attempts, unwell.calls) == ("circuit_open", 0, 2)


async def test_policy_adapts_timeout_after_warm_up(fake_redis: Any) -> None:
    """The timeout is fixed until there are min_samples latencies, then adaptive, never above the fixed one."""
    s = policy_settings(adaptive_min_samples=3, cache_ttl_s=0)
    policy = ResilientFetch(s, fake_redis)
    for _ in range(3):
        o = await fetch(policy, Upstream(0.02))
        assert (o.timeout_mode, o.timeout_s) == ("fixed", s.source_timeout_s)
    o = await fetch(policy, Upstream(0.02))
    assert o.timeout_mode == "adaptive" and o.status == "ok"
    assert 0.02 * 1.5 <= (o.timeout_s or 0) < 0.5
    capped = await fetch(
        ResilientFetch(policy_settings(adaptive_min_samples=3, adaptive_timeout_min_s=9), fake_redis),
        Upstream(),
        source_timeout_s=2.0,
    )
    assert (capped.timeout_mode, capped.timeout_s) == ("adaptive", 2.0)  # the request's own timeout caps it


async def test_policy_waits_for_rate_limit_or_gives_up(fake_redis: Any) -> None:
    """Over its limit a fetch waits for a token (recorded); if none comes in time it is rate_limited."""
    policy = ResilientFetch(policy_settings(rate_limits={"news": 2}, cache_ttl_s=0), fake_redis)
    outcomes = [await fetch(policy, Upstream()) for _ in range(3)]
    assert [o.status for o in outcomes] == ["ok"] * 3
    assert outcomes[0].rate_limit_wait_s < 0.5 <= outcomes[2].rate_limit_wait_s  # no wait vs ~1 s
    # A limit whose next token is a minute away: far past the deadline, however loaded the machine.
    scarce = ResilientFetch(policy_settings(rate_limits={"news": "1/minute"}, cache_ttl_s=0), fake_redis)
    assert (await fetch(scarce, Upstream())).status == "ok"
    late = await fetch(scarce, Upstream(), deadline_s=5.3)  # the token would come after deadline - timeout
    assert late.status == "rate_limited" and "too late for the deadline" in (late.error or "")


class DownPool(redis.asyncio.ConnectionPool):
    """A connection pool to a Redis that is down (refuses, or never answers); counts every use."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode, self.uses = mode, 0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self.uses += 1
        if self.mode == "hang":
            await asyncio.sleep(3600)
        raise redis.exceptions.ConnectionError("Error 111 connecting to redis. Connection refused.")


@pytest.mark.parametrize("mode", ["refuse", "hang"])
async def test_policy_backs_off_from_redis_after_a_failure(
    mode: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """After one failed bookkeeping call, no policy touches that Redis until the back-off ends; logged once."""
    monkeypatch.setattr(policy, "REDIS_OP_TIMEOUT_S", 0.05)
    pool = DownPool(mode)
    client = redis.asyncio.Redis(connection_pool=pool)
    s = policy_settings(rate_limits={"news": 1})
    up = Upstream()
    with caplog.at_level(logging.WARNING, logger=policy.__name__):
        first = await fetch(ResilientFetch(s, client), up, "first?")
        assert first.status == "ok" and 1 <= pool.uses <= 3  # the cache read, and calls already in flight
        uses = pool.uses
        for question in ("second?", "third?"):  # new jobs, new policies: same worker, same pool
            later = await fetch(ResilientFetch(s, client), up, question)
            assert (later.status, later.cache, later.timeout_mode, later.circuit) == ("ok", "off", "fixed", None)
        assert pool.uses == uses  # no Redis call at all while backing off
        assert sum("go on without Redis" in r.getMessage() for r in caplog.records) == 1
        monkeypatch.setattr(policy.RedisHealth.of(client), "down_until", time.monotonic())  # the back-off ends
        await fetch(ResilientFetch(s, client), up, "fourth?")
        assert pool.uses == uses + 1  # Redis is tried again (once: it fails, a new period starts)
        assert sum("go on without Redis" in r.getMessage() for r in caplog.records) == 2
    assert up.calls == 4
    await client.aclose()


async def test_policy_survives_redis_down() -> None:
    """With Redis unreachable every feature steps aside and the plain fetch still answers."""
    dead = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    policy = ResilientFetch(policy_settings(rate_limits={"news": 1}), dead)
    up = Upstream(TransientSourceError("503"))
    o = await fetch(policy, up)
    assert (o.status, o.attempts, o.cache, o.timeout_mode, o.circuit) == ("ok", 2, "off", "fixed", None)
    await dead.aclose()
