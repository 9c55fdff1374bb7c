"""The API against its own OpenAPI spec: schemathesis generates requests from the spec (valid and
invalid ones) and checks every reply: no server error, documented status codes, content types and
bodies, invalid data refused, valid data accepted, auth not ignored."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.api.conftest import Api

ST = str(Path(sys.executable).with_name("st"))


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_api_conforms_to_its_openapi_spec(
    start_api: Callable[..., Api], start_worker_processes: Callable[..., object], tmp_path: Path
) -> None:
    """schemathesis runs every check on every operation, with a key that has every scope: 0 failures.

    One exception, in a run of its own: a schedule's cron rule (``0 8 * * 1-5``) is not something JSON
    Schema can say in full, so a PUT /api/schedules/{name} with a schema-valid but impossible rule is
    refused (422). That operation gets every check but "valid data accepted" (its own test covers it).
    """
    start_worker_processes(1)  # the jobs it creates finish, so their event streams end
    api = start_api(AGENTQ_API_RATE_LIMIT="100000/minute")
    put_schedule = "PUT /api/schedules/{name}"
    runs = [
        ("--exclude-name", put_schedule),
        ("--include-name", put_schedule, "--exclude-checks", "positive_data_acceptance"),
    ]
    generated = 0
    for selection in runs:
        run = subprocess.run(
            [
                ST, "run", f"{api.url}/openapi.json",
                "--header", f"Authorization: Bearer {api.key}",
                "--checks", "all",
                *selection,
                "--phases", "examples,coverage,fuzzing",
                "--max-examples", "30",
                "--workers", "1",
                "--seed", "1",
                "--no-color",
                "--request-timeout", "20",
            ],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )  # fmt: skip
        print(run.stdout[-6000:])
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        cases = re.search(r"Test cases:\s*\n?\s*(\d+) generated, (\d+) passed", run.stdout)
        assert cases is not None, run.stdout[-2000:]
        generated += int(cases.group(1))
    assert generated > 500, "schemathesis ran too few cases"
