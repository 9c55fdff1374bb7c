"""Redis behind Sentinel: the primary is killed under a steady load; what is lost, and what WAIT costs.

A primary, one or two replicas and three sentinels, real processes on loopback ports
(``agentq_tools.sentinel``). The first primary is 2.5 ms away each way from everyone (its
replicas, the sentinels, the clients: a primary in another zone, behind the delaying proxy), and
killing it kills that link with it: what the link had not delivered is gone.
Two workers and the producer find the primary through the sentinels (AGENTQ_REDIS_SENTINELS).
A supervisor would restart the old primary: it is started again 4 s after the kill and the
sentinels turn it into a replica of the new one.

Lost = a job whose enqueue returned (acknowledged) but that the new primary has never heard of.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from agentq.errors import RedisUnavailable, WaitTimeout
from agentq.protocol.keys import STATE_FIELDS
from agentq.settings import Settings
from agentq_tools.processes import start_workers, stop_workers, wait_for_heartbeats
from agentq_tools.sentinel import MASTER, SentinelCluster
from producer.client import Client

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

REPLICATION_DELAY_MS = 2.5
LOAD_BEFORE_KILL_S = 2.0
RESTART_OLD_PRIMARY_AFTER_S = 4.0
#: Enqueues per second: the jobs acknowledged within the replication lag are the ones at risk.
RATE = 500
CONCURRENCY = 64
#: (name, AGENTQ_REDIS_WAIT_REPLICAS, replicas)
MODES = (("async, 1 replica", 0, 1), ("WAIT 1, 1 replica", 1, 1), ("WAIT 1, 2 replicas", 1, 2))


def figure(name: str, value: str) -> None:
    print(f"\nfigure: {name}: {value}")


def failover_under_load(base: Path, worker_env: dict[str, str], wait_replicas: int, replicas: int) -> dict[str, Any]:
    """Run the scenario once; the measurements."""
    base.mkdir()
    with SentinelCluster(base, replicas=replicas, replication_delay_ms=REPLICATION_DELAY_MS) as cluster:
        env = {
            **{k: v for k, v in worker_env.items() if not k.startswith("AGENTQ_REDIS")},
            "AGENTQ_REDIS_URL": "redis://localhost/0",  # the host is the sentinels' to say
            "AGENTQ_REDIS_SENTINELS": json.dumps(cluster.sentinels),
            "AGENTQ_REDIS_SENTINEL_MASTER": MASTER,
            "AGENTQ_REDIS_WAIT_REPLICAS": str(wait_replicas),
            "AGENTQ_LEASE_S": "3",
        }
        procs = start_workers(2, env, base, args=["--verbose"])  # DEBUG: each job's start is in the log
        try:
            wait_for_heartbeats(f"redis://127.0.0.1:{cluster.primary_port}/0", procs)
            settings = Settings(
                redis_url=env["AGENTQ_REDIS_URL"],
                redis_sentinels=tuple(cluster.sentinels),
                redis_sentinel_master=MASTER,
                redis_wait_replicas=wait_replicas,
            )
            return asyncio.run(_measure(cluster, settings, procs))
        finally:
            stop_workers(procs)


async def _measure(cluster: SentinelCluster, settings: Settings, procs: list[Any]) -> dict[str, Any]:
    async with Client(settings) as client:
        # Steady state: jobs one at a time, end to end, and the enqueue alone.
        end_to_end, steady_enqueue = [], []
        for i in range(20):
            start = time.perf_counter()
            job_id = await client.enqueue(f"steady {i}", sources=["weather"], dedup=False)
            steady_enqueue.append(time.perf_counter() - start)
            await client.result(job_id, timeout=30)
            end_to_end.append(time.perf_counter() - start)

        # The load: RATE enqueues a second, each its own task (up to CONCURRENCY at once), as many
        # producers would send them; kill the primary after LOAD_BEFORE_KILL_S, go on until one
        # second after the first enqueue acknowledged after the kill.
        acked: list[tuple[str, float]] = []
        sent_after_kill: list[float] = []  # when each enqueue sent after the kill was acknowledged
        enqueue_s: list[float] = []
        refused: list[float] = []
        killed: float | None = None
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            async with slots:
                sent_at, t0 = time.monotonic(), time.perf_counter()
                try:
                    job_id = await client.enqueue(f"load {i}", sources=["weather"], dedup=False)
                except RedisUnavailable:  # includes NotReplicated: the caller knows, so it is no loss
                    refused.append(time.monotonic())
                    return
                acked.append((job_id, time.monotonic()))
                if killed is None:
                    enqueue_s.append(time.perf_counter() - t0)
                elif sent_at > killed:
                    sent_after_kill.append(time.monotonic())

        def first_ack_after_kill() -> float | None:
            """Service is back when an enqueue sent after the kill is acknowledged."""
            return min(sent_after_kill, default=None)

        tasks = []
        started = next_at = time.monotonic()
        restarted = False
        i = 0
        while (back := first_ack_after_kill()) is None or time.monotonic() < back + 1.0:
            next_at += 1 / RATE
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            now = time.monotonic()
            if killed is None and now - started >= LOAD_BEFORE_KILL_S:
                killed = cluster.kill_primary()
            if killed is not None and not restarted and now - killed >= RESTART_OLD_PRIMARY_AFTER_S:
                cluster.restart_old_primary()
                restarted = True
            if killed is not None and now - killed > 60:
                raise AssertionError("no service 60 s after the kill")
            i += 1
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        assert killed is not None and back is not None

        # Which acknowledged jobs does the new primary know (queued, running or answered)?
        new_primary = cluster.primary()
        with redis.Redis(port=new_primary) as r:
            pipe = r.pipeline(transaction=False)
            for job_id, _ in acked:
                pipe.hexists(settings.keys.jobs, job_id)  # its record: queued or running
                pipe.exists(settings.keys.result(job_id))  # answered
            replies = pipe.execute()
            known = [bool(record) or bool(result) for record, result in zip(replies[::2], replies[1::2], strict=True)]
        lost = [job_id for (job_id, t), n in zip(acked, known, strict=True) if not n]
        lost_at = sorted(round(t - killed, 3) for (job_id, t), n in zip(acked, known, strict=True) if not n)
        # At risk: acknowledged within one replication round trip before the kill.
        at_risk = sum(killed - 2 * REPLICATION_DELAY_MS / 1000 <= t < killed for _, t in acked)
        # The workers serve on after the failover (ahead of the backlog the load left).
        after, unconfirmed = [], 0
        for i in range(5):
            while True:  # as a careful caller does: with WAIT, asking again joins the same job (dedup)
                try:
                    after.append(await client.enqueue(f"after {i}", sources=["weather"], priority="high"))
                    break
                except RedisUnavailable:  # NotReplicated: the replica, just resynced, was slow to confirm
                    unconfirmed += 1
                    assert unconfirmed < 50, "the replica confirmed none of 50 enqueues"
                    await asyncio.sleep(0.2)
        answered = []
        for job_id in after:
            try:
                answered.append(await client.result(job_id, timeout=60))
            except WaitTimeout as exc:
                raise AssertionError(f"{exc}; {what_became_of(job_id, cluster, settings)}") from None
    return {
        "end_to_end_ms": statistics.median(end_to_end) * 1000,
        "enqueue_ms": statistics.median(steady_enqueue) * 1000,
        "enqueue_under_load_ms": statistics.median(enqueue_s) * 1000,
        "lost_acked_at_s": lost_at[:10],  # relative to the kill
        "failovers": (cluster.base / "sentinel-0.log").read_text().count("+switch-master"),
        "acked": len(acked),
        "acked_before_kill": sum(t < killed for _, t in acked),
        "refused": len(refused),
        "lost": len(lost),
        "at_risk": at_risk,
        "no_service_s": back - killed,
        "answered_after": sum(r.status == "ok" for r in answered),
        "after_unconfirmed": unconfirmed,
        "workers_alive": all(p.poll() is None for p in procs),
        "old_primary_port": cluster.primary_port,
        "new_primary_port": new_primary,
    }


def what_became_of(job_id: str, cluster: SentinelCluster, settings: Settings) -> str:
    """A job's state in the primary and every worker log line that names it, and the logs' last lines."""
    keys = settings.keys
    with redis.Redis(port=cluster.primary()) as r:
        state = r.hmget(keys.jobs, [f"{job_id}:{f}" for f in STATE_FIELDS])
        score, progress = r.zscore(keys.queue, job_id), r.xrange(keys.progress(job_id))
    lines = [f"state {dict(zip(STATE_FIELDS, state, strict=True))}, queue score {score}, progress {progress}"]
    for log in sorted(cluster.base.glob("worker-*.log")):
        text = log.read_text(errors="replace").splitlines()
        lines += [f"{log.name}: {line}" for line in text if job_id in line]
        lines += [f"{log.name} ends: {line}" for line in text[-25:]]
    return "\n".join(lines)


def test_failover_loses_acknowledged_jobs_unless_waited_for(tmp_path: Path, worker_env: dict[str, str]) -> None:
    """Kill the primary under load: asynchronous replication can lose acknowledged jobs; WAIT 1 with one
    replica loses none but stops writes until a replica is back; with two it keeps serving."""
    runs = {}
    for mode, wait, replicas in MODES:
        runs[mode] = failover_under_load(tmp_path / mode.replace(" ", "").replace(",", "-"), worker_env, wait, replicas)
        r = runs[mode]
        figure(
            f"Sentinel failover, replication {mode}",
            f"{r['no_service_s']:.1f} s without service (kill -> first enqueue sent after it acknowledged), "
            f"{r['lost']} of {r['acked']} acknowledged jobs lost ({r['acked_before_kill']} acknowledged before "
            f"the kill, {r['at_risk']} of them in its last {2 * REPLICATION_DELAY_MS:g} ms), {r['refused']} "
            f"enqueues refused with an error; {r['failovers']} failover(s); one enqueue alone p50 "
            f"{r['enqueue_ms']:.2f} ms (under the load {r['enqueue_under_load_ms']:.1f} ms), "
            f"one job end to end p50 {r['end_to_end_ms']:.1f} ms; the 5 jobs sent after it asked again "
            f"{r['after_unconfirmed']} times (WAIT unconfirmed)"
            + (f"; the lost were acknowledged at {r['lost_acked_at_s']} s from the kill" if r["lost"] else ""),
        )
    waited, plain = runs["WAIT 1, 1 replica"], runs["async, 1 replica"]
    figure(
        "cost of WAIT 1 (primary and replica 2.5 ms apart each way)",
        f"+{waited['enqueue_ms'] - plain['enqueue_ms']:.2f} ms per enqueue, "
        f"+{waited['end_to_end_ms'] - plain['end_to_end_ms']:.1f} ms per job end to end",
    )
    for r in runs.values():
        assert r["new_primary_port"] != r["old_primary_port"], "the sentinels promoted no one"
        assert r["workers_alive"] and r["answered_after"] == 5, r
        assert r["no_service_s"] < 30
    # With one replica, the replica that confirmed a write is the one promoted: nothing confirmed is
    # lost. With two, WAIT 1 needs either; Sentinel promotes the one it last saw furthest ahead, not
    # necessarily the one that confirmed the newest writes: those can be lost (reported, not asserted).
    assert waited["lost"] == 0
    # With a second replica, writes confirmed by one go on as soon as the failover is done.
    assert runs["WAIT 1, 2 replicas"]["no_service_s"] < waited["no_service_s"]
