"""Wake-up on demand, end to end: an idle worker sends Redis almost nothing, an enqueued job rings it
awake at once, and work that rang no bell is still found by the fallback poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from subprocess import Popen

import pytest
import redis

from producer.client import Client
from tests.helpers import enqueue_raw, eventually

pytestmark = pytest.mark.e2e
StartWorkers = Callable[..., list[Popen[bytes]]]


async def blocked_on_the_bell(url: str, count: int) -> None:
    """Until ``count`` connections block on the doorbell (idle workers waiting in ``BZPOPMIN``)."""

    def waiting() -> int:
        with redis.Redis.from_url(url) as r:
            return sum(c.get("cmd") == "bzpopmin" and "b" in c.get("flags", "") for c in r.client_list())

    async def enough() -> bool:
        return await asyncio.to_thread(waiting) >= count

    await eventually(enough, timeout=60, every=0.05)


def commands_since_reset(url: str) -> int:
    """Commands Redis has run since CONFIG RESETSTAT, INFO and CONFIG left out."""
    with redis.Redis.from_url(url) as r:
        stats = r.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config|resetstat"))


async def test_idle_workers_cost_redis_almost_nothing_and_wake_at_once(
    client: Client, redis_url: str, start_worker_processes: StartWorkers
) -> None:
    """Two idle workers for 6 s send fewer than 2 commands a second each (arq's 10 ms poll: ~100); a job
    enqueued then starts well within a second, not at the next poll (poll_delay_s is 5 s)."""
    start_worker_processes(2, AGENTQ_HEALTH_CHECK_INTERVAL_S="10")
    await blocked_on_the_bell(redis_url, 2)  # both idle, past their start-up
    with redis.Redis.from_url(redis_url) as r:
        r.config_resetstat()
    await asyncio.sleep(6.0)
    per_worker_per_s = commands_since_reset(redis_url) / 6.0 / 2
    t0 = time.time()
    result = await client.ask(client.validate("wake up", sources=["weather"]), timeout=30)
    assert result.timing is not None
    woke_in = result.timing.started_at.timestamp() - t0
    assert per_worker_per_s < 2.0, per_worker_per_s
    assert result.status == "ok" and woke_in < 1.0, woke_in  # the bell, not the 5 s poll


async def test_work_that_rang_no_bell_is_found_by_the_fallback_poll(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """A job written as plain arq writes it (no doorbell) is still taken, within poll_delay_s."""
    start_worker_processes(1, AGENTQ_POLL_DELAY_S="0.5")
    await blocked_on_the_bell(client.settings.redis_url, 1)  # the worker waits on its bell
    job_id = await enqueue_raw(client, {"question": "nobody rang", "sources": ["weather"]}, ring=False)
    result = await client.result(job_id, timeout=30)
    assert result.status == "ok" and result.timing is not None and result.timing.queue_wait_s is not None
    assert result.timing.queue_wait_s < 0.5 + 0.5  # the poll delay, plus room for a slow machine


async def test_a_burst_wakes_every_idle_worker(client: Client, start_worker_processes: StartWorkers) -> None:
    """One ring per burst, yet both idle workers take part: the first to wake rings again for the next."""
    start_worker_processes(2, AGENTQ_MAX_JOBS="1", AGENTQ_SOURCE_LATENCY_S='{"weather": 10}')
    await blocked_on_the_bell(client.settings.redis_url, 2)
    requests = [client.validate(f"burst {i}", sources=["weather"]) for i in range(6)]
    results = await asyncio.gather(*(client.ask(r, timeout=60) for r in requests))
    assert {r.status for r in results} == {"ok"}
    assert len({r.worker_id for r in results}) == 2
