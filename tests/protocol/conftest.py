"""The protocol's tests run twice: on fakeredis (its Lua through lupa) and on the session's real redis-server.

``r`` is the Redis of the run (``fake``, or ``real``: marked ``e2e``), emptied before each test;
``queue`` is the protocol on it, for the queue ``test`` of the prefix ``agentq``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
import redis.asyncio

from agentq.protocol.keys import Keys
from agentq.protocol.queue import Queue

KEYS = Keys("agentq", "test")


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.e2e)])
async def r(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """An async Redis client: fakeredis, or the real server (emptied by ``redis_url``)."""
    if request.param == "fake":
        client: Any = fakeredis.FakeAsyncRedis()
    else:
        client = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def queue(r: Any) -> Queue:
    """The protocol of the queue ``test`` on ``r``."""
    return Queue(r, KEYS)
