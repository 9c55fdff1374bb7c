"""The figures of a run: each value with its target and whether it is met, as a table and JSON."""

from __future__ import annotations

import io
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Bumped when a key of the JSON summary is renamed or removed (adding keys does not bump it).
#: 2: "noop" became "peers" (ours beside arq, SAQ and streaq); "redis" and "bursts" added; then "fairness".
SCHEMA_VERSION = 2
#: The top-level keys of the JSON summary, in order; the smoke test holds them stable.
SUMMARY_KEYS = (
    "schema_version",
    "generated_at",
    "quick",
    "machine",
    "config",
    "workload",
    "executors",
    "queue",
    "throughput",
    "growth",
    "peers",
    "redis",
    "bursts",
    "fairness",
    "figures",
    "duration_s",
)


@dataclass(frozen=True)
class Figure:
    """One number of the table: what it is, its value, its target, met or not, and why not."""

    benchmark: str
    name: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    limit: str = ""

    def shown(self) -> str:
        """The value with its unit, compactly."""
        if self.value is None:
            return "n/a"
        v = self.value
        text = f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 1000 else f"{v:,.0f}"
        return f"{text} {self.unit}".strip()

    @property
    def verdict(self) -> str:
        return "" if self.met is None else "met" if self.met else "MISSED"


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def spread(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean of a sample, in the sample's unit."""
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
        "mean": statistics.fmean(values) if values else math.nan,
    }


def table(figures: Sequence[Figure], title: str) -> Table:
    """The rich table printed at the end of a run."""
    t = Table(title=title, title_justify="left")
    for column, justify in (
        ("benchmark", "left"),
        ("figure", "left"),
        ("value", "right"),
        ("target", "left"),
        ("", "left"),
    ):
        t.add_column(column, justify=justify)  # type: ignore[arg-type]
    for f in figures:
        style = "" if f.met is None else "green" if f.met else "bold red"
        t.add_row(f.benchmark, f.name, f.shown(), f.target, Text(f.verdict, style=style))
    return t


def markdown(figures: Sequence[Figure]) -> str:
    """The same table in Markdown, with each missed target's limit underneath."""
    lines = ["| benchmark | figure | value | target | |", "|---|---|---:|---|---|"]
    for f in figures:
        lines.append(f"| {f.benchmark} | {f.name} | {f.shown()} | {f.target} | {f.verdict} |")
    missed = [f for f in figures if f.met is False]
    if missed:
        lines += ["", "Missed targets and what limits them:", ""]
        lines += [f"- **{f.benchmark} / {f.name}**: {f.limit}" for f in missed]
    return "\n".join(lines) + "\n"


def _clean(obj: Any) -> Any:
    """NaN and infinities are not JSON: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write(out: Path, summary: dict[str, Any], figures: Sequence[Figure], title: str) -> None:
    """Write ``summary.json``, ``table.md`` and ``table.txt`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    body = {key: summary.get(key) for key in SUMMARY_KEYS}
    body["figures"] = [asdict(f) for f in figures]
    (out / "summary.json").write_text(json.dumps(_clean(body), indent=2, allow_nan=False) + "\n")
    (out / "table.md").write_text(f"{title}\n\n{markdown(figures)}")
    console = Console(width=150, record=True, file=io.StringIO())
    console.print(table(figures, title))
    (out / "table.txt").write_text(console.export_text())
