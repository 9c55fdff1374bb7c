"""The three reference sources, simulated: the reference latencies, text derived from the question.

Latencies are those of the reference workload (weather 2 s, news 1.5 s, knowledge base 3 s),
multiplied by ``time_scale``. The text is a deterministic function of the question, so the same
question always gets the same answer and tests can compare results.
"""

from __future__ import annotations

import asyncio
import hashlib
import random

from agentq.errors import SourceError
from agentq.sources import Source, SourceContext

_VOCABULARY = {
    "weather": (
        "temperature",
        "forecast",
        "rain",
        "wind",
        "humidity",
        "sunshine",
        "pressure",
        "storm",
        "cloud",
        "degrees",
        "overnight",
        "front",
    ),
    "news": (
        "report",
        "announced",
        "officials",
        "market",
        "policy",
        "election",
        "statement",
        "today",
        "analysts",
        "sources",
        "agreement",
        "investigation",
    ),
    "knowledge_base": (
        "definition",
        "history",
        "origin",
        "principle",
        "example",
        "theory",
        "property",
        "method",
        "reference",
        "concept",
        "structure",
        "evidence",
    ),
    # The mock upstream's extra endpoints (``agentq_tools.upstream``) draw on these two as well.
    "stocks": (
        "shares",
        "index",
        "earnings",
        "trading",
        "investors",
        "outlook",
        "dividend",
        "volatility",
        "rally",
        "quarter",
        "guidance",
        "sector",
    ),
    "geo": (
        "district",
        "route",
        "station",
        "distance",
        "landmark",
        "venue",
        "minutes",
        "north",
        "river",
        "square",
        "avenue",
        "centre",
    ),
}


def seeded(question: str, source: str) -> random.Random:
    """A random generator that depends only on the source and the question."""
    return random.Random(hashlib.sha256(f"{source}\0{question}".encode()).digest())


def question_words(question: str) -> list[str]:
    """The question's words of three letters or more, lower-cased (``["topic"]`` if none)."""
    words = [w for w in "".join(c if c.isalnum() else " " for c in question.lower()).split() if len(w) > 2]
    return words or ["topic"]


def phrase(rng: random.Random, source: str, words: list[str]) -> str:
    """Four words of the source's vocabulary and up to three of the question's, shuffled."""
    picked = rng.sample(_VOCABULARY[source], 4) + rng.choices(words, k=rng.randint(0, 3))
    rng.shuffle(picked)
    return " ".join(picked)


def compose(question: str, source: str, sentences: int = 8) -> str:
    """Sentences mixing the question's words with the source's vocabulary, seeded by both."""
    rng, words = seeded(question, source), question_words(question)
    speaker = source.replace("_", " ").capitalize()
    return " ".join(f"{speaker} says {phrase(rng, source, words)}." for _ in range(sentences))


async def simulate(ctx: SourceContext, name: str, latency_s: float) -> None:
    """Wait like a remote API would, honouring the dev-only fault-injection settings.

    The latency is ``latency_s`` (or its override in ``source_latency_s``) times ``time_scale``.
    Injected failures are deterministic per job, source and try.
    """
    s = ctx.settings
    if name in s.source_fail:
        raise SourceError(f"{name}: injected failure (source_fail)")
    if s.source_fail_rate and random.Random(f"{ctx.job_id}:{name}:{ctx.job_try}").random() < s.source_fail_rate:
        raise SourceError(f"{name}: injected failure (source_fail_rate={s.source_fail_rate:g})")
    await asyncio.sleep(s.source_latency_s.get(name, latency_s) * s.time_scale)


#: The reference latencies, seconds at time_scale 1.
REFERENCE_LATENCY_S = {"weather": 2.0, "news": 1.5, "knowledge_base": 3.0}


def simulated(name: str, latency_s: float, vocabulary: str, *, opt_in: bool = False) -> Source:
    """A simulated source: ``latency_s`` (scaled), then text in ``vocabulary`` derived from the question."""

    async def fetch(question: str, ctx: SourceContext) -> str:
        await simulate(ctx, name, latency_s)
        return compose(question, vocabulary)

    fetch.__name__ = fetch.__qualname__ = name
    fetch.__doc__ = f"A simulated {vocabulary.replace('_', ' ')} source: about {latency_s:g} s."
    return Source(name, fetch, kind="simulated", opt_in=opt_in)


weather = simulated("weather", REFERENCE_LATENCY_S["weather"], "weather")
news = simulated("news", REFERENCE_LATENCY_S["news"], "news")
knowledge_base = simulated("knowledge_base", REFERENCE_LATENCY_S["knowledge_base"], "knowledge_base")
