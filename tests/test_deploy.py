"""Static checks of the deployment files (no Docker engine here), and their command lines run for real.

docker-compose.yml, deploy/Dockerfile, deploy/k8s/*.yaml and deploy/redis.conf are parsed and
checked for what matters; the last tests start a real redis-server with deploy/redis.conf and run
the compose file's own worker, health-check and producer command lines against it.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.version import Version
from yamllint import linter
from yamllint.config import YamlLintConfig

from agentq.settings import Settings
from agentq.sources import default_sources, enabled_sources
from agentq_tools.embedded import find_redis_server, free_port
from agentq_tools.processes import stop_process, stop_workers, wait_for_heartbeats
from agentq_tools.upstream import MockUpstream
from worker.ops import metrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
YAML_FILES = [ROOT / "docker-compose.yml", *sorted(DEPLOY.glob("*/*.yml")), *sorted((DEPLOY / "k8s").rglob("*.yaml"))]
BIN = Path(sys.executable).parent
YAMLLINT = YamlLintConfig(
    "{extends: default, rules: {line-length: {max: 130}, document-start: disable, truthy: {check-keys: false}}}"
)


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def k8s(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}"
    return found[0]


def worker_container() -> dict[str, Any]:
    deployment = one(k8s("worker.yaml"), "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "worker")


def setting_names() -> set[str]:
    """Every environment variable name Settings reads."""
    names = {f"AGENTQ_{name.upper()}" for name in Settings.model_fields}
    for field in Settings.model_fields.values():
        choices = getattr(field.validation_alias, "choices", [])
        names |= {c for c in choices if isinstance(c, str)}
    return names


def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DEPLOY / "Dockerfile"))


def test_yaml_files_pass_yamllint() -> None:
    """Every compose and Kubernetes YAML file lints clean with yamllint."""
    assert len(YAML_FILES) >= 5
    for path in YAML_FILES:
        problems = list(linter.run(path.read_text(), YAMLLINT, str(path)))
        assert problems == [], f"{path.name}: {[str(p) for p in problems]}"


def test_every_agentq_variable_is_a_setting() -> None:
    """Every AGENTQ_* name in compose, the Dockerfile, the manifests and the deploy docs is a real setting."""
    known = setting_names()
    files = [*YAML_FILES, DEPLOY / "Dockerfile", DEPLOY / "README.md"]
    seen: set[str] = set()
    for path in files:
        for name in re.findall(r"\bAGENTQ_[A-Z0-9_]+", path.read_text()):
            seen.add(name.split("__")[0])
            assert name.split("__")[0] in known, f"{path.name} names {name}, which Settings does not read"
    assert {"AGENTQ_REDIS_URL", "AGENTQ_WORKER_ID_FILE", "AGENTQ_METRICS_PORT", "AGENTQ_POOL_SIZE"} <= seen


def test_compose_services_health_checks_and_commands() -> None:
    """Compose has redis, worker, the mock upstream, the API and a one-off producer, health checks, our documented
    commands."""
    services = compose()["services"]
    assert set(services) == {"redis-users", "redis", "worker", "upstream", "api", "producer"}
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"worker", "producer", "agentq-api"} <= set(scripts)

    api_svc = services["api"]
    assert api_svc["command"] == ["agentq-api"] and api_svc["image"] == services["worker"]["image"]
    api_port = api_svc["environment"]["AGENTQ_API_PORT"]
    assert api_svc["environment"]["AGENTQ_API_HOST"] == "0.0.0.0"
    assert api_svc["ports"] == [f"127.0.0.1:{api_port}:{api_port}"], "published, on the host's loopback"
    assert f"127.0.0.1:{api_port}/health" in " ".join(api_svc["healthcheck"]["test"])
    assert api_svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api_svc["restart"] == "unless-stopped"

    redis_svc, worker_svc, producer_svc = services["redis"], services["worker"], services["producer"]
    assert re.fullmatch(r"redis:7(\.\d+)*(-[a-z0-9.]+)?", redis_svc["image"])
    assert "ports" not in redis_svc, "Redis must not be published outside the compose network"
    assert "--requirepass" not in redis_svc["command"] and "--aclfile" in redis_svc["command"]
    assert any(v.startswith("./deploy/redis.conf:") for v in redis_svc["volumes"])
    assert any(v.split(":")[0] in compose()["volumes"] for v in redis_svc["volumes"]), "a named volume for /data"
    assert redis_svc["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}

    assert worker_svc["build"]["dockerfile"] == "deploy/Dockerfile"
    assert worker_svc["command"] == ["worker"]
    assert worker_svc["restart"] == "unless-stopped"
    assert worker_svc["healthcheck"]["test"] == ["CMD", "worker", "--check"]
    assert worker_svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "container_name" not in worker_svc, "a fixed name would forbid --scale worker=N"

    assert producer_svc["entrypoint"] == ["producer"]
    assert producer_svc.get("profiles"), "the producer is a one-off, not started by 'up'"

    upstream_svc = services["upstream"]
    assert upstream_svc["command"][0] == "agentq-upstream"
    assert upstream_svc["build"]["target"] == "upstream", "the mock upstream is tooling: an image of its own"
    assert "ports" not in upstream_svc, "the mock upstream must not be published outside the compose network"
    port = upstream_svc["command"][upstream_svc["command"].index("--port") + 1]
    assert port in upstream_svc["expose"]
    assert f"127.0.0.1:{port}/health" in " ".join(upstream_svc["healthcheck"]["test"])
    assert worker_svc["environment"]["AGENTQ_UPSTREAM_URL"] == f"http://upstream:{port}"
    assert worker_svc["depends_on"]["upstream"]["condition"] == "service_healthy"
    defaults = json.loads(worker_svc["environment"]["AGENTQ_DEFAULT_SOURCES"])
    chosen = Settings(upstream_url="http://upstream", default_sources=defaults)
    assert default_sources(chosen, enabled_sources(chosen)) == tuple(defaults)


def test_compose_services_log_in_as_their_own_redis_users() -> None:
    """redis-users writes the aclfile Redis loads (shared volume, before Redis starts); the workers log in as
    `worker`, the API and the producer as `producer`; each password comes from .env."""
    services = compose()["services"]
    users, redis_svc = services["redis-users"], services["redis"]
    assert redis_svc["depends_on"]["redis-users"]["condition"] == "service_completed_successfully"
    aclfile = redis_svc["command"][redis_svc["command"].index("--aclfile") + 1]
    (written,) = [v for v in users["volumes"] if v.endswith(":/acl")]
    assert f"{written}:ro" in redis_svc["volumes"] and written.split(":")[0] in compose()["volumes"]
    assert aclfile in users["command"][0] and aclfile.startswith("/acl/")
    assert "redis-cli --user admin" in redis_svc["healthcheck"]["test"][1]
    for service, user in {"worker": "worker", "api": "producer", "producer": "producer"}.items():
        url = services[service]["environment"]["AGENTQ_REDIS_URL"]
        assert re.fullmatch(rf"redis://{user}:\$\{{REDIS_{user.upper()}_PASSWORD:\?[^}}]+\}}@redis:6379/0", url), url


def test_dockerfile_is_multi_stage_pinned_and_non_root() -> None:
    """The image: Python 3.14 slim, multi-stage, hash-pinned installs, non-root, our commands, no tooling."""
    parser = dockerfile()
    instructions = parser.structure
    froms = [i["value"] for i in instructions if i["instruction"] == "FROM"]
    assert len(froms) >= 2
    arg = next(i["value"] for i in instructions if i["instruction"] == "ARG" and "PYTHON_IMAGE" in i["value"])
    assert re.search(r"python:3\.14[.\d]*-slim", arg)
    final_stage = instructions[max(n for n, i in enumerate(instructions) if i["instruction"] == "FROM") :]
    final_runs = " ".join(i["value"] for i in final_stage if i["instruction"] == "RUN")
    assert not re.search(r"apt-get|gcc|build-essential|pip install", final_runs), "no build tools in the final image"
    user = [i["value"] for i in final_stage if i["instruction"] == "USER"]
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    runs = " ".join(i["value"] for i in instructions if i["instruction"] == "RUN")
    assert runs.count("--require-hashes") == 4
    assert "api-requirements.lock" in runs
    assert "requirements.lock" in runs and "build-requirements.lock" in runs
    # The product (the last stage) takes its venv from the stage that never saw tools/.
    stages = [n for n, i in enumerate(instructions) if i["instruction"] == "FROM"] + [len(instructions)]
    by_name = {instructions[a]["value"].split()[-1]: instructions[a:b] for a, b in itertools.pairwise(stages)}
    assert [i["value"] for i in final_stage if i["instruction"] == "COPY"] == ["--from=build /opt/venv /opt/venv"]
    assert not any("tools" in i["value"] for i in by_name["build"] if i["instruction"] == "COPY")
    assert parser.cmd == '["worker"]'
    healthcheck = next(i["value"] for i in instructions if i["instruction"] == "HEALTHCHECK")
    assert healthcheck.endswith('CMD ["worker", "--check"]')
    assert "AGENTQ_WORKER_ID_FILE" in parser.envs


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    """Every path the Dockerfile copies exists and is re-included by .dockerignore; secrets stay out."""
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [r for r in rules if r and not r.startswith("#")]
    assert rules[0] == "**" and "**/.env" in rules
    allowed = {r[1:] for r in rules if r.startswith("!")}
    copies = [i["value"].split() for i in dockerfile().structure if i["instruction"] == "COPY"]
    sources = [src for parts in copies if not parts[0].startswith("--from") for src in parts[:-1]]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert src in allowed, f".dockerignore excludes {src}"


@pytest.mark.parametrize(
    "lock", ["requirements.lock", "build-requirements.lock", "upstream-requirements.lock", "api-requirements.lock"]
)
def test_lock_files_pin_every_package_with_hashes(lock: str) -> None:
    """Each lock entry is name==version with sha256 hashes; the runtime lock satisfies pyproject's ranges."""
    text = (DEPLOY / lock).read_text()
    entries = re.findall(
        r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)[^\n]*\\\n((?:\s+--hash=sha256:[0-9a-f]{64}.*\n)+)", text, re.M
    )
    requirement_lines = [line for line in text.splitlines() if line and not line[0].isspace() and line[0] != "#"]
    assert len(entries) == len(requirement_lines) > 0
    if lock == "requirements.lock":
        pinned = {name.lower(): Version(version) for name, version, _ in entries}
        for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
            req = Requirement(dep)
            assert req.name.lower() in pinned, f"{req.name} is not in the lock: regenerate it"
            assert pinned[req.name.lower()] in req.specifier, f"locked {req.name} is outside {req.specifier}"


def test_k8s_worker_probes_cpu_and_autoscaling_agree() -> None:
    """Probes run 'worker --check', CPU request = pool size, and KEDA scales the Deployment on our queue."""
    container = worker_container()
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["command"] == ["worker"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == ["worker", "--check"]
    assert container["resources"]["requests"]["cpu"] == env["AGENTQ_POOL_SIZE"]
    assert env["AGENTQ_REDIS_URL"] == "redis://worker:$(REDIS_WORKER_PASSWORD)@agentq-redis:6379/0"

    scaled = one(k8s("keda.yaml"), "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == one(k8s("worker.yaml"), "Deployment")["metadata"]["name"]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis"  # ZCARD on a zset since KEDA 2.0: fits the sorted-set queue
    assert env["AGENTQ_QUEUE_NAME"] == Settings.model_fields["queue_name"].default
    queue = Settings(_env_file=None, queue_name=env["AGENTQ_QUEUE_NAME"]).keys.queue  # type: ignore[call-arg]
    assert trigger["metadata"]["listName"] == queue
    assert trigger["metadata"]["listLength"] == env["AGENTQ_MAX_JOBS"]
    auth = one(k8s("keda.yaml"), "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]

    alternative = one(k8s("alternatives/keda-prometheus.yaml"), "ScaledObject")
    assert metrics.QUEUE_DEPTH._name in alternative["spec"]["triggers"][0]["metadata"]["query"]


def test_k8s_redis_uses_the_same_config_and_the_users_of_compose() -> None:
    """The Redis ConfigMap is deploy/redis.conf verbatim; the server loads the users an initContainer writes
    with compose's commands, from the Secret, in the single Redis and the Sentinel alternative alike."""
    docs = k8s("redis.yaml")
    assert one(docs, "ConfigMap")["data"]["redis.conf"] == (DEPLOY / "redis.conf").read_text()
    pod = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"][1:] == ["--aclfile", "/acl/users.acl"]
    alternative = k8s("alternatives/sentinel/redis-sentinel.yaml")
    (nodes,) = [d for d in alternative if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "agentq-redis-node"]
    sentinel_pod = nodes["spec"]["template"]["spec"]
    script = one(alternative, "ConfigMap")["data"]["redis.sh"]
    assert "--aclfile /acl/users.acl --masteruser admin" in script and "--requirepass" not in script
    compose_script = compose()["services"]["redis-users"]["command"][0]
    for init in (pod["initContainers"][0], sentinel_pod["initContainers"][0]):
        assert init["image"] == worker_container()["image"] and init["command"] == ["sh", "-ec"]
        assert init["args"][0].splitlines() == [
            line.replace("users.acl.new", "users.acl") for line in compose_script.splitlines()[:3]
        ]
        secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in init["env"] if "valueFrom" in e}
        assert secrets == {
            "REDIS_PASSWORD": "password",
            "REDIS_WORKER_PASSWORD": "worker-password",
            "REDIS_PRODUCER_PASSWORD": "producer-password",
        }
    keda = one(k8s("keda.yaml"), "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert {r["parameter"]: r["key"] for r in keda} == {
        "username": "producer-username",
        "password": "producer-password",
    }
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert all((DEPLOY / "k8s" / r).exists() for r in kustomization["resources"])


def test_deploy_readme_shows_the_three_compose_commands() -> None:
    """deploy/README.md shows how to set the password, scale the workers and ask a question."""
    text = (DEPLOY / "README.md").read_text()
    assert "REDIS_PASSWORD" in text
    assert "docker compose up -d --build --scale worker=" in text
    assert 'docker compose run --rm producer ask "' in text and "--wait" in text


PASSWORDS = {
    "REDIS_PASSWORD": "admin-pw",
    "REDIS_WORKER_PASSWORD": "worker-pw",
    "REDIS_PRODUCER_PASSWORD": "producer-pw",
}


def write_users(into: Path) -> list[str]:
    """Compose's redis-users command run here, writing into ``into`` instead of /acl; Redis's arguments
    for the file it wrote (compose's, from there)."""
    services = compose()["services"]
    users, redis_command = services["redis-users"], services["redis"]["command"]
    env = {k: _interpolate(str(v), PASSWORDS) for k, v in users["environment"].items()}
    env["PATH"] = f"{BIN}:/usr/bin:/bin"
    script = users["command"][0].replace("/acl/", f"{into}/")
    subprocess.run([*users["entrypoint"], script], env=env, check=True, timeout=60)
    return [a.replace("/acl/", f"{into}/") for a in redis_command[redis_command.index("--aclfile") :]]


@pytest.fixture
def deploy_redis(tmp_path: Path) -> Any:
    """A real redis-server started from deploy/redis.conf with the users compose writes, on a loopback port."""
    port, password = free_port(), PASSWORDS["REDIS_PASSWORD"]
    args = [find_redis_server(), str(DEPLOY / "redis.conf"), "--port", str(port), "--bind", "127.0.0.1"]
    args += ["--dir", str(tmp_path), *write_users(tmp_path)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port, username="admin", password=password)
    try:
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                assert proc.poll() is None, "redis-server refused deploy/redis.conf"
                time.sleep(0.05)
        yield port, password
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@pytest.mark.e2e
def test_redis_conf_requires_a_password_and_is_durable(deploy_redis: tuple[int, str]) -> None:
    """redis-server accepts deploy/redis.conf and compose's users: AOF everysec, noeviction, no command
    without a password, and no admin command as the worker or the producer."""
    port, password = deploy_redis
    anonymous = redis.Redis(port=port)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    for user in ("worker", "producer"):
        role = redis.Redis(port=port, username=user, password=PASSWORDS[f"REDIS_{user.upper()}_PASSWORD"])
        assert role.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            role.config_get("appendonly")
        role.close()
    client = redis.Redis(port=port, username="admin", password=password, decode_responses=True)
    config = {k: client.config_get(k)[k] for k in ("appendonly", "appendfsync", "maxmemory-policy", "protected-mode")}
    client.close()
    assert config == {
        "appendonly": "yes",
        "appendfsync": "everysec",
        "maxmemory-policy": "noeviction",
        "protected-mode": "yes",
    }


def _interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:?message} and ${VAR:-default}, enough for our file."""
    return re.sub(r"\$\{(\w+)(?::[?-][^}]*)?\}", lambda m: variables[m.group(1)], value)


@pytest.mark.e2e
def test_compose_command_lines_work_locally(
    deploy_redis: tuple[int, str], tmp_path: Path, worker_env: dict[str, str]
) -> None:
    """The compose worker command, its health check and 'producer ask ... --wait' work against deploy/redis.conf."""
    port, _ = deploy_redis
    services = compose()["services"]
    local = {k: v for k, v in worker_env.items() if not k.startswith("AGENTQ_REDIS")}
    env = {**local, **{k: _interpolate(str(v), PASSWORDS) for k, v in services["worker"]["environment"].items()}}
    # What differs on this host only: Redis's and the upstream's addresses, a free metrics port, a private
    # id file, and the upstream's latencies scaled down like the tests' (its command otherwise as in compose).
    env["AGENTQ_REDIS_URL"] = env["AGENTQ_REDIS_URL"].replace("@redis:6379", f"@127.0.0.1:{port}")
    env |= {"AGENTQ_METRICS_PORT": "0", "AGENTQ_WORKER_ID_FILE": str(tmp_path / "worker.id")}
    upstream_args = services["upstream"]["command"][1:]
    pairs = zip(upstream_args[::2], upstream_args[1::2], strict=True)
    upstream = MockUpstream(
        *(a for pair in pairs if pair[0] not in {"--host", "--port"} for a in pair), "--time-scale", "0.05"
    )
    env["AGENTQ_UPSTREAM_URL"] = upstream.start().url

    command = services["worker"]["command"]
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen([str(BIN / command[0]), *command[1:]], env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_for_heartbeats(env["AGENTQ_REDIS_URL"], [proc])
        health = services["worker"]["healthcheck"]["test"][1:]
        checked = subprocess.run([str(BIN / health[0]), *health[1:]], env=env, capture_output=True, timeout=60)
        assert checked.returncode == 0, checked.stderr

        entry = services["producer"]["entrypoint"]
        as_producer = {k: _interpolate(str(v), PASSWORDS) for k, v in services["producer"]["environment"].items()}
        as_producer["AGENTQ_REDIS_URL"] = as_producer["AGENTQ_REDIS_URL"].replace("@redis:6379", f"@127.0.0.1:{port}")
        asked = subprocess.run(
            [str(BIN / entry[0]), *entry[1:], "ask", "Will it rain in Paris tomorrow?", "--wait", "--json"],
            env={**env, **as_producer},
            capture_output=True,
            timeout=60,
        )
        assert asked.returncode == 0, asked.stderr
        assert '"status": "ok"' in asked.stdout.decode()
        _check_the_api_service(services["api"], env, port, tmp_path)
        assert all(f'"name": "{name}"' in asked.stdout.decode() for name in json.loads(env["AGENTQ_DEFAULT_SOURCES"]))
    finally:
        stop_workers([proc])
        upstream.stop()
    after = subprocess.run([str(BIN / health[0]), *health[1:]], env=env, capture_output=True, timeout=60)
    assert after.returncode != 0


def _check_the_api_service(api: dict[str, Any], worker_env: dict[str, str], port: int, tmp_path: Path) -> None:
    """The compose api command with its environment (a key made by its keygen) serves /health, the
    dashboard, and a job through the API."""
    keygen = subprocess.run(
        [str(BIN / "agentq-api"), "keygen", "--name", "me", "--env"], capture_output=True, text=True, timeout=60
    )
    assert keygen.returncode == 0, keygen.stderr
    key = keygen.stderr.rsplit(": ", 1)[1].strip()
    variables = {**PASSWORDS, "AGENTQ_API_KEYS": keygen.stdout.strip().split("=", 1)[1]}
    env = {**worker_env, **{k: _interpolate(str(v), variables) for k, v in api["environment"].items()}}
    env["AGENTQ_REDIS_URL"] = env["AGENTQ_REDIS_URL"].replace("@redis:6379", f"@127.0.0.1:{port}")
    env |= {"AGENTQ_API_HOST": "127.0.0.1", "AGENTQ_API_PORT": str(free_port())}  # a free port on this host
    url = f"http://127.0.0.1:{env['AGENTQ_API_PORT']}"
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen([str(BIN / api["command"][0])], env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    health = [
        a.replace(f"127.0.0.1:{api['environment']['AGENTQ_API_PORT']}", url[7:]) for a in api["healthcheck"]["test"][1:]
    ]
    try:
        for _ in range(200):
            if subprocess.run([sys.executable, *health[1:]], capture_output=True, timeout=30).returncode == 0:
                break
            assert proc.poll() is None, (tmp_path / "api.log").read_text()
            time.sleep(0.1)
        else:
            raise AssertionError("the api's health check never passed")
        assert "agentq dashboard" in httpx.get(f"{url}/").text
        headers = {"Authorization": f"Bearer {key}"}
        job_id = httpx.post(f"{url}/api/jobs", headers=headers, json={"question": "Is it sunny?"}).json()["job_id"]
        for _ in range(300):
            reply = httpx.get(f"{url}/api/jobs/{job_id}", headers=headers).json()
            if reply["result"]:
                break
            time.sleep(0.1)
        assert reply["result"]["status"] == "ok"
    finally:
        stop_process(proc)
