"""Analyses for the tests and the benchmark, loaded through ``AGENTQ_PLUGIN_MODULES`` (``agentq_tools.plugins``)
and opt-in: a worker runs them only when ``AGENTQ_ENABLED_ANALYSES`` names them.

- ``numpy_similarity``: a numpy analysis (``agentq_tools.numeric``). Under the process executor it
  runs; under the interpreter executor the worker's start-up check refuses it, since numpy does not
  load in a subinterpreter. Loading this registration does not import numpy: only running it does.
- ``noop``: does no work (``agentq_tools.trivial``); the benchmark's no-op jobs ask for it, so they
  measure the queue and the worker, the hop into the pool included, and not inference.
"""

from __future__ import annotations

from agentq.plugins import Analysis, AnalysisOutput
from agentq_tools import numeric, trivial


class SimilarityOutput(AnalysisOutput):
    """The numpy analysis's own fields, beside the summary and relevance every analysis returns."""

    sentence_scores: list[float]
    dimensions: int
    numpy_version: str


numpy_similarity = Analysis(
    "numpy_similarity", numeric.similarity, SimilarityOutput, params={"dimensions": 64}, opt_in=True, api_version=1
)

noop = Analysis("noop", trivial.nothing, AnalysisOutput, opt_in=True, api_version=1)
