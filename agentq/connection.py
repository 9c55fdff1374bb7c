"""How a Redis connection is built from the settings: one recipe for the producer and the worker.

Everything ``redis://`` URLs cannot say is added here: TLS verification against a CA file with
the server's name checked (arq's own default skips the name), connect and socket timeouts (a
Redis that stopped answering is a connection error, not a hang), TCP keep-alive, health checks
of idle connections (one cut by a Redis restart is noticed and replaced before use), and retries
with back-off on exactly the errors that mean "Redis is down" (:data:`agentq.errors.REDIS_DOWN`).

**Sentinel.** With ``redis_sentinels`` set, the client does not connect to the URL's host: each
new connection asks the sentinels where the primary ``redis_sentinel_master`` is now (redis-py's
``SentinelConnectionPool``), so after a failover the retries above land on the new primary; a
connection still open to a demoted primary turns its ``READONLY`` answer into a connection error
and is replaced. The URL still gives the password, user, database and, with ``rediss://``, TLS
(the sentinels are then spoken to over TLS too, with the same CA). Every *attempt* to connect asks
the sentinels (:func:`rediscovering`): redis-py asks once, then retries that address with back-off
for seconds, and an old primary restarted there (empty, and writable until the sentinels demote
it) took a worker's writes meant for the new one.

**Redis Cluster.** With ``redis_cluster`` set, the client is :class:`Cluster`, redis-py's cluster
client given the same timeouts, TLS and credentials (from the URL). Each key goes to the primary
that owns its slot, following ``MOVED`` and ``ASK``. Every key of a queue shares the queue's hash tag
(``agentq.protocol.keys``), so each script and pipeline of a queue runs on one primary. redis-py's
cluster client has no pub/sub (5.x): :meth:`Cluster.pubsub` subscribes on any one node, which a
cluster's ``PUBLISH`` reaches, and moves to another node when that one is lost. It also has no
``MULTI``: the product's reads of several keys are ordered so that none needs one
(``Queue.state``).

**WAIT.** Replication is asynchronous: a primary lost before its replicas copied a write loses
it. With ``redis_wait_replicas`` > 0, :func:`wait_for_replicas` follows the writes that must
survive a failover (an enqueue, a result).

Connections skip redis-py's ``CLIENT SETINFO`` pair (two commands per new connection) and count
their round trips (:mod:`agentq.roundtrips`).

**Cancellation on Python 3.11.** redis-py bounds every send by the socket timeout with
``asyncio.wait_for``, and before Python 3.12 ``wait_for`` returns the result instead of raising
when the task is cancelled in the loop turn its inner send completes (CPython gh-86296): the
cancellation is lost, and a loop of Redis calls then runs on for good (measured: 7 of 200 cancels
of a task looping on PING, 0 on 3.14). That hung a client's close (its pub/sub reader never ended)
and a worker's stop. On 3.11 the connections here send under ``asyncio.timeout`` instead
(:func:`cancellable`), with redis-py's error mapping; ``tests/test_connection.py`` pins the redis-py
source this mirrors.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.asyncio.connection import AbstractConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentq.errors import REDIS_DOWN
from agentq.roundtrips import counting
from agentq.settings import Settings

if TYPE_CHECKING:
    from limits.aio.storage import RedisStorage

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Redis)

#: Retries of one command while Redis is unreachable, with exponential back-off from 50 ms to 2 s.
COMMAND_RETRIES = 5
#: How often an idle connection is PINGed before it is used again.
HEALTH_CHECK_INTERVAL_S = 5


def pool_options(s: Settings) -> dict[str, Any]:
    """Connection-pool keyword arguments for ``s.redis_url``, beyond what the URL holds."""
    scheme = urlsplit(s.redis_url).scheme
    options: dict[str, Any] = {
        "socket_connect_timeout": s.redis_connect_timeout_s,
        "socket_timeout": s.redis_socket_timeout_s,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=COMMAND_RETRIES),
        "retry_on_timeout": True,
        "retry_on_error": list(REDIS_DOWN),
        "lib_name": None,
        "lib_version": None,
    }
    if s.redis_max_connections is not None:
        options["max_connections"] = s.redis_max_connections
    if scheme != "unix":
        options["socket_keepalive"] = True
    if scheme == "rediss":
        options["ssl_ca_certs"] = s.redis_ca_file
        options["ssl_check_hostname"] = s.redis_tls_check_hostname
    return options


def redis_client(s: Settings, redis_class: type[R] = Redis, **extra: Any) -> R:  # type: ignore[assignment]
    """A client of ``redis_class`` for the settings' server (or Sentinel's primary, or Redis Cluster);
    it connects on first use.

    ``extra`` goes to ``redis_class`` itself. With ``redis_cluster`` set the client is a
    :class:`Cluster` whatever ``redis_class`` is: it answers every command agentq sends as
    :class:`~redis.asyncio.Redis` does (``tests/cluster`` runs the product on a real Cluster), so
    callers keep one type.
    """
    if s.redis_cluster:
        return Cluster(s)  # type: ignore[abstract,return-value]
    pool = sentinel_pool(s) if s.redis_sentinels else ConnectionPool.from_url(s.redis_url, **pool_options(s))
    pool.connection_class = counting(cancellable(pool.connection_class))
    client = redis_class(connection_pool=pool, **extra)
    client.auto_close_connection_pool = True  # as Redis.from_pool does: aclose() closes the pool too
    return client


#: How redis-py's cluster client says, at its (re)discovery, that the cluster cannot be reached.
_UNREACHABLE = ("Redis Cluster cannot be connected", "All slots are not covered")


class Cluster(RedisCluster):
    """redis-py's Redis Cluster client for the settings' ``redis_cluster`` nodes (see the module docstring).

    Its connections are this module's (:func:`cancellable`, counted), with :func:`pool_options`'
    timeouts and retries. Commands of a node that stopped answering are retried by redis-py's
    cluster loop, which asks the cluster where the slot is now.
    """

    def __init__(self, s: Settings) -> None:
        url = parse_url(s.redis_url)
        options = pool_options(s)
        options.pop("retry_on_timeout")  # a cluster client retries timeouts through ``retry_on_error``
        options.update({k: url[k] for k in ("username", "password") if k in url})
        tls = urlsplit(s.redis_url).scheme == "rediss"
        if tls:
            options["ssl"] = True
        super().__init__(startup_nodes=[ClusterNode(host, port) for host, port in s.cluster_addresses], **options)
        ours = counting(cancellable(self.connection_kwargs["connection_class"]))
        self.connection_kwargs["connection_class"] = ours  # every node found later is built from these
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = ours  # type: ignore[assignment]
        self.options = options
        """What the client was built with beyond its nodes (``limits_storage`` builds another from them)."""
        self._node_class = any_node(ours, self)

    async def initialize(self) -> Cluster:
        """redis-py's, with "no node answers" and "a slot has no primary" raised as the connection errors
        they are (:data:`~agentq.errors.REDIS_DOWN`): redis-py raises them as ``RedisClusterException``,
        which it also raises for calls that cannot work at all."""
        try:
            await super().initialize()
        except RedisClusterException as exc:
            if str(exc).startswith(_UNREACHABLE):
                raise RedisConnectionError(str(exc)) from exc
            raise
        return self

    def pubsub(self, **kwargs: Any) -> PubSub:
        """A pub/sub on one node of the cluster, any: a cluster's ``PUBLISH`` reaches every node.

        Each connect (the first, and each after a lost connection) takes the next node the client
        knows of, so a subscriber whose node died moves to another when redis-py reconnects it.
        Closing it closes its connection.
        """
        host, port = self.cluster_nodes()[0]
        options = {k: v for k, v in self.options.items() if k not in ("ssl", "max_connections")}
        pool = ConnectionPool(connection_class=self._node_class, host=host, port=port, **options)
        return _PoolOwningPubSub(connection_pool=pool, **kwargs)

    def cluster_nodes(self) -> list[tuple[str, int]]:
        """Every node the client knows of (primaries and replicas), else the startup nodes."""
        known = self.nodes_manager.nodes_cache or self.nodes_manager.startup_nodes
        return [(node.host, int(node.port)) for node in known.values()]


class _PoolOwningPubSub(PubSub):
    async def aclose(self) -> None:
        await super().aclose()  # type: ignore[no-untyped-call]
        await self.connection_pool.disconnect()


def any_node(connection_class: type[AbstractConnection], cluster: Cluster) -> type[AbstractConnection]:
    """``connection_class``, connecting each time to the next of ``cluster``'s nodes (pub/sub's connections)."""
    turn = iter(range(sys.maxsize))

    class AnyNode(connection_class):  # type: ignore[misc,valid-type]
        async def _connect(self) -> None:
            nodes = cluster.cluster_nodes()
            self.host, self.port = nodes[next(turn) % len(nodes)]
            await super()._connect()

    AnyNode.__name__ = AnyNode.__qualname__ = f"AnyNode{connection_class.__name__}"
    return AnyNode


def limits_storage(client: Redis, key_prefix: str) -> RedisStorage:
    """The ``limits`` library's storage (rate-limit windows under ``key_prefix``) on ``client``'s Redis.

    On a plain client it shares the client's pool. ``limits`` takes no cluster client from outside:
    on a :class:`Cluster` it builds its own, to the same nodes with the same options.
    """
    from limits.aio.storage import RedisClusterStorage, RedisStorage  # only rate limits need the library

    if isinstance(client, Cluster):
        nodes = ",".join(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in client.cluster_nodes()
        )
        return RedisClusterStorage(
            f"async+redis+cluster://{nodes}", implementation="redispy", key_prefix=key_prefix, **client.options
        )
    pool = client.connection_pool
    return RedisStorage("async+redis://", implementation="redispy", key_prefix=key_prefix, connection_pool=pool)  # type: ignore[arg-type]


def is_cluster(client: object) -> bool:
    """Is ``client`` a Redis Cluster client (:class:`Cluster`)?"""
    return isinstance(client, RedisCluster)


def connections_of(client: object) -> object:
    """What a client's connections are known by: its pool (clients sharing a pool share them), or
    the cluster client itself. Per-connection state (``ProgressWriter``, ``RedisHealth``) is kept by it."""
    return client if is_cluster(client) else getattr(client, "connection_pool", client)


_CANCELLABLE: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def cancellable(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """``connection_class``, whose sends never swallow a cancellation (see the module docstring).

    On Python 3.12+, where ``asyncio.wait_for`` is built on ``asyncio.timeout``, the class itself.
    """
    if sys.version_info >= (3, 12) or connection_class in _CANCELLABLE.values():
        return connection_class
    if connection_class not in _CANCELLABLE:

        class Cancellable(connection_class):  # type: ignore[misc,valid-type]
            async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                # redis-py's AbstractConnection.send_packed_command, with asyncio.timeout for wait_for.
                if not self.is_connected:
                    await self.connect()
                elif check_health:
                    await self.check_health()
                try:
                    if isinstance(command, str):
                        command = command.encode()
                    if isinstance(command, bytes):
                        command = [command]
                    async with asyncio.timeout(self.socket_timeout or None):
                        await self._send_packed_command(command)
                except TimeoutError:  # builtin: the socket timeout ran out (an OSError, so first)
                    await self.disconnect(nowait=True)
                    raise RedisTimeoutError("Timeout writing to socket") from None
                except OSError as e:
                    await self.disconnect(nowait=True)
                    err_no, errmsg = ("UNKNOWN", e.args[0]) if len(e.args) == 1 else e.args[:2]
                    raise RedisConnectionError(f"Error {err_no} while writing to socket. {errmsg}.") from e
                except BaseException:
                    await self.disconnect(nowait=True)  # a send cut short leaves the connection unusable
                    raise

        Cancellable.__name__ = Cancellable.__qualname__ = f"Cancellable{connection_class.__name__}"
        _CANCELLABLE[connection_class] = Cancellable
    return _CANCELLABLE[connection_class]


class _Sentinel(Sentinel):
    """redis-py's Sentinel manager, whose discovery keeps every sentinel when calls overlap.

    redis-py (5.3) moves the sentinel that answered to the front of its list with
    ``sentinels[0], sentinels[i] = sentinel, sentinels[0]``, ``i`` being the sentinel's place when
    the call *began*. Every new connection to the primary runs a discovery, so after a failover
    dozens overlap; if another call has moved the sentinel meanwhile, that line writes a second
    copy of it over some other sentinel, which is lost: never asked again, and its open
    connections are never closed (Python reports them as ``ResourceWarning`` when it collects
    them). ``tests/test_sentinel_settings.py`` reproduces it with redis-py's own method. Here the
    sentinel is looked up where it is at the moment of the move.
    """

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        errors = []
        for sentinel in list(self.sentinels):  # a snapshot: overlapping calls reorder the list
            try:
                masters = await sentinel.sentinel_masters()  # type: ignore[no-untyped-call]
            except (RedisConnectionError, RedisTimeoutError) as e:
                errors.append(f"{sentinel} - {e!r}")
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):
                now = next(i for i, s in enumerate(self.sentinels) if s is sentinel)
                self.sentinels[0], self.sentinels[now] = self.sentinels[now], self.sentinels[0]
                return state["ip"], state["port"]
        raise MasterNotFoundError(f"No master found for {service_name!r}{' : ' + ', '.join(errors) if errors else ''}")


class _SentinelPool(SentinelConnectionPool):
    """redis-py's pool of connections to Sentinel's current primary, which also closes the
    connections to the sentinels themselves when it is closed (redis-py leaves them open)."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # a full close, not the "primary moved" clean-up of idle connections
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()


#: One attempt, no back-off: what a Sentinel-managed connection uses for the address it was given.
_ONE_ATTEMPT = Retry(NoBackoff(), 0)


def rediscovering(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """``connection_class`` (redis-py's Sentinel-managed one), connecting once to each address the sentinels give.

    redis-py's ``SentinelManagedConnection.connect`` retries discovery, but the connect inside it
    retries the address it was handed on its own, with the pool's back-off (here 6 tries over ~3 s).
    A primary killed and started again at its old address within that time answers as a primary,
    empty, until the sentinels make it a replica: the Sentinel test caught a worker writing results
    and progress there for 10 s, and the jobs were never answered. Here a failed connect goes back
    to the sentinels (the outer retry) before it tries again.
    """

    if connection_class not in _REDISCOVERING:

        class Rediscovering(connection_class):  # type: ignore[misc,valid-type]
            async def connect_to(self, address: tuple[str, int]) -> None:
                retry, self.retry = self.retry, _ONE_ATTEMPT  # type: ignore[has-type]
                try:
                    await super().connect_to(address)
                finally:
                    self.retry = retry

        Rediscovering.__name__ = Rediscovering.__qualname__ = f"Rediscovering{connection_class.__name__}"
        _REDISCOVERING[connection_class] = Rediscovering
    return _REDISCOVERING[connection_class]


_REDISCOVERING: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def sentinel_pool(s: Settings) -> SentinelConnectionPool:
    """A pool whose every new connection goes to the primary the sentinels name now."""
    url = parse_url(s.redis_url)
    tls = urlsplit(s.redis_url).scheme == "rediss"
    options = pool_options(s)
    options.update({k: url[k] for k in ("username", "password", "db") if k in url})
    sentinel_options = {k: v for k, v in options.items() if k.startswith(("socket_", "ssl_"))}
    if tls:
        options["ssl"] = sentinel_options["ssl"] = True
    if s.redis_sentinel_password:
        sentinel_options["password"] = s.redis_sentinel_password
    sentinels = _Sentinel(s.sentinel_addresses, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    pool = _SentinelPool(s.redis_sentinel_master, sentinels, is_master=True, **options)  # type: ignore[no-untyped-call]
    pool.connection_class = rediscovering(pool.connection_class)
    return pool


async def wait_for_replicas(client: Redis, s: Settings, fence_key: str) -> int | None:
    """Block until ``s.redis_wait_replicas`` replicas hold every write made so far; return how many do.

    ``WAIT`` counts the replicas that acknowledged the calling connection's last write, and a pool
    hands each command or transaction any free connection. So the ``WAIT`` goes out behind a
    write of its own (``INCR fence_key``) on one connection, in one round trip: replication
    streams in order, so replicas holding the fence hold everything written before it. Returns
    None when ``redis_wait_replicas`` is 0 (nothing is asked).
    """
    if s.redis_wait_replicas <= 0:
        return None
    timeout_ms = max(1, round(s.redis_wait_timeout_s * 1000))
    if isinstance(client, Cluster):
        return await _wait_on_cluster(client, fence_key, s.redis_wait_replicas, timeout_ms)
    async with client.pipeline(transaction=False) as pipe:
        pipe.incr(fence_key)
        pipe.execute_command("WAIT", s.redis_wait_replicas, timeout_ms)
        _, acked = await pipe.execute()
    return int(acked)


async def _wait_on_cluster(client: Cluster, fence_key: str, replicas: int, timeout_ms: int) -> int:
    """The fence and its ``WAIT`` on one connection to the primary of the fence's slot (the queue's).

    Sent once, never redirected: redis-py's cluster pipeline would send a ``MOVED`` or failed ``INCR``
    again on its own, and its ``WAIT`` to any node, which answers for writes it never saw. A fence the
    node refused (a failover or a slot move under way) confirms nothing: 0 replicas.
    """
    node = client.get_node_from_key(fence_key)
    if node is None:  # the slot has no primary right now
        return 0
    fence, wait = PipelineCommand(0, "INCR", fence_key), PipelineCommand(1, "WAIT", replicas, timeout_ms)
    await node.execute_pipeline([fence, wait])
    if isinstance(fence.result, Exception) or isinstance(wait.result, Exception):
        return 0
    return int(wait.result)


async def open_redis(s: Settings, *, connect_retries: int = 0, redis_class: type[R] = Redis, **extra: Any) -> R:  # type: ignore[assignment]
    """A client that has answered PING, trying ``connect_retries`` more times a second apart.

    Raises the last connection error (one of :data:`~agentq.errors.REDIS_DOWN`) if none answers.
    """
    attempts = 0
    while True:
        client = redis_client(s, redis_class, **extra)
        try:
            await client.ping()
            return client
        except REDIS_DOWN as exc:
            await client.aclose()
            if attempts >= connect_retries:
                raise
            attempts += 1
            log.warning(
                "cannot reach Redis at %s (%s); %d attempts left", s.redis_location, exc, connect_retries - attempts + 1
            )
            await asyncio.sleep(1.0)
