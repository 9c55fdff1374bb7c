"""Worker logging: text for a terminal, one JSON object per line for a log collector.

Every line carries the id of the job it was logged for (``job_id``, ``-`` outside a job) and the
worker's id. The job id lives in a context variable set when arq starts a job; asyncio copies it
into every task and thread the job starts, so source and fan-out logs carry it too.
"""

from __future__ import annotations

import contextvars
import logging

from agentq import logs

#: The id of the job the current task works for.
current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("agentq_job_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(job_id)s]: %(message)s"


class JobContextFilter(logging.Filter):
    """Adds ``job_id`` and ``worker_id`` to every record."""

    def __init__(self, worker_id: str | None = None) -> None:
        super().__init__()
        self.worker_id = worker_id or "-"

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate the record; never drop it."""
        record.job_id = current_job_id.get() or "-"
        record.worker_id = self.worker_id
        return True


def formatter(fmt: logs.LogFormat) -> logging.Formatter:
    """The formatter for ``log_format``."""
    return logs.formatter(fmt, TEXT_FORMAT, ("job_id", "worker_id"))


def configure(fmt: logs.LogFormat, level: int = logging.INFO, worker_id: str | None = None) -> None:
    """Send every log record to stderr in ``fmt``, annotated with the job and worker ids."""
    logs.configure(formatter(fmt), level, [JobContextFilter(worker_id)])
