"""OpenTelemetry: one trace per job, producer to worker to each fetch and inference, the context in the job
and on the HTTP calls upstream; OTLP export switched on by a setting; nothing loaded while it is off."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentq import tracing
from agentq.protocol import records
from agentq.settings import Settings
from agentq_tools.upstream import MockUpstream
from producer.client import Client
from worker.engine.app import create_worker


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, for this test only."""
    memory = InMemorySpanExporter()
    tracing.setup(Settings(_env_file=None), "agentq-test", exporter=memory)  # type: ignore[call-arg]
    yield memory
    tracing.shutdown()


def tree(spans: tuple[ReadableSpan, ...], detail: bool = False) -> list[str]:
    """The spans as an indented tree, children in start order: ``name`` per line (``detail``: timings too)."""
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    for s in spans:
        by_parent.setdefault(s.parent.span_id if s.parent else None, []).append(s)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for s in sorted(by_parent.get(parent, []), key=lambda s: (s.start_time or 0, s.name)):
            line = "  " * depth + s.name
            if detail and s.start_time is not None and s.end_time is not None:
                attrs = {k: v for k, v in (s.attributes or {}).items() if k in ("agentq.status", "agentq.wait_s")}
                line = f"{line:<28} {(s.end_time - s.start_time) / 1e6:8.1f} ms  {attrs or ''}"
            lines.append(line)
            walk(s.context.span_id if s.context else None, depth + 1)

    walk(None, 0)
    return lines


@pytest.mark.e2e
async def test_one_trace_per_job_from_enqueue_to_every_fetch_and_inference(
    exporter: InMemorySpanExporter, settings: Settings
) -> None:
    """A job's spans form one trace: enqueue, then job, then a fetch and an inference per source; the HTTP
    source's request upstream carried its fetch span's traceparent."""
    with MockUpstream("--latency", "weather=0.05") as upstream:
        s = settings.model_copy(update={"upstream_url": upstream.url})
        async with Client(s) as client:
            job_id = await client.enqueue("Will it rain in Paris?", sources=["weather_api", "news", "knowledge_base"])
            raw = await client.redis.hget(client.keys.jobs, job_id)
            assert "traceparent" in records.decode_job(raw).kwargs["trace"]
            worker = create_worker(s, burst=True)
            try:
                await worker.start()
                await worker.serve()
            finally:
                await worker.close()
            result = await client.result(job_id, timeout=5)
        received = upstream.stats()["traceparents"]
    assert result.status == "ok"
    spans = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans if s.context}) == 1, "one trace"
    shape = tree(spans)
    assert shape[:2] == ["enqueue", "  job"]
    assert sorted(shape[2:]) == sorted(
        f"    {kind} {name}" for kind in ("fetch", "inference") for name in ("weather_api", "news", "knowledge_base")
    )
    fetch = next(s for s in spans if s.name == "fetch weather_api")
    assert fetch.context is not None
    assert [r.rsplit("-", 1)[0] for r in received] == [f"00-{fetch.context.trace_id:032x}-{fetch.context.span_id:016x}"]
    job = next(s for s in spans if s.name == "job")
    assert job.attributes is not None and job.attributes["agentq.status"] == "ok"
    inference = next(s for s in spans if s.name == "inference news")
    assert inference.attributes is not None and inference.attributes["agentq.wait_s"] >= 0
    print("\n".join(tree(spans, detail=True)))


def test_spans_go_to_the_otlp_endpoint_when_it_is_set() -> None:
    """With otlp_endpoint set, setup() turns tracing on and spans are POSTed as OTLP protobuf to .../v1/traces."""
    received: list[tuple[str, str, int]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            received.append((self.path, self.headers.get("content-type", ""), len(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert not tracing.setup(Settings(_env_file=None), "agentq-test")  # type: ignore[call-arg]
        assert tracing.setup(Settings(_env_file=None, otlp_endpoint=url), "agentq-test")  # type: ignore[call-arg]
        with tracing.span("enqueue"):
            assert tracing.inject()["traceparent"].startswith("00-")
        tracing.shutdown()  # flushes the batch
    finally:
        server.shutdown()
        server.server_close()
    assert received and received[0][:2] == ("/v1/traces", "application/x-protobuf") and received[0][2] > 0
    assert not tracing.enabled() and tracing.inject() == {}


@pytest.mark.e2e  # a fresh interpreter: a real process
def test_the_producer_loads_no_opentelemetry_while_tracing_is_off() -> None:
    """Importing the client and the CLI, and enqueueing's tracing calls, load no opentelemetry module."""
    code = (
        "import json, sys, producer.client, producer.cli\n"
        "from agentq import tracing\n"
        "from agentq.settings import Settings\n"
        "tracing.setup(Settings(_env_file=None), 'x')\n"
        "with tracing.span('enqueue'): tracing.inject()\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert not [m for m in json.loads(done.stdout) if m.startswith("opentelemetry")]
