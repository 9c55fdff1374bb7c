"""``worker --check``: the per-container health check, run as a real command against real workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from agentq.protocol.keys import Keys
from agentq_tools.embedded import free_port
from agentq_tools.processes import stop_workers

WORKER = str(Path(sys.executable).with_name("worker"))

pytestmark = pytest.mark.e2e


def check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``worker --check`` with ``env``."""
    return subprocess.run([WORKER, "--check"], env=env, capture_output=True, text=True, timeout=60)


def test_check_passes_for_a_live_worker_and_fails_after_a_clean_stop(
    start_worker_processes: Callable[..., list[subprocess.Popen[bytes]]], worker_env: dict[str, str], tmp_path: Path
) -> None:
    """Exit 0 while this worker heartbeats; exit 1 once it has stopped (its id file and key are gone)."""
    env = {**worker_env, "AGENTQ_WORKER_ID_FILE": str(tmp_path / "worker.id")}
    (proc,) = start_worker_processes(1, AGENTQ_WORKER_ID_FILE=env["AGENTQ_WORKER_ID_FILE"])
    alive = check(env)
    assert alive.returncode == 0, alive.stderr
    worker_id = (tmp_path / "worker.id").read_text()
    assert f":{proc.pid}:" in worker_id and worker_id in alive.stdout

    stop_workers([proc])
    dead = check(env)
    assert dead.returncode == 1
    assert "no worker id" in dead.stderr


def test_check_fails_once_a_killed_workers_key_expires(
    start_worker_processes: Callable[..., list[subprocess.Popen[bytes]]], worker_env: dict[str, str], tmp_path: Path
) -> None:
    """After SIGKILL the id file stays but the heartbeat key expires: the check then exits 1."""
    id_file = str(tmp_path / "worker.id")
    env = {**worker_env, "AGENTQ_WORKER_ID_FILE": id_file}
    (proc,) = start_worker_processes(1, AGENTQ_WORKER_ID_FILE=id_file)
    os.killpg(proc.pid, signal.SIGKILL)  # the worker and its pool, as an OOM kill would
    proc.wait()
    key = Keys("agentq").worker(Path(id_file).read_text())
    client = redis.Redis.from_url(worker_env["AGENTQ_REDIS_URL"])
    give_up = time.monotonic() + 10  # TTL = 3 beats of 1 s
    while client.exists(key) and time.monotonic() < give_up:
        time.sleep(0.1)
    client.close()
    result = check(env)
    assert result.returncode == 1
    assert "not heartbeating" in result.stderr


def test_check_checks_only_its_own_worker(
    start_worker_processes: Callable[..., list[subprocess.Popen[bytes]]], worker_env: dict[str, str], tmp_path: Path
) -> None:
    """Another live worker on the queue does not make a container with a dead worker look healthy."""
    start_worker_processes(1)
    (tmp_path / "worker.id").write_text("somehost:1:dead00")
    result = check({**worker_env, "AGENTQ_WORKER_ID_FILE": str(tmp_path / "worker.id")})
    assert result.returncode == 1
    assert "somehost:1:dead00 is not heartbeating" in result.stderr


def test_check_without_id_file_setting_or_redis_fails(worker_env: dict[str, str], tmp_path: Path) -> None:
    """No AGENTQ_WORKER_ID_FILE exits 1 saying so; an unreachable Redis exits 5."""
    unset = check(worker_env)
    assert unset.returncode == 1 and "AGENTQ_WORKER_ID_FILE" in unset.stderr
    (tmp_path / "worker.id").write_text("h:1:abc")
    env = {
        **worker_env,
        "AGENTQ_WORKER_ID_FILE": str(tmp_path / "worker.id"),
        "AGENTQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    down = check(env)
    assert down.returncode == 5 and "cannot reach Redis" in down.stderr


def test_heartbeat_record_names_pool_and_metrics_port(
    start_worker_processes: Callable[..., list[subprocess.Popen[bytes]]], worker_env: dict[str, str]
) -> None:
    """'producer workers --json' lists the live worker with its pool and the port /metrics listens on."""
    (proc,) = start_worker_processes(1, AGENTQ_METRICS_PORT="0")
    out = subprocess.run(
        [str(Path(sys.executable).with_name("producer")), "workers", "--json"],
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (record,) = json.loads(out.stdout)
    assert record["pid"] == proc.pid and record["pool_size"] == 2
    assert isinstance(record["metrics_port"], int) and record["metrics_port"] > 0
