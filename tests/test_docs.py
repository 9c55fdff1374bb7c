"""The README documents what the code has: every setting and every CLI command."""

from __future__ import annotations

from pathlib import Path

from agentq.settings import Settings
from producer.cli import app

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
#: The multi-host settings (Sentinel, WAIT) have their table in this page, linked from the README.
ACROSS_HOSTS = (ROOT / "docs" / "running-across-hosts.md").read_text()


def test_every_setting_is_in_a_settings_table() -> None:
    """Each settings field appears in a settings table under its variable name: the README's, or the
    multi-host page's."""
    missing = [
        name
        for name in Settings.model_fields
        if f"| `AGENTQ_{name.upper()}` |" not in README and f"| `AGENTQ_{name.upper()}` |" not in ACROSS_HOSTS
    ]
    assert not missing, f"settings missing from README.md and docs/running-across-hosts.md: {missing}"


def test_every_cli_command_is_in_the_readme() -> None:
    """Each `producer` sub-command is shown in the README's CLI section."""
    commands = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    assert commands, "the CLI has commands"
    missing = [c for c in commands if f"producer {c}" not in README]
    assert not missing, f"CLI commands missing from README.md: {missing}"
