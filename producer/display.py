"""How a result looks in a terminal: a per-source table, a timeline, the timing summary, live bars."""

from __future__ import annotations

from typing import Self

from rich.console import Console, Group
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from agentq.contract import JobResult, ProgressEvent, SourceOutcome

_STATUS_STYLE = {
    "ok": "green",
    "partial": "yellow",
    "failed": "red",
    "error": "red",
    "timeout": "yellow",
    "deadline": "magenta",
    "circuit_open": "magenta",
    "cancelled": "magenta",
}


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def source_table(result: JobResult) -> Table:
    """One row per source: status, fetch and inference times, relevance, summary or error."""
    table = Table(title="Sources", title_justify="left", expand=False)
    for column, justify in (
        ("source", "left"),
        ("status", "left"),
        ("fetch", "right"),
        ("inference", "right"),
        ("relevance", "right"),
        ("summary / error", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for o in result.sources:
        detail = o.inference.summary if o.inference else (o.error or "")
        relevance = f"{o.inference.relevance:.2f}" if o.inference else "-"
        table.add_row(
            o.name,
            Text(o.status, style=_STATUS_STYLE.get(o.status, "")),
            _s(o.fetch_s),
            _s(o.inference_s),
            relevance,
            detail if len(detail) <= 70 else detail[:67] + "...",
        )
    return table


def timeline(result: JobResult, width: int = 60) -> Text:
    """A Gantt chart in characters: ``━`` fetch, ``·`` waiting for a core, ``█`` inference."""
    end = max([_end(o) for o in result.sources] + [result.timing.total_s if result.timing else 0.0, 1e-9])
    scale = width / end
    label = max([len(o.name) for o in result.sources] + [6])
    text = Text()
    for o in result.sources:
        row = [" "] * width
        styles = [""] * width
        _paint(row, styles, o.fetch_start_s, o.fetch_end_s, "━", "cyan", scale)
        _paint(row, styles, o.fetch_end_s if o.inference_start_s else None, o.inference_start_s, "·", "dim", scale)
        _paint(row, styles, o.inference_start_s, o.inference_end_s, "█", "green", scale)
        text.append(f"{o.name:<{label}} ")
        for ch, style in zip(row, styles, strict=True):
            text.append(ch, style=style or None)
        text.append(f" {_end(o):5.2f}s {o.status}\n", style=_STATUS_STYLE.get(o.status, ""))
    text.append(f"{'':<{label}} 0s{'':{width - 8}}{end:5.2f}s\n", style="dim")
    text.append(f"{'':<{label}} ━ fetch   · waiting for a core   █ inference\n", style="dim")
    return text


def _end(o: SourceOutcome) -> float:
    return max(x for x in (o.fetch_end_s, o.inference_end_s, 0.0) if x is not None)


def _paint(
    row: list[str], styles: list[str], start: float | None, end: float | None, ch: str, style: str, scale: float
) -> None:
    if start is None or end is None:
        return
    a = min(len(row) - 1, int(start * scale))
    b = max(a + 1, min(len(row), round(end * scale)))
    for i in range(a, b):
        row[i], styles[i] = ch, style


def summary(result: JobResult) -> Group:
    """Everything a person wants to see about a finished job."""
    head = Text()
    head.append(f"job {result.job_id}  ", style="bold")
    head.append(result.status.upper(), style=f"bold {_STATUS_STYLE[result.status]}")
    head.append(f"\nquestion: {result.question}\n")
    parts: list[object] = [head]
    analyses = sorted({o.inference.analysis for o in result.sources if o.inference})
    if analyses:
        head.append(f"analysis: {', '.join(analyses)}\n")
    if result.answer:
        answer = Text("answer:\n", style="bold")
        for line in result.answer:
            answer.append(f"  {line}\n")
        parts.append(answer)
    if result.sources:
        parts += [source_table(result), Text("Timeline", style="italic"), timeline(result)]
    if result.timing:
        t = result.timing
        foot = Text()
        foot.append(f"total {t.total_s:.2f}s", style="bold")
        foot.append(f"  (queue wait {_s(t.queue_wait_s)})\n")
        foot.append(
            f"one step at a time (sum of every fetch and inference): {t.sequential_estimate_s:.2f}s"
            f"  -> speed-up {t.speedup:.2f}x\n"
        )
        ratio = t.total_s / t.critical_path_s if t.critical_path_s else 0.0
        foot.append(f"critical-path floor on this pool: {t.critical_path_s:.2f}s  (total/floor {ratio:.3f})\n")
        foot.append(f"fetch wall {t.fetch_wall_s:.2f}s, inference CPU {t.inference_cpu_s:.2f}s\n")
        parts.append(foot)
    if result.executor:
        e = result.executor
        parts.append(
            Text(
                f"executor: {e.kind} pool of {e.size} ({e.reason}); worker {result.worker_id}, try {result.job_try}",
                style="dim",
            )
        )
    if result.errors:
        errs = Text("errors:\n", style="bold red")
        for err in result.errors:
            errs.append(f"  {err}\n")
        parts.append(errs)
    return Group(*parts)  # type: ignore[arg-type]


class _Seconds(ProgressColumn):
    """Elapsed time in tenths of a second (rich's own column shows whole seconds)."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.elapsed or 0.0:5.1f}s", style="progress.elapsed")


class LiveProgress:
    """Live bars while a job runs: one for the job, one per source (fetch, then inference, then
    its final status). Fed :class:`ProgressEvent` objects; use as a context manager."""

    def __init__(self, console: Console, job_id: str) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[state]}"),
            _Seconds(),
            console=console,
            transient=True,
            refresh_per_second=12,
        )
        self.job = self.progress.add_task(f"job {job_id[:8]}", total=None, state="queued")
        self.sources: dict[str, TaskID] = {}

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, event: ProgressEvent) -> None:
        """Move the bars to where ``event`` says the job is."""
        if event.source is None:
            self._job_event(event)
            return
        task = self.sources.get(event.source)
        if task is None:
            task = self.progress.add_task(f"  {event.source}", total=2, state="", start=False)
            self.sources[event.source] = task
            self.progress.update(self.job, state="running")
        if event.event == "fetch_start":
            self.progress.start_task(task)
            self.progress.update(task, completed=0, state=_with_detail("fetching", event))
        elif event.event == "fetch_end" and event.status is None:
            self.progress.update(task, completed=1, state=_with_detail("fetched", event))
        elif event.event == "inference_start":
            self.progress.update(task, completed=1, state=_with_detail("inference", event))
        elif event.event == "done" or event.status is not None:
            status = event.status or "?"
            self.progress.update(task, completed=2, state=_with_detail(status, event, _STATUS_STYLE.get(status, "")))
            finished = sum(self.progress.tasks[t].finished for t in self.sources.values())
            self.progress.update(self.job, completed=finished)

    def _job_event(self, event: ProgressEvent) -> None:
        if event.event == "job_done":
            status = event.status or "done"
            state = Text(status, style=_STATUS_STYLE.get(status, ""))
            self.progress.update(self.job, total=1, completed=1, state=state)
            return
        # requeued: this start ended without a result; arq will run the job again
        self.progress.update(self.job, state=Text("requeued: will run again", style="yellow"))
        for task in self.sources.values():
            self.progress.reset(task, start=False, state="queued")


def _with_detail(state: str, event: ProgressEvent, style: str = "") -> Text:
    """The state, plus what the fetch recorded that a person cares about (retries, cache)."""
    text = Text(state, style=style)
    attempts = event.detail.get("attempts")
    if isinstance(attempts, int) and not isinstance(attempts, bool) and attempts > 1:
        text.append(f"  try {attempts}", style="yellow")
    for name, value in event.detail.items():
        if name.startswith("cache") and value not in (False, None, "", "miss", "off"):
            text.append(f"  {name} {value}", style="cyan")
    return text
