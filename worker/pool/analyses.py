"""The built-in analysis, registered as a plugin like any other (``agentq.analyses`` entry point).

``bag_of_words`` is ``worker.pool.bag_of_words.analyse`` (pure Python, what the pool imports) with its
output model (here, in the main interpreter only: pydantic does not load in a subinterpreter).
Its work per text comes from the settings: ``AGENTQ_INFERENCE_UNITS`` times ``AGENTQ_TIME_SCALE``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentq.plugins import Analysis, AnalysisOutput
from agentq.settings import Settings
from worker.pool import bag_of_words as inference


class BagOfWordsOutput(AnalysisOutput):
    """The built-in's output: the best sentence, its similarity, the terms that mattered, the work done."""

    top_terms: list[str]
    work_units: int


def units_for(settings: Settings) -> Mapping[str, Any]:
    """The work per text under ``settings``: ``inference_units`` scaled by ``time_scale``, at least 1."""
    return {"units": max(1, round(settings.inference_units * settings.time_scale))}


bag_of_words = Analysis(
    "bag_of_words",
    inference.analyse,
    BagOfWordsOutput,
    params={"units": inference.DEFAULT_UNITS},
    configure=units_for,
    check_params={"units": 1},  # the start-up check costs a millisecond, not a job's ~2 CPU-s
    api_version=1,
)
