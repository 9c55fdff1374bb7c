"""The HTTP API end to end: the documented command, a real Redis and real workers, called over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from subprocess import Popen
from typing import Any

import httpx
import pytest

from agentq import apikeys
from agentq.contract import JobResult, ProgressEvent
from tests.api.conftest import Api, redis_data

pytestmark = pytest.mark.e2e
StartWorkers = Callable[..., list[Popen[bytes]]]
StartApi = Callable[..., Api]
SOURCES = ["weather", "news", "knowledge_base"]


def wait_for_result(api: Api, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """Poll GET /api/jobs/<id> until it holds a result."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        reply = httpx.get(f"{api.url}/api/jobs/{job_id}", headers=api.headers()).json()
        if reply["result"] is not None:
            return reply
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish within {timeout}s")


def sse(api: Api, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event of the job's stream, until it ends."""
    events = []
    with httpx.stream("GET", f"{api.url}/api/jobs/{job_id}/events", headers=api.headers(), timeout=30) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in reply.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


def test_a_job_created_followed_and_listed_through_the_api(
    start_api: StartApi, start_worker_processes: StartWorkers
) -> None:
    """POST /api/jobs queues a job a worker answers; its SSE stream gives every step then the result;
    status, result, listings, workers, queue and per-source figures all show it."""
    start_worker_processes(1)
    api = start_api()
    created = httpx.post(
        f"{api.url}/api/jobs",
        headers=api.headers(),
        json={"question": "Will it rain in Paris tomorrow?", "sources": SOURCES, "priority": "high", "no_cache": True},
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    events = sse(api, job_id)
    assert [name for name, _ in events[:-1]] == ["progress"] * (len(events) - 1) and events[-1][0] == "result"
    progress = [ProgressEvent.model_validate(data) for _, data in events[:-1]]
    assert {(e.source, e.event) for e in progress} >= {(s, "done") for s in SOURCES}
    assert progress[-1].event == "job_done"
    result = JobResult.model_validate(events[-1][1])
    assert result.status == "ok" and result.job_id == job_id

    status = wait_for_result(api, job_id)
    assert status["status"] == "complete" and status["result"]["job_id"] == job_id
    assert httpx.get(f"{api.url}/api/jobs/{job_id}/result", headers=api.headers()).json()["status"] == "ok"
    listed = httpx.get(f"{api.url}/api/jobs", headers=api.headers(api.read_key)).json()["jobs"]
    assert [(j["job_id"], j["status"], j["priority"]) for j in listed] == [(job_id, "ok", "high")]
    assert httpx.get(f"{api.url}/api/jobs?status=failed", headers=api.headers()).json() == {"jobs": []}
    [worker] = httpx.get(f"{api.url}/api/workers", headers=api.headers()).json()["workers"]
    assert worker["pool_size"] == 2 and worker["jobs_done"] >= 0
    queue = httpx.get(f"{api.url}/api/queue", headers=api.headers()).json()
    assert queue["queued"] == 0 and queue["workers"] == 1
    stats = httpx.get(f"{api.url}/api/sources", headers=api.headers()).json()
    assert stats["jobs"] == 1 and [s["name"] for s in stats["sources"]] == sorted(SOURCES)
    assert all(s["calls"] == s["ok"] == 1 and s["fetch_p50_s"] > 0 for s in stats["sources"])
    dedup = httpx.post(f"{api.url}/api/jobs", headers=api.headers(), json={"question": "x", "dedup": False})
    assert dedup.status_code == 201 and dedup.json()["deduplicated"] is False


def test_cancel_and_rerun_through_the_api(start_api: StartApi) -> None:
    """A queued job cancelled through the API never starts and reads cancelled; re-running it queues a new job."""
    api = start_api()
    job_id = httpx.post(f"{api.url}/api/jobs", headers=api.headers(), json={"question": "rain?"}).json()["job_id"]
    reply = httpx.post(f"{api.url}/api/jobs/{job_id}/cancel", headers=api.headers())
    assert reply.json() == {"job_id": job_id, "cancel": "cancelled"}
    result = httpx.get(f"{api.url}/api/jobs/{job_id}/result", headers=api.headers()).json()
    assert result["status"] == "cancelled"
    again = httpx.post(f"{api.url}/api/jobs/{job_id}/retry", headers=api.headers())
    assert again.status_code == 201 and again.json()["retry_of"] == job_id
    new = again.json()["job_id"]
    assert httpx.get(f"{api.url}/api/jobs/{new}", headers=api.headers()).json()["status"] == "queued"
    assert httpx.get(f"{api.url}/api/jobs/{new}/result", headers=api.headers()).status_code == 409
    ok_rerun = httpx.post(f"{api.url}/api/jobs/{new}/retry", headers=api.headers())
    assert ok_rerun.status_code == 404  # no result yet: nothing to re-run
    failed = httpx.get(f"{api.url}/api/jobs?status=cancelled", headers=api.headers()).json()["jobs"]
    assert [j["job_id"] for j in failed] == [job_id]


def test_the_rate_limit_is_one_count_across_api_processes(start_api: StartApi) -> None:
    """Two API processes on one Redis share a key's count (it is kept in Redis): 4 a minute in all."""
    key, entry = apikeys.new_key("shared", ("read",))
    env = {"AGENTQ_API_RATE_LIMIT": "4/minute", "AGENTQ_API_KEYS": f'["{entry}"]'}
    first, second = start_api(**env), start_api(**env)
    auth = {"Authorization": f"Bearer {key}"}
    codes = [httpx.get(f"{api.url}/api/jobs", headers=auth).status_code for api in (first, second) * 3]
    assert codes == [200, 200, 200, 200, 429, 429]


def test_keys_scopes_and_the_rate_limit(start_api: StartApi) -> None:
    """No key or an unknown one is 401 with a challenge; a read-only key cannot create or cancel (403);
    past the rate limit a key gets 429 with Retry-After, another key does not; the dashboard needs no key."""
    api = start_api(AGENTQ_API_RATE_LIMIT="5/minute")
    url = f"{api.url}/api/jobs"
    missing = httpx.get(url)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(url, headers={"X-API-Key": api.read_key}).status_code == 200
    assert httpx.post(url, headers=api.headers(api.read_key), json={"question": "q"}).status_code == 403
    assert httpx.post(f"{url}/abc/cancel", headers=api.headers(api.read_key)).status_code == 403
    codes = [httpx.get(url, headers=api.headers(api.read_key)).status_code for _ in range(4)]
    assert codes == [200, 200, 429, 429]  # 5 a minute: 3 were used above
    limited = httpx.get(url, headers=api.headers(api.read_key))
    assert int(limited.headers["retry-after"]) >= 1 and "rate limit" in limited.json()["detail"]
    assert httpx.get(url, headers=api.headers()).status_code == 200
    page = httpx.get(f"{api.url}/")
    assert page.status_code == 200 and "agentq dashboard" in page.text
    icon = httpx.get(f"{api.url}/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml" and b"<svg" in icon.content
    assert httpx.get(f"{api.url}/openapi.json").json()["info"]["title"] == "agentq API"


def test_cors_is_off_unless_configured(start_api: StartApi) -> None:
    """Without api_cors_origins a browser preflight gets no CORS headers; with it, the named origin is allowed."""
    preflight = {"Origin": "http://dash.example", "Access-Control-Request-Method": "POST"}
    closed = start_api()
    reply = httpx.options(f"{closed.url}/api/jobs", headers=preflight)
    assert "access-control-allow-origin" not in reply.headers
    opened = start_api(AGENTQ_API_CORS_ORIGINS='["http://dash.example"]')
    reply = httpx.options(f"{opened.url}/api/jobs", headers=preflight)
    assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == "http://dash.example"


def test_bad_input_on_every_endpoint_is_a_clear_4xx_and_writes_nothing(start_api: StartApi) -> None:
    """Malformed JSON, wrong types, limits broken, oversized bodies, unknown or malformed ids, missing and
    invalid keys: each gets the documented 4xx with a reason, and Redis takes not one write (but the rate
    limit's count, kept in Redis for every API process to share)."""
    api = start_api(AGENTQ_API_MAX_BODY_BYTES="4096")
    h, url = api.headers(), api.url
    unknown = "0" * 32
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", "/api/jobs", {"content": b"{not json", "headers": {**h, "content-type": "application/json"}}, 422),
        ("POST", "/api/jobs", {"json": {"question": 42}}, 422),
        ("POST", "/api/jobs", {"json": {"question": "q", "sources": "weather"}}, 422),
        ("POST", "/api/jobs", {"json": {"question": "q", "deadline_s": "soon"}}, 422),
        ("POST", "/api/jobs", {"json": {"question": "q", "priority": "urgent"}}, 422),
        ("POST", "/api/jobs", {"json": {"question": "q", "surprise": 1}}, 422),
        ("POST", "/api/jobs", {"json": {"question": "   "}}, 422),
        ("POST", "/api/jobs", {"json": {"question": "q", "sources": ["nope"]}}, 422),
        ("POST", "/api/jobs", {"json": {"question": "q", "deadline_s": 10_000}}, 422),
        ("POST", "/api/jobs", {"json": {"question": "x" * 2001}}, 422),
        ("POST", "/api/jobs", {"json": {"question": "x" * 5000}}, 413),
        ("POST", "/api/jobs", {"json": ["question"]}, 422),
        ("POST", "/api/jobs", {"content": b"", "headers": {**h, "content-type": "application/json"}}, 422),
        ("GET", "/api/jobs?status=weird", {}, 422),
        ("GET", "/api/jobs?limit=0", {}, 422),
        ("GET", "/api/jobs?limit=many", {}, 422),
        ("GET", "/api/sources?jobs=-1", {}, 422),
        ("GET", f"/api/jobs/{unknown}", {}, 404),
        ("GET", f"/api/jobs/{unknown}/result", {}, 404),
        ("GET", f"/api/jobs/{unknown}/events", {}, 404),
        ("POST", f"/api/jobs/{unknown}/cancel", {}, 404),
        ("POST", f"/api/jobs/{unknown}/retry", {}, 404),
        ("GET", "/api/jobs/bad id!", {}, 422),
        ("POST", "/api/jobs/bad%20id/cancel", {}, 422),
        ("POST", f"/api/jobs/{'x' * 65}/retry", {}, 422),
        ("GET", f"/api/jobs/{unknown}/nothing", {}, 404),
        ("GET", "/api/workers", {"headers": {}}, 401),
        ("GET", "/api/queue", {"headers": {"Authorization": "Bearer wrong"}}, 401),
        ("POST", "/api/jobs", {"headers": {"Authorization": "Basic abc"}, "json": {"question": "q"}}, 401),
        ("POST", "/api/jobs", {"headers": {}, "content": b"{not json"}, 401),
        ("POST", f"/api/jobs/{unknown}/cancel", {"headers": {"X-API-Key": ""}}, 401),
    ]
    before = redis_data(api.redis_url)
    for method, path, options, expected in cases:
        options = {"headers": h, **options}
        reply = httpx.request(method, url + path, **options)
        assert reply.status_code == expected, (method, path, options.get("json"), reply.status_code, reply.text)
        detail = reply.json()["detail"]
        assert detail, (method, path)
    # A chunked body over the cap (no Content-Length to refuse it by) is cut off too.
    chunks = (b'{"question": "' + b"x" * 1024 for _ in range(8))
    reply = httpx.post(f"{url}/api/jobs", headers={**h, "content-type": "application/json"}, content=chunks)
    assert reply.status_code == 413
    assert redis_data(api.redis_url) == before, "a refused request wrote to Redis"
    too_long = httpx.post(f"{url}/api/jobs", headers=h, json={"question": "x" * 2001}).json()["detail"]
    assert too_long == [
        {"loc": ["body", "question"], "msg": "String should have at most 2000 characters", "type": "string_too_long"}
    ]
    unknown_source = httpx.post(f"{url}/api/jobs", headers=h, json={"question": "q", "sources": ["nope"]})
    assert unknown_source.json()["detail"][0]["loc"] == ["body", "sources", 0]


def test_json_log_format_makes_every_api_line_json_with_the_request_in_access_lines(start_api: StartApi) -> None:
    """Under AGENTQ_LOG_FORMAT=json the API's start-up and access lines are JSON, as the workers' are; an
    access line carries the client, method, path and status as fields of their own."""
    api = start_api(AGENTQ_LOG_FORMAT="json")
    assert httpx.get(f"{api.url}/api/jobs?limit=1", headers=api.headers()).status_code == 200
    give_up = time.monotonic() + 10
    while '"/api/jobs?limit=1"' not in api.log.read_text():  # written once the reply has gone out
        assert time.monotonic() < give_up, api.log.read_text()
        time.sleep(0.05)
    lines = [json.loads(line) for line in api.log.read_text().splitlines() if line.strip()]
    assert any(line["logger"] == "uvicorn.error" and "Uvicorn running" in line["message"] for line in lines), lines
    access = [line for line in lines if line["logger"] == "uvicorn.access" and line["path"] == "/api/jobs?limit=1"]
    assert [(a["method"], a["status"], a["level"]) for a in access] == [("GET", 200, "INFO")]
    assert access[0]["client"].startswith("127.0.0.1:")


def test_the_queue_by_priority_its_waiting_jobs_in_order_and_a_purge(start_api: StartApi) -> None:
    """No worker: jobs wait. /api/queue counts them by priority with the oldest wait; /api/jobs?status=queued
    lists them in queue order and pages; purging needs the cancel scope and cancels each waiting job."""
    api = start_api()
    made = [
        httpx.post(f"{api.url}/api/jobs", headers=api.headers(), json={"question": f"q{i}", "priority": p}).json()
        for i, p in enumerate(("low", "high", "normal"))
    ]
    queue = httpx.get(f"{api.url}/api/queue", headers=api.headers()).json()
    assert (queue["queued"], queue["running"], queue["deferred"], queue["workers"]) == (3, 0, 0, 0)
    assert queue["by_priority"]["queued"] == {"high": 1, "normal": 1, "low": 1} and queue["oldest_queued_s"] >= 0
    url = f"{api.url}/api/jobs?status=queued"
    in_order = [j["job_id"] for j in httpx.get(url, headers=api.headers()).json()["jobs"]]
    assert in_order == [made[1]["job_id"], made[2]["job_id"], made[0]["job_id"]]  # high, normal, low
    page = httpx.get(f"{url}&limit=1&offset=2", headers=api.headers()).json()["jobs"]
    assert [j["job_id"] for j in page] == [made[0]["job_id"]]
    assert httpx.post(f"{api.url}/api/queue/purge", headers=api.headers(api.read_key)).status_code == 403
    purged = httpx.post(f"{api.url}/api/queue/purge", headers=api.headers())
    assert purged.status_code == 200 and purged.json() == {"cancelled": 3, "left_to_run": 0}
    assert httpx.get(f"{api.url}/api/queue", headers=api.headers()).json()["queued"] == 0
    assert wait_for_result(api, made[1]["job_id"])["result"]["status"] == "cancelled"


def test_schedules_through_the_api(start_api: StartApi) -> None:
    """PUT adds (422 for a rule that cannot be), GET lists with the next tick, DELETE removes (404 after)."""
    api = start_api()
    url = f"{api.url}/api/schedules"
    made = httpx.put(f"{url}/nightly", headers=api.headers(), json={"cron": "0 2 * * *", "question": "Anything new?"})
    assert made.status_code == 200 and made.json()["rule"] == "cron 0 2 * * *"
    assert made.json()["next_tick"].endswith("T02:00:00Z")
    bad = httpx.put(f"{url}/bad", headers=api.headers(), json={"every": 0.1, "question": "q"})
    assert bad.status_code == 422, bad.text
    assert (
        httpx.put(f"{url}/x", headers=api.headers(api.read_key), json={"every": 60, "question": "q"}).status_code == 403
    )
    listed = httpx.get(url, headers=api.headers()).json()["schedules"]
    assert [(s["name"], s["request"]["question"]) for s in listed] == [("nightly", "Anything new?")]
    assert httpx.delete(f"{url}/nightly", headers=api.headers()).status_code == 200
    assert httpx.delete(f"{url}/nightly", headers=api.headers()).status_code == 404
