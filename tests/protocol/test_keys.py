"""The key schema: every key of a queue carries its hash tag, and the scripts list every state field."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from agentq.protocol import scripts
from agentq.protocol.keys import STATE_FIELDS, Keys
from agentq.settings import Settings


def slot_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: between the first ``{`` and the next ``}`` (if not empty)."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else key


def test_every_key_of_a_queue_falls_on_its_tag() -> None:
    """All of a queue's keys hash on the queue's tag, so any script may touch any of them on a Cluster."""
    k = Keys("agentq", "reports")
    keys = [
        k.queue,
        k.jobs,
        k.bell,
        k.index,
        k.fence,
        k.result("j"),
        k.final("j"),
        k.progress("j"),
        k.by_status("failed"),
        k.schedules,
        k.ticks,
        k.tenants,
        k.queue_of("team-a"),
        k.job_queue("team-a_1"),
        k.tenant_index("team-a"),
        k.tenant_index("team-a", "failed"),
    ]
    assert {slot_tag(key) for key in keys} == {"reports"}
    assert {slot_tag(key) for key in (k.cancel_channel, k.done_channel("j"))} == {"reports"}
    assert Keys("agentq", "other").queue != k.queue


def test_every_script_that_clears_a_job_lists_every_state_field() -> None:
    """The finish and cancel scripts delete a job's state fields by their own list, which must be Field's."""
    wanted = [f.value for f in STATE_FIELDS]
    for name in ("finish", "cancel"):
        (listed,) = re.findall(r"local STATE = \{([^}]*)\}", scripts.source(name))
        assert [v.strip().strip("'") for v in listed.split(",")] == wanted, name


def test_no_script_builds_a_key_of_its_own() -> None:
    """Keys arrive in KEYS: no script names a key by prefix (only hash fields are built from an id)."""
    for name in scripts.NAMES:
        text = scripts.source(name)
        calls = re.findall(r"redis\.call\('(\w+)', ([^,)]+)", text)
        for command, first in calls:
            if command in ("TIME", "PUBLISH"):
                continue
            local = ("KEYS[", "queue", "jobs", "index", "bell", "final", "tenants", "source.key")
            assert first.strip().startswith(local), (
                name,
                command,
                first,
            )


@pytest.mark.parametrize("name", ["a{b", "a}b", "with space"])
def test_queue_names_and_prefixes_that_would_break_the_tag_are_refused(name: str) -> None:
    """Braces would move the hash tag, and whitespace never belongs in a key: both are refused."""
    with pytest.raises(ValidationError):
        Settings(_env_file=None, queue_name=name)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(_env_file=None, key_prefix=name)  # type: ignore[call-arg]
