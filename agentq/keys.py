"""Every Redis key the system uses: ours under the key prefix, arq's under its fixed ``arq:``."""

from __future__ import annotations

from agentq import wire


class Keys:
    """Key names for one key prefix (``AGENTQ_KEY_PREFIX``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @staticmethod
    def job(job_id: str) -> str:
        """arq's record of a queued job."""
        return wire.JOB_PREFIX + job_id

    @staticmethod
    def result(job_id: str) -> str:
        """arq's record of a finished job: our :class:`~agentq.contract.JobResult` inside."""
        return wire.RESULT_PREFIX + job_id

    @staticmethod
    def in_progress(job_id: str) -> str:
        """arq's mark of a running job: our lease."""
        return wire.IN_PROGRESS_PREFIX + job_id

    def bell(self, queue_name: str) -> str:
        """The queue's doorbell: a one-member sorted set that enqueueing rings and idle workers
        block on (``BZPOPMIN``) instead of polling the queue (``worker.doorbell``)."""
        return f"{self.prefix}:bell:{queue_name}"

    def done_channel(self, job_id: str) -> str:
        """Pub/sub channel told when a job's result has been stored."""
        return f"{self.prefix}:done:{job_id}"

    def progress(self, job_id: str) -> str:
        """A job's progress log: a capped stream of ``ProgressEvent`` JSON (``worker.progress``)."""
        return f"{self.prefix}:progress:{job_id}"

    def inflight(self, fingerprint: str) -> str:
        """The id of the job answering a request with this fingerprint, while it is queued or running."""
        return f"{self.prefix}:inflight:{fingerprint}"

    @property
    def cancel_channel(self) -> str:
        """Pub/sub channel every worker listens on: a message is the id of a job to cancel."""
        return f"{self.prefix}:cancel"

    def cancel(self, job_id: str) -> str:
        """Marks a running job as cancelled, for a worker that missed the message (checked at job start)."""
        return f"{self.prefix}:cancel:{job_id}"

    def summary(self, job_id: str) -> str:
        """A job's listing entry: a small hash (question, priority, status, timings), expiring with the job."""
        return f"{self.prefix}:jobinfo:{job_id}"

    @property
    def jobs_index(self) -> str:
        """Every recent job, scored by enqueue time in ms; capped at ``jobs_index_size``."""
        return f"{self.prefix}:jobs"

    def jobs_by_status(self, status: str) -> str:
        """Recent finished jobs of one final status, scored by finish time in ms; capped the same way."""
        return f"{self.prefix}:jobs:{status}"

    @staticmethod
    def health(queue_name: str) -> str:
        """arq's own health-check key (shared by all workers on the queue)."""
        return f"{queue_name}:health-check"

    def worker(self, worker_id: str) -> str:
        """One worker's heartbeat record (see ``worker.health``)."""
        return f"{self.prefix}:worker:{worker_id}"

    @property
    def workers_pattern(self) -> str:
        return f"{self.prefix}:worker:*"

    def cache(self, source: str, question_digest: str) -> str:
        """A source's fetched text for one normalised question (``worker.resilience.cache``)."""
        return f"{self.prefix}:cache:{source}:{question_digest}"

    def breaker(self, source: str) -> str:
        """A source's circuit-breaker hash, shared by every worker."""
        return f"{self.prefix}:breaker:{source}"

    def latencies(self, source: str) -> str:
        """A source's recent fetch durations, newest first (adaptive timeouts)."""
        return f"{self.prefix}:latency:{source}"

    @property
    def replication_fence(self) -> str:
        """A counter incremented right before each ``WAIT`` (``agentq.connection.wait_for_replicas``)."""
        return f"{self.prefix}:replication-fence"

    @property
    def rate_limit_prefix(self) -> str:
        """Prefix of the ``limits`` library's moving-window keys, one per rate-limited source."""
        return f"{self.prefix}:rate"
