"""What the producer host runs in the multi-host tests: Redis round trips, then jobs one at a time.

    python -m agentq_tools.netprobe --pings 200 --jobs 20 --kind zero

Connects with the settings from the environment (``AGENTQ_REDIS_URL`` ...), times ``--pings``
PINGs, then enqueues ``--jobs`` jobs one after the other through the real client, each waited
for before the next, and prints one JSON object: the median PING round trip in ms and every job's
latency (enqueue to result in hand) in seconds. ``--kind zero`` asks one source (the workers are
configured to answer it at once with one unit of work); ``reference`` asks the reference three.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

from agentq.settings import get_settings
from producer.client import Client

KINDS = {"zero": ["weather"], "reference": ["weather", "news", "knowledge_base"]}


async def probe(pings: int, jobs: int, kind: str) -> dict[str, object]:
    async with Client(get_settings()) as client:
        rtts = []
        for _ in range(pings):
            start = time.perf_counter()
            await client.redis.ping()
            rtts.append(time.perf_counter() - start)
        latencies, statuses = [], []
        for i in range(jobs):
            # A new question each time: the shared source cache must not answer it.
            question = f"probe {kind} {i} {uuid.uuid4().hex[:8]}"
            start = time.perf_counter()
            job_id = await client.enqueue(question, sources=KINDS[kind], dedup=False)
            result = await client.result(job_id, timeout=120)
            latencies.append(time.perf_counter() - start)
            statuses.append(result.status)
    return {
        "rtt_ms": statistics.median(rtts) * 1000 if rtts else None,
        "latencies_s": latencies,
        "statuses": statuses,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m agentq_tools.netprobe", description=__doc__.split("\n\n")[0])
    p.add_argument("--pings", type=int, default=200)
    p.add_argument("--jobs", type=int, default=0)
    p.add_argument("--kind", choices=sorted(KINDS), default="zero")
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(probe(args.pings, args.jobs, args.kind))))


if __name__ == "__main__":
    main()
