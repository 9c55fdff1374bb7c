"""The fan-out: every source at once, each one's inference the moment its own fetch ends.

One task per source runs in an ``asyncio.TaskGroup`` under the whole-query deadline. A task
fetches under its own timeout and then awaits the request's analysis of its text in the worker's
pool, so the inference of a fast source overlaps the fetches of slow ones. The analysis's output
is validated against its model here, in the main interpreter; a misfit is that source's error.
A task records every failure in its own :class:`SourceOutcome` and never raises, so one source
can never cancel its siblings; when the deadline passes, whatever has not finished is marked
``deadline``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from agentq.analyses import COMMON_FIELDS, Analysis
from agentq.contract import InferenceOutput, QuestionRequest, SourceOutcome, describe_validation_error
from agentq.errors import SourceError
from agentq.sources import Source, SourceContext
from worker.pool import pooled
from worker.pool.executor import InferencePool

log = logging.getLogger(__name__)

#: The moments of one source's life that :attr:`FanOut.on_event` hears about.
FanOutEvent = Literal["fetch_start", "fetch_end", "inference_start", "done"]

#: Called synchronously at each event with the source's outcome as it stands; must not block.
EventHook = Callable[[FanOutEvent, SourceOutcome], None]


class SourceSkipped(Exception):
    """Raised by a fetch policy to end a source without fetching (``status`` says why)."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class FetchPolicy(Protocol):
    """How one source's text is obtained: the place for caching, retries, breakers and limits.

    It returns the text (``Source.fetch_text``: a payload rendered), or raises: ``TimeoutError``
    (status ``timeout``), :class:`SourceSkipped` (its own status), anything else (``error``). It may
    record what it did on ``outcome``. ``outcome.timeout_s`` holds the per-source timeout asked for; ``deadline`` is the
    ``time.monotonic()`` instant the whole query ends (nothing should be started that cannot end by then).
    """

    async def fetch(
        self, source: Source, request: QuestionRequest, ctx: SourceContext, outcome: SourceOutcome, deadline: float
    ) -> str: ...


class DirectFetch:
    """The plain policy: one call under the outcome's timeout (``worker.job.resilience`` has the full one)."""

    async def fetch(
        self, source: Source, request: QuestionRequest, ctx: SourceContext, outcome: SourceOutcome, deadline: float
    ) -> str:
        outcome.attempts = 1
        async with asyncio.timeout(outcome.timeout_s or 0.0):
            return await source.fetch_text(request.question, ctx)


@dataclass
class FanOut:
    """Answers one request with the given pool and sources; holds no state between jobs."""

    pool: InferencePool
    sources: Mapping[str, Source]
    """The sources a request may name (the worker's enabled sources)."""
    analysis: Analysis
    """The analysis every source's text goes through (the request's, or the worker's default)."""
    params: Mapping[str, Any]
    """The analysis's parameters under the worker's settings (``Analysis.params_for``)."""
    policy: FetchPolicy = field(default_factory=DirectFetch)
    on_event: EventHook | None = None
    max_text_chars: int | None = None
    """Longest text a source may return (any kind of source); longer is that source's ``error``."""

    def _emit(self, event: FanOutEvent, outcome: SourceOutcome) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event, outcome)
        except Exception:  # progress reporting must never break a query
            log.warning("progress hook failed on %s/%s", outcome.name, event, exc_info=True)

    async def run(
        self,
        request: QuestionRequest,
        ctx: SourceContext,
        *,
        source_names: Sequence[str],
        source_timeout_s: float | Mapping[str, float],
        deadline_s: float,
    ) -> tuple[list[SourceOutcome], float]:
        """Return every source's outcome and the wall time of the whole fan-out.

        ``source_timeout_s`` is one timeout for all, or each source's by name.
        """
        t0 = time.monotonic()
        timeouts = (
            source_timeout_s if isinstance(source_timeout_s, Mapping) else dict.fromkeys(source_names, source_timeout_s)
        )
        outcomes = [SourceOutcome(name=name, timeout_s=timeouts[name]) for name in source_names]
        try:
            async with asyncio.timeout(deadline_s):
                await self._all(outcomes, request, ctx, t0, t0 + deadline_s)
        except TimeoutError:
            for outcome in outcomes:
                if outcome.status == "deadline":
                    stage = "fetch" if outcome.fetch_end_s is None else "inference"
                    outcome.error = f"whole-query deadline of {deadline_s:g}s passed during {stage}"
        return outcomes, time.monotonic() - t0

    async def _all(
        self, outcomes: list[SourceOutcome], request: QuestionRequest, ctx: SourceContext, t0: float, deadline: float
    ) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for outcome in outcomes:
                    group.create_task(self._one(outcome, request, ctx, t0, deadline))
        except* Exception as crashed:  # a bug in _one itself: keep whatever finished
            log.error("fan-out task crashed", exc_info=crashed)
            for outcome in outcomes:
                if outcome.status == "deadline" and outcome.error is None:
                    outcome.status = "error"
                    outcome.error = f"internal error: {crashed.exceptions[0]!r}"

    async def _one(
        self, o: SourceOutcome, request: QuestionRequest, ctx: SourceContext, t0: float, deadline: float
    ) -> None:
        """Fetch one source, then run its inference; record everything in ``o``."""
        try:
            await self._fetch_and_infer(o, request, ctx, t0, deadline)
        finally:
            self._emit("done", o)

    async def _fetch_and_infer(
        self, o: SourceOutcome, request: QuestionRequest, ctx: SourceContext, t0: float, deadline: float
    ) -> None:
        source, question = self.sources[o.name], request.question
        o.fetch_start_s = time.monotonic() - t0
        self._emit("fetch_start", o)
        try:
            text = await self.policy.fetch(source, request, ctx, o, deadline)
            if not isinstance(text, str):
                raise TypeError(f"source returned {type(text).__name__}, not str")
            if self.max_text_chars is not None and len(text) > self.max_text_chars:
                raise SourceError(f"answer of {len(text):,} characters is over the {self.max_text_chars:,} limit")
        except TimeoutError:
            o.status, o.error = "timeout", f"no answer within {o.timeout_s or 0.0:g}s"
            self._fetch_ended(o, t0)
            return
        except SourceSkipped as skipped:
            o.status, o.error = skipped.status, str(skipped)  # type: ignore[assignment]
            self._fetch_ended(o, t0)
            return
        except Exception as exc:
            o.status, o.error = "error", f"{type(exc).__name__}: {exc}"
            self._fetch_ended(o, t0)
            return
        self._fetch_ended(o, t0)
        o.data = text

        o.inference_submit_s = time.monotonic() - t0
        self._emit("inference_start", o)
        analysis = self.analysis
        try:
            raw = await self.pool.run(
                pooled.run_analysis,
                analysis.function,
                question,
                text,
                dict(self.params),
                self.pool.kind,
                label=(ctx.job_id, o.name),
            )
        except Exception as exc:
            log.warning("inference of %s failed", o.name, exc_info=True)
            o.status, o.error = "error", f"inference failed: {type(exc).__name__}: {exc}"
            return
        started, ended = float(raw["started"]), float(raw["ended"])
        o.inference_start_s, o.inference_end_s = started - t0, ended - t0
        o.inference_s, o.inference_cpu_s = ended - started, float(raw["cpu_s"])
        try:
            o.inference = inference_output(analysis, raw["output"], raw["ran_in"])
        except (ValidationError, TypeError) as exc:
            why = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            o.status, o.error = (
                "error",
                f"analysis {analysis.name!r} returned output that does not fit {analysis.output.__name__}: {why}",
            )
            return
        o.status = "ok"

    def _fetch_ended(self, o: SourceOutcome, t0: float) -> None:
        o.fetch_end_s = time.monotonic() - t0
        o.fetch_s = o.fetch_end_s - (o.fetch_start_s or 0.0)
        self._emit("fetch_end", o)


def inference_output(analysis: Analysis, raw: object, ran_in: object) -> InferenceOutput:
    """The analysis's raw output, validated against its model, as a result records it: the common
    fields at the top, the analysis's own under ``details``. Raises ``ValidationError``/``TypeError``."""
    output = analysis.check_output(raw)
    return InferenceOutput.model_validate(
        {
            "analysis": analysis.name,
            **output.model_dump(mode="json", include=set(COMMON_FIELDS)),
            "details": output.model_dump(mode="json", exclude=set(COMMON_FIELDS)),
            "ran_in": ran_in,
        }
    )
