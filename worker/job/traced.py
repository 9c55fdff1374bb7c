"""The job's spans under its trace (``agentq.tracing``): one per source fetch and one per inference.

Like ``worker.job.cancel``, this wraps the fan-out's fetch policy and pool instead of changing the
fan-out: the fetch span is current while the source fetches (so an HTTP source's request carries
its ``traceparent``), and the inference span covers the wait for a free core and the inference,
with the wait recorded as ``agentq.wait_s``. With tracing off the wrappers are not used at all.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from agentq import tracing
from agentq.contract import QuestionRequest, SourceOutcome
from worker.job.fanout import FetchPolicy, SourceSkipped
from worker.pool.executor import InferencePool

if TYPE_CHECKING:
    from agentq.sources import Source, SourceContext

T = TypeVar("T")
#: The source whose fan-out task is running (set by the fetch; read by the inference that follows it).
_source: contextvars.ContextVar[str] = contextvars.ContextVar("agentq_source", default="?")


class _TracedFetch:
    def __init__(self, inner: FetchPolicy) -> None:
        self.inner = inner

    async def fetch(
        self, source: Source, request: QuestionRequest, ctx: SourceContext, outcome: SourceOutcome, deadline: float
    ) -> str:
        _source.set(source.name)
        with tracing.span(f"fetch {source.name}", attributes={"agentq.source": source.name}) as span:
            status = "ok"
            try:
                return await self.inner.fetch(source, request, ctx, outcome, deadline)
            except SourceSkipped as skipped:
                status = skipped.status
                raise
            except TimeoutError:
                status = "timeout"
                raise
            except Exception:
                status = "error"
                raise
            finally:
                if span is not None:
                    span.set_attribute("agentq.status", status)
                    span.set_attribute("agentq.attempts", outcome.attempts)
                    if outcome.cache is not None:
                        span.set_attribute("agentq.cache", outcome.cache)


class _TracedPool(InferencePool):
    def __init__(self, inner: InferencePool) -> None:
        super().__init__(inner.executor, inner.info)
        self.inner = inner

    async def run(self, fn: Callable[..., T], *args: object, label: tuple[str, str] | None = None) -> T:
        name = _source.get()
        attributes = {"agentq.source": name, "agentq.executor": self.info.kind}
        with tracing.span(f"inference {name}", attributes=attributes) as span:
            submitted = time.monotonic()
            raw = await self.inner.run(fn, *args, label=label)
            if span is not None and isinstance(raw, dict) and isinstance(raw.get("started"), float):
                span.set_attribute("agentq.wait_s", max(0.0, raw["started"] - submitted))
                span.set_attribute("agentq.cpu_s", float(raw.get("cpu_s", 0.0)))
            return raw


def policy(inner: FetchPolicy) -> FetchPolicy:
    """``inner``, with a span per fetch when tracing is on."""
    return _TracedFetch(inner) if tracing.enabled() else inner


def pool(inner: InferencePool) -> InferencePool:
    """``inner``, with a span per inference when tracing is on."""
    return _TracedPool(inner) if tracing.enabled() else inner


def carrier_of(value: Any) -> dict[str, str] | None:
    """The trace context a job carries (its ``trace`` keyword), if it is one (anything can be in Redis)."""
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return {k: v[:512] for k, v in list(value.items())[:8]}
    return None
