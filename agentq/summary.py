"""A job's listing figures: what it was and how it ended, as listings and the dashboard show it.

The worker files them with the result (``worker.job.listing``), the producer when it cancels a job
that never started (``producer.jobs``); ``producer.jobs`` reads them. They are built from the
result as JSON (a dumped :class:`~agentq.contract.JobResult`), never from a re-parsed model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: The question as listings keep it.
QUESTION_CHARS = 200


def sources_summary(sources: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Per source: status, fetch seconds, seconds waiting for a core, inference seconds."""
    out: dict[str, list[Any]] = {}
    for o in sources:
        start, submit = o.get("inference_start_s"), o.get("inference_submit_s")
        waited = None if start is None or submit is None else max(0.0, start - submit)
        out[str(o.get("name"))] = [o.get("status"), o.get("fetch_s"), waited, o.get("inference_s")]
    return out


def figures(
    result: Mapping[str, Any] | None,
    *,
    failure: str | None = None,
    question: str,
    priority: str,
    enqueued_ms: int,
    retry_of: str | None,
    finished_ms: int,
) -> tuple[str, dict[str, Any]]:
    """The final status and the listing figures of a job that returned ``result`` (a dumped
    ``JobResult``) or failed before it could answer (``failure``, with ``result`` None)."""
    out: dict[str, Any] = {
        "question": question[:QUESTION_CHARS],
        "priority": priority,
        "enqueued_ms": enqueued_ms,
        "retry_of": retry_of,
        "finished_ms": finished_ms,
    }
    if result is None:
        error = f"job failed before it could answer: {failure}"[:200]
        out.update(status="failed", total_s=None, queue_wait_s=None, worker_id=None, error=error, sources={})
        return "failed", out
    timing = result.get("timing") or {}
    errors = result.get("errors") or []
    status = str(result.get("status", "failed"))
    out.update(
        status=status,
        total_s=timing.get("total_s"),
        queue_wait_s=timing.get("queue_wait_s"),
        worker_id=result.get("worker_id"),
        error=str(errors[0])[:200] if errors and status in ("failed", "cancelled") else None,
        sources=sources_summary(result.get("sources") or []),
    )
    return status, out
