"""The PNG charts of a run, drawn from its JSON summary alone (matplotlib, the ``bench`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHARTS = (
    "timeline.png",
    "executors.png",
    "latency.png",
    "throughput.png",
    "growth_sources.png",
    "growth_burst.png",
    "peers.png",
    "redis_load.png",
    "bursts.png",
)
_FETCH, _INFER, _WAIT = "#4c9be8", "#3cb371", "#d0d0d0"


def draw_all(summary: dict[str, Any], out: Path) -> list[Path]:
    """Draw every chart into ``out``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    drawn = []
    for name, draw in (
        ("timeline.png", _timeline),
        ("executors.png", _executors),
        ("latency.png", _latency),
        ("throughput.png", _throughput),
        ("growth_sources.png", _growth_sources),
        ("growth_burst.png", _growth_burst),
        ("peers.png", _peers),
        ("redis_load.png", _redis_load),
        ("bursts.png", _bursts),
    ):
        fig = draw(plt, summary)
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        drawn.append(path)
    return drawn


def _title(summary: dict[str, Any]) -> str:
    m = summary["machine"]
    return f"Python {m['python_version']}, {m['usable_cpus']} cores, {m['executor_kind']} pool"


def _timeline(plt: Any, s: dict[str, Any]) -> Any:
    w = s["workload"]
    designs = ("sequential", "reference", "ours")
    fig, axes = plt.subplots(len(designs), 1, figsize=(9, 6.5), sharex=True)
    for ax, design in zip(axes, designs, strict=True):
        run = w["timeline"][design]
        spans = run["spans"]
        for y, span in enumerate(spans):
            f0, f1 = span["fetch_start_s"], span["fetch_end_s"]
            ax.barh(y, f1 - f0, left=f0, color=_FETCH, height=0.6, label="fetch" if y == 0 else None)
            i0, i1 = span.get("inference_start_s"), span.get("inference_end_s")
            if i0 is not None and i1 is not None:
                if i0 > f1:
                    ax.barh(y, i0 - f1, left=f1, color=_WAIT, height=0.25, label="waiting" if y == 0 else None)
                ax.barh(y, i1 - i0, left=i0, color=_INFER, height=0.6, label="inference" if y == 0 else None)
        ax.axvline(run["total_s"], color="black", lw=1)
        label = f"{design}: {run['total_s']:.2f} s"
        if run.get("floor_s"):
            ax.axvline(run["floor_s"], color="red", lw=1, ls="--")
            label += f"  (floor {run['floor_s']:.2f} s, dashed)"
        ax.set_title(label, loc="left", fontsize=10)
        ax.set_yticks(range(len(spans)), [sp["source"] for sp in spans])
        ax.invert_yaxis()
    axes[0].legend(loc="lower right", fontsize=8)
    axes[-1].set_xlabel(f"seconds from the start of the query (time_scale {w['time_scale']:g})")
    fig.suptitle(f"One reference query, three designs\n{_title(s)}", fontsize=11)
    return fig


def _executors(plt: Any, s: dict[str, Any]) -> Any:
    e = s["executors"]
    names = ["serial", *e["pools"]]
    walls = [e["serial"]["wall_s"], *(p["wall_s"] for p in e["pools"].values())]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    bars = left.bar(names, walls, color=["#999999", *([_INFER] * len(e["pools"]))])
    for bar, name in zip(bars, names, strict=True):
        eff = 1.0 if name == "serial" else e["pools"][name]["efficiency"]
        left.annotate(f"eff {eff:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    left.axhline(e["serial"]["wall_s"] / e["pool_size"], color="red", ls="--", lw=1, label="ideal: serial / cores")
    left.set_ylabel("wall seconds")
    left.set_title(f"{e['tasks']} inference tasks of {e['task_cpu_s']:.2f} CPU-s", fontsize=10)
    left.legend(fontsize=8)
    kinds = list(e["pools"])
    x = range(len(kinds))
    right.bar([i - 0.27 for i in x], [e["pools"][k]["start_cold_s"] * 1000 for k in kinds], 0.27, label="start, cold")
    right.bar(list(x), [e["pools"][k]["start_warm_s"] * 1000 for k in kinds], 0.27, label="start, warm")
    right.bar([i + 0.27 for i in x], [e["pools"][k]["per_task_overhead_ms"] for k in kinds], 0.27, label="per task")
    right.set_xticks(list(x), kinds)
    right.set_yscale("log")
    right.set_ylabel("milliseconds (log)")
    right.set_title("pool start-up and per-task round trip", fontsize=10)
    right.legend(fontsize=8)
    fig.suptitle(f"Executors\n{_title(s)}", fontsize=11)
    return fig


def _latency(plt: Any, s: dict[str, Any]) -> Any:
    q = s["queue"]
    fig, ax = plt.subplots(figsize=(8, 4))
    groups = (("enqueue → start", q["enqueue_to_start_ms"]), ("finish → caller has result", q["finish_to_caller_ms"]))
    for i, pct in enumerate(("p50", "p95", "p99")):
        xs = [g + (i - 1) * 0.25 for g in range(len(groups))]
        ax.bar(xs, [d[pct] for _, d in groups], 0.25, label=pct)
    ax.axhline(5, color="green", ls="--", lw=1, label="enqueue→start p50 target 5 ms")
    ax.axhline(20, color="red", ls="--", lw=1, label="enqueue→start p99 target 20 ms")
    ax.set_xticks(range(len(groups)), [g for g, _ in groups])
    ax.set_ylabel("milliseconds")
    ax.set_title(
        f"Queue overhead, {q['jobs']} zero-work jobs, one at a time (arq's defaults: ~500 ms)\n{_title(s)}", fontsize=9
    )
    ax.legend(fontsize=8)
    return fig


def _throughput(plt: Any, s: dict[str, Any]) -> Any:
    t = s["throughput"]
    workers = list(t["by_workers"])
    fig, ax = plt.subplots(figsize=(6, 4))
    x = range(len(workers))
    ax.bar(
        [i - 0.2 for i in x], [t["by_workers"][w]["jobs_per_s"] for w in workers], 0.4, label="measured", color=_INFER
    )
    ax.bar(
        [i + 0.2 for i in x],
        [t["by_workers"][w]["limit_jobs_per_s"] for w in workers],
        0.4,
        label="limit: cores / CPU-s per job",
        color="#bbbbbb",
    )
    ax.set_xticks(list(x), [f"{w} worker(s)" for w in workers])
    ax.set_ylabel("jobs per second")
    ax.set_title(f"Throughput at saturation\n{_title(s)}", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _growth_sources(plt: Any, s: dict[str, Any]) -> Any:
    g = s["growth"]["sources"]
    rows = g["rows"]
    n = [r["sources"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(n, [r["total_s"] for r in rows], "o-", label="ours (measured)", color=_INFER)
    ax.plot(n, [r["floor_s"] for r in rows], "s--", label="critical-path floor", color="red")
    ax.plot(n, [r["sequential_estimate_s"] for r in rows], "^:", label="one step at a time", color="#888888")
    ax.set_xlabel("sources per query")
    ax.set_ylabel(f"seconds (time_scale {g['time_scale']:g})")
    ax.set_xticks(n)
    ax.set_title(f"Latency vs sources, 1 worker, pool of {g['pool_size']}\n{_title(s)}", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def _growth_burst(plt: Any, s: dict[str, Any]) -> Any:
    b = s["growth"]["burst"]
    rows = b["rows"]
    n = [r["jobs"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for pct, style in (("p50", "o-"), ("p95", "s--"), ("max", "^:")):
        ax.plot(n, [r["latency_s"][pct] for r in rows], style, label=pct)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("jobs enqueued at once")
    ax.set_ylabel("enqueue → done, seconds")
    ax.set_title(
        f"Latency vs burst size, {b['workers']} workers (time_scale {b['time_scale']:g})\n{_title(s)}", fontsize=9
    )
    ax.legend(fontsize=8)
    return fig


def _peers(plt: Any, s: dict[str, Any]) -> Any:
    p = s["peers"]
    labels, rows = p["systems"], p["by_workers"]
    keys = [k for k in labels if any(k in row for row in rows.values())]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / max(1, len(rows))
    for i, (workers, row) in enumerate(rows.items()):
        xs = [k + (i - (len(rows) - 1) / 2) * width for k in range(len(keys))]
        left.bar(xs, [row[k]["jobs_per_s"] if k in row else 0 for k in keys], width, label=f"{workers} worker(s)")
    left.set_xticks(range(len(keys)), [labels[k].split(" (")[0].replace(", ", "\n") for k in keys], fontsize=8)
    left.set_ylabel("jobs per second")
    left.set_title(f"{p['jobs']:,} no-op jobs enqueued at once", fontsize=10)
    left.legend(fontsize=8)
    ref = p["reference"]["latency_s"]
    names = list(ref)
    right.barh(range(len(names)), [ref[k] for k in names], color=[_INFER if k == "ours" else "#bbbbbb" for k in names])
    right.set_yticks(range(len(names)), [labels[k].split(" (")[0] for k in names], fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("seconds, enqueue → done")
    right.set_title(f"one reference query (time_scale {p['reference']['time_scale']:g})", fontsize=10)
    fig.suptitle(f"Ours beside arq, SAQ and streaq, same Redis, same run\n{_title(s)}", fontsize=11)
    return fig


def _redis_load(plt: Any, s: dict[str, Any]) -> Any:
    r = s["redis"]
    rows = [row for row in r["rows"] if row.get("shards", 1) == 1]  # the sharded row is in the table only
    n = [row["workers"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    ours = [row["commands_per_s_per_worker"] * row["workers"] for row in rows]
    left.plot(n, ours, "o-", color=_INFER, label="ours (doorbell)")
    arq = [row.get("arq_10ms_commands_per_s_per_worker") for row in rows]
    if all(a is not None for a in arq):
        left.plot(n, [a * w for a, w in zip(arq, n, strict=True)], "s--", color="#888888", label="arq, 10 ms poll")
    left.plot(n, [2.0 * w for w in n], ":", color="red", label="target: 2/s per worker")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xticks(n, [str(w) for w in n])
    left.set_xlabel("idle workers")
    left.set_ylabel("Redis commands per second, all workers")
    left.set_title("Redis load while idle", fontsize=10)
    left.legend(fontsize=8)
    for pct, style in (("p50", "o-"), ("p99", "s--")):
        right.plot(n, [row["enqueue_to_start_ms"][pct] for row in rows], style, label=pct)
    right.axhline(5, color="green", ls=":", lw=1, label="p50 target 5 ms")
    right.axhline(20, color="red", ls=":", lw=1, label="p99 target 20 ms")
    right.set_xscale("log")
    right.set_xticks(n, [str(w) for w in n])
    right.set_xlabel("idle workers")
    right.set_ylabel("enqueue → start, ms")
    right.set_title("Waking an idle worker", fontsize=10)
    right.legend(fontsize=8)
    fig.suptitle(f"Redis load against worker count\n{_title(s)}", fontsize=11)
    return fig


def _bursts(plt: Any, s: dict[str, Any]) -> Any:
    b = s["bursts"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for run in b["runs"].values():
        xs = [row["jobs"] for row in run["rows"]]
        style = "o-" if run["config"] == "admission" else "s--" if run["config"] == "max_jobs_4" else "^:"
        label = f"{run['label']}, {run['workers']} worker(s)"
        left.plot(xs, [row["goodput"] for row in run["rows"]], style, label=label)
        right.plot(xs, [row["fraction_of_limit"] for row in run["rows"]], style, label=label)
    left.axhline(0.95, color="red", ls=":", lw=1)
    right.axhline(0.90, color="red", ls=":", lw=1)
    left.set_ylim(-0.05, 1.05)
    right.set_ylim(0, 1.1)
    left.set_xlabel("jobs enqueued at once")
    right.set_xlabel("jobs enqueued at once")
    left.set_ylabel("goodput: share of jobs ending ok")
    right.set_ylabel("ok jobs/s over the core limit")
    left.set_title(f"Goodput against burst size (deadline {b['deadline_s']:g} s)", fontsize=10)
    right.set_title("Throughput of good jobs", fontsize=10)
    left.legend(fontsize=7)
    fig.suptitle(
        f"Bursts of reference jobs (time_scale {b['time_scale']:g}), pool of {b['cores']} per worker\n{_title(s)}",
        fontsize=11,
    )
    return fig
