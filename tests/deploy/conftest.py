"""The compose suite's fixtures: one compose project for the session, built and torn down once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agentq.settings import Settings
from producer.client import Client
from tests.deploy.stack import Stack, docker_env, sweep_leftovers


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """This session's compose project, its images built (the time is printed); everything removed after."""
    env = docker_env()
    swept = sweep_leftovers(env)
    if swept:
        print(f"\nremoved leftovers of earlier sessions: {', '.join(swept)}")
    stack = Stack(env, tmp_path_factory.mktemp("compose-logs"))
    try:
        yield stack
    finally:
        stack.destroy()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[Client]:
    """A producer client on this host, talking to the compose Redis at its container address.

    Run on its own (``make repeat`` of one test), the stack is not up yet: bring it up as the
    build test does, with three healthy workers.
    """
    if not await stack.containers("redis"):
        await stack.compose("up", "-d", "--build", "--scale", "worker=3", timeout=900)
        await stack.wait_health("worker", 3)
    async with Client(Settings(redis_url=await stack.redis_url())) as c:
        yield c


def log_dir(stack: Stack) -> Path:
    return stack.log_dir
