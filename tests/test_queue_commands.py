"""The queue commands an operator reaches for: ``producer queue``, ``purge``, ``jobs --status queued|running``
with paging, and ``retry`` of several jobs or of every recent failure. Real redis-server; a worker only where
jobs must fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest

from agentq.durations import parse_duration
from agentq.protocol.queue import Queue
from agentq.settings import Settings
from producer.client import Client

BIN = Path(sys.executable).parent
StartWorkers = Callable[..., list[Popen[bytes]]]


def producer(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_")}
    return subprocess.run(
        [str(BIN / "producer"), *args],
        env={**base, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("10m", 600), ("1h30m", 5400), ("2d", 172800), ("250ms", 0.25), ("15", 15)]
)
def test_a_duration_reads_as_people_type_it(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10 minutes", "1x", "0s", "-5"])
def test_a_bad_duration_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.e2e
async def test_queue_jobs_and_purge_see_waiting_and_running_jobs_by_priority(
    settings: Settings, settings_env: dict[str, str]
) -> None:
    """Three queued jobs (one per priority) and one a worker holds: ``queue`` counts them by priority with the
    oldest wait; ``jobs --status queued`` lists them in queue order and pages; ``purge --yes`` cancels the
    waiting ones (each ends cancelled) and leaves the running one alone."""
    async with Client(settings) as client:
        ids = {p: await client.enqueue(f"{p} question", priority=p) for p in ("low", "normal", "high")}
        running = await client.enqueue("taken question", priority="normal")
        claimed = await Queue(client.redis, settings.keys).claim("w-test", want=1, lease_ms=60_000, idle=True)
        assert [j.job_id for j in claimed.jobs] == [ids["high"]]  # the head of the queue: high first

        depth = as_json(producer("queue", "--json", env=settings_env))
        assert depth["queued"] == {"high": 0, "normal": 2, "low": 1} and depth["running"]["high"] == 1
        assert depth["deferred"] == {"high": 0, "normal": 0, "low": 0} and depth["workers"] == 0
        assert 0 <= depth["oldest_queued_s"] < 60
        text = producer("queue", env=settings_env).stdout
        assert "queued         3  (normal 2, low 1)" in text and "running        1  (high 1)" in text

        queued = as_json(producer("jobs", "--status", "queued", "--json", env=settings_env))
        assert [j["job_id"] for j in queued] == [ids["normal"], running, ids["low"]]  # queue order
        page = as_json(
            producer("jobs", "--status", "queued", "--limit", "1", "--offset", "1", "--json", env=settings_env)
        )
        assert [j["job_id"] for j in page] == [running]
        held = as_json(producer("jobs", "--status", "running", "--json", env=settings_env))
        assert [(j["job_id"], j["status"]) for j in held] == [(ids["high"], "in_progress")]

        refused = producer("purge", env=settings_env, stdin="")  # no terminal to confirm at
        assert refused.returncode == 2 and refused.stderr.startswith("error: purge cancels every waiting job")
        assert as_json(producer("purge", "--yes", "--json", env=settings_env)) == {"cancelled": 3, "left_to_run": 0}
        for job_id in (ids["normal"], ids["low"], running):
            assert (await client.result(job_id, timeout=0)).status == "cancelled"
        after = as_json(producer("queue", "--json", env=settings_env))
        assert sum(after["queued"].values()) == 0 and sum(after["running"].values()) == 1


@pytest.mark.e2e
async def test_retry_takes_several_ids_or_every_recent_failure(
    settings: Settings, settings_env: dict[str, str], start_worker_processes: StartWorkers
) -> None:
    """Two jobs fail (their only source is made to fail): ``retry --failed --since 1h`` queues both again, one
    line each; several ids retry each, and one that cannot be retried is named and exits 1."""
    start_worker_processes(1, AGENTQ_SOURCE_FAIL='["weather"]', AGENTQ_SOURCE_RETRIES="0")
    async with Client(settings) as client:
        failed = [await client.enqueue(f"doomed {i}", sources=["weather"], dedup=False) for i in range(2)]
        assert [(await client.result(j, timeout=60)).status for j in failed] == ["failed", "failed"]

    retried = producer("retry", "--failed", "--since", "1h", env=settings_env)
    assert retried.returncode == 0, retried.stderr
    lines = retried.stdout.splitlines()
    assert [line.split(" -> ")[0] for line in lines] == failed and all(" -> " in line for line in lines)
    both = producer("retry", failed[0], "not-a-job", "--json", env=settings_env)
    again, unknown = json.loads(both.stdout)
    assert both.returncode == 1 and again["retry_of"] == failed[0] and again["job_id"]
    assert unknown["job_id"] is None and "not-a-job" in unknown["error"]
    mixed = producer("retry", failed[1], "not-a-job", env=settings_env)
    assert mixed.returncode == 1 and mixed.stdout.splitlines()[1].startswith("not-a-job: not retried: ")
    for args, says in [((), "give the ids"), (("--failed", "--since", "soon"), "--since: 'soon' is not a duration")]:
        bad = producer("retry", *args, env=settings_env)
        assert bad.returncode == 2 and bad.stderr.startswith(f"error: {says}"), bad.stderr


@pytest.mark.e2e
def test_the_cli_enqueues_as_its_tenant_and_lists_queues_and_purges_one_tenant(settings_env: dict[str, str]) -> None:
    """``AGENTQ_TENANT`` makes the CLI's jobs that tenant's; ``queue`` shows each tenant's part; ``--tenant``
    narrows ``jobs``, ``queue`` and ``purge`` to one tenant; a tenant that cannot be one is refused (exit 2,
    one line) before anything is queued."""
    a_env, b_env = {**settings_env, "AGENTQ_TENANT": "team-a"}, {**settings_env, "AGENTQ_TENANT": "team-b"}
    a_ids = [producer("ask", f"a question {i}", env=a_env).stdout.strip() for i in range(2)]
    b_id = producer("ask", "a question 0", env=b_env).stdout.strip()
    assert all(j.startswith("team-a_") for j in a_ids) and b_id.startswith("team-b_")

    depth = as_json(producer("queue", "--json", env=settings_env))
    assert sum(depth["queued"].values()) == 3
    assert {t: row["queued"] for t, row in depth["tenants"].items()} == {"team-a": 2, "team-b": 1}
    text = producer("queue", env=settings_env).stdout
    assert "team-a                     2        0         0     0%" in text, text
    only_b = as_json(producer("queue", "--tenant", "team-b", "--json", env=settings_env))
    assert sum(only_b["queued"].values()) == 1 and list(only_b["tenants"]) == ["team-b"]
    listed = as_json(producer("jobs", "--tenant", "team-a", "--status", "queued", "--json", env=settings_env))
    assert [j["job_id"] for j in listed] == a_ids

    assert as_json(producer("purge", "--yes", "--tenant", "team-b", "--json", env=settings_env)) == {
        "cancelled": 1,
        "left_to_run": 0,
    }
    assert [j["job_id"] for j in as_json(producer("jobs", "--status", "queued", "--json", env=settings_env))] == a_ids

    for args, env in [
        (("queue", "--tenant", "Team_B"), settings_env),
        (("ask", "q"), {**settings_env, "AGENTQ_TENANT": "A B"}),
    ]:
        bad = producer(*args, env=env)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "tenant" in bad.stderr.lower(), bad.stderr
    assert sum(as_json(producer("queue", "--json", env=settings_env))["queued"].values()) == 2
