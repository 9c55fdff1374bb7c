"""Benchmark 1: one reference query four ways: sequential, the reference design, ours, the floor.

Sequential and the reference design ("fetch all, then infer all") are written here, not in the
worker: they use the same source registry, the same ``worker.pool.bag_of_words.analyse`` and a pool
from the same ``worker.pool.executor.create_pool``. Ours is the real thing: the question goes through
Redis to a real worker process, whose result carries its own timeline and critical-path floor.
The three designs run interleaved, ``workload_repeats`` times; medians are reported.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentq.contract import JobResult
from agentq.settings import Settings
from agentq.sources import REFERENCE_SOURCES, SourceContext, installed_sources
from agentq_tools.bench.cluster import Cluster, client_settings
from agentq_tools.bench.config import BenchConfig
from agentq_tools.bench.executors import units_for
from agentq_tools.bench.report import Figure
from agentq_tools.demo import REFERENCE_QUESTION
from producer.client import Client
from worker.job.timing import critical_path
from worker.pool import bag_of_words as inference
from worker.pool import pooled
from worker.pool.executor import InferencePool, create_pool


@dataclass
class Run:
    """One design's run of the query: total wall time and each source's spans (from its start)."""

    design: str
    total_s: float
    spans: list[dict[str, Any]] = field(default_factory=list)
    floor_s: float | None = None
    sequential_estimate_s: float | None = None
    end_to_end_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _span(name: str, f0: float, f1: float, out: dict[str, object] | None, t0: float) -> dict[str, Any]:
    span: dict[str, Any] = {"source": name, "fetch_start_s": f0 - t0, "fetch_end_s": f1 - t0}
    if out is not None:
        span["inference_start_s"] = float(out["started"]) - t0  # type: ignore[arg-type]
        span["inference_end_s"] = float(out["ended"]) - t0  # type: ignore[arg-type]
        span["inference_cpu_s"] = float(out["cpu_s"])  # type: ignore[arg-type]
    return span


async def sequential(settings: Settings, units: int) -> Run:
    """One fetch after another, then one inference after another on this one core."""
    ctx = SourceContext(settings, "bench-sequential")
    t0 = time.monotonic()
    fetched = []
    for name in REFERENCE_SOURCES:
        f0 = time.monotonic()
        text = await installed_sources()[name].fetch_text(REFERENCE_QUESTION, ctx)
        fetched.append((name, f0, time.monotonic(), text))
    spans = []
    for name, f0, f1, text in fetched:
        out = pooled.run_analysis(inference.analyse, REFERENCE_QUESTION, text, {"units": units}, "thread")
        spans.append(_span(name, f0, f1, out, t0))
    return Run("sequential", time.monotonic() - t0, spans)


async def reference(settings: Settings, units: int, pool: InferencePool) -> Run:
    """The reference design: every fetch at once (TaskGroup), then every inference at once."""
    ctx = SourceContext(settings, "bench-reference")
    t0 = time.monotonic()

    async def fetch(name: str) -> tuple[str, float, float, str]:
        f0 = time.monotonic()
        text = await installed_sources()[name].fetch_text(REFERENCE_QUESTION, ctx)
        return name, f0, time.monotonic(), text

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(fetch(name)) for name in REFERENCE_SOURCES]
    fetched = [t.result() for t in tasks]
    outputs = await asyncio.gather(
        *(
            pool.run(pooled.run_analysis, inference.analyse, REFERENCE_QUESTION, text, {"units": units}, pool.kind)
            for _, _, _, text in fetched
        )
    )
    spans = [_span(name, f0, f1, out, t0) for (name, f0, f1, _), out in zip(fetched, outputs, strict=True)]
    return Run("reference", time.monotonic() - t0, spans)


async def ours(client: Client) -> tuple[Run, JobResult]:
    """The real system: enqueue, a worker fans out with overlapped stages, wait for the result."""
    t0 = time.monotonic()
    job_id = await client.enqueue(REFERENCE_QUESTION, sources=list(REFERENCE_SOURCES))
    result = await client.result(job_id, timeout=120)
    end_to_end = time.monotonic() - t0
    if result.timing is None or result.status != "ok":
        raise RuntimeError(f"reference query did not succeed: {result.status} {result.errors}")
    spans = [
        {
            "source": o.name,
            "fetch_start_s": o.fetch_start_s,
            "fetch_end_s": o.fetch_end_s,
            "inference_start_s": o.inference_start_s,
            "inference_end_s": o.inference_end_s,
            "inference_cpu_s": o.inference_cpu_s,
        }
        for o in result.sources
    ]
    run = Run("ours", result.timing.total_s, spans, result.timing.critical_path_s, result.timing.sequential_estimate_s)
    run.end_to_end_s = end_to_end
    return run, result


def _stages(run: Run) -> list[tuple[float, float | None]]:
    return [
        (s["fetch_end_s"] - s["fetch_start_s"], s["inference_end_s"] - s["inference_start_s"])
        for s in run.spans
        if s.get("inference_end_s") is not None
    ]


def _inference_s(run: Run) -> float:
    """Mean wall time of one inference in this run."""
    return statistics.fmean(i or 0.0 for _, i in _stages(run))


def _median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.total_s)[len(runs) // 2]


async def _measure(cfg: BenchConfig, settings: Settings, units: int) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {"sequential": [], "reference": [], "ours": []}
    pool = await asyncio.to_thread(create_pool, "auto", cfg.pool_size)
    try:
        async with Client(settings) as client:
            await ours(client)  # first job of the worker: not measured
            for _ in range(cfg.workload_repeats):
                runs["sequential"].append(await sequential(settings, units))
                runs["reference"].append(await reference(settings, units, pool))
                runs["ours"].append((await ours(client))[0])
    finally:
        await asyncio.to_thread(pool.shutdown)
    return runs


def run(
    cfg: BenchConfig, calibration: dict[str, float], redis_url: str, log_dir: Path
) -> tuple[dict[str, Any], list[Figure]]:
    """Measure the three designs side by side and compare them with the floor."""
    scale = cfg.workload_time_scale
    ref_units = units_for(cfg.reference_inference_cpu_s, calibration)
    units = max(1, round(ref_units * scale))  # what the worker computes from the same settings
    settings = client_settings(redis_url, time_scale=scale, inference_units=ref_units)
    with Cluster(redis_url, log_dir, time_scale=scale, inference_units=ref_units, pool_size=cfg.pool_size) as cluster:
        cluster.add(1)
        runs = asyncio.run(_measure(cfg, settings, units))

    med = {d: statistics.median(r.total_s for r in rs) for d, rs in runs.items()}
    ours_runs = runs["ours"]
    floor = statistics.median(r.floor_s or 0.0 for r in ours_runs)
    # The ideal speed-up: sequential's own wall time over the floor computed from sequential's own
    # measured stages (each inference timed alone on an idle core) on a pool of this size.
    seq_floors = [critical_path(_stages(r), cfg.pool_size) for r in runs["sequential"]]
    ideal = statistics.median(r.total_s / f for r, f in zip(runs["sequential"], seq_floors, strict=True))
    alone = statistics.fmean(_inference_s(r) for r in runs["sequential"])
    side_by_side = statistics.fmean(_inference_s(r) for r in ours_runs)
    nominal_floor = critical_path(
        [
            (2.0 * scale, cfg.reference_inference_cpu_s * scale),
            (1.5 * scale, cfg.reference_inference_cpu_s * scale),
            (3.0 * scale, cfg.reference_inference_cpu_s * scale),
        ],
        cfg.pool_size,
    )
    result: dict[str, Any] = {
        "time_scale": scale,
        "reference_units": ref_units,
        "units_per_inference": units,
        "pool_size": cfg.pool_size,
        "repeats": cfg.workload_repeats,
        "nominal": {
            "sequential_s": 12.5 * scale,
            "floor_s": nominal_floor,
            "note": "latencies 2/1.5/3 s and 2 CPU-s per inference, times time_scale",
        },
        "median_s": {**med, "floor": floor, "floor_of_sequential_stages": statistics.median(seq_floors)},
        "inference_s_alone": alone,
        "inference_s_in_pool": side_by_side,
        "ours_end_to_end_s": statistics.median(r.end_to_end_s or 0.0 for r in ours_runs),
        "inference_cpu_s_per_source": statistics.fmean(
            s["inference_cpu_s"] for r in ours_runs for s in r.spans if s.get("inference_cpu_s") is not None
        ),
        "ratios": {
            "ours_over_floor": statistics.median(r.total_s / (r.floor_s or 1.0) for r in ours_runs),
            "sequential_over_ours": med["sequential"] / med["ours"],
            "reference_over_ours": med["reference"] / med["ours"],
            "sequential_over_reference": med["sequential"] / med["reference"],
            "ideal_sequential_over_floor": ideal,
        },
        "timeline": {d: _median_run(rs).as_dict() for d, rs in runs.items()},
        "runs": {d: [r.total_s for r in rs] for d, rs in runs.items()},
    }
    return result, _figures(result)


def _figures(r: dict[str, Any]) -> list[Figure]:
    q, m = r["ratios"], r["median_s"]
    w = "workload"
    ideal = q["ideal_sequential_over_floor"]
    return [
        Figure(
            w,
            f"sequential (time_scale {r['time_scale']:g})",
            m["sequential"],
            "s",
            f"nominal {r['nominal']['sequential_s']:.2f} s",
        ),
        Figure(w, "reference design (fetch all, then infer all)", m["reference"], "s"),
        Figure(w, "ours (stages overlapped, via Redis + worker)", m["ours"], "s"),
        Figure(
            w,
            f"critical-path floor on {r['pool_size']} cores",
            m["floor"],
            "s",
            f"nominal {r['nominal']['floor_s']:.2f} s",
        ),
        Figure(
            w,
            "ours / floor",
            q["ours_over_floor"],
            "x",
            "≤ 1.03",
            q["ours_over_floor"] <= 1.03,
            "the floor assumes an inference starts the instant its fetch ends and that each inference takes "
            "as long as when measured; the hop into the pool, the event loop and the worker's other tasks "
            "(heartbeat, arq's poll) add milliseconds, which weigh more at a small time_scale",
        ),
        Figure(
            w,
            "sequential / ours",
            q["sequential_over_ours"],
            "x",
            f"≥ 0.97 × ideal {ideal:.2f} = {0.97 * ideal:.2f}",
            q["sequential_over_ours"] >= 0.97 * ideal,
            f"the ideal takes each inference as long as it took alone ({r['inference_s_alone']:.3f} s); in the "
            f"pool, two at once on the 2 vCPUs took {r['inference_s_in_pool']:.3f} s each: the cores slow each "
            f"other down, which no scheduling can win back",
        ),
        Figure(
            w,
            "reference / ours",
            q["reference_over_ours"],
            "x",
            "> 1 (overlap beats fetch-then-infer)",
            q["reference_over_ours"] > 1.0,
            "on 2 cores, inference queues for a core in both designs",
        ),
        Figure(
            w,
            "sequential / reference",
            q["sequential_over_reference"],
            "x",
            "≥ 1.4 (the reference's own target)",
            q["sequential_over_reference"] >= 1.4,
            "the reference design's inferences queue for 2 cores",
        ),
    ]
