"""What a new user meets first: list settings, usage errors, --version, piped output, a wait with no worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import redis
from pydantic import ValidationError

from agentq import __version__
from agentq.console import console
from agentq.protocol.keys import Keys
from agentq.settings import ExecutorKind, Settings, describe_settings_error
from worker.cli import Executor

BIN = Path(sys.executable).parent
DIGEST = "ab" * 32


def run(program: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one of the installed commands with a clean AGENTQ_ environment plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_")}
    return subprocess.run(
        [str(BIN / program), *args], env={**base, **(env or {})}, capture_output=True, text=True, timeout=60
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single ``error:`` line a refusal prints, after checking that it is exactly one line and exit 2."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert not set(done.stderr) & set("╭╮╰╯│─"), done.stderr
    return done.stderr


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("AGENTQ_DEFAULT_SOURCES", "weather,news", ("weather", "news")),
        ("AGENTQ_DEFAULT_SOURCES", " weather , news ,", ("weather", "news")),
        ("AGENTQ_DEFAULT_SOURCES", '["weather", "news"]', ("weather", "news")),
        ("AGENTQ_ENABLED_SOURCES", "weather", ("weather",)),
        ("AGENTQ_ENABLED_SOURCES", "", ()),
        ("AGENTQ_REDIS_SENTINELS", "10.0.0.1:26379,10.0.0.2:26379", ("10.0.0.1:26379", "10.0.0.2:26379")),
        ("AGENTQ_API_CORS_ORIGINS", "https://a.example,https://b.example", ("https://a.example", "https://b.example")),
        (
            "AGENTQ_API_KEYS",
            f"ops:read,submit,cancel:{DIGEST},ci:read:{DIGEST}",
            (f"ops:read,submit,cancel:{DIGEST}", f"ci:read:{DIGEST}"),
        ),
    ],
)
def test_a_list_setting_is_a_comma_list_or_a_json_list(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: tuple[str, ...]
) -> None:
    """Comma lists and JSON lists read the same; an API key's own commas (its scopes) stay inside it."""
    monkeypatch.setenv(variable, value)
    assert getattr(Settings(), variable.removeprefix("AGENTQ_").lower()) == expected


def test_a_list_that_looks_like_json_but_is_not_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken JSON list is refused, naming the variable, not read as a comma list."""
    monkeypatch.setenv("AGENTQ_DEFAULT_SOURCES", '["weather", ')
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert describe_settings_error(caught.value).startswith("AGENTQ_DEFAULT_SOURCES: starts with '['")


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("program", "args", "env", "names"),
    [
        ("producer", ("ask", "hi"), {"AGENTQ_HTTP_SOURCES": "weather"}, "AGENTQ_HTTP_SOURCES: not valid JSON"),
        ("producer", ("ask", "hi"), {"AGENTQ_DEFAULT_SOURCES": "[weather"}, "AGENTQ_DEFAULT_SOURCES"),
        ("worker", (), {"AGENTQ_ANALYSIS_PARAMS": "{"}, "AGENTQ_ANALYSIS_PARAMS: not valid JSON"),
        ("agentq-api", (), {"AGENTQ_API_KEYS": "abc"}, "AGENTQ_API_KEYS: an API key entry is"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2_in_every_command(
    program: str, args: tuple[str, ...], env: dict[str, str], names: str
) -> None:
    """Every command refuses a malformed setting with one ``error:`` line naming the variable, not a traceback."""
    line = one_error_line(run(program, *args, env=env))
    assert f"error: bad settings: {names}" in line


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("program", "args", "says"),
    [
        ("producer", ("ask",), "Missing argument 'question'"),
        ("producer", ("ask", "hi", "--bogus"), "No such option: --bogus"),
        ("producer", ("nope",), "No such command 'nope'"),
        ("producer", ("ask", "hi", "--deadline", "soon"), "Invalid value for '--deadline'"),
        ("worker", ("--bogus",), "No such option: --bogus"),
        ("agentq-api", ("keygen", "--bogus"), "No such option: --bogus"),
    ],
)
def test_usage_errors_are_one_error_line_and_exit_2(program: str, args: tuple[str, ...], says: str) -> None:
    """A usage error is one ``error:`` line, as docs/client.md says, not a boxed panel."""
    assert says in one_error_line(run(program, *args))


@pytest.mark.e2e
@pytest.mark.parametrize("program", ["producer", "worker", "agentq-api"])
def test_every_command_has_version(program: str) -> None:
    """``--version`` prints the installed version and exits 0, touching nothing else."""
    done = run(program, "--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{program} (agentq) {__version__}\n", "")


def test_piped_output_is_plain_and_never_wrapped(capsys: pytest.CaptureFixture[str]) -> None:
    """Into a pipe or a file, a long line stays one line and carries no colour codes."""
    line = "deduplicated: " + " ".join(f"word{i}" for i in range(60))
    console().print(f"[bold]{line}[/bold]")
    assert capsys.readouterr().out == line + "\n"


@pytest.mark.e2e
def test_dedup_notice_is_one_line_when_piped(settings_env: dict[str, str], redis_url: str) -> None:
    """The second identical question (no worker running) prints its notice on one unwrapped line."""
    first = run("producer", "ask", "the same question", env=settings_env)
    second = run("producer", "ask", "the same question", env=settings_env)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    assert second.stderr == "deduplicated: an identical question is already queued or running; this is its job id\n"
    assert redis.Redis.from_url(redis_url).zcard(Keys("agentq", "default").queue) == 1


@pytest.mark.e2e
def test_a_wait_with_no_live_worker_says_so(settings_env: dict[str, str]) -> None:
    """``ask --wait`` with no worker alive warns on stderr within seconds, instead of waiting in silence."""
    done = run("producer", "ask", "anyone there?", "--wait", "--timeout", "4", env=settings_env)
    assert done.returncode == 4, done.stderr  # timed out waiting
    assert "warning: no live worker serves queue 'default'" in done.stderr


def test_the_executor_flag_offers_the_settings_choices() -> None:
    assert [e.value for e in Executor] == list(get_args(ExecutorKind))


@pytest.mark.e2e
def test_worker_flags_win_over_the_settings_they_mirror(settings_env: dict[str, str], redis_url: str) -> None:
    """``--queue``, ``--max-jobs``, ``--executor`` and ``--pool-size`` beat the environment: the worker serves
    the flag's queue (and answers its jobs), and says what it runs with; a bad value is named by its flag."""
    queued = {**settings_env, "AGENTQ_QUEUE_NAME": "flagged"}
    job_id = run("producer", "ask", "which queue?", "--sources", "weather", env=queued).stdout.strip()
    flags = ("--burst", "--queue", "flagged", "--max-jobs", "3", "--executor", "thread", "--pool-size", "1")
    done = run("worker", *flags, env={**settings_env, "AGENTQ_MAX_JOBS": "9", "AGENTQ_EXECUTOR": "process"})
    assert done.returncode == 0, done.stderr
    assert "ready: queue flagged, up to 3 jobs at once; thread pool of 1" in done.stderr, done.stderr
    assert redis.Redis.from_url(redis_url).exists(Keys("agentq", "flagged").result(job_id))
    refused = one_error_line(run("worker", "--max-jobs", "0", env=settings_env))
    assert refused == "error: bad settings: --max-jobs: Input should be greater than 0\n"


@pytest.mark.e2e
def test_result_of_an_unfinished_job_says_it_is_not_finished(settings_env: dict[str, str]) -> None:
    """``producer result ID`` on a job still queued: exit 4 and the plain truth, not "within 0s"."""
    job_id = run("producer", "ask", "still queued", env=settings_env).stdout.strip()
    done = run("producer", "result", job_id, env=settings_env)
    assert (done.returncode, done.stderr) == (4, f"error: job {job_id} is not finished yet\n")


@pytest.mark.e2e
def test_the_makefile_keeps_the_interpreter_of_the_venv_it_made(tmp_path: Path) -> None:
    """Once a venv exists, ``make`` stays with its interpreter (.venv/python), whatever Python appears later."""
    makefile = Path(__file__).parents[1] / "Makefile"
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "python").write_text(sys.executable + "\n")
    # Not the PYTHON this session's own make was given (make passes it on through MAKEFLAGS).
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHON", "VENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    shown = subprocess.run(
        ["make", "-s", "-f", str(makefile), "help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    expected = f"PYTHON={sys.executable}  VENV=.venv/py{sys.version_info[0]}{sys.version_info[1]}"
    assert shown.returncode == 0 and expected in shown.stdout, shown.stdout + shown.stderr
