"""What the HTTP API reads and writes: the request and response bodies, as the OpenAPI spec shows them.

A job's result is :class:`agentq.contract.JobResult` itself; everything else is declared here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, create_model

from agentq.contract import JobResult, Priority
from agentq.settings import Settings

JobState = Literal["queued", "deferred", "in_progress", "complete"]
CancelState = Literal["cancelled", "cancelling", "finished"]
ListStatus = Literal["all", "queued", "running", "deferred", "ok", "partial", "failed", "cancelled"]
#: A job id as the producer makes them (uuid4 hex); ids of other shapes are refused with 422.
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


#: Characters a question may hold: no control characters but newline and tab (the contract's rule).
_ALLOWED = r"[^\x00-\x08\x0b-\x1f\x7f-\x9f]"
#: ... and at least one that is neither blank nor a control character.
QUESTION_PATTERN = rf"^{_ALLOWED}*[^\s\x00-\x1f\x7f-\x9f]{_ALLOWED}*$"


class JobCreateBase(BaseModel):
    """A question to answer, with the same options and limits as ``producer ask``."""

    model_config = ConfigDict(extra="forbid")

    question: str
    sources: list[str] | None = None
    source_timeout_s: float | None = None
    deadline_s: float | None = None
    no_cache: StrictBool = Field(False, description="fetch every source afresh, bypassing the shared cache")
    priority: Priority = Field("normal", description="how soon it is taken when the workers are busy")
    dedup: StrictBool = Field(True, description="join an identical question already queued or running")

    def request_data(self) -> dict[str, Any]:
        """The fields of the job contract (``agentq.contract.QuestionRequest``), as a caller gave them."""
        data = self.model_dump(exclude={"priority", "dedup"}, exclude_none=True)
        if "sources" in data:
            data["sources"] = tuple(data["sources"])
        if not data.get("no_cache"):
            data.pop("no_cache", None)
        return data


def job_create_model(settings: Settings, source_names: tuple[str, ...]) -> type[JobCreateBase]:
    """The body of POST /api/jobs with the limits in force written into its schema, so the OpenAPI
    spec says exactly what is accepted; the job contract then checks it again (``parse_request``)."""
    timeout = Annotated[float, Field(strict=True, gt=0, le=settings.max_source_timeout_s)]
    deadline = Annotated[float, Field(strict=True, gt=0, le=settings.max_deadline_s)]
    return create_model(
        "JobCreate",
        __base__=JobCreateBase,
        **_question_fields(settings, source_names),
        source_timeout_s=(timeout | None, Field(None, description="per-source fetch timeout, seconds")),
        deadline_s=(deadline | None, Field(None, description="whole-query deadline, seconds")),
    )


def schedule_model(settings: Settings, source_names: tuple[str, ...]) -> type[ScheduleBody]:
    """The body of PUT /api/schedules/{name}: its question and sources with the limits of POST /api/jobs."""
    return create_model("ScheduleCreate", __base__=ScheduleBody, **_question_fields(settings, source_names))


#: The most sources one request may name (more is refused at once, before each name is checked).
MAX_REQUEST_SOURCES = 64


def _question_fields(settings: Settings, source_names: tuple[str, ...]) -> dict[str, Any]:
    source: Any = Literal[source_names] if source_names else str
    sources: Any = list[source] | None
    return {
        "question": (
            str,
            Field(
                strict=True,
                min_length=1,
                max_length=settings.max_question_chars,
                pattern=QUESTION_PATTERN,
                description="the question: not blank, no control characters but newline and tab",
            ),
        ),
        "sources": (
            sources,
            Field(
                None,
                min_length=1,
                max_length=MAX_REQUEST_SOURCES,
                description="sources to ask; default: the workers' default set",
            ),
        ),
    }


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
    shards: list[int] | None = None
    """The shards of the queue it serves (a queue of one shard: none)."""
    jobs_done: int | None = None
    jobs_in_flight: int | None = None
    started_at: str | None = None
    beat_at: str | None = None


class WorkerList(BaseModel):
    """Every live worker."""

    workers: list[WorkerInfo]


class TenantDepth(BaseModel):
    """One tenant's part of the queue."""

    queued: int
    running: int
    deferred: int
    share: float = Field(description="its part of the jobs running now, 0 to 1")


class QueueInfo(BaseModel):
    """The queue now."""

    queue: str
    queued: int = Field(description="jobs waiting for a worker (due now)")
    deferred: int = Field(description="jobs not due yet")
    running: int = Field(description="jobs a worker holds")
    workers: int = Field(description="live workers")
    by_priority: dict[str, dict[str, int]] = Field(
        description='queued, running and deferred by priority: {"queued": {"high": 0, "normal": 3, "low": 1}, ...}'
    )
    oldest_queued_s: float | None = Field(
        description="how long the job queued longest has waited (null: none is queued)"
    )
    tenant: str = Field(description="the key's tenant: the counts above are its jobs' (an admin key: every tenant's)")
    tenants: dict[str, TenantDepth] = Field(
        description="per tenant with jobs in the queue (a key's own only, unless it is an admin key)"
    )


class ScheduleBody(BaseModel):
    """A recurring question: when (``cron`` or ``every``) and what it asks."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(None, description="five cron fields, minute first, in UTC: '0 8 * * 1-5' (or every)")
    every: float | None = Field(None, ge=1, description="or an interval in seconds, at least 1")
    question: str
    sources: list[str] | None = None
    analysis: str | None = None
    priority: Literal["high", "normal", "low"] = "normal"


class ScheduleInfo(BaseModel):
    """One schedule and its next tick."""

    name: str
    rule: str | None = Field(description="'cron 0 8 * * *' or 'every 600s'; null if Redis holds no readable schedule")
    next_tick: datetime | None
    request: dict[str, Any] | None = Field(description="the question request each tick enqueues")
    priority: str | None


class ScheduleList(BaseModel):
    schedules: list[ScheduleInfo]


class PurgeReply(BaseModel):
    """What a purge did."""

    cancelled: int = Field(description="waiting jobs cancelled (each has a cancelled result)")
    left_to_run: int = Field(description="jobs a worker took, or that finished, before their turn came")


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
