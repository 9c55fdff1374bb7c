"""Benchmark 2: the inference alone in each executor, and the calibration of its cost.

Every pool is built by ``worker.pool.executor.create_pool``, exactly as a worker builds it, and runs
``worker.pool.bag_of_words.analyse`` (the built-in analysis) through ``worker.pool.pooled.run_analysis``, as a
job sends it. ``serial`` runs the same tasks one after another in this thread: the baseline of
parallel efficiency.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from agentq.settings import ExecutorKind
from agentq_tools.bench.config import BenchConfig
from agentq_tools.bench.report import Figure
from worker.job.sources.simulated import compose
from worker.pool import bag_of_words as inference
from worker.pool import pooled
from worker.pool.executor import create_pool, interpreter_pool_available

QUESTION = "Should I take an umbrella to the conference in Paris tomorrow?"
TEXT = compose(QUESTION, "weather")


def calibrate(probe_units: int = 300, rounds: int = 3) -> dict[str, float]:
    """CPU-seconds one work unit costs here, measured on this thread (median of ``rounds``)."""
    inference.analyse(QUESTION, TEXT, {"units": 5})  # warm caches and the regex
    per_unit = []
    for _ in range(rounds):
        cpu0 = time.thread_time()
        inference.analyse(QUESTION, TEXT, {"units": probe_units})
        per_unit.append((time.thread_time() - cpu0) / probe_units)
    cpu_per_unit = statistics.median(per_unit)
    return {
        "probe_units": probe_units,
        "cpu_s_per_unit": cpu_per_unit,
        "default_units": 1500,
        "default_units_cpu_s": 1500 * cpu_per_unit,
    }


def units_for(cpu_s: float, calibration: dict[str, float]) -> int:
    """Work units that cost about ``cpu_s`` seconds of CPU here."""
    return max(1, round(cpu_s / calibration["cpu_s_per_unit"]))


async def _per_task_overhead(kind: ExecutorKind, size: int, tasks: int) -> float:
    """Mean round trip of a no-op task submitted from the event loop, one at a time (seconds)."""
    pool = create_pool(kind, size)
    try:
        t0 = time.perf_counter()
        for _ in range(tasks):
            await pool.run(pooled.warm_up, ())
        return (time.perf_counter() - t0) / tasks
    finally:
        pool.shutdown()


def _timed_pool(kind: ExecutorKind, size: int, units: int, tasks: int) -> dict[str, float]:
    """Cold start, warm start and the wall time of ``tasks`` inferences in a fresh pool."""
    t0 = time.perf_counter()
    pool = create_pool(kind, size)  # starts and warms every worker
    cold_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        outputs = list(
            pool.executor.map(
                pooled.run_analysis,
                [inference.analyse] * tasks,
                [QUESTION] * tasks,
                [TEXT] * tasks,
                [{"units": units}] * tasks,
                [kind] * tasks,
            )
        )
        wall_s = time.perf_counter() - t0
    finally:
        pool.shutdown()
    t0 = time.perf_counter()
    create_pool(kind, size).shutdown()  # the same again, now that the OS and imports are warm
    warm_s = time.perf_counter() - t0
    cpu_s = sum(float(o["cpu_s"]) for o in outputs)
    return {"wall_s": wall_s, "cpu_s": cpu_s, "start_cold_s": cold_s, "start_warm_s": warm_s}


def run(cfg: BenchConfig, calibration: dict[str, float]) -> tuple[dict[str, Any], list[Figure]]:
    """Time 2 × cores inference tasks in every executor this interpreter has."""
    cores = cfg.pool_size
    tasks = 2 * cores
    units = units_for(cfg.executor_task_cpu_s, calibration)
    t0 = time.perf_counter()
    cpu0 = time.thread_time()
    for _ in range(tasks):
        inference.analyse(QUESTION, TEXT, {"units": units})
    serial = {"wall_s": time.perf_counter() - t0, "cpu_s": time.thread_time() - cpu0}

    kinds: list[ExecutorKind] = ["thread", "process"]
    if interpreter_pool_available():
        kinds.append("interpreter")
    pools: dict[str, dict[str, float]] = {}
    for kind in kinds:
        measured = _timed_pool(kind, cores, units, tasks)
        measured["efficiency"] = serial["wall_s"] / (measured["wall_s"] * cores)
        # efficiency = utilisation / cpu_inflation: how busy the cores were, and how much more CPU
        # the same work took when run side by side (shared caches, SMT siblings, a busy host).
        measured["utilisation"] = measured["cpu_s"] / (measured["wall_s"] * cores)
        measured["cpu_inflation"] = measured["cpu_s"] / serial["cpu_s"]
        measured["per_task_overhead_ms"] = 1000 * asyncio.run(
            _per_task_overhead(kind, cores, cfg.executor_overhead_tasks)
        )
        pools[kind] = measured

    result: dict[str, Any] = {
        "tasks": tasks,
        "pool_size": cores,
        "units_per_task": units,
        "task_cpu_s": serial["cpu_s"] / tasks,
        "serial": serial,
        "pools": pools,
        "interpreter_available": interpreter_pool_available(),
    }
    return result, _figures(result, cores)


def _figures(r: dict[str, Any], cores: int) -> list[Figure]:
    figs: list[Figure] = [
        Figure("executors", f"serial: {r['tasks']} tasks x {r['task_cpu_s']:.2f} CPU-s", r["serial"]["wall_s"], "s")
    ]
    gil = 1 / cores
    for kind in ("thread", "process", "interpreter"):
        p = r["pools"].get(kind)
        if p is None:
            figs.append(
                Figure("executors", f"{kind} parallel efficiency", None, "", "≥ 0.90", None, "needs Python 3.14")
            )
            continue
        eff = p["efficiency"]
        if kind == "thread":
            met = abs(eff - gil) <= 0.2 * gil
            figs.append(
                Figure(
                    "executors",
                    "thread parallel efficiency (the GIL)",
                    eff,
                    "",
                    f"≈ 1/cores = {gil:.2f} (±20 %)",
                    met,
                    "the GIL serialises CPU-bound threads; a value above 1/cores means the serial run was slower",
                )
            )
        else:
            figs.append(
                Figure(
                    "executors",
                    f"{kind} parallel efficiency",
                    eff,
                    "",
                    "≥ 0.90",
                    eff >= 0.9,
                    f"the same inference took {100 * (p['cpu_inflation'] - 1):.0f} % more CPU when two ran side "
                    f"by side than alone (the 2 vCPUs share caches and possibly a physical core), and the cores "
                    f"were busy {100 * p['utilisation']:.0f} % of the pool's wall time "
                    f"(efficiency = utilisation / CPU inflation)",
                )
            )
    for kind, p in r["pools"].items():
        figs.append(Figure("executors", f"{kind} pool start (cold)", p["start_cold_s"] * 1000, "ms"))
        figs.append(Figure("executors", f"{kind} pool start (warm)", p["start_warm_s"] * 1000, "ms"))
        figs.append(Figure("executors", f"{kind} per-task overhead", p["per_task_overhead_ms"], "ms"))
    return figs
