"""Helpers for the reliability suite: worker processes by log and pid, waiting, process trees."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import TypeVar

import psutil
import pytest
import redis

from agentq.protocol.keys import Field, Keys, field
from agentq.settings import Settings
from agentq_tools.processes import start_workers, stop_workers, wait_for_heartbeats

#: Latency of every simulated source, before scaling: at the test time scale (0.02) 50 is 1 s.
ONE_SECOND = 50.0
#: A worker's line for each finished run: ``job <id> <status> in <s>s (try <n>)``.
RUN_LINE = re.compile(r"^\S+ \S+ .*job (\w+) \w+ in [\d.]+s \(try \d+\)(?:,|$)", re.M)
T = TypeVar("T")


@dataclass
class Workers:
    """Starts worker processes for a test and stops whatever is left of them afterwards."""

    env: dict[str, str]
    log_dir: Path
    started: list[Popen[bytes]]

    def start(self, count: int = 1, **extra_env: str) -> list[Popen[bytes]]:
        """Start ``count`` workers with the test's environment plus ``extra_env``; wait until they beat."""
        procs = start_workers(count, {**self.env, **extra_env}, self.log_dir, first=len(self.started))
        self.started.extend(procs)
        try:
            wait_for_heartbeats(extra_env.get("AGENTQ_REDIS_URL", self.env["AGENTQ_REDIS_URL"]), procs)
        except RuntimeError:
            print(self.logs())
            raise
        return procs

    def log(self, proc: Popen[bytes]) -> str:
        """Everything ``proc`` has logged so far."""
        return (self.log_dir / f"worker-{self.started.index(proc)}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- worker {p.pid}\n{self.log(p)[-3000:]}" for p in self.started)

    def running(self, job_id: str, timeout: float = 30.0) -> Popen[bytes]:
        """The worker that holds ``job_id``'s lease: its id (``host:pid:random``) is in the job's state."""
        keys = Keys(Settings.model_fields["key_prefix"].default, Settings.model_fields["queue_name"].default)
        with redis.Redis.from_url(self.env["AGENTQ_REDIS_URL"]) as r:

            def holder() -> Popen[bytes] | None:
                worker_id = r.hget(keys.jobs, field(job_id, Field.HOLDER))
                pid = int(worker_id.decode().split(":")[1]) if worker_id else None
                return next((p for p in self.started if p.pid == pid), None)

            return wait_for(holder, timeout)

    def runs_of(self, job_id: str, at_least: int = 0, timeout: float = 30.0) -> list[tuple[str, int]]:
        """``(time, try)`` of every finished run of ``job_id``, from the workers' own log lines (a run whose
        result was dropped for an earlier one says so on the same line); with ``at_least``, once that many
        are logged.

        A worker logs the line a round trip after the caller can see the result, so a test that holds a
        result waits for the line (``at_least``); stopping the worker instead could cancel it unlogged."""
        pattern = re.compile(rf"^(\S+ \S+) .*job {re.escape(job_id)} \w+ in [\d.]+s \(try (\d+)\)(?:,|$)", re.M)

        def runs() -> list[tuple[str, int]] | None:
            found = sorted((m[1], int(m[2])) for p in self.started for m in pattern.finditer(self.log(p)))
            return found if len(found) >= at_least else None

        return wait_for(runs, timeout) if at_least else runs() or []

    def run_counts(self, job_ids: Collection[str], timeout: float = 60.0) -> Counter[str]:
        """How many finished runs each job logged, once each of ``job_ids`` has logged one (see ``runs_of``)."""

        def counts() -> Counter[str] | None:
            found = Counter(m[1] for p in self.started for m in RUN_LINE.finditer(self.log(p)))
            return found if all(found[j] for j in job_ids) else None

        return wait_for(counts, timeout)


@pytest.fixture
def workers(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    """Factory of real worker processes (any command), stopped at the end of the test."""
    w = Workers(worker_env, tmp_path, [])
    yield w
    stop_workers(w.started, grace=10)
    for proc in w.started:  # a killed worker's process group may still hold pool processes
        kill_group(proc)


def wait_for(check: Callable[[], T | None], timeout: float = 30.0, every: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    give_up = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > give_up:
            pytest.fail(f"gave up after {timeout:g}s waiting for {check}")
        time.sleep(every)


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (pool processes, the forkserver)."""
    try:
        return {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_group(proc: Popen[bytes]) -> None:
    """SIGKILL a worker and every process of its session (it was started in a new one)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
