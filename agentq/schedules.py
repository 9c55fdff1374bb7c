"""Recurring questions: a schedule, its ticks, and the one job each tick enqueues.

A schedule is a question request (its sources, analysis ...) with a priority and when it recurs:
``cron`` (five fields, minute first, in UTC; read by cronsim) or ``every`` (seconds, ticking at
whole multiples of it since the epoch, so every worker computes the same ticks). Schedules live in
the queue's ``schedules`` hash (name -> JSON) and each one's next tick in its ``ticks`` sorted set
(name -> epoch ms), under the queue's hash tag (``agentq.protocol.keys``).

**Exactly once.** Every worker runs a ticker (``worker.engine.scheduler``). When a tick comes, each
one tries to enqueue it; ``lua/enqueue.lua`` moves the tick on and writes the job in one step, and
only if the tick is still the one that worker read: the others find it moved and write nothing.

**Missed ticks** (every worker was down) are coalesced: the first worker back enqueues one job, for
the latest tick it missed, then goes on from the first tick after now. Catching up on every missed
tick after an outage of a day would flood the queue with questions nobody is waiting for any more;
this is what Celery beat and Kubernetes CronJobs do by default.

**Tenants.** A schedule belongs to a tenant (its jobs are that tenant's): the default tenant's is
stored under its name, another tenant's under ``<tenant>/<name>`` (:attr:`Schedule.key`), so two
tenants may each have a schedule of one name.

The recent-jobs index scores a tick's job by its tick (not the moment it was written), so a listing
shows when it was due.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, Field, ValidationError, model_validator

from agentq import tenants
from agentq.connection import is_cluster
from agentq.contract import Priority, describe_validation_error
from agentq.durations import parse_duration
from agentq.settings import ScheduleSettings

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from agentq.protocol.keys import Keys

#: What a schedule may be called: it appears in commands, URLs and Redis.
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
#: The shortest interval an ``every`` schedule may have.
MIN_EVERY_S = 1.0


class Schedule(BaseModel):
    """One recurring question (stored as its JSON)."""

    model_config = {"extra": "forbid", "frozen": True}

    name: str = Field(pattern=NAME_PATTERN)
    cron: str | None = Field(None, description="five cron fields, minute first, in UTC")
    every_s: float | None = Field(None, ge=MIN_EVERY_S, description="or an interval in seconds")
    request: dict[str, Any] = Field(description="the question request each tick enqueues (the job contract's)")
    priority: Priority = "normal"
    tenant: str = Field(tenants.DEFAULT, pattern=tenants.NAME_PATTERN, description="whose jobs its ticks make")

    @property
    def key(self) -> str:
        """Where it is stored (its field in the schedules hash, its member in the ticks)."""
        return key_of(self.name, self.tenant)

    @model_validator(mode="after")
    def _one_rule(self) -> Schedule:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("a schedule needs exactly one of cron and every")
        if self.cron is not None:
            try:
                CronSim(self.cron, datetime.now(UTC))
            except CronSimError as exc:
                raise ValueError(f"cron {self.cron!r}: {exc}") from None
        return self

    def next_after(self, after_ms: float) -> int:
        """The first tick strictly after ``after_ms`` (epoch ms)."""
        if self.every_s is not None:
            step = round(self.every_s * 1000)
            return (math.floor(after_ms / step) + 1) * step
        assert self.cron is not None
        start = datetime.fromtimestamp(after_ms / 1000, UTC).replace(microsecond=0)
        return round(next(CronSim(self.cron, start)).timestamp() * 1000)

    def latest_due(self, tick_ms: int, now_ms: float) -> int:
        """The last tick at or before ``now_ms``, from a tick ``tick_ms`` that is due: the one a catch-up runs."""
        if self.every_s is not None:
            step = round(self.every_s * 1000)
            return max(tick_ms, math.floor(now_ms / step) * step)
        assert self.cron is not None
        just_after = datetime.fromtimestamp(math.floor(now_ms / 1000) + 1, UTC)  # reverse: strictly before it
        return max(tick_ms, round(next(CronSim(self.cron, just_after, reverse=True)).timestamp() * 1000))

    @classmethod
    def declared(cls, name: str, spec: ScheduleSettings) -> Schedule:
        """A schedule of ``AGENTQ_SCHEDULES``; ``ValueError`` naming it if it cannot be one."""
        request = {"question": spec.question}
        if spec.sources is not None:
            request["sources"] = list(spec.sources)  # type: ignore[assignment]
        if spec.analysis is not None:
            request["analysis"] = spec.analysis
        every = parse_duration(spec.every) if isinstance(spec.every, str) else spec.every
        try:
            return cls(name=name, cron=spec.cron, every_s=every, request=request, priority=spec.priority)
        except ValidationError as exc:
            raise ValueError(f"AGENTQ_SCHEDULES: {name}: {describe_validation_error(exc)}") from None

    @property
    def rule(self) -> str:
        """When it recurs, as a person reads it."""
        if self.cron is not None:
            return f"cron {self.cron}"
        assert self.every_s is not None
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if self.every_s >= size and self.every_s % size == 0:
                return f"every {self.every_s / size:g}{unit}"
        return f"every {self.every_s:g}s"


def key_of(name: str, tenant: str = tenants.DEFAULT) -> str:
    """The stored key of ``tenant``'s schedule ``name``."""
    return name if tenant == tenants.DEFAULT else f"{tenant}/{name}"


async def add(redis: Redis, keys: Keys, schedule: Schedule, now_ms: float, *, keep_tick: bool = False) -> int:
    """Store ``schedule`` (replacing one of its name) and set its next tick; return that tick (epoch ms).

    ``keep_tick``: a schedule that already has a tick keeps it (a worker declaring the settings'
    schedules at start must not move a tick another worker is about to take).
    """
    tick = schedule.next_after(now_ms)
    # One transaction on a single Redis. A Redis Cluster client has none: there it is one round trip
    # in order (a tick is taken only with its schedule read, so the schedule is written first).
    async with redis.pipeline(transaction=not is_cluster(redis)) as pipe:
        pipe.hset(keys.schedules, schedule.key, schedule.model_dump_json(exclude_none=True))
        if keep_tick:
            pipe.zadd(keys.ticks, {schedule.key: tick}, nx=True)
        else:
            pipe.zadd(keys.ticks, {schedule.key: tick})
        pipe.zscore(keys.ticks, schedule.key)
        *_, kept = await pipe.execute()
    return round(float(kept))


async def remove(redis: Redis, keys: Keys, name: str) -> bool:
    """Delete the schedule stored as ``name`` (:func:`key_of`) and its tick; whether there was one."""
    async with redis.pipeline(transaction=not is_cluster(redis)) as pipe:  # the tick first: see add()
        pipe.zrem(keys.ticks, name)
        pipe.hdel(keys.schedules, name)
        _, removed = await pipe.execute()
    return bool(removed)


async def listed(redis: Redis, keys: Keys) -> list[tuple[str, Schedule | None, int | None]]:
    """Every schedule by key (:func:`key_of`): its key, the schedule (None if what is stored does not read as
    one), its next tick."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.schedules)
        pipe.zrange(keys.ticks, 0, -1, withscores=True)
        specs, ticks = await pipe.execute()
    next_tick = {name.decode(): round(score) for name, score in ticks}
    found: list[tuple[str, Schedule | None, int | None]] = []
    for raw_name, raw in sorted(specs.items()):
        name = raw_name.decode(errors="replace")
        try:
            schedule: Schedule | None = Schedule.model_validate_json(raw)
        except ValueError:
            schedule = None
        found.append((name, schedule, next_tick.get(name)))
    return found
