"""agentq.connection: a cancelled task never runs on because a Redis send swallowed its cancellation."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import sys

import pytest
from redis.asyncio.connection import AbstractConnection

from agentq.connection import cancellable, redis_client
from agentq.settings import Settings

#: sha256 of redis-py's ``AbstractConnection.send_packed_command`` (redis 5.3.1), which
#: ``agentq.connection.cancellable`` mirrors on Python 3.11 with ``asyncio.timeout`` for ``wait_for``.
SEND_PACKED_COMMAND = "cad238c0be555d05ad43c6e483425a87e75fed4d9f97ec32b0adc7349cce04dc"


def test_the_mirrored_send_is_still_redis_pys() -> None:
    """If redis-py changes the send that agentq.connection mirrors on 3.11, read it again and re-pin."""
    source = inspect.getsource(AbstractConnection.send_packed_command)
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == SEND_PACKED_COMMAND, (
        "redis-py's AbstractConnection.send_packed_command changed: compare it with "
        f"agentq.connection.cancellable's copy, adapt that, then pin {digest} here"
    )


def test_only_python_before_3_12_gets_the_cancellable_send() -> None:
    """3.12+ builds wait_for on asyncio.timeout: the class is left as it is; before, it is wrapped once."""
    wrapped = cancellable(AbstractConnection)
    if sys.version_info >= (3, 12):
        assert wrapped is AbstractConnection
    else:
        assert wrapped is not AbstractConnection and issubclass(wrapped, AbstractConnection)
        assert cancellable(AbstractConnection) is wrapped and cancellable(wrapped) is wrapped


@pytest.mark.e2e
@pytest.mark.interpreter
async def test_a_task_looping_on_redis_calls_always_ends_when_cancelled(redis_url: str) -> None:
    """300 tasks, each sending PING after PING, cancelled at varied points of the loop: every one ends.
    (Through plain redis-py on Python 3.11, about 1 in 30 ran on: its cancellation was lost.)"""
    client = redis_client(Settings(_env_file=None, redis_url=redis_url))  # type: ignore[call-arg]
    stop = False

    async def ping_forever() -> None:
        while not stop:
            await client.ping()

    ran_on = 0
    try:
        for i in range(300):
            task = asyncio.create_task(ping_forever())
            for _ in range(i % 7 + 1):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=0.5)
            if not done:
                ran_on += 1
                stop = True
                await task
                stop = False
    finally:
        await client.aclose()
    assert ran_on == 0, f"{ran_on} of 300 tasks ran on after their cancel"
