"""The example plugin package (examples/agentq-example), end to end: built and installed into a
temporary directory (never into this environment), a real worker and the real `producer` CLI given
it on PYTHONPATH, a real redis-server; the result shows both plugins ran."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import pytest

from agentq.analyses import analysis_names
from agentq.contract import JobResult
from agentq.sources import source_names

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "agentq-example"
PRODUCER = str(Path(sys.executable).with_name("producer"))


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package built and installed into a directory of its own (--target), offline."""
    site = tmp_path_factory.mktemp("example-site")
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site)]
    subprocess.run([*command, str(EXAMPLE)], check=True, timeout=300, capture_output=True)
    return site


@pytest.mark.timeout(300)
def test_the_example_source_and_analysis_answer_through_a_real_worker(
    example_site: Path, worker_env: dict[str, str], start_worker_processes: Callable[..., list[Popen[bytes]]]
) -> None:
    """`producer ask --sources almanac,weather --analysis keyword_density`: the almanac's payload rendered
    as text, and keyword_density's typed fields in every source's inference."""
    assert "almanac" not in source_names() and "keyword_density" not in analysis_names(), "not installed here"
    env = {**worker_env, "PYTHONPATH": str(example_site)}
    start_worker_processes(1, PYTHONPATH=str(example_site))

    question = "Is spring a good season for planting tomatoes?"
    args = ["ask", question, "--sources", "almanac,weather", "--analysis", "keyword_density", "--wait", "--json"]
    done = subprocess.run([PRODUCER, *args], env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    result = JobResult.model_validate_json(done.stdout)
    print(json.dumps(result.model_dump(mode="json", include={"status", "answer"}), indent=2))
    assert result.status == "ok", result.errors
    almanac, weather = result.sources
    assert almanac.name == "almanac" and almanac.timeout_s == 2.0 and almanac.attempts == 1
    assert almanac.data is not None and almanac.data.startswith("source: Example Almanac\nentries:\n  topic: spring")
    for outcome in (almanac, weather):
        assert outcome.inference is not None and outcome.inference.analysis == "keyword_density"
        details = outcome.inference.details
        assert set(details) == {"matched_lines", "lines"} and 0 <= details["matched_lines"] <= details["lines"]
    assert almanac.inference is not None and {"spring", "planting"} & set(almanac.inference.top_terms)
    assert almanac.inference.relevance > 0 and almanac.inference.work_units is None

    refused = subprocess.run([PRODUCER, *args[:4]], env=worker_env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "unknown source 'almanac'" in refused.stderr, "without it, names are refused"
