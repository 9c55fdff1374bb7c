"""The API as users run it: the documented ``agentq-api`` command on a free port, real Redis, keys."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from agentq import apikeys
from agentq_tools.processes import stop_process

API = str(Path(sys.executable).with_name("agentq-api"))


@dataclass(frozen=True)
class Api:
    """A running API: its base URL, keys of each kind, and its log."""

    url: str
    key: str
    """read, submit and cancel"""
    read_key: str
    """read only"""
    log: Path
    redis_url: str

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_data(url: str) -> dict[bytes, bytes]:
    """Everything Redis holds but the API's rate-limit counts (which every request, refused or not, adds
    to: they are kept in Redis so that API processes share them): each key and a dump of its value."""
    client = redis.Redis.from_url(url)
    try:
        keys = [k for k in client.scan_iter(count=1000) if b":api-rate" not in k]
        return {k: client.dump(k) or b"" for k in sorted(keys)}
    finally:
        client.close()


@pytest.fixture
def start_api(worker_env: dict[str, str], tmp_path: Path) -> Iterator[object]:
    """Factory: start ``agentq-api`` with extra settings and wait until /health answers; stop it afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**extra_env: str) -> Api:
        key, entry = apikeys.new_key("tester", ("read", "submit", "cancel"))
        read_key, read_entry = apikeys.new_key("reader", ("read",))
        port = free_port()
        env = {
            **worker_env,
            "AGENTQ_API_PORT": str(port),
            "AGENTQ_API_KEYS": f'["{entry}", "{read_entry}"]',
            **extra_env,
        }
        log = tmp_path / f"api-{len(started)}.log"
        with open(log, "wb") as out:
            started.append(subprocess.Popen([API], env=env, stdout=out, stderr=subprocess.STDOUT))
        api = Api(f"http://127.0.0.1:{port}", key, read_key, log, env["AGENTQ_REDIS_URL"])
        give_up = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{api.url}/health", timeout=1).status_code == 200:
                    return api
            except httpx.TransportError:
                pass
            if started[-1].poll() is not None or time.monotonic() > give_up:
                raise RuntimeError(f"agentq-api did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)

    yield start
    for process in started:
        stop_process(process)
