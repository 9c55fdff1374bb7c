"""A Redis outage is one warning line per missed beat or refresh, never a traceback; a bug still
shows its traceback. (The heartbeat and the queue-depth gauge once caught the builtin
ConnectionError, not redis-py's, and printed a traceback at every beat of an outage.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
import redis.exceptions

from agentq.protocol.keys import Keys
from agentq.settings import Settings
from worker.ops import health, metrics


class DownRedis:
    """Answers every command with ``error`` and counts the calls."""

    def __init__(self, error: Exception) -> None:
        self.error, self.calls, self.enough = error, 0, 0
        self.called_enough = asyncio.Event()

    def _call(self) -> None:
        self.calls += 1
        if self.calls >= self.enough:
            self.called_enough.set()
        raise self.error

    async def set(self, *args: Any, **kwargs: Any) -> None:
        self._call()

    def pipeline(self, *args: Any, **kwargs: Any) -> DownPipeline:
        return DownPipeline(self)


class DownPipeline:
    """A pipeline of ``DownRedis``: it takes any command; running them fails as every command does."""

    def __init__(self, redis: DownRedis) -> None:
        self.redis = redis

    async def __aenter__(self) -> DownPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, command: str) -> Callable[..., DownPipeline]:
        return lambda *args, **kwargs: self

    async def execute(self) -> list[Any]:
        self.redis._call()
        return []


def context(redis: DownRedis) -> dict[str, Any]:
    """Just what the heartbeat and the gauge read from a worker's ctx."""
    pool = type("Pool", (), {"info": type("Info", (), {"kind": "thread", "size": 1})()})()
    stats = {"started_at": "now", "jobs_done": 0, "jobs_in_flight": 0}
    settings = Settings(_env_file=None, health_check_interval_s=1, queue_depth_interval_s=0.001)
    return {
        "redis": redis,
        "settings": settings,
        "keys": Keys("agentq"),
        "worker_id": "w",
        "pool": pool,
        "stats": stats,
    }


async def run_briefly(loop_forever: Any, ctx: dict[str, Any], redis: DownRedis, calls: int) -> None:
    """Run a ``*_forever`` loop until it has called Redis ``calls`` times, then cancel it."""
    redis.enough = redis.calls + calls
    redis.called_enough.clear()
    task = asyncio.create_task(loop_forever(ctx))
    await redis.called_enough.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


DOWN = [
    redis.exceptions.ConnectionError("Error 111 connecting to redis:6379. Connection refused."),
    redis.exceptions.TimeoutError("Timeout reading from redis:6379"),
    ConnectionRefusedError(111, "Connection refused"),
    redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
]


@pytest.mark.parametrize("error", DOWN, ids=lambda e: type(e).__name__)
async def test_an_outage_is_one_line_per_beat_without_a_traceback(
    error: Exception, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each failed heartbeat and queue-depth read is a WARNING with the reason and no exc_info."""
    monkeypatch.setattr(asyncio, "sleep", _no_wait)
    caplog.set_level(logging.WARNING)
    down = DownRedis(error)
    await run_briefly(health.heartbeat_forever, context(down), down, 3)
    await run_briefly(metrics.refresh_queue_depth_forever, context(down), down, 3)
    records = [r for r in caplog.records if r.name in {"worker.ops.health", "worker.ops.metrics"}]
    assert len(records) >= 5 and all(r.levelno == logging.WARNING and r.exc_info is None for r in records)
    assert all(str(error) in r.getMessage() for r in records)


async def test_an_unexpected_error_keeps_its_traceback(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anything that is not Redis being down is a bug: logged with its traceback, and the beat goes on."""
    monkeypatch.setattr(asyncio, "sleep", _no_wait)
    caplog.set_level(logging.WARNING)
    broken = DownRedis(redis.exceptions.ResponseError("WRONGTYPE Operation against a key"))
    await run_briefly(health.heartbeat_forever, context(broken), broken, 2)
    records = [r for r in caplog.records if r.name == "worker.ops.health"]
    assert records and all(r.levelno == logging.ERROR and r.exc_info is not None for r in records)


_real_sleep = asyncio.sleep


async def _no_wait(seconds: float) -> None:
    await _real_sleep(0)
