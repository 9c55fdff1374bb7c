"""Least privilege in Redis: one ACL user per role, its keys and commands taken from the key schema.

``producer acl ROLE`` prints a role's line for an ``aclfile`` (``redis-server --aclfile``), with its
password hashed (docs/api.md, "Redis users"):

- **producer**, for the CLI, the client and the API: reads every key of the prefix; writes only
  what enqueueing, cancelling and schedules write (the queues, the tenants, the jobs hash, the
  recent-jobs indexes, the doorbell, the quota windows, the schedules, the API's rate counts). It
  cannot write a result, a job's listing figures or progress, a finished-job index, a worker's
  heartbeat or a source's shared state, nor publish on a job's done channel; ``DEL``, ``UNLINK``
  and ``RENAME`` are refused, and no admin command is open to it. Its cancel of a waiting job
  therefore leaves the result to a worker (``lua/cancel.lua``).
- **worker**: every key of the prefix; no admin command (``@admin``, ``@dangerous``: ``CONFIG``,
  ``FLUSHALL``, ``KEYS``, ``DEBUG``, ...).
- **admin**: everything, for an operator (``redis-cli``, a migration).

Redis checks a script's keys, and each command the script runs, against the user that calls it, so
a role's limits hold inside the scripts too. ACLs work per key, not per hash field or set member:
the producer may write the jobs hash and the queues because enqueueing does.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Literal

from agentq.protocol.keys import Keys

Role = Literal["producer", "worker", "admin"]
ROLES: tuple[Role, ...] = ("producer", "worker", "admin")

#: What no role but admin may run: server administration and whole-keyspace commands.
NOT_ADMIN = ("-@admin", "-@dangerous")
#: What the producer may not run besides: deleting or moving whole keys.
NO_DELETE = ("-del", "-unlink", "-rename", "-renamenx", "-move", "-copy", "-restore", "-migrate")
#: Commands a producer and a worker use: data, scripts, pub/sub, the connection, MULTI, TIME
#: (``lua/breaker.lua``), and CLUSTER SLOTS, where a Redis Cluster client learns which node serves which
#: slot (in no category but ``@slow``; a Redis without cluster mode answers it with an error).
USED = ("+@read", "+@write", "+@scripting", "+@pubsub", "+@connection", "+@transaction", "+time", "+cluster|slots")


def _glob(text: str) -> str:
    """``text`` with the characters Redis key patterns give a meaning escaped (``{`` and ``}`` have none)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def producer_writes(keys: Keys) -> list[str]:
    """The key patterns the producer writes (``lua/enqueue.lua``, ``lua/cancel.lua``, schedules, the API's
    rate limit): everything of the queue but results, listing figures, progress and finished-job indexes;
    of every shard of the queue."""
    patterns = []
    for shard in keys.every_shard:
        tag = _glob(shard.tag)
        own = (shard.queue, shard.tenants, shard.jobs, shard.index, shard.bell, shard.fence)
        patterns += [
            *(_glob(k) for k in own),
            f"{tag}:q:*",  # each tenant's queue
            f"{tag}:t:*:index",  # each tenant's recent jobs
            f"{tag}:t:*:enqueued",  # each tenant's quota window
        ]
    schedules = (_glob(keys.schedules), _glob(keys.ticks))  # shard 0's
    return [*patterns, *schedules, f"{_glob(keys.prefix)}:api-rate*"]  # and the API's rate counts (producer.api.guard)


def rules(role: Role, keys: Keys) -> list[str]:
    """The ACL rules of ``role`` (no user name, no password): what follows ``ACL SETUSER name on >pw``."""
    prefix = _glob(keys.prefix)
    if role == "admin":
        return ["allkeys", "allchannels", "+@all"]
    channels = [f"&{_glob(shard.tag)}:*" for shard in keys.every_shard]  # the done and cancel channels
    # A script gets the job's queue again for a key it does not need (an absent tenant index). "~"
    # alone: the key '' that versions before passed instead, kept while they may still run.
    if role == "worker":
        return ["resetkeys", "resetchannels", f"~{prefix}:*", "~", *channels, "-@all", *USED, *NOT_ADMIN]
    reads = f"%R~{prefix}:*"
    writes = [f"~{p}" for p in producer_writes(keys)]
    # It follows every channel of the queue but publishes on the cancel channel only (a selector): a
    # message on a job's done channel is a result, which it may not forge.
    publish = f"(&{_glob(keys.cancel_channel)} +publish)"
    rules = [*writes, "~", *channels, "-@all", *USED, *NOT_ADMIN, *NO_DELETE, "-publish", publish]
    return ["resetkeys", "resetchannels", reads, *rules]


def user_line(role: Role, keys: Keys, password: str, name: str | None = None) -> str:
    """One ``aclfile`` line: the user ``name`` (default: the role's name), on, with ``password`` hashed."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return " ".join(["user", name or role, "on", f"#{digest}", *rules(role, keys)])


def new_password() -> str:
    """A random password: 32 bytes, URL-safe (it goes in a ``redis://user:password@`` URL as it is)."""
    return secrets.token_urlsafe(32)


#: The line that turns off the ``default`` user, which would otherwise let any client in with every
#: right. It keeps its rights: Redis 7.0 replays the AOF's transactions (each script's writes) as the
#: default user, and drops, on restart, every one that user may not run.
DEFAULT_OFF = "user default off allkeys allchannels +@all"
