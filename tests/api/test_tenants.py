"""Tenants through the API, route by route: two tenants' keys and an admin key on one real API, Redis
and worker. Each tenant sees and acts on its own jobs only; another tenant's job is a 404, exactly as
an unknown id; an admin key sees every tenant's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx
import pytest
import redis

from agentq import apikeys
from agentq.settings import Settings
from tests.api.conftest import Api

pytestmark = pytest.mark.e2e
StartWorkers = Callable[..., list[Popen[bytes]]]
StartApi = Callable[..., Api]
PRODUCER = str(Path(sys.executable).with_name("producer"))
QUESTION = {"question": "Will it rain in Paris tomorrow?", "sources": ["weather"]}


class Caller:
    """One key of one tenant, calling the API."""

    def __init__(self, api: Api, key: str) -> None:
        self.api, self.headers = api, {"Authorization": f"Bearer {key}"}

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.api.url}{path}", headers=self.headers, timeout=30)

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return httpx.post(f"{self.api.url}{path}", headers=self.headers, json=body, timeout=30)

    def put(self, path: str, body: Any) -> httpx.Response:
        return httpx.put(f"{self.api.url}{path}", headers=self.headers, json=body, timeout=30)

    def delete(self, path: str) -> httpx.Response:
        return httpx.delete(f"{self.api.url}{path}", headers=self.headers, timeout=30)

    def create(self, body: dict[str, Any] = QUESTION) -> str:
        reply = self.post("/api/jobs", body)
        assert reply.status_code == 201, reply.text
        job_id: str = reply.json()["job_id"]
        return job_id

    def listed(self, status: str = "all") -> list[str]:
        reply = self.get(f"/api/jobs?status={status}&limit=100")
        assert reply.status_code == 200, reply.text
        return [j["job_id"] for j in reply.json()["jobs"]]

    def wait_done(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            reply = self.get(f"/api/jobs/{job_id}").json()
            if reply["result"] is not None:
                return dict(reply["result"])
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish within {timeout}s")


def test_each_tenant_sees_and_acts_on_its_own_jobs_only_route_by_route(
    start_api: StartApi, start_worker_processes: StartWorkers, settings_env: dict[str, str]
) -> None:
    a_key, a_entry = apikeys.new_key("alice", ("read", "submit", "cancel"), "team-a")
    b_key, b_entry = apikeys.new_key("bob", ("read", "submit", "cancel"), "team-b")
    ops_key, ops_entry = apikeys.new_key("ops", ("admin",))
    old_key, old_entry = apikeys.new_key("legacy", ("read", "submit"))  # an entry from before tenants
    api = start_api(AGENTQ_API_KEYS=f'["{a_entry}", "{b_entry}", "{ops_entry}", "{old_entry}"]')
    a, b, ops, old = Caller(api, a_key), Caller(api, b_key), Caller(api, ops_key), Caller(api, old_key)
    r = redis.Redis.from_url(settings_env["AGENTQ_REDIS_URL"])
    keys = Settings(_env_file=None, redis_url=settings_env["AGENTQ_REDIS_URL"]).keys  # type: ignore[call-arg]

    # No worker yet: every job waits. The same question from two tenants is two jobs (no dedup across).
    a1, a2 = a.create(), a.create({**QUESTION, "question": "Is the Seine in flood?"})
    b1 = b.create()
    legacy = old.create({**QUESTION, "question": "Any strikes in Lyon?"})
    assert a1.startswith("team-a_") and b1.startswith("team-b_") and b1 != a1 and "_" not in legacy
    assert a.create() == a1  # within a tenant, an identical question joins the job in flight

    # A tenant named in a body never chooses the tenant: the body is refused, and nothing is queued.
    refused = b.post("/api/jobs", {**QUESTION, "tenant": "team-a"})
    assert refused.status_code == 422 and "tenant" in refused.text
    queues = (keys.queue, keys.queue_of("team-a"), keys.queue_of("team-b"))
    assert [r.zcard(q) for q in queues] == [1, 2, 1]  # each tenant's jobs in its own queue

    # Reading another tenant's job: 404 on every route, word for word the reply to an unknown id.
    unknown = "team-a_" + "0" * 32
    for path in ("", "/result", "/events"):
        theirs, nothing = b.get(f"/api/jobs/{a1}{path}"), b.get(f"/api/jobs/{unknown}{path}")
        assert theirs.status_code == nothing.status_code == 404, (path, theirs.text)
        assert theirs.json()["detail"].replace(a1, "X") == nothing.json()["detail"].replace(unknown, "X")
    assert b.post(f"/api/jobs/{a1}/cancel").status_code == 404
    assert b.post(f"/api/jobs/{a1}/retry").status_code == 404
    assert old.get(f"/api/jobs/{a1}").status_code == 404  # an old key is the default tenant's
    for caller, job_id in ((a, a1), (b, b1), (ops, a1), (ops, b1), (old, legacy)):
        assert caller.get(f"/api/jobs/{job_id}").json()["status"] == "queued"

    # Listings: a tenant's own jobs; the default tenant's among all; an admin's, every tenant's.
    assert sorted(a.listed()) == sorted([a1, a2]) and a.listed("queued") == [a1, a2]
    assert b.listed() == [b1] and b.listed("queued") == [b1] and old.listed() == [legacy]
    assert sorted(ops.listed()) == sorted([a1, a2, b1, legacy]) and len(ops.listed("queued")) == 4

    # The queue: a tenant's own counts and share; an admin's, every tenant's.
    mine = a.get("/api/queue").json()
    assert (mine["tenant"], mine["queued"], list(mine["tenants"])) == ("team-a", 2, ["team-a"])
    every = ops.get("/api/queue").json()
    assert every["queued"] == 4 and set(every["tenants"]) == {"team-a", "team-b", "default"}
    assert every["tenants"]["team-b"] == {"queued": 1, "running": 0, "deferred": 0, "share": 0.0}

    # Purge and cancel touch the caller's own jobs only.
    assert b.post("/api/queue/purge").json() == {"cancelled": 1, "left_to_run": 0}
    assert a.get(f"/api/jobs/{a1}").json()["status"] == "queued" and a.listed("cancelled") == []
    assert b.listed("cancelled") == [b1]
    assert a.post(f"/api/jobs/{a2}/cancel").json()["cancel"] == "cancelled"
    assert a.listed("cancelled") == [a2] and b.listed("cancelled") == [b1]
    assert sorted(ops.listed("cancelled")) == sorted([a2, b1])
    # A re-run stays its tenant's, whoever asks for it.
    again = a.post(f"/api/jobs/{a2}/retry")
    assert again.status_code == 201 and again.json()["job_id"].startswith("team-a_")
    by_admin = ops.post(f"/api/jobs/{b1}/retry")
    assert by_admin.status_code == 201 and by_admin.json()["job_id"].startswith("team-b_")
    assert b.get(f"/api/jobs/{by_admin.json()['job_id']}").status_code == 200

    # Schedules: one name, two tenants, two schedules; each lists and removes its own.
    rule = {"every": 3600, "question": "Daily digest?"}
    assert a.put("/api/schedules/digest", rule).status_code == 200
    assert b.put("/api/schedules/digest", {**rule, "every": 7200}).status_code == 200
    assert [(s["name"], s["rule"]) for s in a.get("/api/schedules").json()["schedules"]] == [("digest", "every 1h")]
    assert [(s["name"], s["rule"]) for s in b.get("/api/schedules").json()["schedules"]] == [("digest", "every 2h")]
    assert sorted(s["name"] for s in ops.get("/api/schedules").json()["schedules"]) == [
        "team-a/digest",
        "team-b/digest",
    ]
    assert b.delete("/api/schedules/digest").status_code == 200
    assert b.delete("/api/schedules/digest").status_code == 404
    assert [s["name"] for s in a.get("/api/schedules").json()["schedules"]] == ["digest"]

    # A worker answers them; each tenant reads its own results and events, and per-source figures
    # count its own jobs only.
    start_worker_processes(1)
    assert a.wait_done(a1)["status"] == "ok" and ops.wait_done(legacy)["status"] == "ok"
    with httpx.stream("GET", f"{api.url}/api/jobs/{a1}/events", headers=a.headers, timeout=30) as events:
        assert events.status_code == 200 and "event: result" in events.read().decode()
    assert b.get(f"/api/jobs/{a1}/result").status_code == 404 and a.get(f"/api/jobs/{a1}/result").status_code == 200
    b.wait_done(by_admin.json()["job_id"])
    assert b.get("/api/sources").json()["jobs"] == 2  # b1 (purged) and its re-run: none of team-a's or default's
    assert ops.get("/api/sources").json()["jobs"] >= 4
    r.close()


def test_a_tenant_over_its_quota_is_refused_by_the_api_and_the_cli_and_nothing_is_queued(
    start_api: StartApi, settings_env: dict[str, str]
) -> None:
    """AGENTQ_TENANT_QUOTAS, enforced in Redis so every API process and CLI shares it: team-a may have 2
    jobs in flight. The third is 429 with Retry-After from the API, exit 2 with one line from the CLI;
    nothing is queued; team-b, without a quota of its own, is not held back."""
    quotas = json.dumps({"team-a": {"in_flight": 2}})
    a_key, a_entry = apikeys.new_key("alice", ("read", "submit"), "team-a")
    b_key, b_entry = apikeys.new_key("bob", ("read", "submit"), "team-b")
    api = start_api(AGENTQ_API_KEYS=f'["{a_entry}", "{b_entry}"]', AGENTQ_TENANT_QUOTAS=quotas)
    a, b = Caller(api, a_key), Caller(api, b_key)
    first = [a.create({**QUESTION, "question": f"q{i}"}) for i in range(2)]
    refused = a.post("/api/jobs", {**QUESTION, "question": "one too many"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "team-a" in refused.json()["detail"] and "2 jobs in flight" in refused.json()["detail"]
    assert a.create({**QUESTION, "question": "q0"}) == first[0]  # joining a job in flight is no new job
    assert b.create({**QUESTION, "question": "q0"}).startswith("team-b_")

    env = {**settings_env, "AGENTQ_TENANT": "team-a", "AGENTQ_TENANT_QUOTAS": quotas}
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_")}
    cli = subprocess.run([PRODUCER, "ask", "one more"], env={**base, **env}, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and cli.stdout == "" and cli.stderr.count("\n") == 1, cli
    assert cli.stderr.startswith("error: tenant 'team-a' is at its quota of 2 jobs in flight")
    assert sorted(a.listed("queued")) == sorted(first)
