"""How a Redis connection is built from the settings: one recipe for the producer and the worker.

Everything ``redis://`` URLs cannot say is added here: TLS verification against a CA file with
the server's name checked (arq's own default skips the name), connect and socket timeouts (a
Redis that stopped answering is a connection error, not a hang), TCP keep-alive, health checks
of idle connections (one cut by a Redis restart is noticed and replaced before use), and retries
with back-off on exactly the errors that mean "Redis is down" (:data:`agentq.errors.REDIS_DOWN`).
Connections skip redis-py's ``CLIENT SETINFO`` pair (two commands per new connection) and count
their round trips (:mod:`agentq.roundtrips`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar
from urllib.parse import urlsplit

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from agentq.errors import REDIS_DOWN
from agentq.roundtrips import counting
from agentq.settings import Settings

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
    if scheme != "unix":
        options["socket_keepalive"] = True
    if scheme == "rediss":
        options["ssl_ca_certs"] = s.redis_ca_file
        options["ssl_check_hostname"] = s.redis_tls_check_hostname
    return options


def redis_client(s: Settings, redis_class: type[R] = Redis, **extra: Any) -> R:  # type: ignore[assignment]
    """A client of ``redis_class`` for the settings' server; it connects on first use.

    ``extra`` goes to ``redis_class`` itself (the worker passes arq's serializer and queue name).
    """
    pool = ConnectionPool.from_url(s.redis_url, **pool_options(s))
    pool.connection_class = counting(pool.connection_class)
    client = redis_class(connection_pool=pool, **extra)
    client.auto_close_connection_pool = True  # as Redis.from_pool does: aclose() closes the pool too
    return client


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
                "cannot reach Redis at %s (%s); %d attempts left", s.redis_url_safe, exc, connect_retries - attempts + 1
            )
            await asyncio.sleep(1.0)
