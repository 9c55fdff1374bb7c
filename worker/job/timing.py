"""The arithmetic of a finished job: its status, the critical-path floor and the speed-up."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from agentq.contract import JobStatus, SourceOutcome


def overall_status(outcomes: Sequence[SourceOutcome]) -> JobStatus:
    """``ok`` when every source answered, ``failed`` when none did, ``partial`` in between."""
    answered = sum(o.status == "ok" for o in outcomes)
    if outcomes and answered == len(outcomes):
        return "ok"
    return "partial" if answered else "failed"


def critical_path(stages: Iterable[tuple[float, float | None]], cores: int) -> float:
    """The shortest possible wall time for these measured stages on ``cores`` workers.

    Each stage is ``(fetch_s, inference_s)``; all fetches start at 0 and each inference may start
    once its own fetch has ended and a core is free (served in order of arrival). With enough
    cores this is ``max(fetch_i + inference_i)``; with fewer, inferences queue for a core.
    """
    free_at = [0.0] * max(1, cores)
    finish = 0.0
    for fetch_s, inference_s in sorted(stages, key=lambda s: s[0]):
        finish = max(finish, fetch_s)
        if inference_s is None:
            continue
        start = max(fetch_s, heapq.heappop(free_at))
        heapq.heappush(free_at, start + inference_s)
        finish = max(finish, start + inference_s)
    return finish


def sequential_estimate(stages: Iterable[tuple[float, float | None]]) -> float:
    """What one-step-at-a-time would take: every fetch, then every inference, back to back."""
    return sum(f + (i or 0.0) for f, i in stages)


def stages_of(outcomes: Iterable[SourceOutcome]) -> list[tuple[float, float | None]]:
    """The measured ``(fetch_s, inference_s)`` of every source whose fetch finished."""
    return [(o.fetch_s, o.inference_s) for o in outcomes if o.fetch_s is not None]


def fetch_wall(outcomes: Iterable[SourceOutcome]) -> float:
    """From the first fetch's start to the last fetch's end."""
    spans = [(o.fetch_start_s, o.fetch_end_s) for o in outcomes]
    starts = [s for s, e in spans if s is not None and e is not None]
    ends = [e for s, e in spans if s is not None and e is not None]
    return max(ends) - min(starts) if starts else 0.0


def ranked_answer(outcomes: Iterable[SourceOutcome]) -> list[str]:
    """Each answering source's summary, most relevant first."""
    done = [o for o in outcomes if o.status == "ok" and o.inference is not None]
    done.sort(key=lambda o: -o.inference.relevance if o.inference else 0.0)
    return [f"[{o.name}] {o.inference.summary}" for o in done if o.inference]
