"""``make demo`` (``agentq-demo``): the whole system on one machine, started and stopped in one command.

Starts a Redis on a free loopback port (unless ``REDIS_URL``/``AGENTQ_REDIS_URL`` names one) and
the mock upstream (``agentq_tools.upstream``, unless ``AGENTQ_UPSTREAM_URL`` names one) with the
reference latencies, starts worker processes with the documented ``worker`` command pointed at
both, sends the reference question to the three HTTP sources through the queue with the live
display, prints the result, and stops everything it started, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from rich.console import Console

from agentq.contract import JobResult
from agentq.settings import get_settings
from agentq_tools.embedded import EmbeddedRedis
from agentq_tools.processes import start_workers, stop_workers, wait_for_heartbeats, worker_command
from producer.client import Client
from producer.display import summary
from producer.watch import wait_with_progress
from worker.pool.executor import choose

REFERENCE_QUESTION = "Should I take an umbrella to the conference in Paris tomorrow, and what is the news about it?"
#: The reference workload's three sources, over real HTTP: the mock upstream's paths and latencies (s).
REFERENCE_HTTP = {
    "weather_api": ("weather", 2.0),
    "news_api": ("news", 1.5),
    "knowledge_base_api": ("knowledge_base", 3.0),
}
console = Console()


async def ask_reference() -> JobResult:
    """Enqueue the reference question and wait for it with the live display."""
    async with Client(get_settings()) as client:
        job_id = await client.enqueue(REFERENCE_QUESTION, sources=list(REFERENCE_HTTP))
        console.print(f"question: {REFERENCE_QUESTION}\njob {job_id} queued", highlight=False)
        return await wait_with_progress(client, job_id, 120, console.is_terminal, console)


def start_upstream(stack: contextlib.ExitStack, time_scale: float) -> str:
    """``AGENTQ_UPSTREAM_URL`` if set, else start the mock upstream with the reference latencies."""
    url = os.environ.get("AGENTQ_UPSTREAM_URL")
    if url:
        console.print(f"using the upstream at {url}", highlight=False)
        return url
    try:
        from agentq_tools.upstream import MockUpstream
    except ImportError as exc:  # starlette/uvicorn come with agentq-tools
        raise RuntimeError(f"the mock upstream needs starlette and uvicorn: pip install -e ./tools ({exc})") from exc
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


def main(argv: list[str] | None = None) -> None:
    """``agentq-demo [--workers N] [--time-scale S]``."""
    parser = argparse.ArgumentParser(prog="agentq-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, choices=range(1, 17), metavar="N", help="worker processes")
    parser.add_argument("--time-scale", type=float, default=1.0, help="scale of latencies and work (default 1)")
    args = parser.parse_args(argv)
    sys.exit(run_demo(workers=args.workers, time_scale=args.time_scale))


if __name__ == "__main__":
    main()
