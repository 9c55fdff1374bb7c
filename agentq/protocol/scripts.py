"""The protocol's Lua scripts: one file each in ``lua/``, read once per process, called by digest.

redis-py's ``register_script`` computes a script's SHA-1 locally and sends ``EVALSHA``; a Redis that
does not know the script yet (a new or restarted server) answers ``NOSCRIPT`` and the script is
loaded then, once. Every key a script touches arrives in ``KEYS`` and all of them carry the
queue's hash tag (``agentq.protocol.keys``): no script builds a key name, so each runs on one
Redis Cluster slot.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

ScriptName = Literal["enqueue", "claim", "release", "renew", "finish", "cancel", "breaker"]
NAMES: tuple[ScriptName, ...] = ("enqueue", "claim", "release", "renew", "finish", "cancel", "breaker")


@cache
def source(name: ScriptName) -> str:
    """The text of ``lua/<name>.lua``."""
    return resources.files("agentq.protocol").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def register(redis: Redis, name: ScriptName) -> AsyncScript:
    """``name`` bound to ``redis``: call it with ``keys=`` and ``args=``."""
    return redis.register_script(source(name))
