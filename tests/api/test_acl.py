"""Least privilege in Redis, on a real redis-server whose only users are those `producer acl` prints:
the producer (here the client and the API), the worker and admin. Each role does its work, and the
producer cannot forge a result, delete the queue or run an admin command; nor can the worker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import Popen

import httpx
import pytest
import redis
import redis.asyncio
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from agentq.protocol import scripts
from agentq.protocol.acl import ROLES
from agentq_tools.embedded import EmbeddedRedis
from producer.client import Client
from tests.api.conftest import Api

pytestmark = pytest.mark.e2e

PRODUCER = str(Path(sys.executable).with_name("producer"))
StartWorkers = Callable[..., list[Popen[bytes]]]
StartApi = Callable[..., Api]
#: Commands no role but admin may run.
ADMIN_ONLY = [("CONFIG", "GET", "maxmemory"), ("FLUSHALL",), ("KEYS", "*"), ("DEBUG", "SLEEP", "0")]


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedRedis, dict[str, str]]]:
    """A redis-server started on an aclfile made by `producer acl`, one user per role, the default user
    off; and each role's URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_")}
    lines, passwords = [], {}
    for role in ROLES:
        extra = ["--default-off"] if role == "producer" else []
        made = subprocess.run([PRODUCER, "acl", role, *extra], env=env, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        lines += made.stdout.splitlines()
        passwords[role] = made.stderr.split()[-1]
    aclfile = tmp_path_factory.mktemp("acl") / "users.acl"
    aclfile.write_text("\n".join(lines) + "\n")
    # DEBUG is let through by the server's own setting, so that only the ACL can refuse it. An AOF, to
    # restart the server on it, fsynced at each write: a kill loses nothing that was answered.
    options = ("--enable-debug-command", "yes", "--appendfsync", "always")
    server = EmbeddedRedis(
        aclfile=aclfile, username="admin", password=passwords["admin"], options=options, appendonly=True
    )
    with server:
        yield server, {role: f"redis://{role}:{passwords[role]}@127.0.0.1:{server.port}/0" for role in ROLES}


@pytest.fixture
def redis_url(acl_server: tuple[EmbeddedRedis, dict[str, str]]) -> str:
    """The producer's URL (the client's and the API's, in conftest's fixtures), on a Redis emptied by admin."""
    server, urls = acl_server
    admin = redis.Redis.from_url(server.url)
    admin.flushall()
    admin.close()
    return urls["producer"]


async def lasting_keys(admin: redis.asyncio.Redis) -> set[bytes]:
    """Every key that lives a minute or more (results, the queue, indexes; not rate-limit windows)."""
    found = [k async for k in admin.scan_iter(count=1000)]
    ttls = [await admin.ttl(k) for k in found]
    return {k for k, ttl in zip(found, ttls, strict=True) if ttl == -1 or ttl > 60}


async def test_each_redis_user_does_its_roles_work_and_nothing_more(
    acl_server: tuple[EmbeddedRedis, dict[str, str]],
    client: Client,
    start_worker_processes: StartWorkers,
    start_api: StartApi,
) -> None:
    """As the producer: enqueue, cancel a waiting job (its result left to a worker: the producer may not
    write one), schedules, listings, the queue, the workers, and the API's routes and SSE; as the worker:
    run jobs. Then each forbidden command is refused with NOPERM, a client without a user is refused, and
    the server, killed and restarted on its AOF, keeps every key."""
    server, urls = acl_server
    keys = client.keys
    waiting = await client.enqueue("Is the bridge open?", sources=["weather"])
    assert await client.cancel(waiting) == "cancelled"
    assert client.queue.writes_results is False and await client.fetch_result(waiting) is None
    assert (await client.queue_depth()).oldest_queued_s is None  # the marked job is not a wait of decades
    held = await client.enqueue("Is the tunnel open?", sources=["weather"])
    await client.redis.hset(keys.jobs, f"{held}:w", "a-worker")  # as if a worker held it
    assert await client.cancel(held) == "cancelling"  # the script publishes on the cancel channel
    await client.redis.hdel(keys.jobs, f"{held}:w")
    await client.schedule("hourly", "Any news?", every_s=3600, sources=["news"])
    assert [name for name, _, _ in await client.schedules()] == ["hourly"]
    await client.unschedule("hourly")

    start_worker_processes(1, AGENTQ_REDIS_URL=urls["worker"])
    cancelled = await client.result(waiting, timeout=30)
    assert (cancelled.status, cancelled.errors) == ("cancelled", ["cancelled before it started"])
    answered = await client.ask(client.validate("Will it rain?", sources=["weather", "news"]), timeout=30)
    assert answered.status == "ok" and [s.status for s in answered.sources] == ["ok", "ok"]
    assert {waiting, answered.job_id} <= {j.job_id for j in await client.jobs()}
    await client.result(held, timeout=30)
    admin = redis.asyncio.Redis.from_url(server.url)
    await admin.zadd(keys.by_status("cancelled"), {"gone-long-ago": 1})  # an entry whose result expired
    assert sorted(j.job_id for j in await client.jobs(status="cancelled")) == sorted([waiting, held])
    assert sum((await client.queue_depth()).queued.values()) == 0 and len(await client.workers()) == 1

    api = start_api()
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers(), timeout=30) as http:
        created = await http.post("/api/jobs", json={"question": "Snow?", "sources": ["news"]})
        assert created.status_code == 201, created.text
        job_id = created.json()["job_id"]
        async with http.stream("GET", f"/api/jobs/{job_id}/events") as stream:
            events = [line.removeprefix("event: ") async for line in stream.aiter_lines() if line.startswith("event: ")]
        assert events[-1] == "result" and "progress" in events and "error" not in events
        assert (await http.get(f"/api/jobs/{job_id}/result")).json()["status"] == "ok"
        assert (await http.get("/api/queue")).status_code == 200
        assert (await http.get("/health")).json()["redis"] is True
    assert "memory" not in api.log.read_text()  # the rate limit was counted in Redis, as the producer

    producer = redis.Redis.from_url(urls["producer"])
    worker = redis.Redis.from_url(urls["worker"])
    try:
        forged = [("SET", keys.result(answered.job_id), "{}"), ("SET", keys.final(job_id), "{}")]
        forged += [("PUBLISH", keys.done_channel(held), "{}"), ("ZADD", keys.by_status("failed"), 1, held)]
        producer.publish(keys.cancel_channel, "nobody")  # the one channel it may publish on (else NOPERM)
        for command in [*forged, ("DEL", keys.queue), ("UNLINK", keys.jobs), *ADMIN_ONLY]:
            with pytest.raises(NoPermissionError):
                producer.execute_command(*command)
        for command in ADMIN_ONLY:
            with pytest.raises(NoPermissionError):
                worker.execute_command(*command)
        for user in (producer, worker):  # a Cluster client's discovery: allowed (this server has no cluster)
            with pytest.raises(ResponseError, match="cluster support disabled"):
                user.execute_command("CLUSTER", "SLOTS")
        # The worker's scripts run whole: the breaker's (which asks Redis the TIME) among them.
        async with redis.asyncio.Redis.from_url(urls["worker"]) as as_worker:
            breaker = scripts.register(as_worker, "breaker")
            assert await breaker(keys=[keys.breaker("news")], args=["failure", 3, 10, 5]) is not None
        assert (await client.result(answered.job_id, timeout=0)).status == "ok"  # unforged
        assert list(producer.scan_iter(match=f"{keys.prefix}:api-rate*"))  # the API's counts, written as the producer
        with pytest.raises((AuthenticationError, ResponseError)):  # the default user is off
            redis.Redis(port=server.port).ping()
        assert await admin.config_get("maxmemory") and await admin.execute_command("DEBUG", "SLEEP", "0")
        # Killed and restarted on its AOF, it keeps every script's writes (Redis 7.0 replays them as
        # the default user, whose rights `producer acl --default-off` therefore leaves whole).
        before = await lasting_keys(admin)
        await admin.aclose()
        await asyncio.to_thread(lambda: (server.kill(), server.start()))
        assert (await client.result(answered.job_id, timeout=10)).status == "ok"
        assert (await client.result(waiting, timeout=10)).status == "cancelled"
        again = redis.asyncio.Redis.from_url(server.url)
        assert before - await lasting_keys(again) == set(), "keys lost in the restart"
        await again.aclose()
    finally:
        producer.close()
        worker.close()
