"""docker-compose.yml for real: a Docker engine, the image built from deploy/Dockerfile, 3 workers.

The tests share one compose project and run in this order; each brings the stack to the state it
needs first (three healthy workers, Redis up). Every test prints its figures ("figure: ...").
Timings come from the test override (tests/deploy/compose.ci.yml): a 3 s lease, 1 s heartbeats,
health checks every 3 s, the workload at 10 % of the reference (inference at 0.7 %).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis.asyncio

from agentq.contract import JobResult
from agentq.protocol.keys import Field, field
from agentq.settings import Settings
from producer.client import Client
from tests.deploy.stack import ROOT, Stack, address

pytestmark = [pytest.mark.compose, pytest.mark.timeout(600)]

LEASE_S = 3.0  # AGENTQ_LEASE_S in compose.ci.yml
SHORT = ["weather_api", "news_api"]  # two HTTP sources: a job of ~0.3 s
LONG = ["weather_api", "news_api", "knowledge_base_api", "stocks_api", "geo_api"]


def figure(name: str, value: str) -> None:
    print(f"\nfigure: {name}: {value}")


async def three_workers(stack: Stack) -> list[dict[str, Any]]:
    """Bring the stack to Redis, the upstream and three healthy workers; their containers."""
    await stack.compose("up", "-d", "--scale", "worker=3")
    await stack.wait_health("worker", 3)
    return await stack.containers("worker")


async def results(client: Client, job_ids: list[str], timeout: float) -> dict[str, JobResult]:
    """Every job's result, waiting up to ``timeout`` seconds in all."""
    give_up = time.monotonic() + timeout
    found: dict[str, JobResult] = {}
    for job_id in job_ids:
        found[job_id] = await client.result(job_id, timeout=max(0.1, give_up - time.monotonic()))
    return found


def host_of(result: JobResult) -> str:
    """The container (hostname = short id) a result's worker ran in: worker ids are host:pid:random."""
    return (result.worker_id or "?").split(":")[0]


async def test_build_and_three_workers_turn_healthy(stack: Stack) -> None:
    """The image builds; `up -d --scale worker=3` gives three workers healthy by their own `worker --check`."""
    start = time.monotonic()
    await stack.compose("build", timeout=900)
    built = time.monotonic() - start
    start = time.monotonic()
    await stack.compose("up", "-d", "--scale", "worker=3")
    await stack.wait_health("worker", 3)
    healthy = time.monotonic() - start
    figure("image build (classic builder, cold)", f"{built:.1f} s")
    figure("up -d --scale worker=3 -> 3 workers healthy", f"{healthy:.1f} s")
    health = await stack.health("worker")
    assert list(health.values()) == ["healthy"] * 3


async def test_the_api_service_turns_healthy_and_guards_its_endpoints(stack: Stack) -> None:
    """The api service turns healthy by its own check; /health and the dashboard answer; /api wants a key."""
    await three_workers(stack)
    took = await stack.wait_health("api", 1)
    (api,) = await stack.containers("api")
    async with httpx.AsyncClient(base_url=f"http://{address(api)}:8000", timeout=10) as http:
        health, page, refused = await http.get("/health"), await http.get("/"), await http.get("/api/queue")
    figure("api service healthy (its own /health check)", f"{took:.1f} s after the workers; /api without a key -> 401")
    assert health.status_code == 200 and page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert refused.status_code == 401


async def test_each_service_logs_in_to_redis_as_its_own_user(stack: Stack) -> None:
    """The workers are connected as `worker`, the API as `producer`, nobody as `default` (off); the producer's
    and the worker's credentials are refused what their roles may not do."""
    containers = await three_workers(stack)
    await stack.wait_health("api", 1)
    (api,) = await stack.containers("api")
    admin = redis.asyncio.Redis.from_url(await stack.redis_url("admin"), decode_responses=True)
    producer = redis.asyncio.Redis.from_url(await stack.redis_url("producer"))
    worker = redis.asyncio.Redis.from_url(await stack.redis_url("worker"))
    anonymous = redis.asyncio.Redis(host=address((await stack.containers("redis"))[0]))
    try:
        # A connection shows as "default" until its AUTH (worker --check opens one every 3 s): "default"
        # is off, so such a connection can do nothing; the anonymous PING below shows it.
        users: dict[str, set[str]] = {}
        for c in await admin.client_list():
            if c["user"] != "default":
                users.setdefault(c["addr"].rsplit(":", 1)[0], set()).add(c["user"])
        default = await admin.acl_getuser("default")
        with pytest.raises(redis.exceptions.AuthenticationError):
            await anonymous.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            await worker.config_get("maxmemory-policy")
        with pytest.raises(redis.exceptions.NoPermissionError):
            await producer.delete(Settings(_env_file=None, queue_name="default").keys.queue)  # type: ignore[call-arg]
        with pytest.raises(redis.exceptions.NoPermissionError):
            await producer.flushall()
    finally:
        for client in (admin, producer, worker, anonymous):
            await client.aclose()
    figure(
        "Redis users by container",
        f"workers {[sorted(users.get(address(c), ())) for c in containers]}, api {sorted(users.get(address(api), ()))}",
    )
    assert "off" in default["flags"], default
    assert all(users.get(address(c)) == {"worker"} for c in containers), users
    assert users.get(address(api)) == {"producer"}, users


async def test_producer_cli_answers_and_lists_three_workers(stack: Stack) -> None:
    """`run --rm producer ask ... --wait` exits 0 with an answer; `producer workers` lists all three."""
    await three_workers(stack)
    start = time.monotonic()
    asked = await stack.compose(
        "run", "--rm", "-T", "producer", "ask", "Will it rain in Paris tomorrow?", "--wait", "--json", check=False
    )
    took = time.monotonic() - start
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout[asked.stdout.index("{") :])
    assert answer["status"] == "ok" and answer["answer"]
    listed = await stack.compose("run", "--rm", "-T", "producer", "workers", "--json")
    records = json.loads(listed.stdout[listed.stdout.index("[") :])
    hosts = {c["Config"]["Hostname"] for c in await stack.containers("worker")}
    figure("run --rm producer ask --wait (incl. container start)", f"{took:.1f} s, status {answer['status']}")
    figure("producer workers", f"{len(records)} live workers")
    assert len(records) == 3 and {r["host"] for r in records} == hosts


async def test_sixty_jobs_spread_over_three_containers(stack: Stack, client: Client) -> None:
    """60 jobs: every one answered once, by workers in all three containers."""
    containers = await three_workers(stack)
    start = time.monotonic()
    job_ids = [await client.enqueue(f"question {i}", sources=SHORT, dedup=False) for i in range(60)]
    done = await results(client, job_ids, timeout=180)
    took = time.monotonic() - start
    per_host: dict[str, int] = {}
    for result in done.values():
        per_host[host_of(result)] = per_host.get(host_of(result), 0) + 1
    figure(
        "60 jobs over 3 containers", f"{took:.1f} s, per container {sorted(per_host.values())}, lost {60 - len(done)}"
    )
    assert len(done) == 60 and all(r.status in ("ok", "partial") for r in done.values())
    assert set(per_host) == {c["Config"]["Hostname"] for c in containers}


async def test_sigkilled_worker_container_job_finishes_elsewhere_and_restarts(stack: Stack, client: Client) -> None:
    """SIGKILL a worker container's main process mid-job: its jobs finish elsewhere within a lease; it heals."""
    containers = await three_workers(stack)
    victim = containers[0]
    victim_pid = victim["State"]["Pid"]  # the worker itself: the image runs it as the container's process
    (killed_worker,) = [w["id"] for w in await client.workers() if w["host"] == victim["Config"]["Hostname"]]
    job_ids = [await client.enqueue(f"long question {i}", sources=LONG, dedup=False) for i in range(9)]

    async def held_there() -> list[str]:
        """The jobs whose lease the victim holds: taken, not finished (the finish clears the holder)."""
        holders = await client.redis.hmget(client.keys.jobs, [field(j, Field.HOLDER) for j in job_ids])
        return [j for j, holder in zip(job_ids, holders, strict=True) if holder == killed_worker.encode()]

    # Stop the victim (SIGSTOP) as soon as it holds a job: stopped, it can finish nothing more, so the
    # jobs it holds then are exactly what the kill takes down. Should it have finished them all in
    # between, it goes on (SIGCONT) and is given one more job.
    victims_jobs: list[str] = []
    give_up = time.monotonic() + 60
    while not victims_jobs:
        assert time.monotonic() < give_up, "the victim never held an unfinished job"
        if not await held_there():
            await asyncio.sleep(0.02)
            continue
        os.kill(victim_pid, signal.SIGSTOP)
        victims_jobs = await held_there()
        if not victims_jobs:
            os.kill(victim_pid, signal.SIGCONT)
            job_ids.append(await client.enqueue(f"long question {len(job_ids)}", sources=LONG, dedup=False))
    os.kill(victim_pid, signal.SIGKILL)  # from the host: Docker sees its main process die
    killed_at = datetime.now(UTC)
    killed = time.monotonic()

    done = await results(client, job_ids, timeout=120)
    retried = [done[j] for j in victims_jobs]
    assert all(r.status in ("ok", "partial") and r.job_try == 2 for r in retried), [
        (r.status, r.job_try) for r in retried
    ]
    # Elsewhere: not the killed process. The restart policy may bring the victim's container back
    # fast enough for its new worker (a new process, a new id) to be the one that takes a job again.
    assert all(r.worker_id != killed_worker for r in retried)
    by_restarted = sum(host_of(r) == victim["Config"]["Hostname"] for r in retried)
    restart_after = max((r.timing.started_at - killed_at).total_seconds() for r in retried if r.timing)
    finished_after = max((r.timing.finished_at - killed_at).total_seconds() for r in retried if r.timing)

    await stack.wait_health("worker", 3, timeout=120)
    (again,) = [c for c in await stack.containers("worker") if c["Id"] == victim["Id"]]
    figure(
        "SIGKILLed worker's jobs",
        f"{len(retried)} re-run (try 2) elsewhere ({by_restarted} by the restarted container), started "
        f"{restart_after:.1f} s "
        f"and finished {finished_after:.1f} s after the kill (lease {LEASE_S:g} s)",
    )
    figure(
        "killed container healthy again (restart policy)",
        f"{time.monotonic() - killed:.1f} s after the kill, "
        f"restart count {again['RestartCount']}, exit code {again['State']['ExitCode']}",
    )
    assert restart_after <= LEASE_S + 1.0
    assert again["RestartCount"] >= 1
    assert len(done) == len(job_ids)


async def test_redis_killed_and_started_keeps_every_queued_job(stack: Stack, client: Client) -> None:
    """100 jobs queued, `kill` then `start` Redis: the AOF on the named volume keeps them, workers ride through."""
    containers = await three_workers(stack)
    before = {c["Id"]: (c["State"]["Pid"], c["RestartCount"]) for c in containers}
    job_ids = [await client.enqueue(f"durable question {i}", sources=SHORT, dedup=False) for i in range(100)]
    queued = int(await client.redis.zcard(client.keys.queue))
    await asyncio.sleep(1.2)  # appendfsync everysec: what was acknowledged a second ago is on disk
    queued_at_kill = int(await client.redis.zcard(client.keys.queue))
    await stack.compose("kill", "redis")
    killed = time.monotonic()
    await asyncio.sleep(2.0)
    await stack.compose("start", "redis")
    await stack.wait_health("redis", 1, timeout=60)
    down_s = time.monotonic() - killed

    async with Client(client.settings.model_copy(update={"redis_url": await stack.redis_url()})) as after:
        done = await results(after, job_ids, timeout=180)
    lost = len(job_ids) - len(done)
    now = {c["Id"]: (c["State"]["Pid"], c["RestartCount"]) for c in await stack.containers("worker")}
    figure(
        "Redis kill + start",
        f"{queued} queued after enqueue, {queued_at_kill} still queued at the kill, "
        f"Redis down {down_s:.1f} s, {len(done)}/100 answered, {lost} lost, worker restarts "
        f"{sum(now[i][1] - before[i][1] for i in before)}",
    )
    assert lost == 0 and all(r.status in ("ok", "partial") for r in done.values())
    assert now == before, "a worker restarted instead of riding through"


async def test_check_marks_workers_unhealthy_while_redis_is_unreachable(stack: Stack) -> None:
    """Redis stopped: every worker's `worker --check` fails and Docker marks it unhealthy; healthy again after."""
    await three_workers(stack)
    await stack.compose("stop", "redis")
    stopped = time.monotonic()
    try:
        unhealthy = await stack.wait_health("worker", 3, status="unhealthy", timeout=25)
        (worker,) = (await stack.containers("worker"))[:1]
        last = worker["State"]["Health"]["Log"][-1]
    finally:
        await stack.compose("start", "redis")
    started = time.monotonic()
    healthy = await stack.wait_health("worker", 3, timeout=90)
    figure(
        "worker --check with Redis stopped",
        f"all 3 unhealthy {unhealthy:.1f} s after the stop "
        f"(check exit {last['ExitCode']}), healthy again {time.monotonic() - started:.1f} s after the start",
    )
    assert last["ExitCode"] == 5 and "cannot reach Redis" in last["Output"]
    assert started - stopped < 30, "longer than AGENTQ_REDIS_OUTAGE_S: the workers would have exited"
    assert healthy < 90


async def test_scale_down_while_jobs_run_ends_every_job_with_one_result(stack: Stack, client: Client) -> None:
    """`up -d --scale worker=1` mid-run: stopped workers finish (grace) or re-queue; each job ends with one result."""
    containers = await three_workers(stack)
    logs = {c["Config"]["Hostname"]: stack.follow_logs(c) for c in containers}
    job_ids = [await client.enqueue(f"scale question {i}", sources=LONG, dedup=False) for i in range(24)]
    give_up, holders = time.monotonic() + 60, set()
    while len(holders) < 3:  # every worker has taken a job (its id has held a job's lease)
        assert time.monotonic() < give_up, "not every worker took a job"
        holders |= {
            h for h in await client.redis.hmget(client.keys.jobs, [field(j, Field.HOLDER) for j in job_ids]) if h
        }
        await asyncio.sleep(0.02)
    start = time.monotonic()
    await stack.compose("up", "-d", "--scale", "worker=1", timeout=120)
    scaled_s = time.monotonic() - start
    left = await stack.containers("worker")
    done = await results(client, job_ids, timeout=240)
    stack.stop_following()

    text = {host: path.read_text(errors="replace") for host, path in logs.items()}
    finished_runs = {j: sum(len(re.findall(rf"job {j} \w+ in [\d.]+s", t)) for t in text.values()) for j in job_ids}
    discarded = sum(t.count("already had a result") for t in text.values())
    gone = [h for h in logs if h not in {c["Config"]["Hostname"] for c in left}]
    by_gone = sum(host_of(r) in gone for r in done.values())
    figure(
        "up -d --scale worker=1 mid-run",
        f"returned in {scaled_s:.1f} s (stop_grace_period 30 s), "
        f"{by_gone} jobs finished by the 2 stopped workers, {sum(r.job_try != 1 for r in done.values())} "
        f"re-queued and run again, {len(done)}/24 with a result, {discarded} late results discarded",
    )
    assert len(left) == 1 and len(done) == 24
    assert all(r.status in ("ok", "partial") for r in done.values())
    assert scaled_s < 30
    # Exactly one result each: the stored one; any second finished run was refused by SET NX.
    assert sum(finished_runs.values()) - discarded == 24


async def test_image_is_non_root_without_compiler_or_pip(stack: Stack) -> None:
    """The product image runs as uid 10001, has no C compiler and no pip in /opt/venv; its size is printed."""
    probe = (
        "id -u; for c in cc gcc g++ c++ clang tcc; do command -v $c; done; ls /opt/venv/bin/pip* 2>/dev/null; "
        "/opt/venv/bin/python -m pip --version >/dev/null 2>&1 && echo has-pip; true"
    )
    out = await stack.docker("run", "--rm", "--network", "none", "--entrypoint", "sh", stack.image, "-c", probe)
    size = int(await stack.docker("image", "inspect", "-f", "{{.Size}}", stack.image))
    base = int(await stack.docker("image", "inspect", "-f", "{{.Size}}", "python:3.14-slim-bookworm"))
    figure(
        "product image",
        f"{size / 1e6:.0f} MB ({(size - base) / 1e6:.0f} MB above the python:3.14-slim "
        f"stand-in base of {base / 1e6:.0f} MB), uid {out.split()[0]}",
    )
    assert out.split() == ["10001"], out


SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")


async def sentinels_know_the_replica(stack: Stack, timeout: float = 60) -> float:
    """Wait until every sentinel lists the replica, in sync (flags "slave" only); how long that took.

    A sentinel learns of a replica from the primary's INFO, which it reads every 10 s, and a healthy
    sentinel (its quorum check) may not have read it yet. A primary lost before then leaves no
    replica to promote: it stays lost ("No master found")."""
    start = time.monotonic()
    while True:
        flags = []
        for service in SENTINELS:
            (sentinel,) = await stack.containers(service)
            out = await stack.docker(
                "exec", sentinel["Id"], "redis-cli", "-p", "26379", "sentinel", "replicas", "agentq", check=False
            )
            words = out.split()
            flags.append([words[i + 1] for i, word in enumerate(words[:-1]) if word == "flags"])
        if all(f == ["slave"] for f in flags):
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, f"the sentinels' replicas of agentq: {flags}"
        await asyncio.sleep(0.5)


async def test_sentinel_variant_fails_over_and_keeps_answering(stack: Stack) -> None:
    """deploy/sentinel's compose variant: kill the primary; the sentinels promote the replica, workers follow."""
    stack.use(ROOT / "deploy" / "sentinel" / "docker-compose.sentinel.yml")
    await stack.compose("up", "-d", "--scale", "worker=2")
    await stack.wait_health("worker", 2, timeout=180)
    for service in (*SENTINELS, "redis-replica"):
        await stack.wait_health(service, 1, timeout=120)
    learnt = await sentinels_know_the_replica(stack)
    workers = {c["Id"]: c["RestartCount"] for c in await stack.containers("worker")}
    # stop -t 0: SIGKILL, and Docker's restart policy leaves a container stopped by hand alone (after
    # a plain kill it restarts it within a second, too soon for the sentinels to fail over).
    await stack.compose("stop", "-t", "0", "redis")
    killed = time.monotonic()
    while True:  # the producer CLI, in a fresh container each time, as a user would retry
        asked = await stack.compose(
            "run",
            "--rm",
            "--no-deps",  # else compose starts the stopped primary again for the producer
            "-T",
            "producer",
            "ask",
            "after the failover?",
            "--wait",
            "--timeout",
            "60",
            "--json",
            check=False,
        )
        if asked.returncode == 0:
            break
        assert asked.returncode == 5, asked.stderr
        if time.monotonic() - killed > 120:
            logs = await stack.compose("logs", "--no-color", "--tail", "30", *SENTINELS, "redis-replica", check=False)
            raise AssertionError(f"{asked.stderr}\n{logs.stdout}")
    answered = time.monotonic() - killed
    answer = json.loads(asked.stdout[asked.stdout.index("{") :])
    replica = (await stack.containers("redis-replica"))[0]
    role = await stack.docker("exec", replica["Id"], "redis-cli", "--user", "admin", "role")
    after = {c["Id"]: c["RestartCount"] for c in await stack.containers("worker")}
    figure(
        "Sentinel compose variant, primary killed",
        f"producer ask answered {answered:.1f} s after the kill "
        f"(down-after 5 s), by {answer['worker_id']}; worker restarts {sum(after.values()) - sum(workers.values())}; "
        f"the sentinels knew the replica {learnt:.1f} s after their health checks passed",
    )
    assert answer["status"] in ("ok", "partial")
    assert role.split()[0] == "master", role
    await stack.compose("start", "redis")
