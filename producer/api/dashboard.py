"""The web dashboard: two pages and their static files, plain HTML, JS and SVG (no build step).

``/`` shows the live workers, the queue, recent and failed jobs and each source's latency and
failures, refreshed every second from the API. ``/jobs/<id>`` draws the job's fan-out timeline
live from its event stream: per source, the fetch, the wait for a free core, the inference. The
pages hold no data and need no key; they ask for an API key (kept in the tab's session storage)
and send it with each API call they make.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")
router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    """The icon browsers ask for at the root, whatever the page says (an SVG: every current browser draws it)."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


@router.get("/jobs/{job_id}")
async def job_page(job_id: str) -> FileResponse:
    return FileResponse(STATIC / "job.html")


def mount_static(app: FastAPI) -> None:
    """Serve the pages' scripts and styles under /static."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
