"""What one benchmark run does: its sizes (full or ``--quick``) and the machine it ran on."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from worker.pool.executor import choose, interpreter_pool_available, usable_cpus


@dataclass(frozen=True)
class BenchConfig:
    """Every size and scale of a run. The full run fits in ~3 minutes on 2 cores."""

    quick: bool
    #: Seconds of CPU the reference workload gives one inference (scaled by each time_scale).
    reference_inference_cpu_s: float = 2.0
    #: 1. one reference query, repeated and interleaved design by design; medians are reported.
    workload_time_scale: float = 0.2
    workload_repeats: int = 3
    #: 2. CPU-seconds of one executor task (2 × cores tasks per executor).
    executor_task_cpu_s: float = 0.5
    executor_overhead_tasks: int = 200
    #: 3. zero-work jobs, one at a time through the real client.
    queue_jobs: int = 500
    #: 4. jobs per saturation run and the inference CPU of each of their 3 sources.
    throughput_jobs: int = 40
    throughput_inference_cpu_s: float = 0.1
    #: 5. sources grow at this time_scale; bursts use the reference query at the burst scale.
    growth_sources: tuple[int, ...] = (3, 5, 10, 20)
    growth_time_scale: float = 0.1
    growth_repeats: int = 2
    burst_sizes: tuple[int, ...] = (10, 100, 1000)
    burst_time_scale: float = 0.002
    #: 6. no-op jobs per burst, ours and each peer's (SAQ's README uses 1,000); the peers are installed
    #: into a side environment from PyPI (full runs, or --quick --peers).
    noop_jobs: int = 2000
    worker_counts: tuple[int, ...] = (1, 2)
    run_peers: bool = True
    peer_rounds: int = 3
    #: 7. Redis load: idle workers, counted for this long; zero-work jobs one at a time to time the wake-up.
    idle_worker_counts: tuple[int, ...] = (1, 4, 16)
    idle_s: float = 20.0
    wake_jobs: int = 200
    #: ... and idle_sharded_workers workers of a queue of idle_shards shards (AGENTQ_QUEUE_SHARDS).
    idle_shards: int = 6
    idle_sharded_workers: int = 4
    #: 8. bursts of reference jobs (workload_time_scale, a deadline of burst_deadline_s), sized in
    #: multiples of what the cores can serve within one deadline; burst_headline is the one the targets use.
    burst_multiples: tuple[float, ...] = (1.0, 3.0, 6.0, 10.0)
    burst_headline: float = 3.0
    burst_deadline_s: float = 2.0
    #: 9. fair share: jobs of one fetch (weather at fair_time_scale: 0.2 s) and no inference, on fair_workers
    #: workers of fair_max_jobs each; a backlog of A's then a few of B's; fair_weighted each at 3:1; a lone
    #: tenant's fair_lone_jobs zero-work jobs beside the default tenant's, fair_rounds rounds each.
    fair_time_scale: float = 0.1
    fair_workers: int = 2
    fair_max_jobs: int = 8
    fair_backlog: int = 1000
    fair_few: int = 10
    fair_weighted: int = 300
    fair_lone_jobs: int = 1000
    fair_rounds: int = 5
    pool_size: int = field(default_factory=usable_cpus)

    @classmethod
    def make(cls, quick: bool, peers: bool = False) -> BenchConfig:
        """The full configuration, or the small one the smoke test and ``--quick`` use (``peers``: with them)."""
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            workload_time_scale=0.02,
            workload_repeats=1,
            executor_task_cpu_s=0.03,
            executor_overhead_tasks=20,
            queue_jobs=50,
            throughput_jobs=6,
            throughput_inference_cpu_s=0.01,
            growth_time_scale=0.01,
            growth_repeats=1,
            burst_sizes=(10, 100),
            noop_jobs=100,
            run_peers=peers,
            peer_rounds=1,
            idle_worker_counts=(1, 2),
            idle_sharded_workers=2,
            idle_s=2.0,
            wake_jobs=20,
            burst_multiples=(1.0, 3.0),
            burst_deadline_s=0.5,
            fair_time_scale=0.02,
            fair_backlog=60,
            fair_few=4,
            fair_weighted=40,
            fair_lone_jobs=50,
            fair_rounds=1,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-able view (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def machine_info(time_scale: float) -> dict[str, Any]:
    """What the numbers depend on: CPUs, interpreter, the executor ``auto`` picks, the scale."""
    kind, reason = choose("auto")
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "executor_kind": kind,
        "executor_reason": reason,
        "interpreter_pool_available": interpreter_pool_available(),
        "time_scale": time_scale,
        # Other work on the machine skews every ratio: the load says how quiet it was at the start.
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
