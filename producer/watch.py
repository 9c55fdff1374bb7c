"""Waiting for a result, with a live bar per source while a person watches."""

from __future__ import annotations

import time

from rich.console import Console

from agentq.contract import JobResult
from producer.client import Client
from producer.display import LiveProgress


async def wait_with_progress(
    client: Client, job_id: str, timeout: float | None, live: bool, console: Console | None = None
) -> JobResult:
    """Wait for the result; when ``live``, draw a bar per source on ``console`` (stderr) meanwhile.

    The bars follow the job's progress log, which ends with the event the worker appends once the
    result is stored, so the wait ends the moment the job does, not at the next poll.
    """
    if not live:
        return await client.result(job_id, timeout=timeout)
    started = time.monotonic()
    with LiveProgress(console or Console(stderr=True), job_id) as bars:
        async for event in client.progress(job_id, timeout=timeout):
            bars.update(event)
    left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
    return await client.result(job_id, timeout=left)
