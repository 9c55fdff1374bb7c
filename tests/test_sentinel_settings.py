"""Sentinel and WAIT settings: validated, turned into the pool the recipe promises, WAIT enforced."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

import agentq.connection
from agentq.connection import redis_client, wait_for_replicas
from agentq.errors import NotReplicated
from agentq.protocol.keys import Keys
from agentq.settings import Settings
from agentq_tools.embedded import free_port
from producer.client import Client


def sentinel_settings(**fields: object) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_sentinels=("10.0.0.1:26379", "[::1]:26380"),
        redis_sentinel_master="jobs",
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("address", ["10.0.0.1", "host:", ":26379", "host:port", "host:70000"])
def test_a_sentinel_address_must_be_host_and_port(address: str) -> None:
    """Each sentinel is "host:port"; anything else is refused when the settings are read."""
    with pytest.raises(ValidationError, match="host:port"):
        Settings(_env_file=None, redis_sentinels=(address,))  # type: ignore[call-arg]


def test_sentinel_addresses_and_where_redis_is_said_to_be() -> None:
    """Addresses parse (IPv6 in brackets); messages name the primary and its sentinels, never a password."""
    s = sentinel_settings(redis_url="redis://:s3cret@ignored:6379/2")
    assert s.sentinel_addresses == [("10.0.0.1", 26379), ("::1", 26380)]
    assert s.redis_location == "primary 'jobs' of sentinels 10.0.0.1:26379, [::1]:26380"
    assert "s3cret" not in s.redis_location


async def test_the_sentinel_pool_keeps_the_urls_credentials_timeouts_and_retries() -> None:
    """With sentinels, the pool asks them for the primary and still uses the URL's password, db and TLS."""
    s = sentinel_settings(
        redis_url="rediss://agent:s3cret@ignored:6379/2",
        redis_ca_file="/etc/ca.pem",
        redis_sentinel_password="sentinel-pw",
        redis_socket_timeout_s=7.0,
    )
    client = redis_client(s)
    try:
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        assert pool.service_name == "jobs" and pool.is_master
        assert issubclass(pool.connection_class, SentinelManagedSSLConnection)  # counting its round trips
        assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("agent", "s3cret", 2)
        assert (
            kwargs["socket_timeout"] == 7.0 and kwargs["retry"] is not None and kwargs["ssl_ca_certs"] == "/etc/ca.pem"
        )
        sentinel = pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
        assert (sentinel["host"], sentinel["port"], sentinel["password"]) == ("10.0.0.1", 26379, "sentinel-pw")
        assert sentinel["socket_timeout"] == 7.0
    finally:
        await client.aclose()
    plain = redis_client(sentinel_settings(redis_url="redis://localhost/0"))
    assert issubclass(plain.connection_pool.connection_class, SentinelManagedConnection)
    await plain.aclose()


class FakeSentinel:
    """A sentinel that knows the primary (after a moment, as over a network) or does not know it at all."""

    def __init__(self, name: str, knows: bool) -> None:
        self.name, self.knows = name, knows

    async def sentinel_masters(self) -> dict[str, dict[str, object]]:
        if not self.knows:
            return {}
        await asyncio.sleep(0.01)
        state = {"ip": "10.0.0.9", "port": 6379, "is_master": True, "is_odown": False, "is_sdown": False}
        return {"jobs": {**state, "num-other-sentinels": 2}}


def manager(cls: type[Sentinel]) -> Sentinel:
    """A Sentinel manager of ``cls`` whose first sentinel does not know the primary and the others do."""
    found = cls([("127.0.0.1", 1)])  # type: ignore[no-untyped-call]
    found.sentinels = [FakeSentinel("s0", False), FakeSentinel("s1", True), FakeSentinel("s2", True)]  # type: ignore[list-item]
    return found


async def test_overlapping_discoveries_lose_a_sentinel_in_redis_py_and_not_here() -> None:
    """The reproduction of redis-py's Sentinel bug behind the failover test's unclosed connections: two
    discoveries at once, both answered by the second sentinel, leave redis-py's manager with that sentinel
    twice and the first one gone (its connections never closed); ours keeps all three."""
    theirs, ours = manager(Sentinel), manager(agentq.connection._Sentinel)
    for m in (theirs, ours):
        assert await asyncio.gather(m.discover_master("jobs"), m.discover_master("jobs")) == [("10.0.0.9", 6379)] * 2
    assert [s.name for s in theirs.sentinels] == ["s1", "s1", "s2"]  # type: ignore[attr-defined]
    assert sorted(s.name for s in ours.sentinels) == ["s0", "s1", "s2"]  # type: ignore[attr-defined]
    assert ours.sentinels[0].name == "s1"  # type: ignore[attr-defined]  # the one that answered goes first


@pytest.mark.e2e
async def test_wait_for_replicas_asks_nothing_by_default_and_reports_the_count(redis_url: str) -> None:
    """WAIT is off at 0; asked for, it returns how many replicas confirmed (none on a lone server)."""
    async with Client(Settings(_env_file=None, redis_url=redis_url)) as client:  # type: ignore[call-arg]
        assert await wait_for_replicas(client.redis, client.settings, "fence") is None
        waiting = Settings(_env_file=None, redis_url=redis_url, redis_wait_replicas=1, redis_wait_timeout_s=0.05)  # type: ignore[call-arg]
        assert await wait_for_replicas(client.redis, waiting, Keys("agentq").fence) == 0


@pytest.mark.e2e
async def test_an_enqueue_no_replica_confirms_fails_but_stays_queued(redis_url: str) -> None:
    """With WAIT 1 and no replica, enqueue raises NotReplicated (exit 5) naming the job, which is queued."""
    s = Settings(_env_file=None, redis_url=redis_url, redis_wait_replicas=1, redis_wait_timeout_s=0.05)  # type: ignore[call-arg]
    async with Client(s) as client:
        with pytest.raises(NotReplicated, match=r"only 0 of 1 replicas") as caught:
            await client.enqueue("is it durable?", sources=["weather"])
        job_id = str(caught.value).split()[1]
        assert await client.status(job_id) == "queued"


@pytest.mark.e2e
async def test_every_connect_attempt_asks_the_sentinels_again(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connect that fails goes back to the sentinels before trying again. redis-py alone retries the address
    it was given 6 times over ~3 s, and an old primary started again there in that time (empty, writable until
    the sentinels demote it) got a worker's results meant for the new one (the Sentinel test's flake)."""
    live, dead = int(redis_url.rsplit(":", 1)[1].split("/")[0]), free_port()
    client = redis_client(sentinel_settings())
    pool = client.connection_pool
    named = [("127.0.0.1", dead), ("127.0.0.1", live)]  # what the sentinels say: the old primary, then the new

    async def discover_master(service_name: str) -> tuple[str, int]:
        return named.pop(0) if len(named) > 1 else named[0]

    tried: list[int] = []
    real_connect = pool.connection_class._connect

    async def connect(self: Any) -> None:
        tried.append(self.port)
        await real_connect(self)

    monkeypatch.setattr(pool.sentinel_manager, "discover_master", discover_master)
    monkeypatch.setattr(pool.connection_class, "_connect", connect)
    try:
        assert await client.ping()
        assert tried == [dead, live]  # redis-py's own: [dead] * 6, then live
    finally:
        await client.aclose()
