"""Real worker processes for one benchmark, against the run's redis-server, and their memory."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import psutil  # type: ignore[import-untyped,unused-ignore]
import redis

from agentq.settings import Settings, get_settings
from agentq_tools import plugins
from agentq_tools.processes import start_workers, stop_workers, wait_for_heartbeats
from agentq_tools.sources import MAX_SOURCES, first_sources

#: Every worker of the benchmark serves the reference sources, the growth benchmark's extras and the
#: no-op source of the zero-work jobs.
ENABLED_SOURCES = [*first_sources(MAX_SOURCES), "noop"]
#: The built-in analysis, and the no-op one of the zero-work jobs.
ENABLED_ANALYSES = ["bag_of_words", "noop"]


def client_settings(redis_url: str, **fields: object) -> Settings:
    """The benchmark's own settings (its producers'): the test plugins' names are the workers' to check."""
    return get_settings(redis_url=redis_url, plugin_modules=(plugins.MODULE,), **fields)


class Cluster:
    """Workers sharing one configuration; add more with :meth:`add`, all stopped on exit."""

    def __init__(self, redis_url: str, log_dir: Path, **settings: object) -> None:
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_")}
        self.env["AGENTQ_REDIS_URL"] = redis_url
        # The bench asks the same question again and again: it measures fetching and inference,
        # so the shared cache and the latency-driven timeouts stay off unless a case asks for them.
        settings = {
            "cache_ttl_s": 0,
            "adaptive_timeouts": False,
            "plugin_modules": [plugins.MODULE],  # the benchmark's sources and analyses are no entry points
            "enabled_sources": ENABLED_SOURCES,
            "enabled_analyses": ENABLED_ANALYSES,
            **settings,
        }
        for name, value in settings.items():
            text = json.dumps(value) if isinstance(value, dict | list) else str(value)
            self.env[f"AGENTQ_{name.upper()}"] = text
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0  # numbers the log files, across stop()

    def add(self, count: int = 1, timeout: float = 60.0) -> list[subprocess.Popen[bytes]]:
        """Start ``count`` more workers and wait until each has warmed its pool and heartbeats."""
        new = start_workers(count, self.env, self.log_dir, first=self.started)
        self.started += count
        self.procs.extend(new)
        try:
            wait_for_heartbeats(self.redis_url, new, timeout=timeout)
        except RuntimeError as exc:
            logs = "\n".join(p.read_text()[-1500:] for p in sorted(self.log_dir.glob("worker-*.log")))
            raise RuntimeError(f"{exc}\n{logs}") from None
        return new

    def stop(self) -> None:
        """Stop every worker, then empty Redis for the next benchmark."""
        stop_workers(self.procs)
        self.procs.clear()
        client = redis.Redis.from_url(self.redis_url)
        try:
            client.flushall()
        finally:
            client.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants (its pool), in bytes."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


@contextmanager
def peak_rss(pids: list[int], every_s: float = 0.1) -> Iterator[dict[int, int]]:
    """Sample each worker's tree RSS in a thread while the block runs; yields pid → peak bytes."""
    peaks = dict.fromkeys(pids, 0)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for pid in pids:
                peaks[pid] = max(peaks[pid], tree_rss(pid))
            stop.wait(every_s)

    thread = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        stop.set()
        thread.join()
        for pid in pids:
            peaks[pid] = max(peaks[pid], tree_rss(pid))
