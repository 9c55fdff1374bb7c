"""Benchmark 7: what idle workers cost Redis, and how fast an idle worker wakes.

For 1, 4 and 16 idle workers (each with a pool of one, the default heartbeat, gauge and health
cadences): the commands Redis runs per second per worker, from ``INFO commandstats`` over
``idle_s``; then zero-work jobs one at a time (``Client.ask``), each timed from the caller's clock
before enqueueing to the worker's ``started_at``. Beside them, arq itself with a 10 ms poll (the
side environment's, ``bench.peers``), which is what the workers did before the doorbell. Then the
same for 4 workers of a queue of 6 shards (``AGENTQ_QUEUE_SHARDS``): each waits on the 6 bells at
once, and the commands are counted per shard it watches; the jobs' questions fall on every shard.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import redis

from agentq.settings import Settings
from agentq_tools.bench import redisstats
from agentq_tools.bench.cluster import Cluster, client_settings
from agentq_tools.bench.config import BenchConfig
from agentq_tools.bench.peers import PEER_SYSTEMS, PeerWorkers, peer_env
from agentq_tools.bench.queue import zero_work
from agentq_tools.bench.report import Figure, spread
from producer.client import Client

#: Targets (issue 12).
MAX_IDLE_COMMANDS_PER_S = 2.0
MAX_WAKE_P50_MS = 5.0
MAX_WAKE_P99_MS = 20.0
#: Past the workers' start-up (their first beats and health records) before counting.
SETTLE_S = 3.0
ARQ_IDLE_S = 5.0


async def _wake(settings: Settings, jobs: int) -> dict[str, float]:
    delays = []
    async with Client(settings) as client:
        requests = [zero_work(client, f"wake up {i}") for i in range(jobs + 3)]
        for i, request in enumerate(requests):
            t_enqueue = time.time()
            result = await client.ask(request, timeout=30)
            if i >= 3 and result.timing is not None:  # the first ones warm up connections and scripts
                delays.append(1000 * (result.timing.started_at.timestamp() - t_enqueue))
            await asyncio.sleep(0.01)  # let the workers go back to sleep
    return spread(delays)


def _idle_rate(redis_url: str, seconds: float, workers: int) -> tuple[float, dict[str, float]]:
    redisstats.reset(redis_url)
    time.sleep(seconds)
    commands = redisstats.commands(redis_url)
    per_worker = {name: n / seconds / workers for name, n in commands.most_common()}
    return sum(commands.values()) / seconds / workers, per_worker


def run(cfg: BenchConfig, redis_url: str, log_dir: Path, venv: Path | None) -> tuple[dict[str, Any], list[Figure]]:
    """Idle load and wake-up per worker count, ours and arq with a 10 ms poll."""
    settings = client_settings(redis_url)
    rows = []
    arq_10ms = next(s for s in PEER_SYSTEMS if s.key == "arq_10ms")
    sizes = [(workers, 1) for workers in cfg.idle_worker_counts] + [(cfg.idle_sharded_workers, cfg.idle_shards)]
    for workers, shards in sizes:
        _flush(redis_url)
        fields = {"pool_size": 1, "time_scale": 1.0, "inference_units": 1, "queue_shards": shards}
        with Cluster(redis_url, log_dir, **fields) as cluster:
            cluster.add(workers, timeout=300)
            time.sleep(SETTLE_S)
            rate, by_command = _idle_rate(redis_url, cfg.idle_s, workers * shards)
            wake = asyncio.run(_wake(client_settings(redis_url, queue_shards=shards), cfg.wake_jobs))
        row: dict[str, Any] = {"workers": workers, "commands_per_s_per_worker": rate, "by_command": by_command}
        row |= {"shards": shards, "enqueue_to_start_ms": wake}
        if shards > 1:
            rows.append(row)  # no arq beside it: arq has no shards
            continue
        if venv is not None:
            _flush(redis_url)
            peers = PeerWorkers(arq_10ms, venv, peer_env(redis_url, arq_10ms, 0, 1, 1.0), log_dir)
            try:
                peers.start(workers, redis_url)
                time.sleep(1.0)
                row["arq_10ms_commands_per_s_per_worker"] = _idle_rate(redis_url, ARQ_IDLE_S, workers)[0]
            finally:
                peers.stop()
        rows.append(row)
    _flush(redis_url)
    result = {"idle_s": cfg.idle_s, "poll_delay_s": settings.poll_delay_s, "rows": rows}
    return result, _figures(result)


def _flush(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.flushall()


def _figures(r: dict[str, Any]) -> list[Figure]:
    figs = []
    for row in r["rows"]:
        n, wake = row["workers"], row["enqueue_to_start_ms"]
        k = row.get("shards", 1)
        of = f" of {k} shards" if k > 1 else ""
        per = " per shard" if k > 1 else ""
        top = ", ".join(f"{name} {v:.2f}" for name, v in list(row["by_command"].items())[:5])
        arq = row.get("arq_10ms_commands_per_s_per_worker")
        figs += [
            Figure(
                "redis",
                f"{n} idle worker(s){of}: Redis commands/s per worker{per}",
                row["commands_per_s_per_worker"],
                "/s",
                f"≤ {MAX_IDLE_COMMANDS_PER_S:g}" + (f" (arq, 10 ms poll: {arq:.0f})" if arq is not None else ""),
                row["commands_per_s_per_worker"] <= MAX_IDLE_COMMANDS_PER_S,
                f"by command: {top}",
            ),
            Figure(
                "redis",
                f"{n} idle worker(s){of}: enqueue→start p50",
                wake["p50"],
                "ms",
                f"≤ {MAX_WAKE_P50_MS:g} ms",
                wake["p50"] <= MAX_WAKE_P50_MS,
                "the enqueue script, the ring, the claim script, the start of the job's task, on 2 shared cores",
            ),
            Figure(
                "redis",
                f"{n} idle worker(s){of}: enqueue→start p99",
                wake["p99"],
                "ms",
                f"≤ {MAX_WAKE_P99_MS:g} ms",
                wake["p99"] <= MAX_WAKE_P99_MS,
                "scheduling noise: the woken worker's process waits for a core (other work shares them)",
            ),
        ]
    return figs
