"""The ticker: every worker enqueues the schedules' ticks (``agentq.schedules``), each tick once.

It reads the earliest ticks (one command), enqueues each that is due through ``lua/enqueue.lua``
(which writes it only for the first worker to come: the others find the tick moved), and sleeps
until the next tick, or ``poll_delay_s`` at most so that a schedule added meanwhile is seen: an
idle worker spends one command per ``poll_delay_s`` on it. A tick missed while no worker ran is
coalesced: one job, for the latest tick missed, then on from the first tick after now.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from agentq.contract import JOB_FUNCTION
from agentq.errors import REDIS_DOWN, StartupError
from agentq.protocol.queue import PRIORITY_RANK, now_ms
from agentq.protocol.records import encode_job
from agentq.schedules import Schedule, add

if TYPE_CHECKING:
    from agentq.protocol.queue import Queue
    from agentq.settings import Settings

log = logging.getLogger(__name__)

#: How many of the earliest ticks one look reads.
LOOK = 32
#: How long a tick whose schedule is gone or does not read as one waits before it is looked at again
#: (a schedule added again meanwhile sets its own tick).
UNREADABLE_RETRY_MS = 60_000


async def declare(queue: Queue, settings: Settings) -> None:
    """Store the schedules of ``AGENTQ_SCHEDULES`` (their ticks kept if they have one already);
    ``StartupError`` naming one that cannot be a schedule."""
    for name, spec in settings.schedules.items():
        try:
            schedule = Schedule.declared(name, spec)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        tick = await add(queue.redis, queue.keys, schedule, now_ms(), keep_tick=True)
        log.info("schedule %s (%s) declared; next tick at %d", name, schedule.rule, tick)


async def tick_forever(queue: Queue, settings: Settings) -> None:
    """Enqueue due ticks until cancelled; Redis errors are logged and tried again a second later."""
    while True:
        try:
            wait_s = await tick_once(queue, settings)
        except REDIS_DOWN as exc:
            log.warning("could not read the schedules' ticks: %s", exc)
            wait_s = 1.0
        except Exception:  # never let the ticker die quietly
            log.exception("the schedules' ticker failed; trying again in %gs", settings.poll_delay_s)
            wait_s = settings.poll_delay_s
        await asyncio.sleep(wait_s)


async def tick_once(queue: Queue, settings: Settings) -> float:
    """Enqueue every due tick this worker is first to; how long to sleep before looking again."""
    redis, keys = queue.redis, queue.keys
    earliest = await redis.zrange(keys.ticks, 0, LOOK - 1, withscores=True)
    now = now_ms()
    for raw_name, score in earliest:
        if score > now:
            return min(settings.poll_delay_s, (float(score) - now) / 1000)
        await _take(queue, settings, raw_name.decode(errors="replace"), round(score), now)
    return 0.0 if earliest else settings.poll_delay_s  # a tick was due: read its next one now


async def _take(queue: Queue, settings: Settings, name: str, tick: int, now: int) -> None:
    raw = await queue.redis.hget(queue.keys.schedules, name)  # type: ignore[misc]
    if raw is None:  # removed since the tick was read, or a tick left without its schedule: look later
        await queue.redis.zadd(queue.keys.ticks, {name: now + UNREADABLE_RETRY_MS}, xx=True)
        return
    try:
        schedule = Schedule.model_validate_json(raw)
    except ValueError as exc:
        log.error("schedule %s does not read as a schedule (%s); looking again in a minute", name, exc)
        await queue.redis.zadd(queue.keys.ticks, {name: now + UNREADABLE_RETRY_MS}, xx=True)
        return
    due = schedule.latest_due(tick, now)  # the one job a catch-up runs, when ticks were missed
    job_id = queue.keys.new_job_id(schedule.tenant, shard=0)  # on shard 0, with the ticks
    won = await queue.enqueue_tick(
        job_id,
        encode_job(JOB_FUNCTION, (schedule.request,), {}, now),
        schedule=name,
        tick_ms=tick,
        next_tick_ms=schedule.next_after(now),
        index_ms=due,
        score=now - PRIORITY_RANK[schedule.priority] * round(settings.priority_step_s * 1000),
        index_size=settings.jobs_index_size,
        priority=schedule.priority,
    )
    if won:
        missed = f" (coalescing the ticks missed since {tick})" if due != tick else ""
        log.info("schedule %s: tick %d enqueued as job %s%s", name, due, job_id, missed)
