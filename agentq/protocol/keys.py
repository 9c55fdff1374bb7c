"""Every Redis key name the system uses, built here and nowhere else.

A queue's keys all carry the queue's hash tag, ``<prefix>:{<queue>}:``, so they fall on one
Redis Cluster slot and a script may touch any of them at once. With the defaults (prefix
``agentq``, queue ``default``):

=================================  ========  ==================================================
``agentq:{default}:queue``         zset      job ids by the epoch ms each may start; while a job
                                             runs, by the end of its lease (the *lease score*): the
                                             default tenant's jobs
``agentq:{default}:q:<t>``         zset      the same, of tenant ``<t>``'s jobs
``agentq:{default}:tenants``       zset      the tenants with jobs queued and their fair-share pass;
                                             ``~``: the virtual clock (``lua/claim.lua``)
``agentq:{default}:jobs``          hash      per job ``<id>``: the job record (arq's format,
                                             ``agentq.protocol.records``) and the fields of its
                                             state (:class:`Field`); per request fingerprint
                                             ``m:<fingerprint>``: the unfinished job answering it
``agentq:{default}:result:<id>``   string    the result record, expiring ``result_ttl_s`` after
``agentq:{default}:progress:<id>`` stream    the job's progress log
``agentq:{default}:bell``          zset      the doorbell: enqueues ring, idle workers block on it
``agentq:{default}:index``         zset      recent jobs by enqueue ms (listings), capped
``agentq:{default}:final:<id>``    string    a finished job's listing figures (JSON), expiring with
                                             its result
``agentq:{default}:failed`` ...    zset      recent jobs that ended ``failed``, ``partial`` or
                                             ``cancelled``, by finish ms, capped
``agentq:{default}:t:<t>:index``   zset      tenant ``<t>``'s recent jobs, as ``index`` (every tenant but
                                             the default, whose jobs are listed from ``index``)
``agentq:{default}:t:<t>:failed``  zset      tenant ``<t>``'s ``failed``, ``partial``, ``cancelled``
``agentq:{default}:t:<t>:enqueued`` zset     tenant ``<t>``'s enqueues of the last minute (quotas)
``agentq:{default}:fence``         string    the counter written before each ``WAIT``
``agentq:{default}:schedules``     hash      recurring questions: name -> JSON (``agentq.schedules``)
``agentq:{default}:ticks``         zset      each schedule's next tick, by epoch ms
``agentq:{default}:done:<id>``     channel   the stored result, once (pub/sub, not a key)
``agentq:{default}:cancel``        channel   ids of running jobs to cancel
=================================  ========  ==================================================

Keys that belong to no queue are shared by every queue of the prefix: each worker's heartbeat
(``<prefix>:worker:<id>``) and the source policies' state (cache, breaker, latencies, rate limits).

**Shards** (``AGENTQ_QUEUE_SHARDS``). A queue of K > 1 shards is K queues as above, each with a hash
tag of its own, so that a Redis Cluster spreads them over its primaries: ``{<queue>}`` for shard 0
(where the queue of one shard was, so its jobs are still found) and ``{<queue>~<i>.<n>}`` for shard
``i``, ``n`` the first number that puts the tag's slot in the middle of the ``i``-th of K equal
parts of the 16,384 slots not taken by shard 0 (:func:`shard_tags`). A Cluster whose primaries each
hold a run of equal size, as ``redis-cli --cluster create`` makes them, so holds K / primaries
shards each when K is a multiple of the primaries. A job's id ends in ``-<shard>`` (two hex digits:
:func:`shard_of`), and every key of the job is its shard's: nothing needs to be looked up to find it.
The schedules and their ticks are shard 0's, and the cancel channel is shard 0's for every shard.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import TypeVar

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from agentq import tenants

T = TypeVar("T")
#: The most shards a queue may have (a job id holds its shard in two hex digits).
MAX_SHARDS = 256
SHARD_SEPARATOR = "-"

#: Final statuses that have an index of their own (an ``ok`` job is found through the recent index).
INDEXED_STATUSES = ("failed", "partial", "cancelled")


class Field(StrEnum):
    """Suffixes of a job's state fields in the queue's ``jobs`` hash: ``<id>:<suffix>``."""

    RUNS = "n"
    """Runs started (arq's ``job_try``: what a result reports)."""
    TRIES = "t"
    """Runs that count against ``max_tries``: a run that died in company gives its try back."""
    HOLDER = "w"
    """The worker id holding the job's lease, while one does."""
    ALONE = "a"
    """``1`` while the job runs alone on its worker (an isolated run: a death is its own doing)."""
    SUSPECT = "s"
    """``1`` once a run died in company: the next runs alone."""
    CANCEL = "c"
    """``1`` once a caller asked to cancel the job while it ran."""
    MARKER = "m"
    """The dedup marker field of the job's request (``m:<fingerprint>``), if it was deduplicated."""
    PRIORITY = "p"
    """``high``, ``normal`` or ``low``, as the caller asked."""
    RETRY_OF = "r"
    """The id of the failed or cancelled job this one re-runs."""


#: Every state field of a job, in the order the scripts read them (their ``STATE`` lists).
STATE_FIELDS = tuple(Field)


def field(job_id: str, name: Field) -> str:
    """One state field of a job in the ``jobs`` hash."""
    return f"{job_id}:{name}"


def marker_field(fingerprint: str, tenant: str = tenants.DEFAULT) -> str:
    """The ``jobs`` hash field naming the unfinished job that answers a request fingerprint: one per
    tenant (a question is joined only within its tenant)."""
    return f"m:{fingerprint}" if tenant == tenants.DEFAULT else f"m:{tenant}:{fingerprint}"


def shard_of(job_id: str) -> int:
    """The shard a job id names (``<id>-<two hex digits>``); 0 for an id without one (a queue of one
    shard makes those), or for an id that reads as no job's."""
    _, sep, tail = job_id.rpartition(SHARD_SEPARATOR)
    if sep and len(tail) == 2:
        try:
            return int(tail, 16)
        except ValueError:
            return 0
    return 0


def shard_for(fingerprint: str | None, shards: int) -> int:
    """The shard of a request: from its fingerprint (so a question asked twice meets its first job, for
    deduplication), or any one at random for a request that is not deduplicated."""
    if shards <= 1:
        return 0
    if fingerprint is None:
        return secrets.randbelow(shards)
    return int(hashlib.blake2b(fingerprint.encode(), digest_size=8).hexdigest(), 16) % shards


@functools.cache
def shard_tags(prefix: str, queue: str, shards: int) -> tuple[str, ...]:
    """The hash tag of each of a queue's ``shards`` (see the module's docstring)."""
    if shards <= 1:
        return (queue,)
    slot_of = functools.partial(_slot, prefix)
    zero = slot_of(queue)
    parts = [p for p in range(shards) if p != zero * shards // REDIS_CLUSTER_HASH_SLOTS]  # shard 0's part is taken
    tags = [queue]
    for i, part in enumerate(parts, start=1):
        # the middle half of the part: a Cluster whose runs of slots differ a little from equal parts keeps it
        low = (4 * part + 1) * REDIS_CLUSTER_HASH_SLOTS // (4 * shards)
        high = (4 * part + 3) * REDIS_CLUSTER_HASH_SLOTS // (4 * shards)
        n = 0
        while not low <= slot_of(f"{queue}~{i}.{n}") < high:
            n += 1
        tags.append(f"{queue}~{i}.{n}")
    return tuple(tags)


def _slot(prefix: str, tag: str) -> int:
    return int(key_slot(f"{prefix}:{{{tag}}}:queue".encode()))


class Keys:
    """Key names for one key prefix (``AGENTQ_KEY_PREFIX``), one queue (``AGENTQ_QUEUE_NAME``) of
    ``shards`` shards (``AGENTQ_QUEUE_SHARDS``), and one of those shards (``shard``; 0 by default).

    A job's keys (:meth:`result`, :meth:`progress`, :meth:`job_queue`...) are its own shard's
    whichever shard's ``Keys`` names them; :meth:`of` gives the job's shard's ``Keys`` for the rest.
    """

    def __init__(self, prefix: str, queue: str = "default", *, shards: int = 1, shard: int = 0) -> None:
        self.prefix, self.queue_name = prefix, queue
        self.shards, self.shard_index = shards, shard
        tag = f"{prefix}:{{{shard_tags(prefix, queue, shards)[shard]}}}"
        self.tag = tag
        home = f"{prefix}:{{{queue}}}"  # shard 0's: what one shard's queue has always used
        self.queue = f"{tag}:queue"
        """The default tenant's queue: a sorted set of job ids (:meth:`queue_of` another tenant's)."""
        self.tenants = f"{tag}:tenants"
        """The tenants the claim serves, by fair-share pass (and ``~``, the virtual clock)."""
        self.jobs = f"{tag}:jobs"
        """Job records, their state fields and the dedup markers."""
        self.bell = f"{tag}:bell"
        """The doorbell: a one-member sorted set (``worker.engine.doorbell``)."""
        self.index = f"{tag}:index"
        """Every recent job, scored by enqueue ms; capped at ``jobs_index_size``."""
        self.fence = f"{tag}:fence"
        """A counter incremented right before each ``WAIT`` (``agentq.connection.wait_for_replicas``)."""
        self.schedules = f"{home}:schedules"
        """Recurring questions, by name (``agentq.schedules``); shard 0's."""
        self.ticks = f"{home}:ticks"
        """Each schedule's next tick (epoch ms): what the workers' tickers take, once each; shard 0's."""
        self.cancel_channel = f"{home}:cancel"
        """Pub/sub channel every worker follows: a message is the id of a running job to cancel."""
        self._shards: dict[int, Keys] = {shard: self}

    # ------------------------------------------------------------------ shards
    def shard(self, index: int) -> Keys:
        """The keys of shard ``index`` of this queue."""
        found = self._shards.get(index)
        if found is None:
            found = self._shards[index] = Keys(self.prefix, self.queue_name, shards=self.shards, shard=index)
            found._shards = self._shards
        return found

    @property
    def every_shard(self) -> list[Keys]:
        """The keys of each shard of the queue, shard 0 first."""
        return [self.shard(i) for i in range(self.shards)]

    def of(self, job_id: str) -> Keys:
        """The keys of the shard ``job_id`` is on (this queue's only one, unsharded)."""
        if self.shards == 1:
            return self
        index = shard_of(job_id)
        return self.shard(index if index < self.shards else 0)  # an id of another shard count: none of ours

    def by_shard(self, items: Iterable[T], job_id: Callable[[T], str]) -> list[tuple[Keys, list[T]]]:
        """``items`` grouped by the shard of their job (``job_id`` of each), in the order each shard first
        appears: one call per shard for a call about several jobs."""
        groups: dict[int, tuple[Keys, list[T]]] = {}
        for item in items:
            k = self.of(job_id(item))
            groups.setdefault(k.shard_index, (k, []))[1].append(item)
        return list(groups.values())

    def new_job_id(
        self, tenant: str = tenants.DEFAULT, *, fingerprint: str | None = None, shard: int | None = None
    ) -> str:
        """A fresh id of ``tenant``'s for a job on ``shard`` (default: the request's, :func:`shard_for`).

        Unsharded, ids are as they have always been (``agentq.tenants.new_job_id``); sharded, they end
        in ``-<shard>``."""
        if self.shards == 1:
            return tenants.new_job_id(tenant)
        index = shard_for(fingerprint, self.shards) if shard is None else shard
        return tenants.new_job_id(tenant, suffix=f"{SHARD_SEPARATOR}{index:02x}")

    # ------------------------------------------------------------------ a job's keys (on its shard)
    def result(self, job_id: str) -> str:
        """A finished job's result record."""
        return f"{self.of(job_id).tag}:result:{job_id}"

    def progress(self, job_id: str) -> str:
        """A job's progress log: a capped stream of ``ProgressEvent`` JSON (``worker.job.progress``)."""
        return f"{self.of(job_id).tag}:progress:{job_id}"

    def final(self, job_id: str) -> str:
        """A finished job's listing figures (``agentq.summary``), kept as long as its result."""
        return f"{self.of(job_id).tag}:final:{job_id}"

    def done_channel(self, job_id: str) -> str:
        """Pub/sub channel told (with the stored result record) when a job's result has been stored."""
        return f"{self.of(job_id).tag}:done:{job_id}"

    def by_status(self, status: str) -> str:
        """Recent finished jobs of one indexed final status (:data:`INDEXED_STATUSES`), by finish ms."""
        return f"{self.tag}:{status}"

    def enqueue_times(self, tenant: str) -> str:
        """A tenant's enqueue times of the last minute (a per-minute quota's moving window)."""
        return f"{self.tag}:t:{tenant}:enqueued"

    def queue_of(self, tenant: str) -> str:
        """A tenant's queue (the default tenant's is :attr:`queue`)."""
        return self.queue if tenant == tenants.DEFAULT else f"{self.tag}:q:{tenant}"

    def job_queue(self, job_id: str) -> str:
        """The queue of the job's tenant (``agentq.tenants.of``), on the job's shard."""
        return self.of(job_id).queue_of(tenants.of(job_id))

    def tenant_index(self, tenant: str, status: str | None = None) -> str:
        """A tenant's own recent-jobs index (``status`` None), or its index of one final status; ``''``
        for the default tenant, whose jobs are found in the indexes of all (``agentq.tenants``)."""
        if tenant == tenants.DEFAULT:
            return ""
        return f"{self.tag}:t:{tenant}:{status or 'index'}"

    # ------------------------------------------------------------------ keys of no queue
    def worker(self, worker_id: str) -> str:
        """One worker's heartbeat record (``worker.ops.health``)."""
        return f"{self.prefix}:worker:{worker_id}"

    @property
    def workers_pattern(self) -> str:
        return f"{self.prefix}:worker:*"

    def cache(self, source: str, question_digest: str) -> str:
        """A source's fetched text for one normalised question (``worker.job.resilience.cache``)."""
        return f"{self.prefix}:cache:{source}:{question_digest}"

    def breaker(self, source: str) -> str:
        """A source's circuit-breaker hash, shared by every worker."""
        return f"{self.prefix}:breaker:{source}"

    def latencies(self, source: str) -> str:
        """A source's recent fetch durations, newest first (adaptive timeouts)."""
        return f"{self.prefix}:latency:{source}"

    @property
    def rate_limit_prefix(self) -> str:
        """Prefix of the ``limits`` library's moving-window keys, one per rate-limited source."""
        return f"{self.prefix}:rate"
