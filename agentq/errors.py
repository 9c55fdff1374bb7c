"""The project's exceptions, one tree, converted from lower-level errors at the edges.

AgentQError
├── InvalidRequest        permanent: the request breaks the contract (CLI exit 2)
│   └── QuotaExceeded     the tenant's quota is used up: ask again later (CLI exit 2, API 429)
├── JobNotFound           permanent: no such job id, or its result has expired (CLI exit 3)
├── WaitTimeout           the caller stopped waiting; the job may still finish (CLI exit 4)
├── RedisUnavailable      transient: Redis cannot be reached (CLI exit 5)
│   └── NotReplicated     a write reached the primary, but not enough replicas in time (exit 5)
├── StartupError          permanent: the worker cannot start with this configuration (worker exit 2)
│   └── PluginError       a plugin does not load, does not fit the interface, or fails its start-up check
└── SourceError           one source failed; recorded in its outcome, never fatal to the job
    └── TransientSourceError  it may pass: 5xx, 429, a connection error (worth retrying)
"""

from __future__ import annotations

import redis.exceptions

#: The one classification of "Redis cannot be reached right now": every Redis caller catches (or
#: retries) exactly these, and treats anything else as a bug or bad data.
#:
#: - the builtin ``OSError``: "connection refused" while Redis restarts, resets, and since 3.11
#:   asyncio's ``TimeoutError`` (redis-py raises these unwrapped from some paths);
#: - redis-py's ``ConnectionError`` (which includes ``BusyLoadingError``, Redis still loading its
#:   data after a restart) and ``TimeoutError`` (no answer within the socket timeout);
#: - ``ReadOnlyError``: the server we reached is a replica (a failover is under way), so the
#:   primary is, for this connection, not there;
#: - on a Redis Cluster, what redis-py's cluster client raises once its own retries are used up:
#:   ``ClusterError`` ("TTL exhausted": a slot is moving and a call's keys are split between two
#:   primaries, ``TRYAGAIN`` each time; also ``ClusterDownError``, ``CLUSTERDOWN`` and ``MASTERDOWN``,
#:   while a slot has no primary), ``TryAgainError`` and ``SlotNotCoveredError``. A call naming keys
#:   of two slots (``CROSSSLOT``) is a bug, not an outage: it is none of these.
REDIS_DOWN: tuple[type[Exception], ...] = (
    OSError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
)


def redis_down(exc: BaseException) -> bool:
    """True if ``exc`` means Redis cannot be reached right now (see :data:`REDIS_DOWN`)."""
    return isinstance(exc, REDIS_DOWN)


class AgentQError(Exception):
    """Base class of every error this project raises on purpose."""


class InvalidRequest(AgentQError):
    """The request does not satisfy the job contract.

    ``errors`` names each wrong field, as ``{"loc": [...], "msg": ..., "type": ...}`` (the HTTP API's 422 body).
    """

    def __init__(self, message: str, *, errors: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [{"loc": [], "msg": message, "type": "value_error"}]


class QuotaExceeded(InvalidRequest):
    """The tenant has as many jobs in flight, or enqueued within the last minute, as its quota allows
    (``AGENTQ_TENANT_QUOTAS``); nothing was written. ``retry_after_s``: when asking again may pass."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, errors=[{"loc": [], "msg": message, "type": "quota_exceeded"}])
        self.retry_after_s = retry_after_s


class JobNotFound(AgentQError):
    """No job with this id is queued, running or finished (or its result expired)."""


class WaitTimeout(AgentQError):
    """The result did not arrive within the time the caller was willing to wait."""


class RedisUnavailable(AgentQError):
    """Redis could not be reached; the message names the URL without its password."""


class StartupError(AgentQError):
    """The worker cannot start with this configuration; the message says what to change."""


class PluginError(StartupError):
    """A plugin does not load, does not fit the plugin interface, or fails its start-up check."""


class NotReplicated(RedisUnavailable):
    """A write reached the primary but too few replicas confirmed it in time: a failover could lose it."""


class SourceError(AgentQError):
    """A data source failed to answer."""


class TransientSourceError(SourceError):
    """A source failed in a way that may pass on its own (5xx, 429, connection trouble): retry it.

    ``retry_after_s`` is the upstream's ``Retry-After`` hint, when it gave one.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
