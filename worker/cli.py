"""``worker``: run one arq worker process configured from the settings (env, ``.env``)."""

from __future__ import annotations

import logging
import sys

import typer
from pydantic import ValidationError

from worker.app import create_worker
from worker.settings import Settings, get_settings

app = typer.Typer(add_completion=False, help=__doc__)

EXIT_BAD_SETTINGS = 2
EXIT_REDIS_UNREACHABLE = 5


def load_settings() -> Settings:
    """Settings from the environment, or exit 2 with one line naming what is wrong."""
    try:
        return get_settings()
    except ValidationError as exc:
        from worker.contract import describe_validation_error

        typer.echo(f"error: bad settings: {describe_validation_error(exc)}", err=True)
        raise typer.Exit(EXIT_BAD_SETTINGS) from None


@app.command()
def main(
    burst: bool = typer.Option(False, "--burst", help="Exit once the queue is empty."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    """Take jobs from the queue and answer them until stopped (SIGINT/SIGTERM)."""
    settings = load_settings()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    worker = create_worker(settings, burst=burst)
    try:
        worker.run()
    except (OSError, ConnectionError) as exc:
        typer.echo(f"error: cannot reach Redis at {settings.redis_url_safe}: {exc}", err=True)
        raise typer.Exit(EXIT_REDIS_UNREACHABLE) from None


def run() -> None:
    """Console-script entry point."""
    app()
