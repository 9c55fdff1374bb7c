"""``make demo``: the whole system on one machine, started and stopped in one command.

Starts a Redis on a free loopback port (unless ``REDIS_URL``/``AGENTQ_REDIS_URL`` names one) and
the mock upstream (``producer.upstream``, unless ``AGENTQ_UPSTREAM_URL`` names one) with the
reference latencies, starts worker processes with the documented ``worker`` command pointed at
both, sends the reference question to the three HTTP sources through the queue with the live
display, prints the result, and stops everything it started, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import cast

import redis
from rich.console import Console

from producer.client import Client
from producer.display import summary
from producer.embedded import EmbeddedRedis
from worker.contract import JobResult, Keys
from worker.executor import choose
from worker.settings import get_settings

REFERENCE_QUESTION = "Should I take an umbrella to the conference in Paris tomorrow, and what is the news about it?"
#: The reference workload's three sources, over real HTTP: the mock upstream's paths and latencies (s).
REFERENCE_HTTP = {
    "weather_api": ("weather", 2.0),
    "news_api": ("news", 1.5),
    "knowledge_base_api": ("knowledge_base", 3.0),
}
console = Console()


def worker_command() -> list[str]:
    """The documented way to start a worker, from the same environment as this Python."""
    script = Path(sys.executable).with_name("worker")
    return [str(script)] if script.exists() else [sys.executable, "-m", "worker"]


def start_workers(
    count: int, env: dict[str, str], log_dir: Path, command: list[str] | None = None, first: int = 0
) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` worker processes (``command``, default the ``worker`` command).

    Each logs to ``log_dir/worker-<n>.log``, numbered from ``first``.
    """
    procs = []
    for i in range(first, first + count):
        log = open(log_dir / f"worker-{i}.log", "wb")  # noqa: SIM115  (closed with the process)
        procs.append(
            subprocess.Popen(
                command or worker_command(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
        log.close()
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    """SIGTERM every worker, wait for it to shut its pool down, SIGKILL stragglers."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    give_up = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.1, give_up - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for_heartbeats(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 120.0) -> None:
    """Block until every process in ``procs`` has written its heartbeat (its pool is warm)."""
    pids = {p.pid for p in procs}
    pattern = Keys(get_settings().key_prefix).workers_pattern
    client = redis.Redis.from_url(url)
    give_up = time.monotonic() + timeout
    try:
        while True:
            values = [cast(bytes | None, client.get(k)) for k in client.scan_iter(match=pattern)]
            if pids <= {json.loads(v)["pid"] for v in values if v}:
                return
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a worker exited with code {dead[0].returncode} before it was ready")
            if time.monotonic() > give_up:
                raise RuntimeError(f"workers not ready after {timeout:g}s")
            time.sleep(0.05)
    finally:
        client.close()


async def ask_reference() -> JobResult:
    """Enqueue the reference question and wait for it with the live display."""
    from producer.cli import _wait_live

    async with Client(get_settings()) as client:
        job_id = await client.enqueue(REFERENCE_QUESTION, sources=list(REFERENCE_HTTP))
        console.print(f"question: {REFERENCE_QUESTION}\njob {job_id} queued", highlight=False)
        return await _wait_live(client, job_id, timeout=120, live=console.is_terminal)


def start_upstream(stack: contextlib.ExitStack, time_scale: float) -> str:
    """``AGENTQ_UPSTREAM_URL`` if set, else start the mock upstream with the reference latencies."""
    url = os.environ.get("AGENTQ_UPSTREAM_URL")
    if url:
        console.print(f"using the upstream at {url}", highlight=False)
        return url
    try:
        from producer.upstream import MockUpstream
    except ImportError as exc:  # starlette/uvicorn come with the `upstream` extra (part of `dev`)
        raise RuntimeError(
            f"the mock upstream needs the upstream extra: pip install 'agentq[upstream]' ({exc})"
        ) from exc
    latencies = [f"{path}={seconds:g}" for path, seconds in REFERENCE_HTTP.values()]
    upstream = stack.enter_context(
        MockUpstream(*(a for latency in latencies for a in ("--latency", latency)), "--time-scale", str(time_scale))
    )
    shown = ", ".join(f"{path} {seconds * time_scale:g} s" for path, seconds in REFERENCE_HTTP.values())
    console.print(f"started the mock upstream at {upstream.url} ({shown})", highlight=False)
    return upstream.url


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(workers: int = 2, time_scale: float = 1.0) -> int:
    """Run the demo; return the process exit code."""
    signal.signal(signal.SIGTERM, _interrupt)
    kind, reason = choose(get_settings().executor)
    console.print(
        f"[bold]agentq demo[/] on Python {sys.version.split()[0]}: inference will run in the "
        f"[bold]{kind}[/] pool ({reason})"
    )
    with contextlib.ExitStack() as stack:
        try:
            url = os.environ.get("AGENTQ_REDIS_URL") or os.environ.get("REDIS_URL")
            if url is None:
                server = stack.enter_context(EmbeddedRedis())
                url = server.url
                console.print(f"started an embedded redis-server at {url}", highlight=False)
            os.environ["AGENTQ_REDIS_URL"] = url
            os.environ["AGENTQ_UPSTREAM_URL"] = start_upstream(stack, time_scale)
            os.environ["AGENTQ_TIME_SCALE"] = str(time_scale)
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agentq-demo-")))
            procs = start_workers(workers, dict(os.environ), log_dir)
            stack.callback(stop_workers, procs)
            console.print(
                f"started {workers} workers: {' '.join(worker_command())} (pids "
                f"{', '.join(str(p.pid) for p in procs)})",
                highlight=False,
            )
            with console.status("waiting for the workers to start their inference pools..."):
                wait_for_heartbeats(url, procs)
            result = asyncio.run(ask_reference())
        except KeyboardInterrupt:
            console.print("\ninterrupted: stopping the workers, the upstream and Redis")
            return 130
        except Exception as exc:  # show the workers' logs: they say why
            console.print(f"[red]demo failed:[/] {exc}", highlight=False)
            for log in sorted(log_dir.glob("*.log")) if "log_dir" in locals() else []:
                console.print(f"--- {log.name}\n{log.read_text()[-2000:]}", markup=False, highlight=False)
            return 1
        console.print(summary(result))
        console.print("stopping the workers, the upstream and Redis...")
    return 0 if result.status != "failed" else 1
