"""The fan-out in one process, with the real inference pool and the simulated sources.

At ``time_scale`` 0.05 the reference latencies are 100, 75 and 150 ms and each inference is
about 0.1 s of CPU. The two tests of concurrency stretch the latencies (0.3, 0.5 and 1.5 s) so
that what they assert (fetches overlap; the slow source does not hold up the fast one's
inference) holds with margins of hundreds of milliseconds on a shared, loaded machine; how fast
it all goes is the benchmark's business.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentq.contract import QuestionRequest, SourceOutcome
from agentq.settings import Settings
from agentq.sources import Source, SourceContext, default_sources, enabled_sources
from worker.job.fanout import FanOut
from worker.job.timing import overall_status
from worker.pool.analyses import bag_of_words
from worker.pool.executor import InferencePool, create_pool

SCALE = 0.05
#: Latencies (before scaling) for the concurrency tests: news 0.3 s, weather 0.5 s, knowledge base 1.5 s.
STRETCHED = {"news": 6.0, "weather": 10.0, "knowledge_base": 30.0}


@pytest.fixture(scope="module")
def pool() -> Iterator[InferencePool]:
    """The best pool this Python has (interpreters on 3.14, processes before), two workers."""
    p = create_pool("auto", 2)
    yield p
    p.shutdown()


async def run(
    pool: InferencePool,
    question: str = "rain in Paris?",
    *,
    timeout: float = 5.0,
    deadline: float = 15.0,
    sources: tuple[str, ...] | None = None,
    extra: dict[str, Source] | None = None,
    **settings: object,
) -> dict[str, SourceOutcome]:
    s = Settings(time_scale=SCALE, **settings)  # type: ignore[arg-type]
    known = {**enabled_sources(s), **(extra or {})}
    fan = FanOut(pool, known, analysis=bag_of_words, params=bag_of_words.params_for(s))
    outcomes, _ = await fan.run(
        QuestionRequest(question=question),
        SourceContext(s, "job-1"),
        source_names=sources or default_sources(s, known),
        source_timeout_s=timeout,
        deadline_s=deadline,
    )
    return {o.name: o for o in outcomes}


async def test_fetches_start_together_and_overlap(pool: InferencePool) -> None:
    """Every fetch starts before any ends, so the fetch wall time is the slowest fetch, not the sum."""
    o = await run(pool, source_latency_s=STRETCHED)
    assert all(x.status == "ok" for x in o.values()), o
    starts = [x.fetch_start_s or 0.0 for x in o.values()]
    ends = [x.fetch_end_s or 0.0 for x in o.values()]
    assert max(starts) < min(ends)  # one after another, the last would start after the first ended (0.3 s)
    slowest, total = max(STRETCHED.values()) * SCALE, sum(STRETCHED.values()) * SCALE  # 1.5 s and 2.3 s
    assert slowest * 0.95 <= max(ends) - min(starts) < (slowest + total) / 2  # nearer the slowest: 0.4 s spare


async def test_fast_source_inference_overlaps_slow_fetch(pool: InferencePool) -> None:
    """The fast source's inference runs while the slow source is still fetching, right after its own fetch."""
    o = await run(pool, source_latency_s=STRETCHED)
    news, kb = o["news"], o["knowledge_base"]
    assert news.inference_end_s is not None and news.fetch_end_s is not None and kb.fetch_end_s is not None
    assert news.inference_end_s < kb.fetch_end_s  # done ~1 s before the slow fetch ends
    # The slow knowledge base does not delay the news inference: it starts at once (a core is free),
    # far nearer its own fetch's end (0.3 s) than the knowledge base's (1.5 s).
    assert (news.inference_start_s or 0.0) - news.fetch_end_s < (kb.fetch_end_s - news.fetch_end_s) / 2


async def test_one_timeout_gives_partial_and_others_ok(pool: InferencePool) -> None:
    """A source past its own timeout is 'timeout'; its siblings still answer."""
    o = await run(pool, timeout=0.5, source_latency_s={"knowledge_base": 100.0})
    assert o["knowledge_base"].status == "timeout"
    assert "no answer within 0.5s" in (o["knowledge_base"].error or "")
    assert 0.45 <= (o["knowledge_base"].fetch_s or 0.0) < 1.5  # cut at its timeout, not its 5 s latency
    assert o["weather"].status == o["news"].status == "ok"
    assert overall_status(list(o.values())) == "partial"


async def test_failing_source_is_recorded_not_fatal(pool: InferencePool) -> None:
    """An injected error is that source's 'error' with the message; the others are fine."""
    o = await run(pool, source_fail=frozenset({"news"}))
    assert o["news"].status == "error" and "injected failure" in (o["news"].error or "")
    assert o["news"].inference is None
    assert o["weather"].status == o["knowledge_base"].status == "ok"


async def test_deadline_returns_what_finished(pool: InferencePool) -> None:
    """When the whole-query deadline passes, finished sources keep their answers, the rest say 'deadline'."""
    o = await run(pool, timeout=30, deadline=2.0, source_latency_s={"knowledge_base": 100.0})
    assert o["knowledge_base"].status == "deadline"
    assert "deadline of 2s passed during fetch" in (o["knowledge_base"].error or "")
    assert o["weather"].status == o["news"].status == "ok"


async def test_a_source_of_your_own_joins_the_fan_out(pool: InferencePool) -> None:
    """A source is one async function wrapped in a Source; a bad return value is its error."""

    async def echo(question: str, ctx: SourceContext) -> str:
        return f"Echo says {question}."

    async def broken(question: str, ctx: SourceContext) -> str:
        return 42  # type: ignore[return-value]

    extra = {"echo": Source("echo", echo), "broken": Source("broken", broken)}
    o = await run(pool, "paris", sources=("echo", "broken"), extra=extra)
    assert o["echo"].status == "ok" and o["echo"].data == "Echo says paris."
    assert o["echo"].inference is not None and "paris" in o["echo"].inference.top_terms
    assert o["broken"].status == "error" and "returned int, not text or a JSON payload" in (o["broken"].error or "")


class _Oversized:
    """A fetch policy whose ``news`` answers one character too long."""

    async def fetch(
        self, source: Source, request: QuestionRequest, ctx: SourceContext, outcome: SourceOutcome, deadline: float
    ) -> str:
        return "x" * 101 if source.name == "news" else "a short answer about rain"


async def test_a_source_text_over_the_limit_is_that_source_error(pool: InferencePool) -> None:
    """Any kind of source: text longer than max_text_chars never reaches inference or the result."""
    s = Settings(time_scale=SCALE)
    fan = FanOut(
        pool, enabled_sources(s), analysis=bag_of_words, params={"units": 1}, policy=_Oversized(), max_text_chars=100
    )
    outcomes, _ = await fan.run(
        QuestionRequest(question="rain?"),
        SourceContext(s, "job-1"),
        source_names=["weather", "news"],
        source_timeout_s=1.0,
        deadline_s=5.0,
    )
    by_name = {o.name: o for o in outcomes}
    assert by_name["weather"].status == "ok"
    assert by_name["news"].status == "error" and by_name["news"].data is None
    assert "101 characters is over the 100 limit" in (by_name["news"].error or "")
