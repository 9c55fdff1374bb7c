"""OpenTelemetry traces, one per job, switched on by ``AGENTQ_OTLP_ENDPOINT``.

The producer's ``enqueue`` span starts the trace; its W3C trace context (``traceparent``) travels in
the job itself (the arq job's keyword argument ``trace``), so the worker's ``job`` span is its
child, and under it one span per source fetch and one per inference. Every HTTP call a source
makes to an upstream carries the fetch span's ``traceparent`` too.

Off by default, and then nothing of OpenTelemetry is imported: the producer's import path stays
as light as before. :func:`setup` installs a tracer provider of our own (not the global one), so a
test can install its own in-memory exporter as often as it likes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

    from agentq.settings import Settings

log = logging.getLogger(__name__)

_provider: TracerProvider | None = None
_tracer: Tracer | None = None


def setup(settings: Settings, service: str, *, exporter: SpanExporter | None = None) -> bool:
    """Start tracing if ``settings.otlp_endpoint`` is set (or an ``exporter`` is given); True if on.

    With an endpoint, spans are batched and sent over OTLP/HTTP to ``<endpoint>/v1/traces``; a given
    exporter (the tests' in-memory one) gets each span as it ends.
    """
    global _provider, _tracer
    if exporter is None and not settings.otlp_endpoint:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name or service}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = f"{str(settings.otlp_endpoint).rstrip('/')}/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    shutdown()
    _provider, _tracer = provider, provider.get_tracer("agentq")
    return True


def shutdown() -> None:
    """Send what is still batched and stop tracing."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider = _tracer = None


def enabled() -> bool:
    return _tracer is not None


@contextlib.contextmanager
def span(
    name: str, *, carrier: Mapping[str, str] | None = None, attributes: Mapping[str, Any] | None = None
) -> Iterator[Span | None]:
    """A span, current inside the block (child of ``carrier``'s context if given); None when tracing is off."""
    if _tracer is None:
        yield None
        return
    context = None
    if carrier:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        context = TraceContextTextMapPropagator().extract(dict(carrier))
    with _tracer.start_as_current_span(name, context=context, attributes=dict(attributes or {})) as current:
        yield current


def inject() -> dict[str, str]:
    """The current span's W3C trace context (``traceparent``), or {} when tracing is off."""
    if _tracer is None:
        return {}
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier
