"""``agentq-api``: serve the HTTP API and the dashboard; ``agentq-api keygen`` makes an API key.

Exit codes: 0 stopped cleanly; 2 bad settings (one line on stderr).
"""

from __future__ import annotations

import json
import logging
import sys

import typer

from agentq import apikeys, console, logs
from agentq.console import version_option
from agentq.settings import settings_or_exit

app = typer.Typer(add_completion=False, help=__doc__, invoke_without_command=True)


@app.callback()
def serve(ctx: typer.Context, version: bool = version_option("agentq-api")) -> None:
    """Serve the API and the dashboard on AGENTQ_API_HOST:AGENTQ_API_PORT until SIGINT/SIGTERM."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from agentq import tracing
    from producer.api.app import create_app

    s = settings_or_exit()
    tracing.setup(s, "agentq-api")
    try:
        application = create_app(s)
    except (OSError, ValueError) as exc:  # an unreadable or malformed api_keys_file
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    json_logs = s.log_format == "json"
    if json_logs:  # one JSON object per line, access lines with their request's fields (else uvicorn's text)
        fields = ("client", "method", "path", "status")
        logs.configure(logs.formatter("json", "", fields), logging.INFO, [logs.AccessFields()])
    uvicorn.run(
        application,
        host=s.api_host,
        port=s.api_port,
        log_level="info",
        log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
        server_header=False,
    )


@app.command()
def keygen(
    name: str = typer.Option(..., "--name", help="Who the key is for (shown in logs and 403s)."),
    scopes: str = typer.Option(
        "read,submit,cancel", "--scopes", help="Comma-separated: read, submit, cancel, admin (every tenant)."
    ),
    tenant: str = typer.Option("default", "--tenant", help="The tenant whose jobs the key makes and sees."),
    env: bool = typer.Option(False, "--env", help="Print the entry as a .env line: AGENTQ_API_KEYS=[...]."),
) -> None:
    """Print a new random API key (stderr: give it to its user) and its hashed entry (stdout: configure it)."""
    chosen = tuple(s.strip() for s in scopes.split(",") if s.strip())
    try:
        key, entry = apikeys.new_key(name, chosen, tenant)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    print(f"API key for {name} (shown once; only its digest is stored): {key}", file=sys.stderr)
    print(f"AGENTQ_API_KEYS={json.dumps([entry])}" if env else entry)


def run() -> None:
    """Console-script entry point."""
    console.run(app, "agentq-api")
