"""Counting this process's Redis round trips, on the client side.

Redis counts the commands it runs (``INFO commandstats``) but not the requests that carried
them: a pipeline or a script is one round trip and many commands. Every connection built by
``agentq.connection`` counts each request it sends (a command, a pipeline, a health-check PING);
the worker exports the total as ``agentq_redis_round_trips_total`` and the benchmark divides it by
the jobs run.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.connection import AbstractConnection

_sent = 0
_classes: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def round_trips() -> int:
    """Requests this process has sent to Redis so far (through ``agentq.connection``'s connections)."""
    return _sent


def counting(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """``connection_class``, counting each request it sends (one subclass per class, made once)."""
    if connection_class in _classes or connection_class in _classes.values():
        return _classes.get(connection_class, connection_class)

    class Counting(connection_class):  # type: ignore[misc,valid-type]
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            global _sent
            _sent += 1
            await super().send_packed_command(command, check_health)

    Counting.__name__ = Counting.__qualname__ = f"Counting{connection_class.__name__}"
    _classes[connection_class] = Counting
    return Counting
