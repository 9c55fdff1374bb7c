"""Plugins in real worker processes: the start-up check with a real numpy analysis, the same analysis
in processes, and plugins loaded from AGENTQ_PLUGIN_MODULES (their timeouts, payloads and fields)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import pytest
import redis

from agentq.protocol.keys import Keys
from agentq.settings import Settings
from agentq_tools import plugins
from agentq_tools.processes import start_workers, stop_workers
from producer.client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.interpreter]
StartWorkers = Callable[..., list[Popen[bytes]]]
#: A worker's settings to run the tools' numpy analysis beside the built-in one.
WITH_NUMPY = {**plugins.ENV, "AGENTQ_ENABLED_ANALYSES": json.dumps(["bag_of_words", "numpy_similarity"])}


@pytest.mark.skipif(sys.version_info < (3, 14), reason="InterpreterPoolExecutor is new in 3.14")
def test_a_numpy_analysis_stops_an_interpreter_pool_worker_at_start_up(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    """Under AGENTQ_EXECUTOR=interpreter the worker exits 2 before serving, with one line naming the analysis,
    its module and the process executor."""
    pytest.importorskip("numpy")
    env = {**worker_env, "AGENTQ_EXECUTOR": "interpreter", **WITH_NUMPY}
    (worker,) = start_workers(1, env, tmp_path)
    try:
        code = worker.wait(90)
    finally:
        stop_workers([worker])
    log = (tmp_path / "worker-0.log").read_text()
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    print(*errors, sep="\n")
    assert code == 2, log[-3000:]
    assert len(errors) == 1 and "Traceback" not in log, log[-3000:]
    (message,) = errors
    assert message.startswith(
        "error: analysis 'numpy_similarity' (module agentq_tools.numeric) cannot run in a subinterpreter"
    )
    assert "numpy" in message.split("cannot run", 1)[1] and "AGENTQ_EXECUTOR=process" in message
    client = redis.Redis.from_url(worker_env["AGENTQ_REDIS_URL"])
    try:
        assert not list(client.scan_iter(match=Keys(Settings().key_prefix).workers_pattern)), "it never served"
    finally:
        client.close()


async def test_the_same_numpy_analysis_runs_in_the_process_executor(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """With AGENTQ_EXECUTOR=process the numpy analysis passes its check, and a request choosing it gets its fields."""
    pytest.importorskip("numpy")
    (worker,) = start_worker_processes(1, AGENTQ_EXECUTOR="process", **WITH_NUMPY)

    async with Client(Settings(redis_url=client.settings.redis_url, plugin_modules=(plugins.MODULE,))) as c:
        chosen = await c.result(await c.enqueue("Rain in Paris?", analysis="numpy_similarity"), timeout=60)
        default = await c.result(await c.enqueue("Rain in Paris?"), timeout=60)

    assert chosen.status == "ok", chosen.errors
    for o in chosen.sources:
        assert o.inference is not None and o.inference.analysis == "numpy_similarity"
        assert o.inference.ran_in.executor == "process" and o.inference.ran_in.pid != worker.pid
        assert set(o.inference.details) == {"sentence_scores", "dimensions", "numpy_version"}
        assert o.inference.details["dimensions"] == 64 and o.inference.summary in (o.data or "")
    assert default.status == "ok" and {o.inference.analysis for o in default.sources if o.inference} == {"bag_of_words"}


async def test_plugin_modules_serve_their_sources_and_analyses(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """AGENTQ_PLUGIN_MODULES: a source's own timeout (a request's overrides it), a payload source, an analysis
    with fields of its own; names a producer cannot check are failed by the worker, with the reason."""
    start_worker_processes(1, AGENTQ_PLUGIN_MODULES='["tests.plugin_samples"]')
    sources = ["slow_sample", "payload_sample"]
    async with Client(Settings(redis_url=client.settings.redis_url, plugin_modules=("tests.plugin_samples",))) as c:
        own = await c.result(await c.enqueue("rain in Paris?", sources=sources, analysis="word_count"), timeout=60)
        longer = await c.result(await c.enqueue("rain?", sources=["slow_sample"], source_timeout_s=3.0), timeout=60)
        not_enabled = await c.result(await c.enqueue("q", analysis="numpy_similarity"), timeout=60)
        unknown = await c.result(await c.enqueue("q", sources=["nope"]), timeout=60)

    slow, payload = own.sources
    assert own.status == "partial" and slow.status == "timeout" and slow.timeout_s == 0.3
    assert "no answer within 0.3s" in (slow.error or "")
    assert (
        payload.status == "ok"
        and payload.data == "title: Rain report.\ncities:\n  city: Paris\n  rain: true\n  mm: 4.5"
    )
    assert payload.inference is not None and payload.inference.analysis == "word_count"
    assert payload.inference.details == {"words": 10, "hits": 3} and payload.inference.top_terms == ["paris", "rain"]
    assert payload.cache == "off" and payload.circuit is None  # the source turned its policies off
    assert longer.status == "ok" and longer.sources[0].timeout_s == 3.0
    assert not_enabled.status == "failed"
    assert "analysis: unknown analysis 'numpy_similarity'; known: bag_of_words, word_count" in not_enabled.errors[0]
    assert unknown.status == "failed" and "unknown source 'nope'" in unknown.errors[0]
