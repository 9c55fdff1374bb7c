"""The docs document what the code has: every setting (README.md or docs/plugins.md) and every CLI command."""

from __future__ import annotations

from pathlib import Path

from agentq.settings import Settings
from producer.cli import app

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
#: The plugin settings are documented with the plugin interface.
PLUGINS = (ROOT / "docs" / "plugins.md").read_text()


def test_every_setting_is_in_a_settings_table() -> None:
    """Each settings field appears in the README's settings table, or docs/plugins.md's, under its variable name."""
    tables = README + PLUGINS
    missing = [name for name in Settings.model_fields if f"| `AGENTQ_{name.upper()}` |" not in tables]
    assert not missing, f"settings missing from README.md and docs/plugins.md: {missing}"


def test_every_cli_command_is_in_the_readme() -> None:
    """Each `producer` sub-command is shown in the README's CLI section."""
    commands = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    assert commands, "the CLI has commands"
    missing = [c for c in commands if f"producer {c}" not in README]
    assert not missing, f"CLI commands missing from README.md: {missing}"
