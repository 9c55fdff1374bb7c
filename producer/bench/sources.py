"""Extra simulated sources for the growth benchmark (3 → 20 sources), registered on import.

Both sides import this module: the producer validates a request's source names against its own
registry, and the benchmark's workers (``python -m producer.bench.worker``) must know the names
they are asked to fetch. Source ``extra_NN`` mirrors one of the three reference sources in turn
(its latency and text), so 20 sources are the reference mix repeated, not a new workload.
"""

from __future__ import annotations

from worker.settings import DEFAULT_SOURCES
from worker.sources import REGISTRY, SourceContext, register, source_names
from worker.sources.registry import SourceFunction
from worker.sources.simulated import compose

#: The reference latencies (seconds at time_scale 1), in the order the extras cycle through them.
REFERENCE_LATENCY_S = {"weather": 2.0, "news": 1.5, "knowledge_base": 3.0}
MAX_SOURCES = 20


def _mirror(name: str, base: str) -> SourceFunction:
    async def fetch(question: str, ctx: SourceContext) -> str:
        await ctx.simulate(name, REFERENCE_LATENCY_S[base])
        return compose(question, base)

    fetch.__doc__ = f"A copy of {base!r}: about {REFERENCE_LATENCY_S[base]:g} s."
    return fetch


def extra_name(i: int) -> str:
    """Name of the ``i``-th source overall (1-based) beyond the reference three."""
    return f"extra_{i:02d}"


for _i in range(len(DEFAULT_SOURCES) + 1, MAX_SOURCES + 1):
    if extra_name(_i) not in REGISTRY:
        register(extra_name(_i))(_mirror(extra_name(_i), DEFAULT_SOURCES[(_i - 1) % len(DEFAULT_SOURCES)]))


def first_sources(n: int) -> tuple[str, ...]:
    """The reference sources, then extras, ``n`` in all."""
    if not 1 <= n <= MAX_SOURCES:
        raise ValueError(f"between 1 and {MAX_SOURCES} sources, not {n}")
    names = [*DEFAULT_SOURCES, *(extra_name(i) for i in range(len(DEFAULT_SOURCES) + 1, MAX_SOURCES + 1))]
    return tuple(names[:n])


def latency_of(name: str) -> float:
    """The unscaled latency a (reference or extra) source simulates."""
    if name in REFERENCE_LATENCY_S:
        return REFERENCE_LATENCY_S[name]
    index = int(name.removeprefix("extra_"))
    return REFERENCE_LATENCY_S[DEFAULT_SOURCES[(index - 1) % len(DEFAULT_SOURCES)]]


__all__ = ["MAX_SOURCES", "REFERENCE_LATENCY_S", "first_sources", "latency_of", "source_names"]
