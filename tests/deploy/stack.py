"""The real docker-compose.yml driven from the tests: one compose project per test session.

The Docker engine is shared with other people, so everything made here carries this session's
name, ``agentq-ci-<pid>``: the compose project (its containers, network and volume) and the
images (``agentq-ci-<pid>:product``, ``:upstream``). :func:`sweep_leftovers` removes what an
earlier session whose process is gone left behind; :meth:`Stack.destroy` removes this one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OVERRIDE = Path(__file__).with_name("compose.ci.yml")
PREFIX = "agentq-ci-"
SHARED = ROOT.parent / "shared"
BASE_IMAGES = ("python:3.14-slim-bookworm", "redis:7.2-alpine")


def docker_env() -> dict[str, str]:
    """The environment for ``docker``: the engine's socket and the classic builder."""
    env = dict(os.environ)
    if "DOCKER_HOST" not in env:
        script = SHARED / "ensure-docker.sh"
        done = subprocess.run(["bash", str(script), *BASE_IMAGES], capture_output=True, text=True, check=True)
        env["DOCKER_HOST"] = done.stdout.strip().splitlines()[-1]
    env |= {"DOCKER_BUILDKIT": "0", "COMPOSE_BAKE": "false"}
    return env


def docker(*args: str, env: dict[str, str], check: bool = True, timeout: float = 300) -> str:
    """Run ``docker args...``; its stdout."""
    done = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def sweep_leftovers(env: dict[str, str]) -> list[str]:
    """Remove the compose projects and images of earlier sessions (``agentq-ci-<pid>``) whose pid is gone."""
    projects = set()
    for kind in ("ps -a", "volume ls", "network ls"):
        out = docker(*kind.split(), "--filter", "label=com.docker.compose.project", "--format", "{{.Labels}}", env=env)
        projects |= set(re.findall(r"com\.docker\.compose\.project=(agentq-ci-\d+)", out))
    images = docker("images", "--format", "{{.Repository}}:{{.Tag}}", env=env).split()
    projects |= {image.split(":")[0] for image in images if re.fullmatch(r"agentq-ci-\d+:\w+", image)}
    swept = []
    for project in sorted(projects):
        pid = int(project.removeprefix(PREFIX))
        if pid == os.getpid() or _alive(pid):
            continue
        docker("compose", "-p", project, "down", "-v", "--remove-orphans", "-t", "0", env=env, check=False)
        for image in images:
            if image.startswith(project + ":"):
                docker("rmi", "-f", image, env=env, check=False)
        swept.append(project)
    return swept


def address(container: dict[str, Any]) -> str:
    """A container's address on the project's network (``docker inspect``), reachable from this host."""
    return str(next(iter(container["NetworkSettings"]["Networks"].values()))["IPAddress"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Stack:
    """This session's compose project on the real docker-compose.yml plus the test override."""

    env: dict[str, str]
    log_dir: Path
    project: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}")
    #: The passwords users put in .env: admin's (REDIS_PASSWORD), the workers' and the producer's.
    passwords: dict[str, str] = field(
        default_factory=lambda: {user: secrets.token_hex(16) for user in ("admin", "worker", "producer")}
    )
    followers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: Compose files on top of docker-compose.yml and the test override (``use``), e.g. the Sentinel variant.
    extra_files: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        # What compose interpolates: the passwords users put in .env, and our image names.
        self.env = {
            **self.env,
            "REDIS_PASSWORD": self.passwords["admin"],
            "REDIS_WORKER_PASSWORD": self.passwords["worker"],
            "REDIS_PRODUCER_PASSWORD": self.passwords["producer"],
            "AGENTQ_CI_IMAGE": self.project,
        }
        # The classic builder leaves untagged images behind (each multi-stage build's inner stages,
        # an image built twice under one name): those that appear while we run are ours to remove.
        self.images_before = set(docker("images", "-a", "-q", "--no-trunc", env=self.env).split())

    @property
    def image(self) -> str:
        return f"{self.project}:product"

    def use(self, *files: Path) -> None:
        """From now on, add these compose files (after the test override) to every command."""
        self.extra_files += [f for f in files if f not in self.extra_files]

    async def switch_to(self, *files: Path) -> None:
        """Take the project down (containers and volumes), then add only these compose files from now on:
        a variant whose services differ from the running ones (a Redis Cluster's) starts afresh."""
        await self.compose("--profile", "cli", "down", "-v", "--remove-orphans", "-t", "0", timeout=300)
        self.extra_files = list(files)

    def command(self, *args: str) -> list[str]:
        files = ["-f", str(ROOT / "docker-compose.yml")]
        for extra in self.extra_files:
            files += ["-f", str(extra)]
        files += ["-f", str(OVERRIDE)]  # last: its image names and short timings win
        return ["docker", "compose", "-p", self.project, "--project-directory", str(ROOT), *files, *args]

    async def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``docker compose <args>`` on this project; raises with its output if it fails and ``check``."""
        done = await asyncio.to_thread(
            subprocess.run, self.command(*args), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"compose {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    async def docker(self, *args: str, check: bool = True) -> str:
        return await asyncio.to_thread(docker, *args, env=self.env, check=check)

    async def containers(self, service: str) -> list[dict[str, Any]]:
        """``docker inspect`` of the service's running containers (by compose label)."""
        ids = (
            await self.docker(
                "ps",
                "-q",
                "--filter",
                f"label=com.docker.compose.project={self.project}",
                "--filter",
                f"label=com.docker.compose.service={service}",
            )
        ).split()
        if not ids:
            return []
        return list(json.loads(await self.docker("inspect", *ids)))

    async def health(self, service: str) -> dict[str, str]:
        """Container name -> health status (starting, healthy, unhealthy) of the service's containers."""
        return {
            c["Name"].lstrip("/"): c["State"].get("Health", {}).get("Status", "none")
            for c in await self.containers(service)
        }

    async def wait_health(self, service: str, count: int, status: str = "healthy", timeout: float = 120) -> float:
        """Seconds until ``count`` containers of ``service`` report ``status``."""
        start = time.monotonic()
        while True:
            health = await self.health(service)
            if sum(s == status for s in health.values()) >= count:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{service}: not {count} x {status} after {timeout:g}s: {health}")
            await asyncio.sleep(0.25)

    async def redis_url(self, user: str = "producer") -> str:
        """The Redis service's URL on its container address (reachable from this host, not published), as
        ``user``: by default the producer's, as a client of a real deployment would log in."""
        (redis,) = await self.containers("redis")
        return f"redis://{user}:{self.passwords[user]}@{address(redis)}:6379/0"

    def follow_logs(self, container: dict[str, Any]) -> Path:
        """Copy what a container logs from now on to a file, until it is removed; return the file."""
        name = container["Name"].lstrip("/")
        path = self.log_dir / f"{name}.{container['Id'][:12]}.log"
        with open(path, "wb") as out:
            self.followers.append(
                subprocess.Popen(
                    ["docker", "logs", "-f", "--since", f"{time.time():.3f}", container["Id"]],
                    env=self.env,
                    stdout=out,
                    stderr=out,
                )
            )
        return path

    def stop_following(self) -> None:
        for proc in self.followers:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self.followers.clear()

    def destroy(self) -> None:
        """Remove the project's containers, network, volume and images (the build's untagged ones too);
        never the base images."""
        self.stop_following()
        subprocess.run(
            self.command("--profile", "cli", "down", "-v", "--remove-orphans", "-t", "0"),
            env=self.env,
            capture_output=True,
            timeout=300,
        )
        for tag in ("product", "upstream"):
            docker("rmi", "-f", f"{self.project}:{tag}", env=self.env, check=False)
        for image in docker("images", "-f", "dangling=true", "-q", "--no-trunc", env=self.env).split():
            if image in self.images_before:
                continue
            history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image, env=self.env, check=False)
            if "--require-hashes" in history or "agentq" in history:  # built from deploy/Dockerfile
                docker("rmi", image, env=self.env, check=False)  # never -f: an image in use stays


if __name__ == "__main__":  # python -m tests.deploy.stack: remove what dead sessions left (CI's exit trap)
    print("\n".join(sweep_leftovers(docker_env())) or "nothing to sweep")
