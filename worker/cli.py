"""``worker``: run one arq worker process configured from the settings (env, ``.env``).

Exit codes: 2 bad settings, or plugins that cannot work (checked at start-up: docs/plugins.md);
5 Redis unreachable; ``--check``: 0 alive, 1 not alive.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import sys
from typing import Annotated

import typer

from agentq import console
from agentq.console import version_option
from agentq.errors import REDIS_DOWN, StartupError
from agentq.settings import Settings, settings_or_exit
from worker.ops import health

app = typer.Typer(add_completion=False, help=__doc__)


class Executor(enum.StrEnum):
    """``--executor``'s choices: ``AGENTQ_EXECUTOR``'s (``agentq.settings.ExecutorKind``; a test holds them equal)."""

    auto = "auto"
    interpreter = "interpreter"
    process = "process"
    thread = "thread"


EXIT_NOT_ALIVE = 1
EXIT_BAD_SETTINGS = 2
EXIT_REDIS_UNREACHABLE = 5


@app.command()
def main(
    burst: bool = typer.Option(False, "--burst", help="Exit once the queue is empty."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
    max_jobs: int | None = typer.Option(None, "--max-jobs", help="Jobs run at once, at most (AGENTQ_MAX_JOBS)."),
    pool_size: int | None = typer.Option(None, "--pool-size", help="Inference pool size (AGENTQ_POOL_SIZE)."),
    queue: str | None = typer.Option(None, "--queue", help="The queue to serve (AGENTQ_QUEUE_NAME)."),
    check: bool = typer.Option(
        False, "--check", help="Health check: exit 0 if this container's worker (AGENTQ_WORKER_ID_FILE) heartbeats."
    ),
    version: bool = version_option("worker"),
    executor: Annotated[
        Executor | None, typer.Option("--executor", help="Inference pool kind (AGENTQ_EXECUTOR).")
    ] = None,
) -> None:
    """Take jobs from the queue and answer them until stopped (SIGINT/SIGTERM).

    The options that mirror a setting win over it (the environment and .env).
    """
    settings = settings_or_exit(
        {
            "max_jobs": ("--max-jobs", max_jobs),
            "pool_size": ("--pool-size", pool_size),
            "executor": ("--executor", executor.value if executor is not None else None),
            "queue_name": ("--queue", queue),
        }
    )
    if check:
        run_check(settings)
        return
    # Imported here, not at the top: 'worker --check' runs every few seconds in each container
    # (Docker's and Kubernetes' probes) and needs none of arq, the pool or the sources.
    from worker.engine.app import create_worker
    from worker.ops import logs

    worker = create_worker(settings, burst=burst)
    logs.configure(settings.log_format, logging.DEBUG if verbose else logging.INFO, worker.ctx.get("worker_id"))
    try:
        worker.run()
    except StartupError as exc:  # a plugin or a choice of plugins that cannot work: say so once, exit 2
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_SETTINGS) from None
    except REDIS_DOWN as exc:
        typer.echo(f"error: cannot reach Redis at {settings.redis_location}: {exc}", err=True)
        raise typer.Exit(EXIT_REDIS_UNREACHABLE) from None


def run_check(settings: Settings) -> None:
    """``worker --check``: print the verdict; exit 0 alive, 1 not alive, 5 Redis unreachable."""
    give_up_s = settings.redis_connect_timeout_s + 1.5

    def no_answer(signum: int, frame: object) -> None:
        # Past the check's own deadline something blocks that cannot be cancelled: a name lookup
        # (for a stopped compose service it waits for the resolver's timeout) in a thread that
        # asyncio.run waits for. A probe must answer within its timeout, so exit now.
        print(
            f"unhealthy: cannot reach Redis at {settings.redis_location}: no answer within {give_up_s:g}s",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_REDIS_UNREACHABLE)

    signal.signal(signal.SIGALRM, no_answer)
    signal.setitimer(signal.ITIMER_REAL, give_up_s)
    try:
        alive, reason = health.check(settings)
    except REDIS_DOWN as exc:
        typer.echo(f"unhealthy: cannot reach Redis at {settings.redis_location}: {exc}", err=True)
        raise typer.Exit(EXIT_REDIS_UNREACHABLE) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    typer.echo(("healthy: " if alive else "unhealthy: ") + reason, err=not alive)
    if not alive:
        raise typer.Exit(EXIT_NOT_ALIVE)


def run() -> None:
    """Console-script entry point."""
    console.run(app, "worker")
