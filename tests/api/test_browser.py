"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): the overview loads and
shows the fleet, a job submitted through the API appears, and its page draws the fan-out timeline
until it completes. ``make test-browser`` runs it (``make test`` leaves it out)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Api

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Where the screenshots go when set (``make screenshots``: docs/); otherwise the test's tmp dir.
SHOTS = os.environ.get("AGENTQ_SCREENSHOT_DIR")
SOURCES = ["weather", "news", "knowledge_base"]


@pytest.fixture
def browser() -> object:
    """A headless Chromium, Debian's own (Playwright downloads no browser here)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("no chromium: apt-get install chromium (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        args = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]  # fmt: skip
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield b
        b.close()


@pytest.mark.timeout(180)
def test_the_dashboard_shows_a_job_and_draws_its_timeline(
    browser: object,
    start_api: Callable[..., Api],
    start_worker_processes: Callable[..., object],
    tmp_path: Path,
) -> None:
    """The overview lists the worker; a job created through the API appears in it; the job's page draws a
    fetch and an inference bar per source and marks the timeline complete with the job's status."""
    # Reference latencies at a tenth (0.2 s, 0.15 s, 0.3 s) so the timeline has something to show.
    start_worker_processes(1, AGENTQ_TIME_SCALE="0.1")
    api = start_api()
    shots = Path(SHOTS) if SHOTS else tmp_path
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page.add_init_script(f"sessionStorage.setItem('agentq-key', {api.key!r})")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{api.url}/")
    page.wait_for_selector("#workers tbody tr td:has-text('x2')", timeout=15_000)  # the worker, pool of 2
    created = httpx.post(
        f"{api.url}/api/jobs",
        headers=api.headers(),
        json={"question": "Will it rain in Paris tomorrow?", "sources": SOURCES, "no_cache": True},
    )
    job_id = created.json()["job_id"]
    page.wait_for_selector(f"#recent tr[data-job='{job_id}']", timeout=15_000)
    page.wait_for_selector(f"#recent tr[data-job='{job_id}'] td.s-ok", timeout=30_000)
    page.wait_for_selector("#sources tbody tr td:has-text('knowledge_base')", timeout=15_000)
    page.screenshot(path=str(shots / "dashboard.png"))
    for width in (1400, 900):  # no table runs out of its card, side by side or stacked
        page.set_viewport_size({"width": width, "height": 900})
        overflowing = page.eval_on_selector_all(
            "section table", "ts => ts.filter(t => t.offsetWidth > t.closest('section').clientWidth).map(t => t.id)"
        )
        assert overflowing == [], (width, overflowing)
    page.set_viewport_size({"width": 1280, "height": 900})
    assert page.inner_text("[data-tile='oldest wait'] b") == "-"  # nothing waits
    assert page.locator("[data-tile='queued'] small").count() == 1  # its split by priority (empty: none)
    # A job deferred by an hour waits in the queue: the key's tenant's row counts it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_")} | {"AGENTQ_REDIS_URL": api.redis_url}
    producer = str(Path(sys.executable).with_name("producer"))
    subprocess.run([producer, "ask", "Later?", "--in", "1h"], env=env, check=True, capture_output=True, timeout=60)
    row = "#tenants tr[data-tenant='default']"
    page.wait_for_selector(f"{row} td:nth-child(4):has-text('1')", timeout=10_000)  # deferred 1
    assert page.inner_text(f"{row} td:nth-child(2)") == "0" and page.inner_text(f"{row} td:nth-child(5)") == "0%"
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#purge")
    page.wait_for_selector("#purge-result:has-text('purged: 1 cancelled')", timeout=10_000)

    page.click(f"#recent tr[data-job='{job_id}'] a")
    page.wait_for_url(f"**/jobs/{job_id}")
    page.wait_for_selector("#timeline[data-complete='true']", timeout=30_000)
    assert page.inner_text("#status") == "ok"
    for part in ("fetch", "inference"):
        drawn = page.eval_on_selector_all(
            f"#timeline rect[data-part='{part}']", "els => els.map(e => e.dataset.source)"
        )
        assert sorted(drawn) == sorted(SOURCES), (part, drawn)
    assert page.locator("#answer li").count() == 3
    assert page.is_hidden("#cancel")  # a finished job offers no Cancel
    page.reload()
    page.wait_for_selector("#timeline[data-complete='true']", timeout=30_000)
    assert page.is_hidden("#cancel")  # nor when its page is opened after it finished
    page.screenshot(path=str(shots / "dashboard-job.png"), full_page=True)
    assert not errors, errors
