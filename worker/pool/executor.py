"""The worker's local inference pool: one per worker process, chosen and sized at start-up.

``auto`` picks ``InterpreterPoolExecutor`` on CPython 3.14+ (true parallelism, one GIL per
interpreter, no process per core) and ``ProcessPoolExecutor`` before that. ``thread`` exists
only so benchmarks can show what the GIL does to CPU-bound work.

Work in the pool cannot be cancelled once started: a deadline abandons the future and the core
stays busy until the task returns, which is why the pool is capped at the usable CPUs. The pool
therefore keeps its own list of unfinished tasks, ended only when the executor says so, with
when each was submitted and (the executors run tasks first in, first out) when it started:
``worker.admission`` reads it to tell how long new work would wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from agentq.contract import ExecutorInfo, ExecutorName
from agentq.settings import ExecutorKind
from worker.pool import pooled

T = TypeVar("T")


def usable_cpus() -> int:
    """CPUs this process may run on (honours affinity masks and cgroup-pinned containers)."""
    if hasattr(os, "process_cpu_count"):  # 3.13+
        return os.process_cpu_count() or 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def interpreter_pool_available() -> bool:
    """True on CPython 3.14+, where ``concurrent.futures.InterpreterPoolExecutor`` exists."""
    return hasattr(cf, "InterpreterPoolExecutor")


def choose(kind: ExecutorKind) -> tuple[ExecutorName, str]:
    """Resolve ``auto`` and say why: the reason ends up in every result."""
    version = f"Python {sys.version_info.major}.{sys.version_info.minor}"
    if kind == "auto":
        if interpreter_pool_available():
            return "interpreter", f"auto: {version} has InterpreterPoolExecutor"
        return "process", f"auto: {version} has no InterpreterPoolExecutor (3.14+), using processes"
    if kind == "interpreter" and not interpreter_pool_available():
        raise RuntimeError(f"executor=interpreter needs Python 3.14+, this is {version}")
    return kind, f"forced by settings on {version}"


@dataclass(eq=False)
class PoolTask:
    """One task given to the pool and not finished yet (``time.monotonic()`` instants)."""

    label: tuple[str, str] | None
    """(job id, source) for a job's inference; None for anything else."""
    submitted: float
    started: float | None = None
    """When a pool worker took it: known from the order tasks finish in (first in, first out)."""


@dataclass
class InferencePool:
    """An executor plus what the result reports about it, and its unfinished tasks."""

    executor: cf.Executor
    info: ExecutorInfo
    broken: bool = False
    tasks: list[PoolTask] = field(default_factory=list)
    """Unfinished tasks in the order they were submitted."""
    on_task_done: Callable[[], None] | None = None
    """Called (in the event loop) whenever a task ends: a pool worker is free for the next."""

    async def run(self, fn: Callable[..., T], *args: object, label: tuple[str, str] | None = None) -> T:
        """Run ``fn(*args)`` in the pool; note it if the pool itself has broken."""
        loop = asyncio.get_running_loop()
        task = PoolTask(label, time.monotonic())
        try:
            future = self.executor.submit(fn, *args)
        except cf.BrokenExecutor:
            self.broken = True
            raise
        self._submitted(task)
        try:
            return await asyncio.wrap_future(future)
        except cf.BrokenExecutor:
            self.broken = True
            raise
        finally:
            if future.done():
                self._finished(task)
            else:  # abandoned (a deadline) while it runs: the executor's future says when it is over
                future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._finished, task))

    def _submitted(self, task: PoolTask) -> None:
        if sum(t.started is not None for t in self.tasks) < self.info.size:
            task.started = task.submitted
        self.tasks.append(task)

    def _finished(self, task: PoolTask) -> None:
        if task not in self.tasks:
            return
        self.tasks.remove(task)
        if task.started is not None:  # its pool worker takes the oldest waiting task now
            waiting = next((t for t in self.tasks if t.started is None), None)
            if waiting is not None:
                waiting.started = time.monotonic()
        if self.on_task_done is not None:
            self.on_task_done()

    async def warm(self, modules: Iterable[str]) -> None:
        """Import ``modules`` in the pool's workers (best effort: one task per worker, as at start)."""
        loop, names = asyncio.get_running_loop(), tuple(dict.fromkeys(modules))
        await asyncio.gather(
            *(loop.run_in_executor(self.executor, pooled.warm_up, names) for _ in range(self.info.size))
        )

    @property
    def kind(self) -> ExecutorName:
        return self.info.kind

    def shutdown(self) -> None:
        """Stop the pool and wait for its workers, so no process or interpreter outlives us."""
        self.executor.shutdown(wait=True, cancel_futures=True)


def create_pool(kind: ExecutorKind, size: int | None = None) -> InferencePool:
    """Start a pool of ``size`` workers (default: usable CPUs) and warm every worker up."""
    name, reason = choose(kind)
    size = size or usable_cpus()
    executor: cf.Executor
    if name == "interpreter":
        executor = cf.InterpreterPoolExecutor(max_workers=size)  # type: ignore[attr-defined,unused-ignore]
    elif name == "process":
        # forkserver: never fork a process that runs an event loop and Redis connections.
        context = multiprocessing.get_context("forkserver")
        executor = cf.ProcessPoolExecutor(max_workers=size, mp_context=context)
    else:
        executor = cf.ThreadPoolExecutor(max_workers=size, thread_name_prefix="inference")
    # Start every worker now rather than during the first job, so its timing is honest. The
    # analyses' own modules are imported later (InferencePool.warm), once each has passed its
    # start-up check (worker.ops.plugins): one that cannot load here must fail that check, by name.
    list(executor.map(pooled.warm_up, [()] * size))
    return InferencePool(executor, ExecutorInfo(kind=name, size=size, reason=reason))
