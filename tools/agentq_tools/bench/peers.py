"""Benchmark 6: the peers in the same run: arq (twice), SAQ and streaq beside ours, on one Redis.

The peers are installed from PyPI, at pinned versions, into a side environment of their own
(``.venv/peers-<python>``, made once; ``bench.peer_apps`` says what runs there). Other work on the
machine comes and goes, so the systems are measured side by side, interleaved: each has a
redis-server of its own and its workers all running at once (idle workers of the others cost next
to nothing), and the runs go round the systems ``peer_rounds`` times, in a different order each
round; the median is reported. With one worker each and then two:

- **no-op burst**: ``noop_jobs`` jobs that do nothing, enqueued at once through the system's own
  client, timed from the first enqueue until none is unfinished (one command on the system's own
  bookkeeping every 5 ms). Ours: the zero-work job (the ``noop`` source and the ``noop`` analysis,
  in the pool) with every guarantee on: leases, first-result-wins, progress, dedup.
- **reference query** (one worker): the reference workload written as its reference design
  (``bench.peer_apps.common.reference``) on the peer's queue, timed the same way; ours is the real
  job (overlapped stages). Same latencies, the same analysis and units, a pool of the same kind.

Redis commands per job come from ``INFO commandstats`` (the driver's polls taken out).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]
import redis

from agentq.settings import get_settings
from agentq.sources import REFERENCE_SOURCES
from agentq_tools.bench import redisstats
from agentq_tools.bench.cluster import Cluster, client_settings
from agentq_tools.bench.config import BenchConfig
from agentq_tools.bench.executors import units_for
from agentq_tools.bench.queue import zero_work, zero_work_settings
from agentq_tools.bench.report import Figure
from agentq_tools.demo import REFERENCE_QUESTION
from agentq_tools.embedded import EmbeddedRedis
from producer.client import Client
from worker.job.sources.simulated import compose

#: Target: the worker's own CPU per zero-work job (issue 18).
MAX_WORKER_CPU_MS_PER_JOB = 1.0

#: The peers' versions, pinned so runs compare (arq: the one the worker is built on).
PEERS = ("arq==0.28.0", "saq==0.26.4", "streaq==7.2.0")
ROOT = Path(__file__).resolve().parents[3]
ENQUEUE_CONCURRENCY = 50
POLL_S = 0.005


@dataclass(frozen=True)
class System:
    """One queue system as the benchmark runs it."""

    key: str
    label: str
    app: str  # the peer_apps module, or "" for ours
    poll_delay_s: float = 0.5

    def worker_command(self, venv: Path) -> list[str]:
        module = f"agentq_tools.bench.peer_apps.{self.app}_app"
        if self.app == "arq":
            return [str(venv / "bin" / "arq"), f"{module}.WorkerSettings"]
        if self.app == "saq":
            return [str(venv / "bin" / "saq"), f"{module}.settings"]
        return [str(venv / "bin" / "streaq"), "run", f"{module}:worker"]


PEER_SYSTEMS = (
    System("arq", "arq 0.28, defaults (0.5 s poll)", "arq", 0.5),
    System("arq_10ms", "arq 0.28, 10 ms poll", "arq", 0.01),
    System("saq", "SAQ 0.26", "saq"),
    System("streaq", "streaq 7.2", "streaq"),
)
OURS = System("ours", "agentq (every guarantee on)", "")


def peers_venv() -> Path:
    """Where the side environment lives: beside this interpreter's own virtual environment."""
    return Path(sys.prefix).parent / f"peers-py{sys.version_info.major}{sys.version_info.minor}"


def ensure_peers(log_dir: Path) -> tuple[Path | None, str]:
    """The side environment with the peers installed (made on first use), or None and why not."""
    venv = peers_venv()
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text() == " ".join(PEERS):
        return venv, "installed"
    log = log_dir / "peers-install.log"
    try:
        with log.open("wb") as out:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdout=out, stderr=out)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            subprocess.run([*pip, *PEERS], check=True, stdout=out, stderr=out, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not install {', '.join(PEERS)} into {venv}: {exc} (see {log})"
    stamp.write_text(" ".join(PEERS))
    return venv, "installed now"


class PeerWorkers:
    """A peer's worker processes, started with its own command, ready once each has marked itself."""

    def __init__(self, system: System, venv: Path, env: dict[str, str], log_dir: Path) -> None:
        self.system, self.venv, self.env, self.log_dir = system, venv, env, log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, count: int, redis_url: str) -> None:
        for i in range(count):
            log = open(self.log_dir / f"{self.system.key}-{len(self.procs) + i}.log", "wb")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen(
                    self.system.worker_command(self.venv),
                    env=self.env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()
        give_up = time.monotonic() + 120
        with redis.Redis.from_url(redis_url) as client:
            while sum(1 for _ in client.scan_iter(match="bench:ready:*")) < len(self.procs):
                if any(p.poll() is not None for p in self.procs) or time.monotonic() > give_up:
                    logs = (self.log_dir / f"{self.system.key}-0.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{self.system.label} workers did not start:\n{logs}")
                time.sleep(0.1)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()


def peer_env(redis_url: str, system: System, pool_size: int, units: int, time_scale: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTQ_", "BENCH_", "PYTHON"))}
    env.update(
        PYTHONPATH=f"{ROOT / 'tools'}{os.pathsep}{ROOT}",
        BENCH_REDIS_URL=redis_url,
        BENCH_POLL_DELAY_S=str(system.poll_delay_s),
        BENCH_POOL_SIZE=str(pool_size),
        BENCH_UNITS=str(units),
        BENCH_TIME_SCALE=str(time_scale),
        BENCH_QUESTION=REFERENCE_QUESTION,
        BENCH_TEXTS=json.dumps({name: compose(REFERENCE_QUESTION, name) for name in REFERENCE_SOURCES}),
    )
    return env


def _drive(venv: Path, env: dict[str, str], system: System, mode: str, n: int) -> dict[str, Any]:
    command = [str(venv / "bin" / "python"), "-m", "agentq_tools.bench.peer_apps.drive", system.app, mode, str(n)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{system.label} driver failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _flush(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.flushall()


def _noop_run(redis_url: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One no-op burst, with the commands it cost Redis per job (the driver's polls taken out)."""
    redisstats.reset(redis_url)
    result: dict[str, Any] = run()
    commands = redisstats.commands(redis_url)
    polls = result.pop("polls", 0)
    result["jobs_per_s"] = result["jobs"] / result["wall_s"]
    result["commands_per_job"] = max(0, sum(commands.values()) - polls) / result["jobs"]
    return result


# ------------------------------------------------------------------------------------------ ours
async def _ours_noop(redis_url: str, n: int) -> dict[str, Any]:
    settings = client_settings(redis_url)
    async with Client(settings) as client:
        requests = [zero_work(client, f"no-op job {i}") for i in range(n)]
        gate = asyncio.Semaphore(ENQUEUE_CONCURRENCY)

        async def enqueue(request: Any) -> None:
            async with gate:
                await client.submit_request(request, dedup=True)

        started = time.time()
        await asyncio.gather(*(enqueue(r) for r in requests))
        polls = await _drained(client, settings.keys.queue)
        return {"jobs": n, "wall_s": time.time() - started, "polls": polls}


async def _drained(client: Client, queue: str) -> int:
    """Count our unfinished jobs (a job leaves the queue in the step that stores its result) every
    ``POLL_S`` until there are none; return how many times it looked."""
    polls = 1
    while await client.redis.zcard(queue) > 0:
        polls += 1
        await asyncio.sleep(POLL_S)
    return polls


async def _ours_reference(redis_url: str, repeats: int) -> list[float]:
    settings = client_settings(redis_url)
    latencies = []
    async with Client(settings) as client:
        questions = [f"{REFERENCE_QUESTION} ({time.time()} {i})" for i in range(repeats)]
        for request in [client.validate(q, sources=list(REFERENCE_SOURCES)) for q in questions]:
            started = time.time()
            await client.submit_request(request)
            await _drained(client, settings.keys.queue)
            latencies.append(time.time() - started)
    return latencies


# ------------------------------------------------------------------------------------------ run
def run(
    cfg: BenchConfig, calibration: dict[str, float], redis_url: str, log_dir: Path
) -> tuple[dict[str, Any], list[Figure]]:
    """No-op bursts with 1 and 2 workers per system, then the reference query, all side by side."""
    scale = cfg.workload_time_scale
    units = max(1, round(units_for(cfg.reference_inference_cpu_s, calibration) * scale))
    venv, how = ensure_peers(log_dir) if cfg.run_peers else (None, "skipped (--quick without --peers)")
    systems = [OURS, *(PEER_SYSTEMS if venv is not None else ())]
    summary: dict[str, Any] = {
        "jobs": cfg.noop_jobs,
        "rounds": cfg.peer_rounds,
        "peers": list(PEERS),
        "environment": str(venv) if venv else None,
        "environment_status": how,
        "systems": {s.key: s.label for s in systems},
        "concurrency": {"ours": get_settings().max_jobs, "arq": 10, "arq_10ms": 10, "saq": 10, "streaq": 16},
        "by_workers": {},
        "reference": {"time_scale": scale, "units_per_inference": units, "repeats": cfg.workload_repeats},
    }
    with contextlib.ExitStack() as stack:
        urls = {OURS.key: redis_url}
        for system in systems[1:]:
            urls[system.key] = stack.enter_context(EmbeddedRedis()).url
        for workers in cfg.worker_counts:
            ours = Cluster(urls[OURS.key], log_dir, pool_size=cfg.pool_size, **zero_work_settings())
            summary["by_workers"][str(workers)] = _side_by_side(
                cfg, systems, urls, venv, log_dir, workers, ours, pool_size=0, units=1, mode="noop"
            )
        ours = Cluster(
            urls[OURS.key],
            log_dir,
            time_scale=scale,
            inference_units=units_for(cfg.reference_inference_cpu_s, calibration),  # at time_scale 1, as ours takes it
            pool_size=cfg.pool_size,
        )
        summary["reference"]["latency_s"] = _side_by_side(
            cfg, systems, urls, venv, log_dir, 1, ours, pool_size=cfg.pool_size, units=units, mode="reference"
        )
    _flush(redis_url)
    return summary, _figures(summary)


def _side_by_side(
    cfg: BenchConfig,
    systems: list[System],
    urls: dict[str, str],
    venv: Path | None,
    log_dir: Path,
    workers: int,
    our_cluster: Cluster,
    *,
    pool_size: int,
    units: int,
    mode: str,
) -> dict[str, Any]:
    """Start every system's workers, then go round them ``peer_rounds`` times; the medians."""
    runs: dict[str, list[dict[str, Any]]] = {s.key: [] for s in systems}
    scale = cfg.workload_time_scale
    with contextlib.ExitStack() as stack:
        for url in urls.values():
            _flush(url)
        stack.enter_context(our_cluster).add(workers)
        peers: dict[str, PeerWorkers] = {}
        for system in systems[1:]:
            assert venv is not None
            env = peer_env(urls[system.key], system, pool_size, units, scale)
            peers[system.key] = PeerWorkers(system, venv, env, log_dir)
            stack.callback(peers[system.key].stop)
            peers[system.key].start(workers, urls[system.key])
        for system in systems:  # warm-up, not measured
            _one_run(system, urls[system.key], peers.get(system.key), mode, 10 if mode == "noop" else 1)
        for r in range(cfg.peer_rounds):
            order = systems[r % len(systems) :] + systems[: r % len(systems)]
            for system in order:
                n = cfg.noop_jobs if mode == "noop" else cfg.workload_repeats
                ours = system is OURS
                cpu_before = _cpu_s(our_cluster.procs) if ours else 0.0
                run = _one_run(system, urls[system.key], peers.get(system.key), mode, n)
                if ours and mode == "noop":  # the workers' own CPU time (their pools included), per job
                    run["worker_cpu_ms_per_job"] = 1000 * (_cpu_s(our_cluster.procs) - cpu_before) / n
                runs[system.key].append(run)
    if mode == "reference":
        return {key: statistics.median(x for r in rs for x in r["latencies_s"]) for key, rs in runs.items()}
    result = {}
    for key, rs in runs.items():
        rates = [r["jobs_per_s"] for r in rs]
        result[key] = {
            "jobs": rs[0]["jobs"],
            "jobs_per_s": statistics.median(rates),
            "jobs_per_s_runs": rates,
            "commands_per_job": statistics.median(r["commands_per_job"] for r in rs),
        }
        if "worker_cpu_ms_per_job" in rs[0]:
            result[key]["worker_cpu_ms_per_job"] = statistics.median(r["worker_cpu_ms_per_job"] for r in rs)
    return result


def _cpu_s(procs: list[Any]) -> float:
    """User and system CPU seconds of these worker processes so far (a 3.14 pool is their threads)."""
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = psutil.Process(proc.pid).cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def _one_run(system: System, url: str, peers: PeerWorkers | None, mode: str, n: int) -> dict[str, Any]:
    """One burst (or ``n`` reference queries) on one system; commands per job from its own Redis."""
    if system is OURS:
        call: Callable[[], dict[str, Any]] = (
            (lambda: asyncio.run(_ours_noop(url, n)))
            if mode == "noop"
            else (lambda: {"latencies_s": asyncio.run(_ours_reference(url, n))})
        )
    else:
        assert peers is not None
        call = lambda: _drive(peers.venv, peers.env, system, mode, n)  # noqa: E731
    if mode != "noop":
        return call()
    return _noop_run(url, call)


def _figures(s: dict[str, Any]) -> list[Figure]:
    figs: list[Figure] = []
    labels = s["systems"]
    for workers, row in s["by_workers"].items():
        ours = row["ours"]["jobs_per_s"]
        cpu = row["ours"].get("worker_cpu_ms_per_job")
        if cpu is not None:
            figs.append(
                Figure(
                    "peers",
                    f"worker CPU per zero-work job, {workers} worker(s) (its own CPU time, pool included)",
                    cpu,
                    "ms",
                    f"≤ {MAX_WORKER_CPU_MS_PER_JOB}",
                    cpu <= MAX_WORKER_CPU_MS_PER_JOB,
                    "the worker's user + system time over the no-op burst, divided by its jobs",
                )
            )
        for key, r in row.items():
            figs.append(
                Figure(
                    "peers",
                    f"{s['jobs']:,} no-op jobs, {workers} worker(s): {labels[key]}",
                    r["jobs_per_s"],
                    "jobs/s",
                    f"{r['commands_per_job']:.1f} Redis commands/job",
                )
            )
        for key in ("saq", "streaq"):
            if key in row:
                ratio = ours / row[key]["jobs_per_s"]
                figs.append(
                    Figure(
                        "peers",
                        f"{workers} worker(s): ours / {labels[key]}, jobs/s",
                        ratio,
                        "x",
                        "≥ 1.0 (match or beat)",
                        ratio >= 1.0,
                        "each of our jobs runs a fan-out, one work unit of inference in the pool, a result model, "
                        "progress and dedup; the worker's event loop and Redis share 2 cores with the peer's client",
                    )
                )
        for key in ("arq", "arq_10ms"):
            if key in row:
                ratio = ours / row[key]["jobs_per_s"]
                figs.append(Figure("peers", f"{workers} worker(s): ours / {labels[key]}, jobs/s", ratio, "x"))
    ref = s["reference"]["latency_s"]
    figs.append(Figure("peers", "reference query, ours (overlapped stages)", ref["ours"], "s"))
    for key, latency in ref.items():
        if key == "ours":
            continue
        figs.append(
            Figure(
                "peers",
                f"reference query, reference design on {labels[key]}",
                latency,
                "s",
                f"ours {ref['ours']:.3f} s: ours / theirs {ref['ours'] / latency:.2f} < 1",
                ref["ours"] < latency,
                "the reference design waits for every fetch before inferring; arq's default poll adds up to 0.5 s",
            )
        )
    if s["environment"] is None:
        figs.append(Figure("peers", f"peers not run: {s['environment_status']}", None, ""))
    return figs
