"""The numpy analysis's function: what a pool worker imports to run ``numpy_similarity``.

numpy is imported when the function runs, not when this module loads, so that registering the
analysis costs nothing and a worker that does not enable it (or has no numpy) never loads it. In
a child process it runs; in a subinterpreter the import fails, and the worker's start-up check
must say so (tests/test_plugins_e2e.py). Registered, with its output model, in ``agentq_tools.analyses``.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from typing import Any

_TOKEN = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")


def similarity(question: str, text: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Hashed term vectors, cosine similarity of each sentence to the question; the best one is the summary."""
    import numpy as np

    dimensions = int(params.get("dimensions", 64))
    sentences = [s.strip() for s in _SENTENCE.split(text) if s.strip()] or ["(empty)"]
    matrix = np.zeros((len(sentences) + 1, dimensions))
    for row, words in enumerate([question, *sentences]):
        for token in _TOKEN.findall(words.lower()):
            matrix[row, zlib.crc32(token.encode()) % dimensions] += 1.0
    query, rows = matrix[0], matrix[1:]
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(query)
    scores = np.divide(rows @ query, norms, out=np.zeros(len(sentences)), where=norms > 0)
    best = int(np.argmax(scores))
    return {
        "summary": sentences[best],
        "relevance": round(float(scores[best]), 4),
        "sentence_scores": [round(float(x), 4) for x in scores],
        "dimensions": dimensions,
        "numpy_version": str(np.__version__),
    }
