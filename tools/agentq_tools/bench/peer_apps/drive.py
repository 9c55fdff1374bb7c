"""``python -m agentq_tools.bench.peer_apps.drive SYSTEM MODE N``: one run against a peer's workers.

``noop N``: enqueue N no-op jobs (``ENQUEUE_CONCURRENCY`` at a time), wait until none is unfinished.
``reference N``: N reference queries one after another, each timed from its enqueue to its end.
Prints one line of JSON: the wall time (or the latencies) and how many polls the wait took (the
caller subtracts those commands from Redis's count).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from typing import Any

from agentq_tools.bench.peer_apps.common import ENQUEUE_CONCURRENCY

#: How often the driver counts unfinished jobs.
POLL_S = 0.005


async def wait_done(driver: Any, enqueued: int, polls: list[int]) -> float:
    while await driver.unfinished(enqueued) > 0:
        polls[0] += 1
        await asyncio.sleep(POLL_S)
    polls[0] += 1
    return time.time()


async def noop(driver: Any, n: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(ENQUEUE_CONCURRENCY)

    async def one() -> None:
        async with gate:
            await driver.enqueue("noop")

    polls = [0]
    started = time.time()
    await asyncio.gather(*(one() for _ in range(n)))
    finished = await wait_done(driver, n, polls)
    return {"jobs": n, "wall_s": finished - started, "polls": polls[0]}


async def reference(driver: Any, n: int) -> dict[str, Any]:
    latencies, polls = [], [0]
    for i in range(n):
        started = time.time()
        await driver.enqueue("reference_query")
        latencies.append(await wait_done(driver, i + 1, polls) - started)
    return {"latencies_s": latencies, "polls": polls[0]}


async def main(system: str, mode: str, n: int) -> None:
    app = importlib.import_module(f"agentq_tools.bench.peer_apps.{system}_app")
    async with app.Driver() as driver:
        result = await (noop if mode == "noop" else reference)(driver, n)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
