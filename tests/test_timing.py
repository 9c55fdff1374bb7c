"""The arithmetic of a result: status aggregation, critical-path floor, sequential estimate."""

from __future__ import annotations

import pytest

from agentq.contract import SourceOutcome
from worker.job.timing import critical_path, fetch_wall, overall_status, sequential_estimate

REFERENCE = [(2.0, 2.0), (1.5, 2.0), (3.0, 2.0)]  # (fetch, inference) of weather, news, knowledge base


def outcomes(*statuses: str) -> list[SourceOutcome]:
    return [SourceOutcome(name=f"s{i}", status=s) for i, s in enumerate(statuses)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [(("ok", "ok"), "ok"), (("ok", "timeout"), "partial"), (("error", "deadline"), "failed"), ((), "failed")],
)
def test_status_is_ok_partial_or_failed(statuses: tuple[str, ...], expected: str) -> None:
    """All answered is ok, some is partial, none is failed."""
    assert overall_status(outcomes(*statuses)) == expected


def test_reference_workload_numbers() -> None:
    """The reference workload: 12.5 s one step at a time, 5.0 s floor on 3 cores, 5.5 s on 2."""
    assert sequential_estimate(REFERENCE) == pytest.approx(12.5)
    assert critical_path(REFERENCE, cores=3) == pytest.approx(5.0)
    # On 2 cores the last inference (knowledge base, fetched at 3.0 s) waits for the news
    # inference that holds a core until 3.5 s: 3.5 + 2 = 5.5 s.
    assert critical_path(REFERENCE, cores=2) == pytest.approx(5.5)
    assert critical_path(REFERENCE, cores=1) == pytest.approx(7.5)


def test_critical_path_counts_sources_without_inference() -> None:
    """A source that timed out still took its fetch time: the floor is at least that long."""
    assert critical_path([(0.5, 0.5), (5.0, None)], cores=2) == pytest.approx(5.0)
    assert sequential_estimate([(0.5, 0.5), (5.0, None)]) == pytest.approx(6.0)


def test_fetch_wall_spans_first_start_to_last_end() -> None:
    """Fetch wall time runs from the earliest fetch start to the latest fetch end."""
    a = SourceOutcome(name="a", fetch_start_s=0.1, fetch_end_s=2.0)
    b = SourceOutcome(name="b", fetch_start_s=0.0, fetch_end_s=3.0)
    c = SourceOutcome(name="c")  # never started
    assert fetch_wall([a, b, c]) == pytest.approx(3.0)
    assert fetch_wall([c]) == 0.0
