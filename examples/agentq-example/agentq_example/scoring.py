"""The keyword-density analysis: the function a worker's inference pool runs.

Standard library only, and nothing from agentq or pydantic: a subinterpreter imports this module
to run the function, and pydantic's compiled core cannot load there. Plain data in, plain data out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_WORD = re.compile(r"[a-z0-9]+")


def keyword_density(question: str, text: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The line of ``text`` with the most of the question's words is the summary; its share of them is the relevance."""
    min_length = int(params.get("min_word_length", 3))
    asked = {w for w in _WORD.findall(question.lower()) if len(w) >= min_length}
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [""]
    found = [asked & set(_WORD.findall(line.lower())) for line in lines]
    best = max(range(len(lines)), key=lambda i: (len(found[i]), -i))
    return {
        "summary": lines[best],
        "relevance": round(len(found[best]) / len(asked), 4) if asked else 0.0,
        "top_terms": sorted(set().union(*found))[:5],
        "matched_lines": sum(1 for words in found if words),
        "lines": len(lines),
    }
