"""Test plugins for ``AGENTQ_PLUGIN_MODULES=tests.plugin_samples`` (no entry points): two sources and
an analysis, listed in ``SOURCES`` and ``ANALYSES`` as that setting expects.

- ``slow_sample``: answers after 1 s, with a default timeout of its own of 0.3 s;
- ``payload_sample``: answers with a structured payload, and turns every source policy off;
- ``word_count``: an analysis with fields of its own (``words``, ``hits``), in ``tests.plugin_functions``.

``in_this_module`` is an analysis function defined beside pydantic, which a subinterpreter cannot load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from agentq.plugins import Analysis, AnalysisOutput, Source, SourceContext, SourcePolicies
from tests import plugin_functions

#: Every policy off: the worker must make no Redis call for this source.
NO_POLICIES = SourcePolicies(cache=False, retries=False, breaker=False, adaptive_timeout=False, rate_limit=False)
PAYLOAD = {"title": "Rain report.", "cities": [{"city": "Paris", "rain": True, "mm": 4.5}, None], "note": None}


async def _slow(question: str, ctx: SourceContext) -> str:
    await asyncio.sleep(1.0)
    return f"Slow says {question}."


async def _payload(question: str, ctx: SourceContext) -> Mapping[str, Any]:
    return PAYLOAD


class WordCountOutput(AnalysisOutput):
    """word_count's own fields."""

    words: int
    hits: int


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def in_this_module(question: str, text: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """A valid analysis function whose module imports pydantic (through agentq.plugins).

    It calls a function of its module, so a pool must import the module to run it (3.14 sends a
    function that uses no globals by its code alone, and that one would run anywhere).
    """
    return {"summary": _first_line(text), "relevance": 0.0}


SOURCES = [
    Source("slow_sample", _slow, timeout_s=0.3, api_version=1),
    Source("payload_sample", _payload, policies=NO_POLICIES),
]
ANALYSES = [Analysis("word_count", plugin_functions.word_count, WordCountOutput, params={"terms": 2})]
