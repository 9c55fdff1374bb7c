"""End to end: a real redis-server, real worker processes and the real CLI, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import pytest
import redis

from agentq.contract import JobResult

pytestmark = [pytest.mark.e2e, pytest.mark.interpreter]
PRODUCER = str(Path(sys.executable).with_name("producer"))
StartWorkers = Callable[..., list[Popen[bytes]]]


def producer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the documented `producer` command and capture what it prints."""
    return subprocess.run([PRODUCER, *args], env=env, capture_output=True, text=True, timeout=60)


def descendants_of(pid: int) -> set[int]:
    """Every process below ``pid`` (the forkserver and the pool processes it forked)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in map(int, (task / "children").read_text().split()):
            found |= {child} | descendants_of(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_jobs_through_cli_and_two_workers(worker_env: dict[str, str], start_worker_processes: StartWorkers) -> None:
    """Six questions enqueued with `producer ask` are each answered once, by both workers, timing filled."""
    workers = start_worker_processes(2, AGENTQ_MAX_JOBS="1")
    asks = [
        subprocess.Popen(
            [PRODUCER, "ask", f"question number {i}"],
            env=worker_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    job_ids = [a.communicate(timeout=60)[0].strip() for a in asks]
    assert all(a.returncode == 0 for a in asks)
    assert len(set(job_ids)) == 6 and all(len(j) == 32 for j in job_ids)

    results = []
    for job_id in job_ids:
        done = producer(worker_env, "result", job_id, "--wait", "--timeout", "60", "--json")
        assert done.returncode == 0, done.stderr
        results.append(JobResult.model_validate_json(done.stdout))

    assert [r.job_id for r in results] == job_ids
    assert {r.question for r in results} == {f"question number {i}" for i in range(6)}
    for r in results:
        assert r.status == "ok" and r.job_try == 1 and len(r.sources) == 3
        assert r.timing is not None and r.timing.queued_at and r.timing.total_s > 0
        assert r.timing.critical_path_s > 0 and r.timing.sequential_estimate_s > r.timing.total_s * 0.5
        assert all(o.fetch_s and o.inference_s and o.inference for o in r.sources)
    pids = {int(r.worker_id.split(":")[1]) for r in results if r.worker_id}
    assert pids == {w.pid for w in workers}, "both workers should have taken jobs"

    status = producer(worker_env, "status", job_ids[0])
    assert (status.returncode, status.stdout.strip()) == (0, "complete")
    listed = json.loads(producer(worker_env, "workers", "--json").stdout)
    assert {w["pid"] for w in listed} == {w.pid for w in workers}


def test_inference_runs_in_the_pool_this_python_offers(
    worker_env: dict[str, str], start_worker_processes: StartWorkers
) -> None:
    """On 3.14 a worker's inference runs in its own subinterpreters; before 3.14 in child processes."""
    (worker,) = start_worker_processes(1)
    pool_children = descendants_of(worker.pid)
    done = producer(worker_env, "ask", "where does inference run?", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    result = JobResult.model_validate_json(done.stdout)
    assert result.executor is not None
    places = {(o.inference.ran_in.pid, o.inference.ran_in.interpreter_id) for o in result.sources if o.inference}
    if sys.version_info >= (3, 14):
        assert result.executor.kind == "interpreter"
        assert all(pid == worker.pid and interp != 0 for pid, interp in places)
    else:
        assert result.executor.kind == "process"
        assert all(pid != worker.pid and pid in pool_children for pid, _ in places)


def test_workers_stop_cleanly_and_leave_no_processes(start_worker_processes: StartWorkers) -> None:
    """SIGTERM stops a worker with exit code 0, and its pool's processes are gone with it."""
    from agentq_tools.processes import stop_workers

    workers = start_worker_processes(2, AGENTQ_EXECUTOR="process")
    children = set().union(*(descendants_of(w.pid) for w in workers))
    assert children, "a process pool has child processes"
    stop_workers(workers)
    assert [w.returncode for w in workers] == [0, 0]
    # The forkserver exits when it sees its parent's end of the pipe close: allow it a moment.
    give_up = time.monotonic() + 5
    while [pid for pid in children if alive(pid)] and time.monotonic() < give_up:
        time.sleep(0.05)
    assert not [pid for pid in children if alive(pid)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask", ""], "question is empty"),
        (["ask", "   "], "question is empty"),
        (["ask", "bell\x07"], "control character"),
        (["ask", "x" * 2001], "limit is 2,000"),
        (["ask", "ok", "--sources", "weather,stocks"], "unknown source 'stocks'"),
        (["ask", "ok", "--deadline", "-1"], "deadline_s: must be > 0"),
        (["ask", "ok", "--source-timeout", "99999"], "source_timeout_s: must be > 0 and <= 30"),
    ],
)
def test_cli_refuses_bad_input_before_enqueueing(
    settings_env: dict[str, str], redis_url: str, args: list[str], message: str
) -> None:
    """Bad input exits 2 with one line saying what is wrong, and nothing reaches Redis."""
    done = producer(settings_env, *args)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_cli_exit_codes_for_unknown_job_timeout_and_redis_down(settings_env: dict[str, str]) -> None:
    """Unknown id exits 3, waiting past --timeout exits 4, unreachable Redis exits 5 with a masked URL."""
    assert producer(settings_env, "result", "no-such-job").returncode == 3
    queued = producer(settings_env, "ask", "nobody is working")  # no worker runs in this test
    waited = producer(settings_env, "result", queued.stdout.strip(), "--wait", "--timeout", "0.3")
    assert (waited.returncode, "did not finish within 0.3s" in waited.stderr) == (4, True)

    from agentq_tools.embedded import free_port

    down = {**settings_env, "AGENTQ_REDIS_URL": f"redis://:hunter2@127.0.0.1:{free_port()}/0"}
    failed = producer(down, "ask", "hello")
    assert failed.returncode == 5
    assert "cannot reach Redis at redis://:***@127.0.0.1" in failed.stderr and "hunter2" not in failed.stderr
