"""Per-worker heartbeats: each worker keeps its own key alive, so callers can list live workers.

arq's single health-check key is shared by every worker on a queue; these keys are not. Each
holds a small JSON record and expires after three missed beats.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.job import WorkerContext

log = logging.getLogger(__name__)


def record(ctx: WorkerContext) -> dict[str, Any]:
    """What a heartbeat says about this worker."""
    pool = ctx["pool"].info
    stats = ctx["stats"]
    return {
        "id": ctx["worker_id"],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queue": ctx["settings"].queue_name,
        "executor": pool.kind,
        "pool_size": pool.size,
        "started_at": stats["started_at"],
        "jobs_done": stats["jobs_done"],
        "jobs_in_flight": stats["jobs_in_flight"],
        "beat_at": datetime.now(UTC).isoformat(),
    }


async def beat(ctx: WorkerContext) -> None:
    """Write this worker's record with a TTL of three intervals."""
    s = ctx["settings"]
    key = ctx["keys"].worker(ctx["worker_id"])
    await ctx["redis"].set(key, json.dumps(record(ctx)), ex=3 * s.health_check_interval_s)


async def heartbeat_forever(ctx: WorkerContext) -> None:
    """Beat every interval until cancelled; a missed beat (Redis down) is logged, not fatal."""
    while True:
        try:
            await beat(ctx)
        except (OSError, ConnectionError) as exc:
            log.warning("heartbeat failed: %s", exc)
        except Exception:
            log.exception("heartbeat failed")
        await asyncio.sleep(ctx["settings"].health_check_interval_s)


async def stop(ctx: WorkerContext, task: asyncio.Task[None]) -> None:
    """Stop beating and remove this worker's key: a clean exit is not a dead worker."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with contextlib.suppress(Exception):
        await ctx["redis"].delete(ctx["keys"].worker(ctx["worker_id"]))
