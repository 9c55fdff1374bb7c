"""The no-op analysis's function: what a pool worker imports to run ``noop`` (standard library only).

It takes the text's first line as the summary and does no work, so that a no-op job measures the
queue and the worker's machinery (the pool hop included), not inference. Registered, with its
output model, in ``agentq_tools.analyses``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def nothing(question: str, text: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The text's first line as the summary; no work."""
    return {"summary": text.split("\n", 1)[0][:200], "relevance": 0.0, "work_units": 0}
