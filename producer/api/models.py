"""What the HTTP API reads and writes: the request and response bodies, as the OpenAPI spec shows them.

A job's result is :class:`agentq.contract.JobResult` itself; everything else is declared here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from agentq.contract import JobResult, Priority

JobState = Literal["queued", "deferred", "in_progress", "complete"]
CancelState = Literal["cancelled", "cancelling", "finished"]
ListStatus = Literal["all", "ok", "partial", "failed", "cancelled"]
#: A job id as the producer makes them (uuid4 hex); ids of other shapes are refused with 422.
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class JobCreate(BaseModel):
    """A question to answer, with the same options and limits as ``producer ask``."""

    model_config = ConfigDict(extra="forbid")

    question: StrictStr = Field(
        description="the question; at most max_question_chars characters, no control characters"
    )
    sources: list[StrictStr] | None = Field(None, description="sources to ask; default: the workers' default set")
    source_timeout_s: StrictFloat | StrictInt | None = Field(None, description="per-source fetch timeout, seconds")
    deadline_s: StrictFloat | StrictInt | None = Field(None, description="whole-query deadline, seconds")
    no_cache: StrictBool = Field(False, description="fetch every source afresh, bypassing the shared cache")
    priority: Priority = Field("normal", description="how soon it is taken when the workers are busy")
    dedup: StrictBool = Field(True, description="join an identical question already queued or running")

    def request_data(self) -> dict[str, Any]:
        """The fields of the job contract (``agentq.contract.QuestionRequest``), as a caller gave them."""
        data = self.model_dump(exclude={"priority", "dedup"}, exclude_none=True)
        for name in ("source_timeout_s", "deadline_s"):
            if name in data:
                data[name] = float(data[name])
        if "sources" in data:
            data["sources"] = tuple(data["sources"])
        if not data.get("no_cache"):
            data.pop("no_cache", None)
        return data


class JobCreated(BaseModel):
    """A job queued (or joined)."""

    job_id: str
    deduplicated: bool = Field(description="true: an identical question was in flight; this is its job")
    retry_of: str | None = Field(None, description="the failed job this one re-runs")


class JobStatusReply(BaseModel):
    """Where a job is, and its result once it has one."""

    job_id: str
    status: JobState
    result: JobResult | None = None


class CancelReply(BaseModel):
    """What cancelling did: cancelled (it was queued, it never starts), cancelling (its worker was told),
    finished (too late)."""

    job_id: str
    cancel: CancelState


class JobListItem(BaseModel):
    """One job of a listing."""

    job_id: str
    question: str
    status: str = Field(description="queued, deferred, in_progress, or its final status")
    priority: str
    enqueued_at: float = Field(description="epoch seconds")
    finished_at: float | None = None
    total_s: float | None = None
    worker_id: str | None = None
    error: str | None = None
    retry_of: str | None = None
    sources: dict[str, list[Any]] = Field(
        default_factory=dict, description="per source: status, fetch s, wait for a core s, inference s"
    )


class JobList(BaseModel):
    """Recent jobs, newest first."""

    jobs: list[JobListItem]


class WorkerInfo(BaseModel):
    """A live worker, from its heartbeat."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    host: str | None = None
    pid: int | None = None
    executor: str | None = None
    pool_size: int | None = None
    jobs_done: int | None = None
    jobs_in_flight: int | None = None
    started_at: str | None = None
    beat_at: str | None = None


class WorkerList(BaseModel):
    """Every live worker."""

    workers: list[WorkerInfo]


class QueueInfo(BaseModel):
    """The queue now."""

    queue: str
    queued: int = Field(description="jobs waiting for a worker (due now)")
    deferred: int = Field(description="jobs not due yet")
    running: int = Field(description="jobs the live workers report in flight")
    workers: int = Field(description="live workers")


class SourceStats(BaseModel):
    """One source over the recent finished jobs."""

    name: str
    calls: int
    ok: int
    failures: dict[str, int] = Field(description="calls that did not end ok, by status")
    fetch_p50_s: float | None = None
    fetch_p95_s: float | None = None
    wait_mean_s: float | None = Field(None, description="mean wait for a free core before inference")
    inference_mean_s: float | None = None


class SourceStatsList(BaseModel):
    """Per-source figures over the most recent finished jobs."""

    jobs: int = Field(description="how many recent jobs the figures come from")
    sources: list[SourceStats]


class Health(BaseModel):
    """Whether the API can reach Redis."""

    ok: bool
    redis: bool


class ErrorReply(BaseModel):
    """A refused request: why."""

    detail: str
