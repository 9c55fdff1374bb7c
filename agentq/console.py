"""What the three command lines (``producer``, ``worker``, ``agentq-api``) share.

- :func:`run`: a usage error is one ``error:`` line on stderr and exit 2, never a boxed panel, so
  scripts and people read the same thing (docs/client.md, "Exit codes").
- :func:`version_option`: ``--version`` prints the installed version and exits 0.
- :func:`console`: rich output that is plain and unwrapped when piped, and rich at a terminal.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console

from agentq import __version__

#: Wide enough that no line a command prints is wrapped when the output goes to a pipe or a file.
PIPE_WIDTH = 1000


def console(*, stderr: bool = False) -> Console:
    """A rich console: at a terminal, its width and colours; piped, plain text that is never wrapped."""
    out = Console(stderr=stderr, soft_wrap=True)
    if not out.is_terminal:
        out = Console(stderr=stderr, soft_wrap=True, width=PIPE_WIDTH, no_color=True, highlight=False)
    return out


def version_option(prog: str) -> Any:
    """A ``--version`` option for ``prog``: prints ``prog (agentq) X.Y.Z`` and exits 0."""

    def show(value: bool) -> None:
        if value:
            print(f"{prog} (agentq) {__version__}")
            raise typer.Exit(0)

    return typer.Option(
        False, "--version", callback=show, is_eager=True, expose_value=False, help="Print the version and exit."
    )


def run(app: typer.Typer, prog: str) -> None:
    """Run ``app`` as the console script ``prog``: click's usage errors become one ``error:`` line, exit 2."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=sys.argv[1:], prog_name=prog, standalone_mode=False)
    except typer.TyperException as exc:  # typer's click: usage errors (exit 2), file errors (exit 1)
        exit_code: int = getattr(exc, "exit_code", 2)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare ``producer``: its help, as before
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exit_code)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(exit_code)
    except typer.Abort:  # Ctrl-C at a prompt, or a confirmation answered no
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
