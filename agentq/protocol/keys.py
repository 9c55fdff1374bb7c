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
"""

from __future__ import annotations

from enum import StrEnum

from agentq import tenants

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


class Keys:
    """Key names for one key prefix (``AGENTQ_KEY_PREFIX``) and one queue (``AGENTQ_QUEUE_NAME``)."""

    def __init__(self, prefix: str, queue: str = "default") -> None:
        self.prefix, self.queue_name = prefix, queue
        tag = f"{prefix}:{{{queue}}}"
        self.tag = tag
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
        self.schedules = f"{tag}:schedules"
        """Recurring questions, by name (``agentq.schedules``)."""
        self.ticks = f"{tag}:ticks"
        """Each schedule's next tick (epoch ms): what the workers' tickers take, once each."""
        self.cancel_channel = f"{tag}:cancel"
        """Pub/sub channel every worker follows: a message is the id of a running job to cancel."""

    def result(self, job_id: str) -> str:
        """A finished job's result record."""
        return f"{self.tag}:result:{job_id}"

    def progress(self, job_id: str) -> str:
        """A job's progress log: a capped stream of ``ProgressEvent`` JSON (``worker.job.progress``)."""
        return f"{self.tag}:progress:{job_id}"

    def final(self, job_id: str) -> str:
        """A finished job's listing figures (``agentq.summary``), kept as long as its result."""
        return f"{self.tag}:final:{job_id}"

    def done_channel(self, job_id: str) -> str:
        """Pub/sub channel told (with the stored result record) when a job's result has been stored."""
        return f"{self.tag}:done:{job_id}"

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
        """The queue of the job's tenant (``agentq.tenants.of``)."""
        return self.queue_of(tenants.of(job_id))

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
