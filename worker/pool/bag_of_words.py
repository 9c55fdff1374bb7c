"""The built-in analysis, ``bag_of_words``: pure Python, a fixed amount of CPU work per text.

This module is what the worker's pool imports to run it (``worker.pool.analyses`` registers it as a
plugin, with its output model). It must stay importable on its own and use the standard library
only, so that it runs unchanged in a subinterpreter (3.14's ``InterpreterPoolExecutor``), in a
child process or in a thread. Do not import pydantic, arq or anything else from the project here.

The cost is counted in *work units*, never in seconds: one unit is 1,000 token hashes. A loop that
spun until a wall-clock time had passed would finish on time whether or not it really ran in
parallel, and so would prove nothing about the GIL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

HASHES_PER_UNIT = 1000
DIMENSIONS = 256
_FNV_OFFSET = 2166136261
_FNV_PRIME = 16777619
_TOKEN = re.compile(r"[a-z0-9]+")
#: Sentences end at . ! or ? followed by white space, and at every line break (a rendered payload's lines).
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")
_STOPWORDS = frozenset(
    "a an and are as at be by for from has have how in is it its of on or that the this to was were "  # noqa: SIM905
    "what when where which who why will with".split()
)


def tokenise(text: str) -> list[str]:
    """Lower-case word tokens."""
    return _TOKEN.findall(text.lower())


def _fnv1a(token: str, seed: int) -> int:
    """32-bit FNV-1a, deliberately in pure Python: this loop *is* the CPU work."""
    h = _FNV_OFFSET ^ seed
    for ch in token:
        h = ((h ^ ord(ch)) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _embed(token_lists: list[list[str]], budget: int) -> tuple[list[list[float]], int]:
    """Hashed bag-of-words vectors, one per token list, spending exactly ``budget`` hashes.

    Each pass hashes every token again with a new seed (a multi-probe embedding), so more work
    units mean a smoother embedding, and the cost is fixed whatever the length of the text.
    """
    vectors = [[0.0] * DIMENSIONS for _ in token_lists]
    spent = 0
    seed = 0
    while spent < budget:
        for vector, tokens in zip(vectors, token_lists, strict=True):
            for token in tokens:
                h = _fnv1a(token, seed)
                vector[h % DIMENSIONS] += 1.0 if h & 0x80000000 else -1.0
                spent += 1
                if spent >= budget:
                    return vectors, spent
        seed += 1
    return vectors, spent


#: The work per text when the parameters name none (``worker.pool.analyses`` derives it from the settings).
DEFAULT_UNITS = 1500


def analyse(question: str, text: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Rank the text's sentences by similarity to the question and summarise it.

    ``params["units"]`` is the work to do, in thousands of token hashes. Takes and returns only
    plain strings, numbers, lists and dicts, so that crossing into a subinterpreter or a process is
    cheap; the output fits ``worker.pool.analyses.BagOfWordsOutput``.
    """
    units = int(params.get("units", DEFAULT_UNITS))
    sentences = [s.strip() for s in _SENTENCE.split(text) if s.strip()] or [text.strip() or "(empty)"]
    sentence_tokens = [tokenise(s) or ["empty"] for s in sentences]
    question_tokens = tokenise(question) or ["empty"]

    budget = max(1, units) * HASHES_PER_UNIT
    vectors, spent = _embed([question_tokens, *sentence_tokens], budget)
    query, sentence_vectors = vectors[0], vectors[1:]
    scores = [_cosine(query, v) for v in sentence_vectors]
    ranked = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))

    counts: dict[str, float] = {}
    for i in ranked[:3]:
        for token in sentence_tokens[i]:
            if token not in _STOPWORDS and len(token) > 2:
                counts[token] = counts.get(token, 0.0) + 1.0 + max(scores[i], 0.0)
    top_terms = sorted(counts, key=lambda t: (-counts[t], t))[:5]

    return {
        "summary": sentences[ranked[0]],
        "top_terms": top_terms,
        "relevance": round(max(0.0, scores[ranked[0]]), 4),
        "work_units": spent // HASHES_PER_UNIT,
    }
