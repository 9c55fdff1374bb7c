"""The plugins, as the entry points in pyproject.toml name them: the ``almanac`` source and the
``keyword_density`` analysis. This module imports agentq (and so pydantic): it runs in the worker's
main interpreter only. The analysis's function lives in ``scoring``, which the pool imports.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from agentq.plugins import Analysis, AnalysisOutput, Source, SourceContext, SourcePolicies
from agentq_example import scoring

_SEASONS = ("winter", "spring", "summer", "autumn")


async def fetch_almanac(question: str, ctx: SourceContext) -> dict[str, Any]:
    """A structured answer (the worker renders it to text): a stand-in for your own API call.

    A real source would call its API through ``ctx.http``, the worker's pooled httpx client, and
    raise ``agentq.plugins.TransientSourceError`` for what a retry may fix.
    """
    await asyncio.sleep(0.05)
    words = [w.strip("?,.!").lower() for w in question.split() if len(w.strip("?,.!")) > 3] or ["weather"]
    seed = int(hashlib.sha256(question.encode()).hexdigest(), 16)
    return {
        "source": "Example Almanac",
        "entries": [
            {"topic": word, "note": f"The almanac records {word} as typical of {_SEASONS[(seed >> i) % 4]}."}
            for i, word in enumerate(words[:4])
        ],
    }


class KeywordDensityOutput(AnalysisOutput):
    """keyword_density's own fields, beside summary, relevance and top_terms."""

    matched_lines: int
    lines: int


almanac = Source(
    "almanac",
    fetch_almanac,
    timeout_s=2.0,
    policies=SourcePolicies(retries=False),  # an offline source: nothing a retry could fix
    api_version=1,
)

keyword_density = Analysis(
    "keyword_density",
    scoring.keyword_density,
    KeywordDensityOutput,
    params={"min_word_length": 3},
    api_version=1,
)
