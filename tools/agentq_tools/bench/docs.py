"""``docs/benchmarks/README.md``, written from a full run's summary so it never drifts from it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentq_tools.bench.report import Figure, markdown

_CHART_CAPTIONS = (
    ("timeline.png", "One reference query, three designs: where the time went (fetch, waiting for a core, inference)."),
    (
        "executors.png",
        "The inference alone in each executor: wall time, parallel efficiency, start-up and per-task cost.",
    ),
    ("latency.png", "Queue overhead on zero-work jobs: enqueue → start and finish → caller-has-result."),
    ("throughput.png", "Jobs per second at saturation against cores / CPU-seconds of inference per job."),
    ("growth_sources.png", "Latency as one query's sources grow from 3 to 20."),
    ("growth_burst.png", "Latency as a burst of jobs grows from 10 to 1,000."),
)


def readme(summary: dict[str, Any], figures: Sequence[Figure], title: str) -> str:
    """The benchmark page: how to reproduce, the table, the charts, the laws, the limits."""
    m, c, w = summary["machine"], summary["config"], summary["workload"]
    cal = m["calibration"]
    laws = summary["growth"]["laws"]
    noop = summary["noop"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` from its latest full run; do not edit by hand.",
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench                                         # full run, ~3 minutes on 2 cores",
        "make bench PYTHON=/opt/python3.14/bin/python3.14   # the interpreter-pool path",
        "make bench ARGS=--quick                            # seconds; writes bench-results/ only",
        "agentq-bench [--quick] [--out DIR] [--publish docs/benchmarks]",
        "```",
        "",
        "Results go to `bench-results/` (`summary.json`, `table.md`, `table.txt`, the PNG charts); a full",
        "run through `make bench` also copies them here.",
        "",
        "## This run",
        "",
        f"- {m['python_implementation']} {m['python_version']} on {m['platform']}, {m['usable_cpus']} usable cores "
        f"({m['cpu_count']} CPUs); inference pool: **{m['executor_kind']}** ({m['executor_reason']}).",
        f"- Inference cost calibrated in the run: {cal['cpu_s_per_unit'] * 1000:.3f} ms of CPU per work unit, so the "
        f"default 1,500 units are {cal['default_units_cpu_s']:.2f} CPU-s; the reference's 2 CPU-s per inference is "
        f"{w['reference_units']:,} units at time_scale 1 (measured in the workers: "
        f"{w['inference_cpu_s_per_source']:.3f} CPU-s per inference at time_scale {w['time_scale']:g}).",
        f"- Scales: reference query at time_scale {c['workload_time_scale']:g} (median of {c['workload_repeats']}); "
        f"executor tasks of {c['executor_task_cpu_s']:g} CPU-s; {c['queue_jobs']} zero-work jobs one at a time; "
        f"{c['throughput_jobs']} jobs per saturation run ({c['throughput_inference_cpu_s']:g} CPU-s x 3 sources); "
        f"sources grown at time_scale {c['growth_time_scale']:g}; bursts at time_scale {c['burst_time_scale']:g}; "
        f"{noop['jobs']:,} no-op jobs.",
        f"- Whole run: {summary['duration_s']:.0f} s; load average at its start: "
        f"{', '.join(f'{x:.2f}' for x in m.get('load_average_at_start') or [])} (1/5/15 min).",
        "",
        "## How each part is measured",
        "",
        "1. **workload**: sequential and the reference design (TaskGroup for all fetches, then every inference "
        "at once in the pool) are written in `tools/agentq_tools/bench/workload.py` with the same sources, the same "
        "`worker.inference.analyse` and a pool from the same `worker.executor.create_pool`; *ours* is the real "
        "system (Redis, a `worker` process, `worker/fanout.py`). The floor is the critical path of ours' own "
        "measured stages on the pool's cores; the ideal speed-up is sequential's wall time over the critical path "
        "of sequential's own stages (each inference timed alone).",
        "2. **executors**: 2 x cores inference tasks; efficiency = serial / (pool wall x cores) = utilisation / "
        "CPU inflation. Cold start = first `create_pool` of that kind in the process (workers started and warmed); "
        "warm = the same again; per task = the round trip of a no-op from the event loop.",
        "3. **queue**: zero-work jobs (one source at 0 latency, 1 work unit) one at a time through `Client`; "
        "enqueue -> start uses the caller's clock before `enqueue` and the worker's `started_at`; finish -> "
        "caller uses the worker's `finished_at` and the moment `Client.result` returns (pub/sub wake-up).",
        "4. **throughput**: all jobs enqueued at once; CPU-s per job is the inference CPU the jobs report; RSS is "
        "the worker process plus its children, sampled every 100 ms.",
        "5. **growth**: sources beyond the reference three are copies of them (`tools/agentq_tools/sources.py`, "
        "installed as plugins like any other source and enabled in the benchmark's workers).",
        "6. **noop**: the zero-work job of 3, 1,000 at once, timed from the first enqueue to the last completion.",
        "",
        "## Figures against targets",
        "",
        title,
        "",
        markdown(figures),
        "## Charts",
        "",
    ]
    for name, caption in _CHART_CAPTIONS:
        lines += [f"**{caption}**", "", f"![{name}]({name})", ""]
        if name == "growth_sources.png":
            lines += [f"*Law:* {laws['sources']}", ""]
        if name == "growth_burst.png":
            lines += [f"*Law:* {laws['burst']}", ""]
    saq = noop["saq_readme_s"]
    runs = ", ".join(f"{k} worker(s): {v['total_s']:.2f} s" for k, v in noop["by_workers"].items())
    lines += [
        "## Where we stand on trivial jobs",
        "",
        f"{noop['jobs']:,} no-op jobs end to end: {runs}. SAQ's README reports {saq['saq']} s for SAQ and "
        f"{saq['arq']} s for arq with its defaults (another machine, so compare orders of magnitude only). arq's "
        f"0.5 s poll delay is what costs it there; this project polls every "
        f"{summary['queue']['poll_delay_s'] * 1000:g} ms, runs up to {noop['max_jobs_per_worker']} jobs per worker "
        "at once, and wakes the caller by pub/sub, but each no-op job still pays arq's per-job Redis round trips "
        "(a transaction to enqueue, one to claim, one to store the result) and one hop into the inference pool.",
        "",
    ]
    return "\n".join(lines)
