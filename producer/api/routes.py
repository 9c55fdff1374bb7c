"""The API's endpoints, under ``/api``: jobs (create, status, result, events, cancel, re-run, list),
workers, the queue, per-source figures. Every call goes through the Python client
(``producer.client``), so the API validates, enqueues and reads exactly as the CLI does.

Input is checked before Redis is asked anything, and a refused request writes nothing: the body
by its model and then by the job contract's limits (422 naming each field), a job id by its shape
(422), an unknown id is 404.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Depends, Path, Query, Request, Security, status
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.background import BackgroundTask

from agentq.apikeys import ApiKey
from agentq.contract import JobResult
from agentq.errors import InvalidRequest, JobNotFound, RedisUnavailable, WaitTimeout
from agentq.schedules import NAME_PATTERN, key_of
from agentq.settings import Settings
from agentq.sources import source_names
from producer.api.guard import StreamRefused, Streams
from producer.api.models import (
    JOB_ID_PATTERN,
    CancelReply,
    ErrorReply,
    JobCreateBase,
    JobCreated,
    JobList,
    JobListItem,
    JobStatusReply,
    ListStatus,
    PurgeReply,
    QueueInfo,
    ScheduleBody,
    ScheduleInfo,
    ScheduleList,
    SourceStats,
    SourceStatsList,
    TenantDepth,
    WorkerInfo,
    WorkerList,
    job_create_model,
    schedule_model,
)
from producer.client import MAX_OFFSET, Client

log = logging.getLogger(__name__)
# Declared for the OpenAPI spec; the keys themselves are checked by producer.api.guard first.
_bearer = HTTPBearer(auto_error=False, description="an API key: Authorization: Bearer <key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="or the key in X-API-Key")


def _documented_auth(
    _b: Annotated[Any, Security(_bearer)] = None, _h: Annotated[Any, Security(_header)] = None
) -> None:
    return None


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Documented error replies: every /api route can be refused for its key, scope, rate or size."""
    texts = {
        400: "the body is not JSON in UTF-8",
        401: "no API key, or an unknown one",
        403: "the key lacks this route's scope",
        404: "no such job (unknown id, or its result expired), or no such schedule",
        409: "the job has no result yet, or (re-run) it did not fail",
        413: "the request body is too large",
        429: "the key's rate limit is exceeded, or (creating a job) its tenant's quota is used up",
        503: "Redis cannot be reached",
    }
    return {code: {"model": ErrorReply, "description": texts[code]} for code in (401, 403, 413, 429, 503, *codes)}


router = APIRouter(prefix="/api", dependencies=[Depends(_documented_auth)])
#: One event of a job's stream: ``progress`` (data: a ProgressEvent) or, last, ``result`` (data: a JobResult).
_EVENT_SCHEMA = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["progress", "result"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "progress: an agentq.contract.ProgressEvent; result: an agentq.contract.JobResult",
        },
    },
}
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="a job id, as creating the job returned it")]


def client_of(request: Request) -> Client:
    """The app's one connected client (``producer.api.app``), as the request's key sees it: its tenant's
    jobs only, or (the ``admin`` scope) every tenant's. The guard put the key in the request's state."""
    client: Client = request.app.state.client
    key: ApiKey = request.state.api_key
    return client.for_tenant(key.tenant, every_tenant=key.admin)


ClientDep = Annotated[Client, Depends(client_of)]


def create_router(settings: Settings) -> APIRouter:
    """POST /api/jobs, its body's schema carrying the limits in force (``job_create_model``)."""
    creating = APIRouter(prefix="/api", dependencies=[Depends(_documented_auth)])
    body_model = job_create_model(settings, source_names())

    async def create_job(body: JobCreateBase, client: ClientDep) -> JobCreated:
        """Validate the question against the job contract and its limits, then queue it (or join an
        identical question in flight, unless ``dedup`` is false)."""
        request = client.validate_data(body.request_data())
        enqueued = await client.submit_request(request, priority=body.priority, dedup=body.dedup)
        return JobCreated(job_id=enqueued.job_id, deduplicated=enqueued.deduplicated)

    create_job.__annotations__["body"] = body_model  # FastAPI validates and documents with this one
    creating.post("/jobs", status_code=status.HTTP_201_CREATED, responses=_errors(400), summary="Create a job")(
        create_job
    )

    async def put_schedule(name: ScheduleName, body: ScheduleBody, client: ClientDep) -> ScheduleInfo:
        """Each tick is enqueued once, whatever the number of workers; 422 for a bad rule or question."""
        tick = await client.schedule(
            name,
            body.question,
            cron=body.cron,
            every_s=body.every,
            sources=body.sources,
            analysis=body.analysis,
            priority=body.priority,
        )
        key = key_of(name, client.tenant)
        stored = next((rule for _, rule, _ in await client.schedules() if rule is not None and rule.key == key), None)
        return ScheduleInfo(
            name=name,
            rule=stored.rule if stored else None,
            next_tick=datetime.fromtimestamp(tick / 1000, UTC),
            request=stored.request if stored else None,
            priority=body.priority,
        )

    put_schedule.__annotations__["body"] = schedule_model(settings, source_names())
    creating.put("/schedules/{name}", responses=_errors(400), summary="Add or replace a recurring question")(
        put_schedule
    )
    return creating


@router.get("/jobs", responses=_errors(), summary="List recent jobs")
async def list_jobs(
    client: ClientDep,
    status: Annotated[
        ListStatus, Query(description="all; queued, running or deferred (in queue order); or a final status")
    ] = "all",
    limit: Annotated[int, Query(ge=1, le=1000, description="how many")] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="how many to skip first (paging)")] = 0,
) -> JobList:
    """Recent jobs, newest first; with a final ``status``, recent jobs that ended so (``failed`` ...); with
    ``queued``, ``running`` or ``deferred``, those jobs in queue order (the next to start first)."""
    listed = await client.jobs(status=status, limit=limit, offset=offset)
    return JobList(jobs=_items(listed))


def _items(listed: list[Any]) -> list[JobListItem]:
    """Each listed job as its reply's item; one that does not read as one is logged and left out."""
    items = []
    for job in listed:
        try:
            items.append(JobListItem.model_validate(job.as_dict()))
        except pydantic.ValidationError as exc:
            log.warning("leaving job %s out of a listing: its entry does not read (%s)", job.job_id, exc)
    return items


@router.get("/jobs/{job_id}", responses=_errors(404), summary="A job's status, and its result once it has one")
async def get_job(job_id: JobId, client: ClientDep) -> JobStatusReply:
    """Where the job is (queued, deferred, in_progress, complete); ``result`` is set once complete."""
    state = await client.status(job_id)
    result = await client.fetch_result(job_id) if state == "complete" else None
    return JobStatusReply(job_id=job_id, status=state, result=result)


@router.get("/jobs/{job_id}/result", response_model=JobResult, responses=_errors(404, 409), summary="A job's result")
async def get_result(job_id: JobId, client: ClientDep) -> Any:
    """The stored result (``agentq.contract.JobResult``, see docs/result.md); 409 while the job runs."""
    result = await client.fetch_result(job_id)
    if result is None:
        await client.status(job_id)  # 404 if unknown
        return _json_error(409, f"job {job_id} has no result yet")
    return result


@router.get(
    "/jobs/{job_id}/events",
    responses={
        **_errors(404),
        200: {"content": {"text/event-stream": {"schema": _EVENT_SCHEMA}}, "description": "the event stream"},
    },
    response_class=StreamingResponse,
    summary="A job's progress, as Server-Sent Events, until its result",
)
async def job_events(job_id: JobId, client: ClientDep, request: Request) -> StreamingResponse:
    """``event: progress`` per step (an ``agentq.contract.ProgressEvent``: fetch_start, fetch_end,
    inference_start, done per source), then one ``event: result`` (the ``JobResult``), then the stream ends.
    A watcher who connects late first gets every event so far. A stream that cannot go on (Redis is lost
    under it, or it reached ``api_stream_max_s``) ends with one ``event: error`` (data: ``{"detail": ...}``).
    Each key may hold ``api_max_streams_per_key`` streams open (past it, 429) and the process
    ``api_max_streams`` (503)."""
    await client.status(job_id)  # 404 before the stream starts
    streams: Streams = request.app.state.streams
    key: ApiKey = request.state.api_key
    try:
        streams.open(key.name)
    except StreamRefused as exc:
        return _json_error(exc.status, exc.detail, {"retry-after": "5"})  # type: ignore[return-value]
    lifetime = client.settings.api_stream_max_s
    released = False

    def release() -> None:  # once, whichever comes first: the stream's end or the response's
        nonlocal released
        if not released:
            released = True
            streams.close(key.name)

    async def stream() -> AsyncIterator[bytes]:
        deadline = time.monotonic() + lifetime
        try:
            async for event in client.progress(job_id, timeout=lifetime):
                yield f"event: progress\ndata: {event.model_dump_json(exclude_none=True)}\n\n".encode()
            result = await client.result(job_id, timeout=max(0.1, min(30.0, deadline - time.monotonic())))
            yield f"event: result\ndata: {result.model_dump_json()}\n\n".encode()
        except WaitTimeout as exc:
            if time.monotonic() >= deadline - 0.05:
                yield _event_error(f"the stream reached its longest life ({lifetime:g} s): connect again to go on")
            else:
                yield _event_error(str(exc))
        except (RedisUnavailable, JobNotFound) as exc:
            yield _event_error(str(exc))
        finally:
            release()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        background=BackgroundTask(release),
    )


def _event_error(detail: str) -> bytes:
    return f"event: error\ndata: {json.dumps({'detail': detail})}\n\n".encode()


@router.post("/jobs/{job_id}/cancel", responses=_errors(404), summary="Cancel a job")
async def cancel_job(job_id: JobId, client: ClientDep) -> CancelReply:
    """A queued job never starts (``cancelled``); a running one stops its fetches at once and its result
    says ``cancelled`` (``cancelling``); a finished one is left as it is (``finished``)."""
    return CancelReply(job_id=job_id, cancel=await client.cancel(job_id))


@router.post(
    "/jobs/{job_id}/retry",
    status_code=status.HTTP_201_CREATED,
    responses=_errors(404, 409),
    summary="Re-run a failed job",
)
async def retry_job(job_id: JobId, client: ClientDep) -> JobCreated:
    """Queue a failed (or cancelled) job's question again, as a new job; 409 if it did not fail."""
    try:
        enqueued = await client.retry(job_id)
    except InvalidRequest as exc:  # the job is fine, or holds no request: a conflict with its state
        return _json_error(409, str(exc))  # type: ignore[return-value]
    return JobCreated(job_id=enqueued.job_id, deduplicated=enqueued.deduplicated, retry_of=job_id)


ScheduleName = Annotated[str, Path(pattern=NAME_PATTERN, description="a schedule's name")]


@router.get("/schedules", responses=_errors(), summary="The recurring questions")
async def list_schedules(client: ClientDep) -> ScheduleList:
    """Every schedule: when it recurs, its next tick, what it asks."""
    return ScheduleList(
        schedules=[
            ScheduleInfo(
                name=name,
                rule=rule.rule if rule else None,
                next_tick=datetime.fromtimestamp(tick / 1000, UTC) if tick is not None else None,
                request=rule.request if rule else None,
                priority=rule.priority if rule else None,
            )
            for name, rule, tick in await client.schedules()
        ]
    )


@router.delete("/schedules/{name}", responses=_errors(404), summary="Remove a recurring question")
async def delete_schedule(name: ScheduleName, client: ClientDep) -> dict[str, str]:
    """The jobs its ticks enqueued stay."""
    await client.unschedule(name)
    return {"removed": name}


@router.get("/workers", responses=_errors(), summary="The live workers")
async def workers(client: ClientDep) -> WorkerList:
    """Every worker whose heartbeat is current: its pool, jobs done and in flight, last beat."""
    return WorkerList(workers=[WorkerInfo.model_validate(w) for w in await client.workers()])


@router.get("/queue", responses=_errors(), summary="The queue")
async def queue(client: ClientDep) -> QueueInfo:
    """How many jobs wait, run and are deferred (in all and by priority), and the oldest queued job's wait."""
    depth = await client.queue_depth()
    return QueueInfo(
        queue=depth.queue,
        queued=sum(depth.queued.values()),
        deferred=sum(depth.deferred.values()),
        running=sum(depth.running.values()),
        workers=len(await client.workers()),
        by_priority={"queued": depth.queued, "running": depth.running, "deferred": depth.deferred},
        oldest_queued_s=depth.oldest_queued_s,
        tenant=client.tenant,
        tenants={name: TenantDepth.model_validate(row) for name, row in depth.tenants.items()},
    )


@router.post("/queue/purge", responses=_errors(), summary="Cancel every waiting job")
async def purge(client: ClientDep) -> PurgeReply:
    """Cancel every job that waits (queued or deferred): each ends ``cancelled``. Running jobs run on.
    Needs the ``cancel`` scope."""
    cancelled, left = await client.purge()
    return PurgeReply(cancelled=len(cancelled), left_to_run=left)


@router.get("/sources", responses=_errors(), summary="Each source's latency and failures")
async def sources(
    client: ClientDep,
    jobs: Annotated[int, Query(ge=1, le=1000, description="how many recent finished jobs to read")] = 200,
) -> SourceStatsList:
    """Per source, over the most recent finished jobs: calls, failures by status, fetch p50 and p95,
    mean wait for a core and mean inference time."""
    listed = [j for j in await client.jobs(limit=jobs) if j.finished_at is not None]
    figures: dict[str, list[list[Any]]] = {}
    for j in listed:
        rows = j.sources if isinstance(j.sources, dict) else {}
        for name, row in rows.items():
            if isinstance(row, list) and row:  # a row a listing cannot read is left out
                figures.setdefault(str(name), []).append(row)
    return SourceStatsList(jobs=len(listed), sources=[_stats(name, rows) for name, rows in sorted(figures.items())])


def _stats(name: str, rows: list[list[Any]]) -> SourceStats:
    fetches = sorted(float(r[1]) for r in rows if len(r) > 1 and isinstance(r[1], int | float))
    waits = [float(r[2]) for r in rows if len(r) > 2 and isinstance(r[2], int | float)]
    infers = [float(r[3]) for r in rows if len(r) > 3 and isinstance(r[3], int | float)]
    failures: dict[str, int] = {}
    for r in rows:
        if r and r[0] != "ok":
            failures[str(r[0])] = failures.get(str(r[0]), 0) + 1
    return SourceStats(
        name=name,
        calls=len(rows),
        ok=sum(1 for r in rows if r and r[0] == "ok"),
        failures=failures,
        fetch_p50_s=statistics.median(fetches) if fetches else None,
        fetch_p95_s=fetches[min(len(fetches) - 1, round(0.95 * (len(fetches) - 1)))] if fetches else None,
        wait_mean_s=statistics.fmean(waits) if waits else None,
        inference_mean_s=statistics.fmean(infers) if infers else None,
    )


def _json_error(code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=code, headers=headers)
