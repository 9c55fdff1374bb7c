"""The Redis users of each role (``agentq.protocol.acl``) and ``producer acl``, without a server
(tests/api/test_acl.py runs them on a real one)."""

from __future__ import annotations

import hashlib

import pytest
from typer.testing import CliRunner

from agentq.protocol import acl
from agentq.protocol.keys import Keys
from producer.cli import app

KEYS = Keys("agentq", "default")


def test_the_producer_may_write_what_enqueueing_writes_and_no_result() -> None:
    """Its write patterns cover the queues, the jobs hash and the indexes it fills, not results, progress,
    listing figures, finished-job indexes, heartbeats or a source's state; it may delete nothing."""
    rules = acl.rules("producer", KEYS)
    writes = {r.removeprefix("~") for r in rules if r.startswith("~")}
    assert {"agentq:{default}:queue", "agentq:{default}:q:*", "agentq:{default}:jobs", ""} <= writes
    assert not any(w.startswith(("agentq:{default}:result", "agentq:{default}:progress")) for w in writes)
    assert not any(w.startswith(("agentq:worker", "agentq:cache", "agentq:breaker")) for w in writes)
    assert "%R~agentq:*" in rules and {"-del", "-unlink", "-@admin", "-@dangerous"} <= set(rules)
    assert rules.index("-@all") < rules.index("+@read"), "everything off first, then what it uses"


def test_the_worker_has_the_prefix_and_no_admin_command_and_admin_has_all() -> None:
    worker = acl.rules("worker", Keys("my*app", "q"))
    assert "~my\\*app:*" in worker, "a prefix's glob characters are escaped"
    assert {"-@admin", "-@dangerous", "&my\\*app:{q}:*"} <= set(worker) and "-del" not in worker
    assert acl.rules("admin", KEYS) == ["allkeys", "allchannels", "+@all"]


def test_the_producer_and_the_worker_may_ask_a_cluster_where_the_slots_are() -> None:
    """CLUSTER SLOTS (a Redis Cluster client's discovery), not another CLUSTER subcommand."""
    for role in ("producer", "worker"):
        rules = acl.rules(role, KEYS)
        assert [r for r in rules if r.startswith("+cluster")] == ["+cluster|slots"]


def test_producer_acl_prints_a_line_and_its_password_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """The line on stdout holds the password's sha256 only; the password goes to stderr; with
    --password-env it is that variable's and stderr stays empty; bad input exits 2 with one line."""
    made = CliRunner().invoke(app, ["acl", "worker", "--default-off"])
    assert made.exit_code == 0, made.stderr
    off, line = made.stdout.splitlines()
    password = made.stderr.split()[-1]
    assert off == acl.DEFAULT_OFF and password not in made.stdout
    assert line.startswith(f"user worker on #{hashlib.sha256(password.encode()).hexdigest()} ")

    monkeypatch.setenv("WORKER_PW", "s3cret")
    named = CliRunner().invoke(app, ["acl", "producer", "--user", "api-1", "--password-env", "WORKER_PW"])
    assert named.exit_code == 0 and named.stderr == ""
    assert named.stdout.startswith(f"user api-1 on #{hashlib.sha256(b's3cret').hexdigest()} ")

    assert CliRunner().invoke(app, ["acl", "boss"]).exit_code == 2  # click's usage error (one line via console.run)
    for bad in (["acl", "worker", "--user", "a b"], ["acl", "worker", "--password-env", "UNSET_PW"]):
        refused = CliRunner().invoke(app, bad)
        assert refused.exit_code == 2 and refused.stdout == "" and refused.stderr.count("\n") == 1, bad
