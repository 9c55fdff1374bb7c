"""Redis Cluster settings: validated, and turned into the cluster client the recipe promises (no server).

The product on a real Redis Cluster is ``tests/cluster`` (``make test-cluster``).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection

from agentq.connection import Cluster, connections_of, is_cluster, open_redis, redis_client
from agentq.errors import REDIS_DOWN
from agentq.settings import Settings
from agentq_tools.embedded import free_port


def cluster_settings(**fields: object) -> Settings:
    fields.setdefault("redis_cluster", ("10.0.0.1:7000", "10.0.0.2:7001"))
    return Settings(_env_file=None, **fields)  # type: ignore[arg-type]


def test_cluster_nodes_parse_and_where_redis_is_said_to_be() -> None:
    s = cluster_settings(redis_url="redis://agent:s3cret@ignored:6379/0")
    assert s.cluster_addresses == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert s.redis_location == "Redis Cluster of 10.0.0.1:7000, 10.0.0.2:7001"
    assert "s3cret" not in s.redis_location


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"redis_cluster": ("10.0.0.1",)}, "host:port"),
        ({"redis_url": "unix:///run/redis.sock"}, "not unix://"),
        ({"redis_url": "redis://ignored:6379/2"}, "only database 0"),
        ({"redis_sentinels": ("10.0.0.3:26379",)}, "not both"),
    ],
)
def test_a_cluster_setting_that_cannot_work_is_refused(fields: dict[str, object], message: str) -> None:
    """Bad nodes, a Unix socket, a database other than 0 and Sentinel beside a Cluster are refused on read."""
    with pytest.raises(ValidationError, match=message):
        cluster_settings(**fields)


async def test_the_cluster_client_keeps_the_urls_credentials_tls_timeouts_and_connections() -> None:
    """The client is a cluster client of the nodes, with the URL's user, password and TLS, the settings'
    timeouts, and this module's connections (counted, cancellable) on every node, found now or later."""
    s = cluster_settings(
        redis_url="rediss://agent:s3cret@ignored:6379", redis_ca_file="/etc/ca.pem", redis_socket_timeout_s=7.0
    )
    client: Cluster = redis_client(s)
    try:
        assert isinstance(client, Cluster) and is_cluster(client) and connections_of(client) is client
        kwargs = client.connection_kwargs
        assert (kwargs["username"], kwargs["password"], kwargs["socket_timeout"]) == ("agent", "s3cret", 7.0)
        assert (kwargs["ssl_ca_certs"], kwargs["ssl_check_hostname"]) == ("/etc/ca.pem", True)
        counted = kwargs["connection_class"]
        assert issubclass(counted, SSLConnection) and counted.__name__.startswith("Counting")
        nodes = client.nodes_manager.startup_nodes.values()
        assert sorted(n.name for n in nodes) == ["10.0.0.1:7000", "10.0.0.2:7001"]
        assert all(n.connection_class is counted for n in nodes)
        assert client.cluster_nodes() == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    finally:
        await client.aclose()


async def test_a_cluster_pub_sub_takes_the_next_node_at_each_connect() -> None:
    """Pub/sub on a cluster sits on any one node; each new connection (after a node is lost) tries the next."""
    client: Cluster = redis_client(cluster_settings())
    try:
        pubsub = client.pubsub()
        pool = pubsub.connection_pool
        assert pool.connection_kwargs["host"] == "10.0.0.1" and pool.connection_class.__name__.startswith("AnyNode")
        tried = []

        async def refused(self: object) -> None:
            tried.append((self.host, self.port))  # type: ignore[attr-defined]
            raise OSError("refused")

        base = pool.connection_class.__mro__[1]
        original, base._connect = base._connect, refused  # type: ignore[attr-defined]
        try:
            for _ in range(3):
                with pytest.raises(OSError):
                    await pool.connection_class(host="x", port=1)._connect()  # type: ignore[call-arg,no-untyped-call]
        finally:
            base._connect = original  # type: ignore[attr-defined]
        assert tried == [("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.1", 7000)]
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    finally:
        await client.aclose()


def test_without_cluster_nodes_the_client_is_redis_py_s_plain_one() -> None:
    client: Redis = redis_client(Settings(_env_file=None, redis_cluster=()))  # type: ignore[call-arg]
    assert not is_cluster(client) and connections_of(client) is client.connection_pool


async def test_a_cluster_that_cannot_be_reached_is_an_outage_not_a_bug() -> None:
    """No node answering is one of REDIS_DOWN (retried at start, exit 5 in the CLI), as for one Redis."""
    s = cluster_settings(redis_cluster=(f"127.0.0.1:{free_port()}",), redis_connect_timeout_s=0.5)
    with pytest.raises(REDIS_DOWN, match="Redis Cluster cannot be connected"):
        await open_redis(s)
