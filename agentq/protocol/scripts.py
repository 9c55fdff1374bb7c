"""The protocol's Lua scripts: one file each in ``lua/``, read once per process, called by digest.

:class:`Script` sends ``EVALSHA`` with the digest computed here; a Redis that does not know the script
(a new or restarted server, or a replica just promoted: a script cache is not replicated) answers
``NOSCRIPT``, and the call is sent again as ``EVAL`` with the script's text, which caches it there.
Both go where any command on the same keys goes: on a Redis Cluster, to the node serving their slot.
(redis-py's own script objects load a missing script with ``SCRIPT LOAD``, which its cluster client
sends to nodes of its choosing, not necessarily the one that said ``NOSCRIPT``: after a failover
the retried call met ``NOSCRIPT`` again, and the worker stopped.)

Every key a script touches arrives in ``KEYS`` and all of them carry the queue's hash tag
(``agentq.protocol.keys``): no script builds a key name, so each runs on one Redis Cluster slot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from redis.asyncio import Redis

ScriptName = Literal["enqueue", "claim", "release", "renew", "finish", "cancel", "breaker"]
NAMES: tuple[ScriptName, ...] = ("enqueue", "claim", "release", "renew", "finish", "cancel", "breaker")


@cache
def source(name: ScriptName) -> str:
    """The text of ``lua/<name>.lua``."""
    return resources.files("agentq.protocol").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


class Script:
    """One script bound to a client: ``await script(keys=[...], args=[...])``."""

    def __init__(self, redis: Redis, name: ScriptName) -> None:
        self.redis, self.name = redis, name
        self.text = source(name)
        self.sha = hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, *, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return await self.redis.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[misc]
        except NoScriptError:  # nothing ran: send the text, which that Redis keeps from now on
            return await self.text_call(keys=keys, args=args)

    async def text_call(self, *, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The call as ``EVAL``, with the script's text."""
        return await self.redis.eval(self.text, len(keys), *keys, *args)  # type: ignore[misc]


def register(redis: Redis, name: ScriptName) -> Script:
    """``name`` bound to ``redis``: call it with ``keys=`` and ``args=``."""
    return Script(redis, name)
