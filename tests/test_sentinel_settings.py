"""Sentinel and WAIT settings: validated, turned into the pool the recipe promises, WAIT enforced."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from agentq.connection import redis_client, wait_for_replicas
from agentq.errors import NotReplicated
from agentq.protocol.keys import Keys
from agentq.settings import Settings
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
