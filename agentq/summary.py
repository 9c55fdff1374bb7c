"""A finished job's figures as its listing entry keeps them (``producer.jobs``, ``worker.listing``)."""

from __future__ import annotations

from typing import Any

from agentq.contract import JobResult


def final_summary(result: JobResult, finished_ms: int) -> dict[str, Any]:
    """What a job's listing entry says once it has finished (also read by the dashboard)."""
    timing = result.timing
    return {
        "status": result.status,
        "finished_ms": finished_ms,
        "total_s": timing.total_s if timing else None,
        "queue_wait_s": timing.queue_wait_s if timing else None,
        "worker_id": result.worker_id,
        "error": result.errors[0][:200] if result.errors and result.status in ("failed", "cancelled") else None,
        # Per source: status, fetch seconds, seconds waiting for a core, inference seconds.
        "sources": {
            o.name: [
                o.status,
                o.fetch_s,
                None
                if o.inference_start_s is None or o.inference_submit_s is None
                else max(0.0, o.inference_start_s - o.inference_submit_s),
                o.inference_s,
            ]
            for o in result.sources
        },
    }
