"""``producer``: put questions on the queue and read their results.

Exit codes: 0 done; 1 the job's result says ``failed`` (``retry``: a job not queued again;
``purge``: not confirmed); 2 bad input or settings (refused before anything reaches Redis);
3 unknown job id; 4 timed out waiting; 5 Redis unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn, TypeVar, cast

import pydantic
import typer

from agentq import console, tenants, tracing
from agentq.console import version_option
from agentq.contract import JobResult, Priority, describe_validation_error
from agentq.durations import parse_duration
from agentq.errors import InvalidRequest, JobNotFound, NotReplicated, RedisUnavailable, WaitTimeout
from agentq.schedules import Schedule
from agentq.settings import settings_or_exit
from producer.client import MAX_OFFSET, Client, Enqueued
from producer.display import summary
from producer.jobs import QueueDepth
from producer.watch import wait_with_progress

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
out = console.console()
err = console.console(stderr=True)
T = TypeVar("T")


@app.callback()
def _options(version: bool = version_option("producer")) -> None:
    """Put questions on the queue and read their answers."""


EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_TIMEOUT, EXIT_REDIS = 1, 2, 3, 4, 5
_EXIT_FOR = {
    InvalidRequest: EXIT_BAD_INPUT,
    JobNotFound: EXIT_NOT_FOUND,
    WaitTimeout: EXIT_TIMEOUT,
    RedisUnavailable: EXIT_REDIS,
    NotReplicated: EXIT_REDIS,
}

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON.")
TIMEOUT_OPTION = typer.Option(None, "--timeout", min=0, help="Seconds to wait (default: forever).")


def _run(body: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``body`` with a connected client, turning our errors into one line and an exit code."""

    settings = settings_or_exit()

    async def main() -> T:
        async with Client(settings) as client:
            return await body(client)

    tracing.setup(settings, "agentq-producer")  # only with AGENTQ_OTLP_ENDPOINT: imports nothing otherwise
    try:
        return asyncio.run(main())
    except (InvalidRequest, JobNotFound, WaitTimeout, RedisUnavailable) as exc:
        _error(exc)
        raise typer.Exit(next(code for kind, code in _EXIT_FOR.items() if isinstance(exc, kind))) from None
    finally:
        tracing.shutdown()


def _error(exc: Exception) -> None:
    """One line on stderr: never wrapped, never styled, so scripts can read it."""
    print(f"error: {exc}", file=sys.stderr)


def _show(result: JobResult, as_json: bool) -> None:
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        out.print(summary(result))
    if result.status == "failed":
        raise typer.Exit(EXIT_FAILED)


class PriorityChoice(enum.StrEnum):
    """``--priority``: how soon a queued job is taken when the workers are busy."""

    high = "high"
    normal = "normal"
    low = "low"


PRIORITY_OPTION = typer.Option(PriorityChoice.normal, "--priority", help="How soon it is taken when workers are busy.")


def _live() -> bool:
    """Bars only for a person at a terminal (rich honours TTY_INTERACTIVE=0/1 and dumb terminals)."""
    return err.is_terminal and err.is_interactive


async def _warn_if_no_worker(client: Client, grace_s: float = 2.0) -> None:
    """Say on stderr when no worker is alive, so that a wait does not look like a hang.

    Checked after ``grace_s``, time for a worker that is starting to send its first heartbeat. Only
    advice: a Redis error here is left to the wait itself, which reports it.
    """
    await asyncio.sleep(grace_s)
    with contextlib.suppress(Exception):
        if not await client.workers():
            err.print(
                f"warning: no live worker serves queue {client.settings.queue_name!r}; the job waits until one"
                " starts (see 'producer workers')",
                highlight=False,
            )


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question to answer."),
    sources: str | None = typer.Option(
        None,
        "--sources",
        help="Comma-separated sources (default: the worker's AGENTQ_DEFAULT_SOURCES, else every source "
        "that can run there).",
    ),
    source_timeout: float | None = typer.Option(None, "--source-timeout", help="Per-source timeout, seconds."),
    deadline: float | None = typer.Option(None, "--deadline", help="Whole-query deadline, seconds."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Fetch every source afresh, bypassing the cache."),
    analysis: str | None = typer.Option(
        None, "--analysis", help="The analysis to run (default: the worker's AGENTQ_DEFAULT_ANALYSIS)."
    ),
    priority: PriorityChoice = PRIORITY_OPTION,
    no_dedup: bool = typer.Option(
        False, "--no-dedup", help="Always a new job, even if an identical question is in flight."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait for the result and show it."),
    timeout: float | None = TIMEOUT_OPTION,
    as_json: bool = JSON_OPTION,
    later: str | None = typer.Option(None, "--in", help="Run it this much later: 90s, 10m, 1h30m."),
    at: str | None = typer.Option(
        None, "--at", help="Run it at this time (ISO 8601; UTC unless it says): 2026-12-24T08:00Z."
    ),
) -> None:
    """Enqueue QUESTION and print its job id (with --wait, the result too); --in or --at defers it."""
    not_before = _not_before(later, at)
    names = [n.strip() for n in sources.split(",")] if sources is not None else None
    options: dict[str, Any] = {
        "sources": names,
        "source_timeout_s": source_timeout,
        "deadline_s": deadline,
        "no_cache": no_cache,
        "analysis": analysis,
    }

    async def body(client: Client) -> tuple[Enqueued, JobResult | None]:
        enqueued = await client.submit(
            question, **options, priority=priority.value, dedup=not no_dedup, not_before=not_before
        )
        if not wait:
            return enqueued, None
        if not as_json:
            joined = " (deduplicated: joined this identical question in flight)" if enqueued.deduplicated else ""
            err.print(f"job {enqueued.job_id} queued{joined}", highlight=False)
        watch = asyncio.create_task(_warn_if_no_worker(client))
        try:
            return enqueued, await wait_with_progress(client, enqueued.job_id, timeout, _live() and not as_json, err)
        finally:
            watch.cancel()

    # Refuse bad input before connecting: nothing reaches Redis.
    try:
        Client(settings_or_exit()).validate(question, **options)
    except InvalidRequest as exc:
        _error(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    enqueued, outcome = _run(body)
    if outcome is not None:
        _show(outcome, as_json)
    elif as_json:
        print(json.dumps({"job_id": enqueued.job_id, "deduplicated": enqueued.deduplicated}))
    else:
        print(enqueued.job_id)
        if enqueued.deduplicated:
            err.print("deduplicated: an identical question is already queued or running; this is its job id")
        if not_before is not None:
            err.print(f"deferred until {_iso(not_before * 1000)}", highlight=False)


def _not_before(later: str | None, at: str | None) -> float | None:
    """``--in`` / ``--at`` as epoch seconds (None: now); a usage error for both, or a bad or past time."""
    if later is not None and at is not None:
        _usage("--in and --at: give one of them")
    if later is not None:
        try:
            return time.time() + parse_duration(later)
        except ValueError as exc:
            _usage(f"--in: {exc}")
    if at is None:
        return None
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        _usage(f"--at: {at!r} is not an ISO 8601 time, such as 2026-12-24T08:00Z or 2026-12-24 09:00+01:00")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when.timestamp() <= time.time():
        _usage(f"--at: {at} has passed")
    return when.timestamp()


@app.command()
def status(
    job_id: str = typer.Argument(..., help="A job id from 'producer ask'."), as_json: bool = JSON_OPTION
) -> None:
    """Print where the job is: queued, deferred, in_progress or complete."""
    state = _run(lambda client: client.status(job_id))
    print(json.dumps({"job_id": job_id, "status": state}) if as_json else state)


@app.command()
def result(
    job_id: str = typer.Argument(..., help="A job id from 'producer ask'."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the job finishes."),
    timeout: float | None = TIMEOUT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Print the job's result; without --wait, exit 4 at once if it is not finished yet."""

    async def body(client: Client) -> JobResult:
        if wait:
            return await wait_with_progress(client, job_id, timeout, _live() and not as_json, err)
        return await client.result(job_id, timeout=0)

    _show(_run(body), as_json)


@app.command()
def cancel(
    job_id: str = typer.Argument(..., help="A job id from 'producer ask'."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the cancelled job's result and show it."),
    timeout: float | None = TIMEOUT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Cancel a job: a queued one never starts; a running one stops its fetches at once.

    Prints cancelled (it was queued), cancelling (its worker was told; the result will say cancelled
    and hold what had finished) or finished (too late: it already has a result).
    """

    async def body(client: Client) -> tuple[str, JobResult | None]:
        state = await client.cancel(job_id)
        return state, (await client.result(job_id, timeout=timeout) if wait else None)

    state, outcome = _run(body)
    if outcome is not None:
        if not as_json:
            err.print(state, highlight=False)
        _show(outcome, as_json)
        return
    print(json.dumps({"job_id": job_id, "cancel": state}) if as_json else state)


class StatusChoice(enum.StrEnum):
    """``--status``: which jobs ``producer jobs`` lists."""

    all = "all"
    queued = "queued"
    running = "running"
    deferred = "deferred"
    ok = "ok"
    partial = "partial"
    failed = "failed"
    cancelled = "cancelled"


STATUS_OPTION = typer.Option(
    StatusChoice.all,
    "--status",
    help="queued, running or deferred: those jobs in queue order; a final status: recent jobs that ended so.",
)
RETRY_PRIORITY_OPTION = typer.Option(None, "--priority", help="Default: the job's own.")
TENANT_OPTION = typer.Option(None, "--tenant", help="Only this tenant's jobs (default: every tenant's).")


def _tenant(name: str | None) -> str | None:
    """A ``--tenant`` that can be one, refused (exit 2) before anything reaches Redis."""
    if name is not None:
        try:
            tenants.check(name)
        except ValueError as exc:
            _usage(f"--tenant: {exc}")
    return name


@app.command()
def jobs(
    status: StatusChoice = STATUS_OPTION,
    limit: int = typer.Option(20, "--limit", min=1, help="How many to list."),
    offset: int = typer.Option(
        0, "--offset", min=0, max=MAX_OFFSET, help="How many to skip first (the next page: --offset 20)."
    ),
    tenant: str | None = TENANT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """List recent jobs, newest first; --status queued, running or deferred lists those in queue order."""
    only = _tenant(tenant)
    listed = _run(lambda client: client.jobs(status=status.value, limit=limit, offset=offset, tenant=only))
    if as_json:
        print(json.dumps([j.as_dict() for j in listed], indent=2))
        return
    if not listed:
        out.print("no jobs")
    for j in listed:
        took = f"{j.total_s:6.2f}s" if j.total_s is not None else "      -"
        why = f"  {j.error}" if j.error else ""
        out.print(f"{j.job_id}  {j.status:<11} {took}  {j.question[:60]!r}{why}", highlight=False)


@app.command()
def retry(
    job_ids: Annotated[
        list[str] | None, typer.Argument(help="Ids of failed or cancelled jobs.", show_default=False)
    ] = None,
    failed: bool = typer.Option(False, "--failed", help="Every job that ended failed within --since."),
    since: str = typer.Option("1h", "--since", help="With --failed: how far back (90s, 10m, 1h, 2d)."),
    priority: PriorityChoice | None = RETRY_PRIORITY_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Queue failed (or cancelled) jobs' questions again, each as a new job; print each new job's id.

    With several ids (or --failed), one line per job: the old id and the new one, or why not.
    Exit 0 if every job was queued again, 1 if one was not.
    """
    chosen: Priority | None = priority.value if priority is not None else None
    if bool(job_ids) == failed:
        _usage("give the ids of jobs to retry, or --failed (with --since), not both")
    try:
        window_s = parse_duration(since)
    except ValueError as exc:
        _usage(f"--since: {exc}")

    async def body(client: Client) -> list[tuple[str, Enqueued | Exception]]:
        ids = job_ids or await client.failed_since(window_s)
        outcomes: list[tuple[str, Enqueued | Exception]] = []
        for job_id in ids:
            try:
                outcomes.append((job_id, await client.retry(job_id, priority=chosen)))
            except (JobNotFound, InvalidRequest) as exc:
                if len(ids) == 1 and job_ids:
                    raise
                outcomes.append((job_id, exc))
        return outcomes

    outcomes = _run(body)
    if as_json:
        print(json.dumps([_retried(old, new) for old, new in outcomes]))
    elif job_ids and len(job_ids) == 1:
        print(cast(Enqueued, outcomes[0][1]).job_id)
    else:
        if not outcomes:
            err.print(f"no job failed within {since}", highlight=False)
        for old, new in outcomes:
            print(f"{old} -> {new.job_id}" if isinstance(new, Enqueued) else f"{old}: not retried: {new}")
    if any(isinstance(new, Exception) for _, new in outcomes):
        raise typer.Exit(1)


def _retried(old: str, new: Enqueued | Exception) -> dict[str, Any]:
    if isinstance(new, Enqueued):
        return {"job_id": new.job_id, "retry_of": old, "deduplicated": new.deduplicated}
    return {"job_id": None, "retry_of": old, "error": str(new)}


@app.command()
def queue(tenant: str | None = TENANT_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Show the queue: jobs queued, running and deferred by priority, the oldest queued job's wait, live
    workers, and each tenant's jobs and share of those running."""
    only = _tenant(tenant)

    async def body(client: Client) -> tuple[QueueDepth, int]:
        return await client.queue_depth(tenant=only), len(await client.workers())

    depth, live = _run(body)
    if as_json:
        print(json.dumps({**depth.as_dict(), "workers": live}))
        return

    def line(name: str, counts: dict[str, int]) -> str:
        split = ", ".join(f"{p} {n}" for p, n in counts.items() if n)
        return f"{name:<9}{sum(counts.values()):>7}" + (f"  ({split})" if split else "")

    out.print(f"queue {depth.queue}: {live} live worker{'s' if live != 1 else ''}", highlight=False)
    for name, counts in (("queued", depth.queued), ("running", depth.running), ("deferred", depth.deferred)):
        out.print(line(name, counts), highlight=False)
    if depth.oldest_queued_s is not None:
        out.print(f"oldest queued job has waited {depth.oldest_queued_s:.1f}s", highlight=False)
    if set(depth.tenants) - {tenants.DEFAULT} or only:
        out.print(f"{'tenant':<20}{'queued':>8}{'running':>9}{'deferred':>10}{'share':>7}", highlight=False)
        for name, row in sorted(depth.tenants.items()):
            figures = f"{row['queued']:>8.0f}{row['running']:>9.0f}{row['deferred']:>10.0f}{row['share']:>7.0%}"
            out.print(f"{name:<20}{figures}", highlight=False)


@app.command()
def purge(
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    tenant: str | None = TENANT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Cancel every job that waits in the queue (queued or deferred; --tenant: that tenant's); running jobs
    run on.

    Each purged job ends cancelled, with a result that says so. Asks first, unless --yes.
    """
    only = _tenant(tenant)
    if not yes:
        if not sys.stdin.isatty():
            _usage("purge cancels every waiting job: add --yes to do it without a terminal to confirm at")
        depth = _run(lambda client: client.queue_depth(tenant=only))
        waiting = sum(depth.queued.values()) + sum(depth.deferred.values())
        if not typer.confirm(f"cancel {waiting} waiting jobs of queue {depth.queue}?"):
            err.print("nothing purged", highlight=False)
            raise typer.Exit(1)
    cancelled, left = _run(lambda client: client.purge(tenant=only))
    if as_json:
        print(json.dumps({"cancelled": len(cancelled), "left_to_run": left}))
        return
    taken = f" ({left} were taken by a worker or finished first)" if left else ""
    print(f"purged: {len(cancelled)} jobs cancelled{taken}")


def _usage(message: str) -> NoReturn:
    """A usage error: one ``error:`` line, exit 2, before anything reaches Redis."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def workers(as_json: bool = JSON_OPTION) -> None:
    """List the live workers (from their heartbeats)."""
    records: list[dict[str, Any]] = _run(lambda client: client.workers())
    if as_json:
        print(json.dumps(records, indent=2))
        return
    if not records:
        out.print("no live workers")
    for r in records:
        shards = r.get("shards")
        serves = f"  shards {','.join(map(str, shards))}" if isinstance(shards, list) else ""
        out.print(
            f"{r.get('id')}  {r.get('executor')}x{r.get('pool_size')}  done {r.get('jobs_done')}  "
            f"in flight {r.get('jobs_in_flight')}  since {r.get('started_at')}{serves}",
            highlight=False,
        )


class RoleChoice(enum.StrEnum):
    """``producer acl``'s roles (``agentq.protocol.acl``)."""

    producer = "producer"
    worker = "worker"
    admin = "admin"


ROLE_ARGUMENT = typer.Argument(..., help="producer (the CLI, the client and the API), worker or admin.")


@app.command()
def acl(
    role: RoleChoice = ROLE_ARGUMENT,
    user: str | None = typer.Option(None, "--user", help="The user's name (default: the role's)."),
    default_off: bool = typer.Option(
        False, "--default-off", help="Also print the line that turns off Redis's default user."
    ),
    password_env: str | None = typer.Option(
        None, "--password-env", help="Take the password from this environment variable instead of making one."
    ),
) -> None:
    """Print a Redis ACL user for one role, as an aclfile line (stdout), and its new password (stderr).

    Its keys follow AGENTQ_KEY_PREFIX and AGENTQ_QUEUE_NAME. docs/api.md, "Redis users", says what each
    role may do.
    """
    from agentq.protocol import acl as acl_rules

    if user is not None and not user.replace("-", "").replace("_", "").isalnum():
        _usage(f"--user: letters, digits, '-' and '_' only; got {user!r}")
    keys = settings_or_exit().keys
    if password_env is not None:
        password = os.environ.get(password_env, "")
        if not password:
            _usage(f"--password-env: {password_env} is not set or empty")
    else:
        password = acl_rules.new_password()
        print(
            f"password for {user or role.value} (shown once; the aclfile holds its sha256): {password}", file=sys.stderr
        )
    if default_off:
        print(acl_rules.DEFAULT_OFF)
    print(acl_rules.user_line(role.value, keys, password, user))


schedule_app = typer.Typer(help="Recurring questions: each tick is enqueued once, whatever the number of workers.")
app.add_typer(schedule_app, name="schedule")


def _iso(epoch_ms: float) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@schedule_app.command("add")
def schedule_add(
    name: str = typer.Argument(
        ..., help="The schedule's name (letters, digits, '_', '-', '.'); an existing one is replaced."
    ),
    question: str = typer.Argument(..., help="The question each tick asks."),
    cron: str | None = typer.Option(None, "--cron", help="Five cron fields, minute first, in UTC: '0 8 * * 1-5'."),
    every: str | None = typer.Option(None, "--every", help="Or an interval: 30s, 10m, 1h."),
    sources: str | None = typer.Option(None, "--sources", help="Comma-separated sources (default: the worker's)."),
    priority: PriorityChoice = PRIORITY_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Add a recurring question (or replace the one of that name); print its next tick."""
    if (cron is None) == (every is None):
        _usage("give one of --cron and --every")
    try:
        every_s = parse_duration(every) if every is not None else None
    except ValueError as exc:
        _usage(f"--every: {exc}")
    names = [n.strip() for n in sources.split(",")] if sources is not None else None
    try:  # refuse bad input before connecting
        Client(settings_or_exit()).validate(question, sources=names)
        Schedule(name=name, cron=cron, every_s=every_s, request={"question": question})
    except InvalidRequest as exc:
        _error(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except pydantic.ValidationError as exc:
        _usage(describe_validation_error(exc))
    tick = _run(
        lambda client: client.schedule(
            name, question, cron=cron, every_s=every_s, sources=names, priority=priority.value
        )
    )
    print(json.dumps({"name": name, "next_tick": _iso(tick)}) if as_json else f"{name}: next tick {_iso(tick)}")


@schedule_app.command("list")
def schedule_list(as_json: bool = JSON_OPTION) -> None:
    """List the schedules: name, when they recur, next tick, question."""
    found = _run(lambda client: client.schedules())
    rows = [
        {
            "name": name,
            "rule": rule.rule if rule else None,
            "next_tick": _iso(tick) if tick is not None else None,
            "question": rule.request.get("question") if rule else None,
            "priority": rule.priority if rule else None,
            "error": None if rule else "does not read as a schedule",
        }
        for name, rule, tick in found
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print("no schedules")
    for r in rows:
        what = f"{r['rule']}  next {r['next_tick']}  {r['question']!r}" if r["rule"] else str(r["error"])
        out.print(f"{r['name']}  {what}", highlight=False)


@schedule_app.command("remove")
def schedule_remove(name: str = typer.Argument(..., help="The schedule's name.")) -> None:
    """Remove a schedule (the jobs its ticks enqueued stay); exit 3 if there is none of that name."""
    _run(lambda client: client.unschedule(name))
    print(f"{name}: removed")


def run() -> None:
    """Console-script entry point."""
    console.run(app, "producer")
