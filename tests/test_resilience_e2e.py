"""Source policies end to end: a real redis-server and real worker processes sharing the cache,
the circuit breaker, the latency samples and the rate limit through Redis.

Workers here also serve two of the tools' opt-in test sources (``flaky``, ``ticker``: ``agentq_tools.plugins``).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from subprocess import Popen
from typing import Any

import pytest
import redis

from agentq.contract import JobResult, QuestionRequest, SourceOutcome
from agentq.protocol.keys import Keys
from agentq_tools import plugins
from agentq_tools.processes import stop_workers
from agentq_tools.sources import TICKS_KEY
from producer.client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.interpreter]
#: A worker's settings to serve the reference sources plus two of the tools' test sources.
WITH_TEST_SOURCES = {
    **plugins.ENV,
    "AGENTQ_ENABLED_SOURCES": json.dumps(["weather", "news", "knowledge_base", "flaky", "ticker"]),
}
StartWorkers = Callable[..., list[Popen[bytes]]]


async def ask(client: Client, question: str, *sources: str, **options: Any) -> JobResult:
    """Enqueue one request naming its sources, and wait for its result."""
    job_id = await client.enqueue_request(QuestionRequest(question=question, sources=sources, **options))
    return await client.result(job_id, timeout=60)


def by_name(result: JobResult) -> dict[str, SourceOutcome]:
    return {o.name: o for o in result.sources}


async def test_cache_and_circuit_are_shared_between_workers(
    client: Client, start_worker_processes: StartWorkers, redis_url: str
) -> None:
    """What worker A learnt (a cached answer, a source that keeps timing out) serves worker B, which never saw it.

    On worker A news hangs (2 s against a 0.3 s timeout) and knowledge_base has an injected failure,
    which is a permanent error: it is not retried and never counts towards opening a circuit.
    """
    common = {"AGENTQ_BREAKER_FAILURES": "2", "AGENTQ_BREAKER_COOLDOWN_S": "60"}
    worker_a = start_worker_processes(
        1,
        AGENTQ_SOURCE_LATENCY_S='{"news": 100}',
        AGENTQ_SOURCE_FAIL='["knowledge_base"]',
        AGENTQ_SOURCE_RETRIES="0",
        **common,
        **WITH_TEST_SOURCES,
    )
    first = await ask(client, "Will it rain in Paris?", "weather", "news", "knowledge_base", source_timeout_s=0.3)
    assert by_name(first)["weather"].cache == "miss" and by_name(first)["weather"].attempts == 1
    assert by_name(first)["news"].status == "timeout" and by_name(first)["news"].circuit == "closed"
    second = await ask(client, "Is it sunny in Rome?", "news", "knowledge_base", source_timeout_s=0.3)
    assert by_name(second)["news"].status == "timeout"
    assert [by_name(r)["knowledge_base"].status for r in (first, second)] == ["error", "error"]
    server = redis.Redis.from_url(redis_url)
    state = server.hgetall(Keys("agentq").breaker("news"))
    assert state[b"state"] == b"open" and state[b"failures"] == b"2"
    assert server.exists(Keys("agentq").breaker("knowledge_base")) == 0

    start_worker_processes(
        1, **common, **WITH_TEST_SOURCES
    )  # worker B: news would answer here, weather was never fetched
    stop_workers(worker_a)
    third = await ask(client, "  will it RAIN in   paris? ", "weather", "news")
    assert third.worker_id != first.worker_id
    weather, news = by_name(third)["weather"], by_name(third)["news"]
    assert (weather.status, weather.cache, weather.attempts) == ("ok", "hit", 0)
    assert weather.data == by_name(first)["weather"].data
    assert (news.status, news.circuit, news.attempts) == ("circuit_open", "open", 0)
    assert "circuit open after 2 consecutive failures" in (news.error or "")
    assert third.status == "partial"

    fresh = await ask(client, "Will it rain in Paris?", "weather", no_cache=True)
    assert (by_name(fresh)["weather"].cache, by_name(fresh)["weather"].attempts) == ("bypass", 1)


async def test_flaky_source_succeeds_on_retry(client: Client, start_worker_processes: StartWorkers) -> None:
    """A source whose first call fails with a 503 answers on the retry; both attempts are recorded."""
    start_worker_processes(1, **WITH_TEST_SOURCES)
    result = await ask(client, "Is the flaky API up?", "flaky")
    flaky = by_name(result)["flaky"]
    assert (result.status, flaky.status, flaky.attempts) == ("ok", "ok", 2)
    assert flaky.attempt_errors == ["TransientSourceError: flaky: 503 Service Unavailable (first call of this job)"]
    assert flaky.data and "on call 2" in flaky.data


async def test_adaptive_timeout_after_warm_up(
    client: Client, start_worker_processes: StartWorkers, redis_url: str
) -> None:
    """After min_samples fetches the timeout is p95 x 1.5 of the shared samples, and the result says so."""
    start_worker_processes(
        1,
        AGENTQ_ADAPTIVE_MIN_SAMPLES="4",
        AGENTQ_ADAPTIVE_TIMEOUT_MIN_S="0.01",
        **WITH_TEST_SOURCES,
    )
    for i in range(4):
        news = by_name(await ask(client, f"warm-up question {i}", "news"))["news"]
        assert (news.timeout_mode, news.timeout_s) == ("fixed", 5.0)
    samples = [float(v) for v in redis.Redis.from_url(redis_url).lrange(Keys("agentq").latencies("news"), 0, -1)]
    assert len(samples) == 4 and all(0.02 < s < 5 for s in samples)  # news takes 1.5 s x 0.02 = 30 ms
    news = by_name(await ask(client, "the question after warm-up", "news"))["news"]
    p95 = statistics.quantiles(samples, n=20, method="inclusive")[18]
    assert news.timeout_mode == "adaptive"
    assert news.timeout_s == pytest.approx(min(max(p95 * 1.5, 0.01), 5.0), rel=1e-6)


async def test_two_workers_share_one_rate_limit(
    client: Client, start_worker_processes: StartWorkers, redis_url: str
) -> None:
    """Two workers together start at most 4 calls a second to a source limited to 4/s; callers wait."""
    start_worker_processes(2, AGENTQ_RATE_LIMITS='{"ticker": 4}', **WITH_TEST_SOURCES)
    job_ids = [
        await client.enqueue_request(QuestionRequest(question=f"tick {i}", sources=("ticker",), deadline_s=20.0))
        for i in range(12)
    ]
    results = [await client.result(j, timeout=60) for j in job_ids]
    assert [r.status for r in results] == ["ok"] * 12
    assert len({r.worker_id for r in results}) == 2
    ticks = sorted(float(t) for t in redis.Redis.from_url(redis_url).lrange(TICKS_KEY, 0, -1))
    assert len(ticks) == 12
    # In any 0.9 s (the 1 s window less a margin for the gap between token and call), at most 4 calls.
    assert max(sum(t <= s < t + 0.9 for s in ticks) for t in ticks) <= 4
    assert ticks[-1] - ticks[0] >= 1.8  # 12 calls at 4/s need two full windows after the first
    waited = [by_name(r)["ticker"].rate_limit_wait_s for r in results]
    assert sum(w >= 0.3 for w in waited) >= 4, waited


async def test_one_result_shows_every_policy(
    client: Client, start_worker_processes: StartWorkers, capsys: pytest.CaptureFixture[str]
) -> None:
    """One query: a cache hit, a retry, an open circuit and a rate-limited wait, each in its source's outcome."""
    start_worker_processes(
        1,
        AGENTQ_SOURCE_LATENCY_S='{"news": 100}',
        AGENTQ_BREAKER_FAILURES="2",
        AGENTQ_RATE_LIMITS='{"ticker": 1}',
        **WITH_TEST_SOURCES,
    )
    question = "Will it rain in Paris tomorrow?"
    await ask(client, question, "weather")  # caches weather
    news = by_name(await ask(client, "any news?", "news", source_timeout_s=0.3))["news"]
    assert news.attempt_errors[:2] == ["timeout after 0.3s"] * 2  # two timeouts: its circuit opens
    await ask(client, "take the ticker's token", "ticker")
    result = await ask(client, question, "weather", "flaky", "news", "ticker", deadline_s=10.0)
    o = by_name(result)
    assert (o["weather"].status, o["weather"].cache, o["weather"].attempts) == ("ok", "hit", 0)
    assert (o["flaky"].status, o["flaky"].attempts, len(o["flaky"].attempt_errors)) == ("ok", 2, 1)
    assert (o["news"].status, o["news"].circuit) == ("circuit_open", "open")
    assert o["ticker"].status == "ok" and o["ticker"].rate_limit_wait_s >= 0.5
    assert result.status == "partial"
    with capsys.disabled():  # shown with `pytest -s`: the example result of the README and the issue
        keep = ("name", "status", "error", "cache", "attempts", "attempt_errors", "circuit", "timeout_s",
                "timeout_mode", "rate_limit_wait_s", "fetch_s")  # fmt: skip
        trimmed = [{k: v for k, v in s.model_dump().items() if k in keep} for s in result.sources]
        print("\n" + json.dumps({"status": result.status, "sources": trimmed}, indent=1))
