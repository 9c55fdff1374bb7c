"""TLS with a CA file and hostname checking, through the settings; the shipped Redis configs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
import yaml

from agentq.errors import RedisUnavailable
from agentq.settings import Settings
from agentq_tools.embedded import EmbeddedRedis, TlsFiles
from producer.client import Client
from tests.reliability.conftest import Workers

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, Path]]:
    """A TLS-only redis-server with a certificate for ``localhost`` from a throw-away CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    files = TlsFiles(cert=tmp_path / "server.pem", key=tmp_path / "server.key", ca=tmp_path / "ca.pem")
    cert.private_key_and_cert_chain_pem.write_to_path(str(files.cert))
    cert.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    with EmbeddedRedis(tls=files) as server:
        yield server, files.ca


@pytest.mark.e2e
async def test_worker_and_client_over_tls_with_ca_file_and_hostname_check(
    tls_redis: tuple[EmbeddedRedis, Path], workers: Workers, tmp_path: Path
) -> None:
    """rediss:// with AGENTQ_REDIS_CA_FILE: a worker and the client talk; a wrong CA or host name is refused."""
    server, ca_file = tls_redis
    assert server.url.startswith("rediss://localhost:")
    env = {"AGENTQ_REDIS_URL": server.url, "AGENTQ_REDIS_CA_FILE": str(ca_file)}
    settings = Settings(redis_url=server.url, redis_ca_file=str(ca_file), time_scale=0.02)
    assert settings.redis_tls_check_hostname

    from agentq_tools.processes import start_workers

    (worker,) = start_workers(1, {**workers.env, **env}, tmp_path)
    workers.started.append(worker)
    async with Client(settings) as client:
        give_up = time.monotonic() + 60
        while not await client.workers():  # its heartbeat arrived over TLS
            assert worker.poll() is None and time.monotonic() < give_up, workers.logs()
            await asyncio.sleep(0.05)
        result = await client.result(await client.enqueue("secure?"), timeout=30)
    assert result.status == "ok"

    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    wrong_ca = settings.model_copy(update={"redis_ca_file": str(other_ca)})
    wrong_host = settings.model_copy(update={"redis_url": server.url.replace("localhost", "127.0.0.1")})
    for bad in (wrong_ca, wrong_host):
        with pytest.raises(RedisUnavailable, match="certificate verify failed"):
            async with Client(bad):
                pass


def test_shipped_redis_configs_require_a_password_and_stay_private() -> None:
    """deploy/redis.conf listens on every interface, so the compose file and the k8s Service must not
    publish it; protected mode is on and a password is required (each role's user), never written in the file."""
    conf = (ROOT / "deploy" / "redis.conf").read_text()
    directives = [line.split() for line in conf.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert ["protected-mode", "yes"] in directives
    # The password comes from the command line (a secret), and no ACL user may log in without one.
    assert not [d for d in directives if d[0].lower() in ("requirepass", "masterauth")], "a secret in redis.conf"
    assert not [d for d in directives if d[0].lower() == "user" and "nopass" in d], "an ACL user without a password"

    # What bind really allows: "0.0.0.0 -::" is every IPv4 and (if present) IPv6 interface of the
    # container, not just the compose network; only the deployment keeps Redis private.
    (bind,) = [d[1:] for d in directives if d[0] == "bind"]
    listens_on = {address.removeprefix("-") for address in bind}
    assert listens_on <= {"0.0.0.0", "::", "*", "127.0.0.1", "::1"}, f"bind names an unexpected address: {bind}"
    everywhere = bool(listens_on & {"0.0.0.0", "::", "*"})

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    redis_service = compose["services"]["redis"]
    command = redis_service["command"]
    # Its users come from the aclfile redis-users writes, each password required (no password, no start);
    # "default" is off (tests/test_deploy.py starts a server on that file).
    assert command[command.index("--aclfile") + 1].startswith("/acl/") and "--requirepass" not in command
    users = compose["services"]["redis-users"]["environment"]
    passwords = [users[k] for k in ("REDIS_PASSWORD", "REDIS_WORKER_PASSWORD", "REDIS_PRODUCER_PASSWORD")]
    assert all(p.startswith("${REDIS_") and ":?" in p for p in passwords)
    assert "--default-off" in compose["services"]["redis-users"]["command"][0]
    published = "ports" in redis_service or redis_service.get("network_mode") == "host"
    assert not (everywhere and published), "Redis listens on every interface and compose publishes it"

    k8s = [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "redis.yaml").read_text()) if d]
    (service,) = [d for d in k8s if d["kind"] == "Service"]
    (pod,) = [d["spec"]["template"]["spec"] for d in k8s if d["kind"] == "StatefulSet"]
    exposed = service["spec"].get("type", "ClusterIP") != "ClusterIP" or pod.get("hostNetwork", False)
    exposed |= any("hostPort" in port for c in pod["containers"] for port in c.get("ports", []))
    assert not (everywhere and exposed), "Redis listens on every interface and the k8s manifests expose it"
    assert pod["containers"][0]["args"][1:3] == ["--aclfile", "/acl/users.acl"]
    assert "--default-off" in pod["initContainers"][0]["args"][0]
