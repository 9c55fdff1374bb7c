"""The README documents what the code has: every setting and every CLI command."""

from __future__ import annotations

from pathlib import Path

from agentq.settings import Settings
from producer.cli import app

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    """Each settings field appears in the README's settings table under its variable name."""
    missing = [name for name in Settings.model_fields if f"| `AGENTQ_{name.upper()}` |" not in README]
    assert not missing, f"settings missing from README.md: {missing}"


def test_every_cli_command_is_in_the_readme() -> None:
    """Each `producer` sub-command is shown in the README's CLI section."""
    commands = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    assert commands, "the CLI has commands"
    missing = [c for c in commands if f"producer {c}" not in README]
    assert not missing, f"CLI commands missing from README.md: {missing}"
