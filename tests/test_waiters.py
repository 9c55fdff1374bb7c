"""Waiting for results: one pub/sub connection per client, the stored result in the done message,
unknown jobs refused at once, and every request to Redis counted."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest

from agentq import roundtrips
from agentq.errors import JobNotFound, WaitTimeout
from agentq.settings import Settings
from producer.client import Client
from producer.waiters import UNSUBSCRIBE_BATCH, Waiters
from tests.helpers import eventually


async def test_every_wait_on_a_channel_gets_its_message_on_one_connection() -> None:
    """Two waits on one job and one on another share one pub/sub connection; each gets its own messages."""
    redis = fakeredis.FakeAsyncRedis()
    waiters = Waiters(redis)
    async with waiters.watch("done:a") as a1, waiters.watch("done:a") as a2, waiters.watch("done:b") as b:
        await redis.publish("done:a", b"result of a")
        assert await a1.get(1.0) == await a2.get(1.0) == b"result of a"
        assert await b.get(0.05) is None
    assert waiters._pubsub is not None and len(waiters._pubsub.channels) == 2  # unsubscribed later, in a batch
    for i in range(UNSUBSCRIBE_BATCH):
        async with waiters.watch(f"done:{i}"):
            pass
    assert len(waiters._pubsub.channels) < UNSUBSCRIBE_BATCH
    await waiters.aclose()
    await redis.aclose()


async def test_a_channel_stays_subscribed_when_the_last_wait_ends_a_batch() -> None:
    """A batch of ended waits unsubscribed with no wait left keeps one channel: a SUBSCRIBE on a pub/sub with
    none would first read a health-check PING's reply itself, beside the reader task (a RuntimeError)."""
    redis = fakeredis.FakeAsyncRedis()
    waiters = Waiters(redis)
    for i in range(UNSUBSCRIBE_BATCH):
        async with waiters.watch(f"done:{i}"):
            pass
    pubsub = waiters._pubsub
    assert pubsub is not None

    async def unsubscribed() -> bool:  # the reader has read every UNSUBSCRIBE's reply
        return not pubsub.pending_unsubscribe_channels

    await eventually(unsubscribed, timeout=5)
    assert len(pubsub.channels) == 1 and pubsub.subscribed
    async with waiters.watch("done:next") as box:
        await redis.publish("done:next", b"r")
        assert await box.get(1.0) == b"r"
    await waiters.aclose()
    await redis.aclose()


@pytest.fixture
async def fake_client(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client on fakeredis."""
    fake = fakeredis.FakeAsyncRedis()

    async def open_fake(settings: Settings, **kwargs: object) -> Any:
        return fake

    monkeypatch.setattr("producer.client.open_redis", open_fake)
    async with Client(Settings(_env_file=None)) as client:  # type: ignore[call-arg]
        yield client


async def test_an_unknown_job_is_refused_at_once_and_a_queued_one_waited_for(fake_client: Client) -> None:
    """No queue entry and no result: JobNotFound without waiting; queued: WaitTimeout after the timeout;
    a done message holding the result ends the wait with no further read."""
    with pytest.raises(JobNotFound):
        await asyncio.wait_for(fake_client.result("nobody", timeout=30), 1.0)
    await fake_client.redis.zadd(fake_client.keys.queue, {"queued": 1})
    with pytest.raises(WaitTimeout):
        await fake_client.result("queued", timeout=0.1)

    record = b'{"t":1,"f":"answer_question","a":[{"question":"q"}],"k":{},"et":1,"s":true,"r":{"job_id":"queued","question":"q","status":"ok"},"st":1,"ft":2,"q":"agentq:queue","id":"queued"}'  # noqa: E501
    waiting = asyncio.create_task(fake_client.result("queued", timeout=10))
    channel = fake_client.keys.done_channel("queued")

    async def subscribed() -> bool:
        ((_, count),) = await fake_client.redis.pubsub_numsub(channel)
        return bool(count)

    await eventually(subscribed, timeout=10)  # the wait has subscribed its channel
    await fake_client.redis.publish(fake_client.keys.done_channel("queued"), record)
    result = await asyncio.wait_for(waiting, 2.0)
    assert result.status == "ok" and result.job_id == "queued"


async def test_connections_count_their_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each request a counting connection sends adds one to the process's count, whatever it carries."""
    from redis.asyncio.connection import Connection

    async def sent_nowhere(self: Connection, command: object, check_health: bool = True) -> None:
        return None

    monkeypatch.setattr(Connection, "send_packed_command", sent_nowhere)  # what the counting class wraps
    counting = roundtrips.counting(Connection)
    assert roundtrips.counting(Connection) is counting and roundtrips.counting(counting) is counting
    before = roundtrips.round_trips()
    connection = counting(host="127.0.0.1", port=1)
    await connection.send_packed_command(b"PING")
    await connection.send_packed_command([b"MULTI", b"SET a 1", b"EXEC"])  # a pipeline: one request
    assert roundtrips.round_trips() - before == 2
