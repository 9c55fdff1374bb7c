"""The docs say what the code has: generated pages up to date, every command shown, no dead links."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from agentq.contract import JobResult
from agentq.settings import Settings
from agentq_tools import docgen
from agentq_tools.bench.docs import PERFORMANCE_END, PERFORMANCE_START, performance_section
from producer.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 150
#: Pages whose relative links must resolve.
LINKED = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "README.md"]
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_PYTHON = re.compile(r"^( *)```python\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(page: Path) -> list[str]:
    """The targets of the page's Markdown links that point inside the repository (code blocks left out)."""
    text = _FENCE.sub("", page.read_text())
    return [t for t in _LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


@pytest.mark.parametrize("path", sorted(docgen.DOCS))
def test_generated_docs_are_what_the_code_says_now(path: str) -> None:
    """docs/settings.md and docs/result.md equal what the generator writes from Settings and JobResult today."""
    written = (ROOT / path).read_text(encoding="utf-8") if (ROOT / path).exists() else ""
    assert written == docgen.DOCS[path](), f"{path} is out of date: run `make docs` and commit the result"


def test_every_setting_has_a_row_in_docs_settings() -> None:
    """Each Settings field appears in docs/settings.md as a table row under its environment variable."""
    text = (ROOT / "docs" / "settings.md").read_text()
    missing = [name for name in Settings.model_fields if f"| `AGENTQ_{name.upper()}`" not in text]
    assert not missing, f"settings missing from docs/settings.md: {missing}"


def test_every_result_field_has_a_row_in_docs_result() -> None:
    """Each field of JobResult and of every model inside it appears in docs/result.md under its model."""
    text = (ROOT / "docs" / "result.md").read_text()
    schema = JobResult.model_json_schema()
    models = {"JobResult": schema, **schema["$defs"]}
    for name, model in models.items():
        section = text.split(f"\n## {name}\n", 1)
        assert len(section) == 2, f"docs/result.md has no section for {name}"
        body = section[1].split("\n## ", 1)[0]
        missing = [field for field in model["properties"] if f"| `{field}` |" not in body]
        assert not missing, f"{name} fields missing from docs/result.md: {missing}"


def test_every_producer_command_is_in_the_readme() -> None:
    """Each `producer` sub-command is shown in README.md."""
    commands = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    assert commands, "the CLI has commands"
    text = README.read_text()
    missing = [c for c in commands if f"producer {c}" not in text]
    assert not missing, f"producer commands missing from README.md: {missing}"


def test_the_readme_stays_short() -> None:
    """README.md has at most 150 lines: reference material belongs in docs/."""
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move reference material to docs/"


@pytest.mark.parametrize("page", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_an_existing_file(page: Path) -> None:
    """Each relative link in README.md, CONTRIBUTING.md, docs/*.md and deploy/README.md names a file that exists."""
    links = relative_links(page)
    dead = [link for link in links if not (page.parent / link.split("#", 1)[0]).exists()]
    assert not dead, f"{page.relative_to(ROOT)} links to missing files: {dead}"


@pytest.mark.parametrize("page", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_example_is_a_valid_script(page: Path) -> None:
    """Each ```python block compiles as a file of its own (no ``async with`` outside a function)."""
    for _indent, code in _PYTHON.findall(page.read_text()):
        compile(textwrap.dedent(code), f"{page.name} example", "exec")


def test_the_readme_performance_section_is_the_published_run() -> None:
    """README.md's Performance section is exactly what the latest published full run (docs/benchmarks/
    summary.json) gives: no figure in it is stale or written by hand."""
    summary = json.loads((ROOT / "docs" / "benchmarks" / "summary.json").read_text())
    assert not summary["quick"], "docs/benchmarks holds a --quick run"
    text = README.read_text()
    written = text[text.index(PERFORMANCE_START) : text.index(PERFORMANCE_END) + len(PERFORMANCE_END)]
    assert written == performance_section(summary), "run `make bench` (a full run) and commit README.md with it"
