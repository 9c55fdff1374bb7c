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

from agentq.connection import open_redis
from agentq.errors import REDIS_DOWN

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from agentq.settings import Settings
    from worker.engine.context import WorkerContext

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
        "shards": ctx["settings"].served_shards if ctx["settings"].queue_shards > 1 else None,
        "max_jobs": ctx["settings"].max_jobs,
        "executor": pool.kind,
        "pool_size": pool.size,
        "started_at": stats["started_at"],
        "jobs_done": stats["jobs_done"],
        "jobs_in_flight": stats["jobs_in_flight"],
        "metrics_port": ctx.get("metrics_port"),
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
        except REDIS_DOWN as exc:  # one line per missed beat, no traceback: Redis is down, not us
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
    path = ctx["settings"].worker_id_file
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)


def write_id_file(ctx: WorkerContext) -> None:
    """Write this worker's id to ``worker_id_file`` (if set), for ``worker --check``.

    Written to a temporary name and renamed, so a health check never reads half an id.
    """
    path = ctx["settings"].worker_id_file
    if not path:
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(ctx["worker_id"])
    os.replace(tmp, path)


def check(s: Settings) -> tuple[bool, str]:
    """Is the worker whose id ``s.worker_id_file`` holds alive, i.e. is its heartbeat key in Redis?

    Returns the verdict and a one-line reason; raises one of ``REDIS_DOWN`` when Redis cannot be
    reached within ``redis_connect_timeout_s`` + 1 s (``TimeoutError`` is an ``OSError``).
    """
    if not s.worker_id_file:
        return False, "AGENTQ_WORKER_ID_FILE is not set: no way to know which worker to check"
    try:
        with open(s.worker_id_file, encoding="utf-8") as f:
            worker_id = f.read().strip()
    except OSError as exc:
        return False, f"no worker id in {s.worker_id_file}: {exc.strerror}"
    if not worker_id:
        return False, f"{s.worker_id_file} is empty"
    # One bounded attempt: a probe that hangs (a name lookup for a stopped Redis container can take
    # longer than Docker's or Kubernetes' probe timeout) would be killed and report nothing useful.
    deadline_s = s.redis_connect_timeout_s + 1.0
    alive = asyncio.run(asyncio.wait_for(_key_exists(s, s.keys.worker(worker_id)), deadline_s))
    return alive, f"worker {worker_id} is {'alive' if alive else 'not heartbeating'}"


async def _key_exists(s: Settings, key: str) -> bool:
    """Connect exactly as the worker does (TLS, CA file, hostname check, timeouts) and test ``key``."""
    client: Redis = await open_redis(s)
    try:
        return bool(await client.exists(key))
    finally:
        await client.aclose()
