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
    ("peers.png", "Ours beside arq, SAQ and streaq: no-op jobs per second, and one reference query end to end."),
    ("redis_load.png", "Redis load against the number of idle workers, and how fast an idle worker wakes."),
    ("bursts.png", "Goodput and throughput against burst size, with and without deadline-aware admission."),
)


def readme(summary: dict[str, Any], figures: Sequence[Figure], title: str) -> str:
    """The benchmark page: how to reproduce, the table, the charts, the laws, the limits."""
    m, c, w = summary["machine"], summary["config"], summary["workload"]
    cal = m["calibration"]
    laws = summary["growth"]["laws"]
    peers = summary["peers"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` from its latest full run; do not edit by hand.",
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench                                         # full run, ~15 minutes on 2 cores",
        "make bench PYTHON=/opt/python3.14/bin/python3.14   # the interpreter-pool path",
        "make bench ARGS=--quick                            # seconds; writes bench-results/ only",
        "agentq-bench [--quick] [--out DIR] [--publish docs/benchmarks]",
        "```",
        "",
        "Results go to `bench-results/` (`summary.json`, `table.md`, `table.txt`, the PNG charts); a full",
        "run through `make bench` also copies them here. A full run installs the peers (arq, SAQ, streaq,",
        "pinned) from PyPI into `.venv/peers-<python>` the first time; `--quick --peers` does too.",
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
        f"{peers['jobs']:,} no-op jobs per system; idle workers counted for {c['idle_s']:g} s; admission bursts of "
        f"{', '.join(f'{m:g}' for m in c['burst_multiples'])} × what the cores serve in {c['burst_deadline_s']:g} s.",
        f"- Whole run: {summary['duration_s']:.0f} s; load average at its start: "
        f"{', '.join(f'{x:.2f}' for x in m.get('load_average_at_start') or [])} (1/5/15 min).",
        "",
        "## How each part is measured",
        "",
        "1. **workload**: sequential and the reference design (TaskGroup for all fetches, then every inference "
        "at once in the pool) are written in `tools/agentq_tools/bench/workload.py` with the same sources, the same "
        "`worker.pool.bag_of_words.analyse` and a pool from the same `worker.pool.executor.create_pool`; *ours* is the "
        "real system (Redis, a `worker` process, `worker/job/fanout.py`). The floor is the critical path of ours' own "
        "measured stages on the pool's cores; the ideal speed-up is sequential's wall time over the critical path "
        "of sequential's own stages (each inference timed alone).",
        "2. **executors**: 2 x cores inference tasks; efficiency = serial / (pool wall x cores) = utilisation / "
        "CPU inflation. Cold start = first `create_pool` of that kind in the process (workers started and warmed); "
        "warm = the same again; per task = the round trip of a no-op from the event loop.",
        "3. **queue**: zero-work jobs (the `noop` source, which needs no source policy, and 1 work unit of "
        "inference) one at a time through `Client.ask`, deduplication on; enqueue -> start uses the caller's clock "
        "before `ask` and the worker's `started_at`; finish -> caller uses the worker's `finished_at` and the moment "
        "`ask` returns (the done message carries the result). Commands per job: Redis's `INFO commandstats` over the "
        "run (heartbeats included); round trips: counted by the client and by the worker (`agentq.roundtrips`).",
        "4. **throughput**: all jobs enqueued at once; CPU-s per job is the inference CPU the jobs report; RSS is "
        "the worker process plus its children, sampled every 100 ms.",
        "5. **growth**: sources beyond the reference three are copies of them (`tools/agentq_tools/sources.py`, "
        "installed as plugins like any other source and enabled in the benchmark's workers).",
        "6. **peers**: arq (defaults, and a 10 ms poll), SAQ and streaq, installed from PyPI into a side "
        "environment, run `tools/agentq_tools/bench/peer_apps/`: a no-op job, and the reference query written as "
        "the reference design (fetch all, then infer all, same latencies, analysis and pool kind). No-op bursts "
        "are enqueued through each system's own client and timed until one command on its own bookkeeping says "
        "nothing is unfinished (every 5 ms); ours is the zero-work job of 3 with every guarantee on.",
        "7. **redis**: 1, 4 and 16 idle workers (pool of one), commands per second from `INFO commandstats`, then "
        "zero-work jobs one at a time (enqueue -> start); arq with a 10 ms poll beside them; then the same for 4 "
        "workers of a queue of 6 shards, commands counted per shard watched.",
        "8. **bursts**: reference jobs at the workload's time_scale with a tight deadline, enqueued at once, in "
        "multiples of what the cores can serve within one deadline; goodput = share ending `ok`; throughput = "
        "`ok` jobs per second against cores / CPU-s per job.",
        "9. **fairness**: jobs of one `weather` fetch at `fair_time_scale` and the no-op analysis, on 2 workers "
        "running `fair_max_jobs` each: tenant A's backlog then tenant B's few (B's p99 enqueue -> start in job "
        "lengths, fair share beside one first-in-first-out queue); two tenants weighted 3:1 (their starts while "
        "both have a backlog); a lone tenant's zero-work jobs/s beside the default tenant's.",
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
    lines += ["## Where we stand beside the peers", ""]
    labels = peers["systems"]
    for workers, row in peers["by_workers"].items():
        runs = ", ".join(
            f"{labels[k]} {v['jobs_per_s']:.0f}/s ({v['commands_per_job']:.1f} cmd/job)" for k, v in row.items()
        )
        lines.append(f"- {peers['jobs']:,} no-op jobs, {workers} worker(s): {runs}.")
    ref = peers["reference"]["latency_s"]
    lines.append(
        "- One reference query, enqueue to done: "
        + ", ".join(f"{labels[k]} {v:.3f} s" for k, v in ref.items())
        + f" (time_scale {peers['reference']['time_scale']:g})."
    )
    if peers["environment"] is None:
        lines.append(f"- Peers not run: {peers['environment_status']}.")
    lines.append("")
    return "\n".join(lines)


#: The README's Performance section lies between these lines; ``make bench`` (a full run) rewrites it.
PERFORMANCE_START = "<!-- performance: written by make bench from docs/benchmarks/summary.json -->"
PERFORMANCE_END = "<!-- /performance -->"


def performance_section(summary: dict[str, Any]) -> str:
    """The README's Performance section: the headline figures of a full run, with targets, and a link.

    A row may join related figures (p50 and p99, jobs/s against two peers): its value and target
    list each, and it reads "met" only when every one of them is.
    """
    figures = {(f["benchmark"], f["name"]): f for f in summary["figures"]}

    def find(benchmark: str, prefix: str, contains: str = "") -> dict[str, Any] | None:
        return next(
            (f for (b, n), f in figures.items() if b == benchmark and n.startswith(prefix) and contains in n), None
        )

    def row(label: str, *wanted: tuple[str, str] | tuple[str, str, str]) -> str:
        found = [f for w in wanted if (f := find(*w)) is not None]
        if not found:
            return f"| {label} | n/a | | |"
        shown = " / ".join(Figure(**f).shown() for f in found)
        targets = "; ".join(dict.fromkeys(str(f["target"]) for f in found if f["target"]))
        verdicts = [f["met"] for f in found if f["met"] is not None]
        verdict = "" if not verdicts else "met" if all(verdicts) else "**missed**"
        return f"| {label} | {shown} | {targets} | {verdict} |"

    m, peers = summary["machine"], summary["peers"]
    most = max(row_["workers"] for row_ in summary["redis"]["rows"] if row_.get("shards", 1) == 1)
    lines = [
        PERFORMANCE_START,
        f"Latest full `make bench` ({summary['generated_at'][:10]}; Python {m['python_version']}, "
        f"{m['usable_cpus']} shared cores, load average {m['load_average_at_start'][0]:.1f} at its start):",
        "",
        "| figure | value | target | |",
        "|---|---:|---|---|",
        row("reference query: ours / its critical-path floor", ("workload", "ours / floor")),
        row(
            "reference query: ours / the reference design on SAQ", ("peers", "reference query, reference design on SAQ")
        ),
        row(
            "zero-work job: Redis commands / round trips (worker + client)",
            ("queue", "Redis commands per zero-work job"),
            ("queue", "round trips per zero-work job"),
        ),
        row(f"Redis commands/s per idle worker, {most} workers", ("redis", f"{most} idle worker(s): Redis commands/s")),
        row(
            f"enqueue→start p50 / p99, {most} idle workers",
            ("redis", f"{most} idle worker(s): enqueue→start p50"),
            ("redis", f"{most} idle worker(s): enqueue→start p99"),
        ),
    ]
    sharded = [row_ for row_ in summary["redis"]["rows"] if row_.get("shards", 1) > 1]
    for r in sharded:
        of = f"{r['workers']} idle worker(s) of {r['shards']} shards"
        lines.append(row(f"Redis commands/s per idle worker per shard, {of}", ("redis", f"{of}: Redis commands/s")))
        lines.append(
            row(
                f"enqueue→start p50 / p99, {of}",
                ("redis", f"{of}: enqueue→start p50"),
                ("redis", f"{of}: enqueue→start p99"),
            )
        )
    shown_peers = [peers["systems"][k] for k in ("saq", "streaq") if k in peers["systems"]]
    for workers in peers["by_workers"]:
        wanted = [("peers", f"{workers} worker(s): ours / {name}") for name in shown_peers]
        lines.append(row(f"no-op jobs/s, {workers} worker(s): ours / {' and '.join(shown_peers)}", *wanted))
    for run in summary["bursts"]["runs"].values():
        if run["config"] == "admission":
            name = f"{run['label']}, {run['workers']} worker(s), burst of"
            lines.append(
                row(
                    f"burst 3× what the cores serve, {run['workers']} worker(s): goodput / ok jobs/s of the core limit",
                    ("bursts", name, ": goodput"),
                    ("bursts", name, "core limit"),
                )
            )
    lines += [
        "",
        "Every figure and the charts: [docs/benchmarks/](docs/benchmarks/README.md); what limits each missed",
        "target, measured: [docs/benchmarks/limits.md](docs/benchmarks/limits.md).",
        PERFORMANCE_END,
    ]
    return "\n".join(lines)


def with_performance(readme_text: str, section: str) -> str:
    """``readme_text`` with its Performance section replaced by ``section``."""
    start, end = readme_text.index(PERFORMANCE_START), readme_text.index(PERFORMANCE_END) + len(PERFORMANCE_END)
    return readme_text[:start] + section + readme_text[end:]
