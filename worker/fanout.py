"""The fan-out: every source at once, each one's inference the moment its own fetch ends.

One task per source runs in an ``asyncio.TaskGroup`` under the whole-query deadline. A task
fetches under its own timeout and then awaits its inference in the worker's pool, so the
inference of a fast source overlaps the fetches of slow ones. A task records every failure in its
own :class:`SourceOutcome` and never raises, so one source can never cancel its siblings; when
the deadline passes, whatever has not finished is marked ``deadline``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from worker import inference
from worker.contract import InferenceOutput, QuestionRequest, SourceOutcome
from worker.executor import InferencePool
from worker.sources import REGISTRY, SourceContext

log = logging.getLogger(__name__)


@dataclass
class FanOut:
    """Answers one request with the given pool; holds no state between jobs."""

    pool: InferencePool
    inference_units: int

    async def run(
        self,
        request: QuestionRequest,
        ctx: SourceContext,
        *,
        source_names: Sequence[str],
        source_timeout_s: float,
        deadline_s: float,
    ) -> tuple[list[SourceOutcome], float]:
        """Return every source's outcome and the wall time of the whole fan-out."""
        t0 = time.monotonic()
        outcomes = [SourceOutcome(name=name, timeout_s=source_timeout_s) for name in source_names]
        try:
            async with asyncio.timeout(deadline_s):
                await self._all(outcomes, request.question, ctx, t0)
        except TimeoutError:
            for outcome in outcomes:
                if outcome.status == "deadline":
                    stage = "fetch" if outcome.fetch_end_s is None else "inference"
                    outcome.error = f"whole-query deadline of {deadline_s:g}s passed during {stage}"
        return outcomes, time.monotonic() - t0

    async def _all(self, outcomes: list[SourceOutcome], question: str, ctx: SourceContext, t0: float) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for outcome in outcomes:
                    group.create_task(self._one(outcome, question, ctx, t0))
        except* Exception as crashed:  # a bug in _one itself: keep whatever finished
            log.error("fan-out task crashed", exc_info=crashed)
            for outcome in outcomes:
                if outcome.status == "deadline" and outcome.error is None:
                    outcome.status = "error"
                    outcome.error = f"internal error: {crashed.exceptions[0]!r}"

    async def _one(self, o: SourceOutcome, question: str, ctx: SourceContext, t0: float) -> None:
        """Fetch one source, then run its inference; record everything in ``o``."""
        source = REGISTRY[o.name]
        timeout_s = o.timeout_s or 0.0
        o.fetch_start_s = time.monotonic() - t0
        try:
            async with asyncio.timeout(timeout_s):
                text = await source.fetch(question, ctx)
            if not isinstance(text, str):
                raise TypeError(f"source returned {type(text).__name__}, not str")
        except TimeoutError:
            self._fetch_ended(o, t0)
            o.status, o.error = "timeout", f"no answer within {timeout_s:g}s"
            return
        except Exception as exc:
            self._fetch_ended(o, t0)
            o.status, o.error = "error", f"{type(exc).__name__}: {exc}"
            return
        self._fetch_ended(o, t0)
        o.data = text

        o.inference_submit_s = time.monotonic() - t0
        try:
            raw = await self.pool.run(inference.analyse, question, text, self.inference_units, self.pool.kind)
        except Exception as exc:
            log.warning("inference of %s failed", o.name, exc_info=True)
            o.status, o.error = "error", f"inference failed: {type(exc).__name__}: {exc}"
            return
        started, ended, cpu_s = float(raw.pop("started")), float(raw.pop("ended")), float(raw.pop("cpu_s"))
        o.inference = InferenceOutput.model_validate(raw)
        o.inference_start_s, o.inference_end_s = started - t0, ended - t0
        o.inference_s, o.inference_cpu_s = ended - started, cpu_s
        o.status = "ok"

    @staticmethod
    def _fetch_ended(o: SourceOutcome, t0: float) -> None:
        o.fetch_end_s = time.monotonic() - t0
        o.fetch_s = o.fetch_end_s - (o.fetch_start_s or 0.0)
