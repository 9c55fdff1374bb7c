"""The test plugins' analysis functions (registered in ``tests/plugin_samples.py``).

Standard library only, as an analysis module must be: a subinterpreter imports this module to run
them, and pydantic (which the registration needs) does not load in one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _words(text: str) -> list[str]:
    return [w.strip("?.,!:;").lower() for w in text.split() if w.strip("?.,!:;")]


def word_count(question: str, text: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """How many of the text's words are the question's: the first line is the summary."""
    words, asked = _words(text), set(_words(question))
    hits = sum(w in asked for w in words)
    return {
        "summary": next((line.strip() for line in text.splitlines() if line.strip()), ""),
        "relevance": round(hits / max(1, len(words)), 4),
        "top_terms": sorted(asked & set(words))[: int(params.get("terms", 3))],
        "words": len(words),
        "hits": hits,
    }


def misfit(question: str, text: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Output that does not fit any model: no relevance, a number for the summary."""
    return {"summary": 3}
