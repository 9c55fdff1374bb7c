"""The three reference sources, simulated: the reference latencies, text derived from the question.

Latencies are those of the reference workload (weather 2 s, news 1.5 s, knowledge base 3 s),
multiplied by ``time_scale``. The text is a deterministic function of the question, so the same
question always gets the same answer and tests can compare results.
"""

from __future__ import annotations

import hashlib
import random

from worker.sources.registry import SourceContext, register

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
    # The mock upstream's extra endpoints (``producer.upstream``) draw on these two as well.
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


@register("weather")
async def weather(question: str, ctx: SourceContext) -> str:
    """A weather API: about 2 s."""
    await ctx.simulate("weather", 2.0)
    return compose(question, "weather")


@register("news")
async def news(question: str, ctx: SourceContext) -> str:
    """A news search: about 1.5 s."""
    await ctx.simulate("news", 1.5)
    return compose(question, "news")


@register("knowledge_base")
async def knowledge_base(question: str, ctx: SourceContext) -> str:
    """A knowledge-base lookup: about 3 s."""
    await ctx.simulate("knowledge_base", 3.0)
    return compose(question, "knowledge_base")
