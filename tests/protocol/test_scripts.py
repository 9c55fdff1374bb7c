"""The protocol's scripts, each on fakeredis and on a real redis-server: enqueue, claim, release, renew,
finish and cancel, and what each leaves in Redis."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from agentq.errors import QuotaExceeded
from agentq.protocol import queue as queue_module
from agentq.protocol.keys import Field, field, marker_field
from agentq.protocol.queue import Ending, Queue, now_ms
from agentq.protocol.records import encode_job
from tests.protocol.conftest import KEYS

LEASE_MS = 5_000
RECORD = encode_job("answer_question", ({"question": "q"},), {}, 1)


async def put(queue: Queue, job_id: str, *, score: float | None = None, marker: str | None = None, **kw: Any) -> Any:
    """Enqueue ``job_id``, due a second ago unless a score is given."""
    now = kw.get("now") or now_ms()
    score = now - 1000 if score is None else score
    return await queue.enqueue(job_id, RECORD, score=score, marker=marker, index_score=now, index_size=1000, **kw)


async def state(r: Any, job_id: str) -> dict[str, str]:
    """The job's state fields that are set (``t``, ``w`` ...), decoded."""
    values = await r.hmget(KEYS.jobs, [field(job_id, f) for f in Field])
    return {f.value: v.decode() for f, v in zip(Field, values, strict=True) if v is not None and v != b""}


async def score(r: Any, job_id: str) -> float | None:
    found: float | None = await r.zscore(KEYS.queue, job_id)
    return found


# ------------------------------------------------------------------------------------------ enqueue
async def test_an_enqueue_writes_the_record_its_place_its_index_entry_and_rings(queue: Queue, r: Any) -> None:
    """The record, the queue score, the priority, the recent-jobs index and a ring, in one step."""
    enqueued = await put(queue, "a", score=123.5, priority="high", retry_of="old")
    assert (enqueued.job_id, enqueued.deduplicated) == ("a", False)
    assert await r.hget(KEYS.jobs, "a") == RECORD and await score(r, "a") == 123.5
    assert await state(r, "a") == {"p": "high", "r": "old"}
    assert await r.zscore(KEYS.index, "a") is not None and await r.zrange(KEYS.bell, 0, -1) == [b"ring"]


async def test_an_identical_request_joins_the_unfinished_job_and_moves_it_up_never_down(queue: Queue, r: Any) -> None:
    """Same marker: the first job's id comes back; a lower score moves it up, a higher one does not; once it
    has left the queue, the next identical request makes a new job."""
    m = marker_field("fingerprint")
    now = now_ms()
    assert (await put(queue, "a", score=now - 10, marker=m)).job_id == "a"
    assert await state(r, "a") == {"m": m, "p": "normal"}
    joined = await put(queue, "b", score=now - 500, marker=m)
    assert (joined.job_id, joined.deduplicated, await score(r, "a")) == ("a", True, now - 500)
    await put(queue, "c", score=now + 900, marker=m)
    assert await score(r, "a") == now - 500 and await r.hget(KEYS.jobs, "b") is None
    await r.zrem(KEYS.queue, "a")  # as the finish does
    assert (await put(queue, "d", marker=m)).job_id == "d" and await r.hget(KEYS.jobs, m) == b"d"


async def test_a_deferred_or_running_job_is_joined_where_it_is(queue: Queue, r: Any) -> None:
    """A joined job whose score lies ahead (deferred, or a running job's lease end) keeps it."""
    m = marker_field("x")
    later = now_ms() + 60_000
    await put(queue, "a", score=later, marker=m)
    assert (await put(queue, "b", score=0, marker=m)).job_id == "a" and await score(r, "a") == later


async def test_the_index_is_trimmed_to_its_size_once_in_a_while(
    queue: Queue, r: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its size the recent-jobs index loses its oldest entries, at the enqueues that trim it."""
    monkeypatch.setattr(queue_module, "TRIM_EVERY", 2)
    for i in range(5):
        await queue.enqueue(f"j{i}", RECORD, score=0, marker=None, index_score=i, index_size=3)
    assert await r.zrange(KEYS.index, 0, -1) == [b"j1", b"j2", b"j3", b"j4"]  # trimmed at the 4th, not the 5th
    await queue.enqueue("j5", RECORD, score=0, marker=None, index_score=5, index_size=3)
    assert await r.zrange(KEYS.index, 0, -1) == [b"j3", b"j4", b"j5"]


# ------------------------------------------------------------------------------------------ claim
async def test_a_claim_takes_due_jobs_lowest_score_first_each_under_a_lease(queue: Queue, r: Any) -> None:
    """Due jobs in score order, each with its record and try 1, its score now its lease's end; the first
    job not due yet says when to look again."""
    now = now_ms()
    await put(queue, "late", score=now - 100)
    await put(queue, "early", score=now - 500, priority="low")
    await put(queue, "future", score=now + 60_000)
    claim = await queue.claim("w1", want=5, lease_ms=LEASE_MS, idle=True)
    assert [(j.job_id, j.job_try, j.record, j.alone, j.cancelled) for j in claim.jobs] == [
        ("early", 1, RECORD, False, False),
        ("late", 1, RECORD, False, False),
    ]
    assert claim.jobs[0].score == now - 500 and claim.jobs[0].priority == "low"
    assert claim.next_due_ms == now + 60_000 and not claim.more and not claim.held_back
    assert await state(r, "early") == {"n": "1", "t": "1", "w": "w1", "a": "0", "p": "low"}
    assert (await score(r, "early") or 0) >= now + LEASE_MS


async def test_a_claim_takes_no_more_than_wanted_and_rings_for_the_rest(queue: Queue, r: Any) -> None:
    """A worker with room for one takes one; the bell rings again for the next idle worker."""
    for job_id in "abc":
        await put(queue, job_id)
    await r.delete(KEYS.bell)
    claim = await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    assert len(claim.jobs) == 1 and claim.more and await r.zrange(KEYS.bell, 0, -1) == [b"ring"]


async def test_a_lapsed_lease_this_worker_holds_is_renewed_with_no_new_run_and_no_try(queue: Queue, r: Any) -> None:
    """The worker still runs the job (its loop stalled past the lease), or lost the reply to the claim that
    took it: the claim renews it, counts no run and no try, and hands it back marked held for the worker
    to tell which."""
    await put(queue, "a")
    await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    await r.zadd(KEYS.queue, {"a": now_ms() - 1})  # the lease ran out
    claim = await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=False)
    assert [(j.job_id, j.held, j.job_try, j.tries, j.record) for j in claim.jobs] == [("a", True, 1, 1, RECORD)]
    assert claim.renewed == 1
    assert (await state(r, "a"))["n"] == "1" and (await score(r, "a") or 0) > now_ms()


async def test_a_run_that_died_in_company_gives_its_try_back_and_runs_alone_on_an_idle_worker(
    queue: Queue, r: Any
) -> None:
    """Two jobs run on w1, which dies: each is a suspect, its try given back. A busy worker takes nothing
    (held back, bell rung); an idle one takes the first alone and nothing more."""
    await put(queue, "a", score=1)
    await put(queue, "b", score=2)
    await queue.claim("w1", want=2, lease_ms=LEASE_MS, idle=True)
    await r.zadd(KEYS.queue, {"a": 1, "b": 2})  # w1 died: its leases lapsed
    busy = await queue.claim("w2", want=4, lease_ms=LEASE_MS, idle=False)
    assert busy.jobs == [] and busy.held_back
    assert await state(r, "a") == {"n": "1", "t": "0", "s": "1", "p": "normal"}
    alone = await queue.claim("w2", want=4, lease_ms=LEASE_MS, idle=True)
    assert [(j.job_id, j.job_try, j.tries, j.alone) for j in alone.jobs] == [("a", 2, 1, True)]
    assert await state(r, "a") == {"n": "2", "t": "1", "w": "w2", "a": "1", "p": "normal"}


async def test_a_run_that_died_alone_keeps_its_try_and_runs_alone_again(queue: Queue, r: Any) -> None:
    """A job whose worker died while it ran alone is the likely cause: the try counts, and it runs alone next."""
    await put(queue, "a", score=1)
    await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    await r.zadd(KEYS.queue, {"a": 1})
    await queue.claim("w2", want=1, lease_ms=LEASE_MS, idle=True)  # died in company of nothing: still suspect
    await r.hset(KEYS.jobs, field("a", Field.ALONE), "1")
    await r.zadd(KEYS.queue, {"a": 1})
    again = await queue.claim("w3", want=1, lease_ms=LEASE_MS, idle=True)
    assert [(j.job_id, j.job_try, j.tries, j.alone) for j in again.jobs] == [("a", 3, 2, True)]


async def test_a_worker_just_cut_off_spares_another_workers_lapsed_lease(queue: Queue, r: Any) -> None:
    """w2 lost Redis itself within the lease, so w1's lapsed lease may be that outage: w2 pushes it back one
    lease and takes the job behind it; w1 still holds its job, with no try, run or suspicion added."""
    await put(queue, "a", score=1)
    await put(queue, "b", score=2)
    await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    before = await state(r, "a")
    await r.zadd(KEYS.queue, {"a": 1})  # the lease lapsed during the outage
    claim = await queue.claim("w2", want=4, lease_ms=LEASE_MS, idle=False, unsure=True)
    assert [j.job_id for j in claim.jobs] == ["b"] and claim.spared == 1 and not claim.held_back
    assert await state(r, "a") == before == {"n": "1", "t": "1", "w": "w1", "a": "0", "p": "normal"}
    assert (await score(r, "a") or 0) > now_ms()
    assert await queue.renew("w1", ["a"], lease_ms=LEASE_MS) == []  # w1 was alive: it keeps its job


async def test_a_spared_lease_that_lapses_again_is_a_death_to_a_worker_that_can_tell(queue: Queue, r: Any) -> None:
    """w1 did not come back to renew: once w2 is sure of its own link, the lapsed lease is a death (a suspect)."""
    await put(queue, "a", score=1)
    await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    await r.zadd(KEYS.queue, {"a": 1})
    await queue.claim("w2", want=1, lease_ms=LEASE_MS, idle=True, unsure=True)
    await r.zadd(KEYS.queue, {"a": 1})  # a lease later, still not renewed
    claim = await queue.claim("w2", want=1, lease_ms=LEASE_MS, idle=True)
    assert [(j.job_id, j.job_try, j.tries, j.alone) for j in claim.jobs] == [("a", 2, 1, True)]
    assert claim.spared == 0


async def test_a_claim_hands_over_a_cancel_asked_for_and_a_record_that_has_gone(queue: Queue, r: Any) -> None:
    """The cancel field comes with the job (for a worker that missed the message); a queue entry whose
    record has gone is handed over without one (the worker fails it)."""
    await put(queue, "a", score=1)
    await r.hset(KEYS.jobs, field("a", Field.CANCEL), "1")
    await r.zadd(KEYS.queue, {"ghost": 2})
    claim = await queue.claim("w1", want=2, lease_ms=LEASE_MS, idle=True)
    assert [(j.job_id, j.cancelled, j.record) for j in claim.jobs] == [("a", True, RECORD), ("ghost", False, None)]


# ------------------------------------------------------------------------------------------ release, renew
async def test_release_gives_back_the_lease_the_score_and_the_try(queue: Queue, r: Any) -> None:
    """A released job is due again where it was, with no holder and its try count as before the claim."""
    await put(queue, "a", score=42)
    claim = await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    await queue.release("w1", claim.jobs)
    assert await score(r, "a") == 42 and await state(r, "a") == {"n": "0", "t": "0", "p": "normal"}


async def test_renew_pushes_back_its_own_leases_and_names_those_it_lost(queue: Queue, r: Any) -> None:
    """Leases this worker holds move to now + lease; a job another worker took over is left alone and named."""
    await put(queue, "a", score=1)
    await put(queue, "b", score=2)
    await queue.claim("w1", want=2, lease_ms=LEASE_MS, idle=True)
    await r.hset(KEYS.jobs, field("b", Field.HOLDER), "w2")
    b_score = await score(r, "b")
    before = now_ms()
    assert await queue.renew("w1", ["a", "b", "gone"], lease_ms=60_000) == ["b", "gone"]
    assert (await score(r, "a") or 0) >= before + 60_000 and await score(r, "b") == b_score


# ------------------------------------------------------------------------------------------ finish
def ending(job_id: str, **kw: Any) -> Ending:
    values: dict[str, Any] = {"mode": "finish", "result": b'{"r":1}', "result_px": 60_000}
    return Ending(job_id, **{**values, **kw})


async def test_the_first_result_stored_wins_and_its_run_clears_the_job(queue: Queue, r: Any) -> None:
    """The first finish stores its result, removes the job (record, state, marker) and files its figures;
    a second run's result is not stored and changes nothing."""
    m = marker_field("f")
    await put(queue, "a", marker=m)
    claim = await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    first = ending("a", marker=claim.jobs[0].marker, final='{"status":"ok"}', status="ok", finished_ms=7)
    second = ending("a", result=b'{"r":2}', final='{"status":"failed"}', status="failed")
    assert await queue.finish("w1", [first], progress_ttl_s=60, index_size=10) == [True]
    assert await queue.finish("w9", [second], progress_ttl_s=60, index_size=10) == [False]
    assert await r.get(KEYS.result("a")) == b'{"r":1}' and await score(r, "a") is None
    assert await r.hgetall(KEYS.jobs) == {} and await r.get(KEYS.final("a")) == b'{"status":"ok"}'
    assert 0 < await r.pttl(KEYS.final("a")) <= 60_000  # kept as long as the result
    assert await r.zcard(KEYS.by_status("failed")) == 0


async def test_an_unwell_ending_is_indexed_by_its_status(queue: Queue, r: Any) -> None:
    """failed, partial and cancelled jobs enter their status's index, capped; ok jobs do not."""
    for i, status in enumerate(["failed", "failed", "ok", "partial"]):
        await put(queue, f"j{i}")
        e = ending(f"j{i}", final="{}", status=status, finished_ms=i)
        await queue.finish("w1", [e], progress_ttl_s=60, index_size=1)
    assert await r.zrange(KEYS.by_status("failed"), 0, -1) == [b"j1"]
    assert await r.zrange(KEYS.by_status("partial"), 0, -1) == [b"j3"]
    assert not await r.exists(KEYS.by_status("ok"))


async def test_a_requeue_puts_back_only_a_job_this_worker_holds_and_gives_the_try_back(queue: Queue, r: Any) -> None:
    """A stopped run's job gets its place back and its try; a run whose lease another worker took changes nothing."""
    await put(queue, "a", score=42)
    await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    held = await score(r, "a")
    back = Ending("a", "requeue", requeue_score=42)
    assert await queue.finish("w2", [back], progress_ttl_s=60, index_size=10) == [False]
    assert await score(r, "a") == held
    await r.delete(KEYS.bell)
    await queue.finish("w1", [back], progress_ttl_s=60, index_size=10)
    assert await score(r, "a") == 42 and await state(r, "a") == {"n": "1", "t": "0", "p": "normal"}
    assert await r.zrange(KEYS.bell, 0, -1) == [b"ring"]


async def test_the_progress_tail_is_written_only_for_a_job_that_logged_before(queue: Queue, r: Any) -> None:
    """A job that logged progress gets its unwritten events and job_done in one entry; one that logged
    nothing leaves no log."""
    for job_id, logged in (("quiet", False), ("chatty", True)):
        await put(queue, job_id)
        e = ending(job_id, logged=logged, pending=['{"e":1}'], job_done='{"e":"job_done"}', requeued="{}")
        await queue.finish("w1", [e], progress_ttl_s=60, index_size=10)
    assert not await r.exists(KEYS.progress("quiet"))
    ((_, fields),) = await r.xrange(KEYS.progress("chatty"))
    assert json.loads(fields[b"e"]) == [{"e": 1}, {"e": "job_done"}] and 0 < await r.ttl(KEYS.progress("chatty")) <= 60


async def test_finishes_sent_together_share_one_round_trip(queue: Queue, r: Any) -> None:
    """Several endings go in one pipeline; each gets its own answer."""
    for job_id in "ab":
        await put(queue, job_id)
    await r.set(KEYS.result("b"), b"earlier")
    assert await queue.finish("w1", [ending("a"), ending("b")], progress_ttl_s=60, index_size=10) == [True, False]


async def test_the_stored_result_is_published_on_the_jobs_done_channel(queue: Queue, r: Any) -> None:
    """The done channel gets the stored result record itself; a discarded run's finish sends ``1``."""
    pubsub = r.pubsub()
    await pubsub.subscribe(KEYS.done_channel("a"))
    await put(queue, "a")
    await queue.finish("w1", [ending("a")], progress_ttl_s=60, index_size=10)
    await queue.finish("w1", [ending("a")], progress_ttl_s=60, index_size=10)
    messages = []
    deadline = time.monotonic() + 5
    while len(messages) < 2 and time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None:
            messages.append(message["data"])
    await pubsub.aclose()
    assert messages == [b'{"r":1}', b"1"]


# ------------------------------------------------------------------------------------------ cancel
async def test_cancel_of_a_queued_job_stores_a_cancelled_result_and_it_never_starts(queue: Queue, r: Any) -> None:
    """Queued: out of the queue, record, state and marker gone, the cancelled result stored and filed."""
    m = marker_field("f")
    await put(queue, "a", marker=m)
    state_ = await queue.cancel(
        "a", result=b"cancelled!", result_px=60_000, final='{"status":"cancelled"}', index_size=5
    )
    assert state_ == "cancelled" and await score(r, "a") is None and await r.hgetall(KEYS.jobs) == {}
    assert await r.get(KEYS.result("a")) == b"cancelled!" and await r.get(KEYS.final("a")) == b'{"status":"cancelled"}'
    assert await r.zrange(KEYS.by_status("cancelled"), 0, -1) == [b"a"]
    assert (await queue.claim("w1", want=5, lease_ms=LEASE_MS, idle=True)).jobs == []


async def test_cancel_of_a_waiting_job_marks_it_and_brings_it_to_the_head_for_a_worker_to_end(
    queue: Queue, r: Any
) -> None:
    """Without a result to store (a Redis user that may not write one: the producer's), a queued or
    deferred job gets its cancel field set, comes due at once ahead of the others, the bell rings and
    its marker goes (the same question becomes a new job); the next claim takes it first, marked
    cancelled, and that run's finish stores the result."""
    m = marker_field("f")
    await put(queue, "older")
    await put(queue, "a", marker=m)
    await put(queue, "later", score=now_ms() + 60_000)
    await r.delete(KEYS.bell)
    assert await queue.cancel("a") == "cancelled" and await queue.cancel("later") == "cancelled"
    assert await score(r, "a") == 0 and await score(r, "later") == 0
    assert await state(r, "a") == {"c": "1", "p": "normal"} and await r.hget(KEYS.jobs, m) is None
    assert await r.zrange(KEYS.bell, 0, -1) == [b"ring"] and not await r.exists(KEYS.result("a"))
    assert (await put(queue, "again", marker=m)).deduplicated is False
    claim = await queue.claim("w1", want=2, lease_ms=LEASE_MS, idle=True)
    assert [(j.job_id, j.cancelled, j.marker) for j in claim.jobs] == [("a", True, None), ("later", True, None)]
    await queue.finish(
        "w1", [ending("a", status="cancelled", final="{}", finished_ms=5)], progress_ttl_s=60, index_size=9
    )
    assert await r.get(KEYS.result("a")) == b'{"r":1}' and await r.zrange(KEYS.by_status("cancelled"), 0, -1) == [b"a"]
    assert await r.hget(KEYS.jobs, m) == b"again"  # the newer job's marker stays


async def test_cancel_of_a_running_job_sets_its_field_and_tells_the_workers(queue: Queue, r: Any) -> None:
    """Held by a worker: its cancel field is set, its id published on the cancel channel, and its marker
    handed on (the same question asked again is a new job, whose marker the cancelled run's finish keeps)."""
    pubsub = r.pubsub()
    await pubsub.subscribe(KEYS.cancel_channel)
    m = marker_field("f")
    await put(queue, "a", marker=m)
    claim = await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    assert await queue.cancel("a") == "cancelling"
    assert await queue.cancel_requested(["a", "other"]) == [True, False]
    message = None
    deadline = time.monotonic() + 5
    while message is None and time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
    await pubsub.aclose()
    assert message is not None and message["data"] == b"a"
    assert (await put(queue, "again", marker=m)).deduplicated is False
    await queue.finish("w1", [ending("a", marker=claim.jobs[0].marker)], progress_ttl_s=60, index_size=9)
    assert await r.hget(KEYS.jobs, m) == b"again"


async def test_a_purge_leaves_a_running_job_alone(queue: Queue, r: Any) -> None:
    """``queued_only``: a job a worker holds is ``running`` and untouched."""
    await put(queue, "a")
    await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    assert await queue.cancel("a", queued_only=True) == "running"
    assert await queue.cancel_requested(["a"]) == [False]


async def test_cancel_of_a_finished_or_unknown_job_changes_nothing(queue: Queue, r: Any) -> None:
    """A stored result means too late; an id with no trace is not found."""
    await r.set(KEYS.result("done"), b"r")
    assert await queue.cancel("done", result=b"x", result_px=1000, final="{}", index_size=5) == "finished"
    assert await queue.cancel("nope", result=b"x", result_px=1000, final="{}", index_size=5) == "not_found"
    assert await r.get(KEYS.result("done")) == b"r" and not await r.exists(KEYS.result("nope"))


# ------------------------------------------------------------------------------------------ reads
async def test_a_jobs_state_follows_its_marks(queue: Queue, r: Any) -> None:
    """queued, deferred, in_progress (a worker holds it), complete (a result), not_found."""
    await put(queue, "q")
    await put(queue, "d", score=now_ms() + 60_000)
    await put(queue, "p")
    await queue.claim("w1", want=5, lease_ms=LEASE_MS, idle=True)  # takes q and p
    await r.hdel(KEYS.jobs, field("q", Field.HOLDER))
    await r.zadd(KEYS.queue, {"q": 1})
    await r.set(KEYS.result("c"), b"r")
    states = [await queue.state(j) for j in ("q", "d", "p", "c", "x")]
    assert states == ["queued", "deferred", "in_progress", "complete", "not_found"]


# ------------------------------------------------------------------------------------------ tenants
async def test_a_tenants_jobs_enter_its_own_indexes_as_well_as_those_of_all(queue: Queue, r: Any) -> None:
    """A tenant's job (``acme_...``) is indexed for every tenant and for its own, by each script that
    indexes: enqueue (recent), finish (its status), cancel; a default-tenant job enters no tenant's index;
    a request's marker is per tenant, so another tenant's identical question is a job of its own."""
    assert (await put(queue, "acme_1", marker=marker_field("f", "acme"))).deduplicated is False
    assert (await put(queue, "plain", marker=marker_field("f"))).deduplicated is False
    assert (await put(queue, "acme_2", marker=marker_field("f", "acme"))).job_id == "acme_1"
    await put(queue, "acme_3")
    assert await r.zrange(KEYS.tenant_index("acme"), 0, -1) == [b"acme_1", b"acme_3"]
    assert set(await r.zrange(KEYS.index, 0, -1)) == {b"acme_1", b"plain", b"acme_3"}
    first = await queue.claim("w1", want=2, lease_ms=LEASE_MS, idle=True)
    second = await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    assert [j.job_id for j in first.jobs + second.jobs] == ["plain", "acme_1"]
    for job_id in ("acme_1", "plain"):
        await queue.finish(
            "w1", [ending(job_id, final="{}", status="failed", finished_ms=5)], progress_ttl_s=60, index_size=9
        )
    await queue.cancel("acme_3", result=b"c", result_px=60_000, final="{}", index_size=9)
    assert await r.zrange(KEYS.tenant_index("acme", "failed"), 0, -1) == [b"acme_1"]
    assert set(await r.zrange(KEYS.by_status("failed"), 0, -1)) == {b"acme_1", b"plain"}
    assert await r.zrange(KEYS.tenant_index("acme", "cancelled"), 0, -1) == [b"acme_3"]
    assert KEYS.tenant_index("default") == "" and not await r.keys(f"{KEYS.tag}:t:default:*")


async def starts(queue: Queue, count: int, *, want: int = 1) -> list[str]:
    """The ids ``count`` claims start, in order, each run finished at once (as a worker of ``want`` slots)."""
    started: list[str] = []
    for _ in range(count * 3):
        claim = await queue.claim("w1", want=want, lease_ms=LEASE_MS, idle=True)
        for job in claim.jobs:
            started.append(job.job_id)
            await queue.finish("w1", [ending(job.job_id)], progress_ttl_s=60, index_size=9)
        if len(started) >= count:
            return started[:count]
    return started


async def test_a_tenant_new_to_the_worker_is_learnt_from_the_claim_and_claimed_at_once(queue: Queue, r: Any) -> None:
    """A claim reads the queues of the tenants its worker names; one it did not name comes back in the
    reply (``learnt``), so the worker claims again at once and reads that tenant's queue too."""
    await put(queue, "acme_1")
    claim = await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    assert (claim.jobs, claim.learnt, claim.more, queue.served) == ([], True, False, ["acme"])
    again = await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    assert [j.job_id for j in again.jobs] == ["acme_1"] and not again.learnt
    assert await r.zscore(KEYS.queue_of("acme"), "acme_1") > now_ms()  # its lease score, in acme's queue


async def test_a_backlog_of_one_tenant_does_not_hold_up_another_tenants_job(queue: Queue, r: Any) -> None:
    """acme queues 20 jobs, then beta 3 (in first-in-first-out order, beta would wait behind all of
    acme's): starts alternate while both have work, so beta's 3 are among the first 6."""
    for i in range(20):
        await put(queue, f"acme_{i:02}", score=1000 + i)
    for i in range(3):
        await put(queue, f"beta_{i}", score=2000 + i)
    order = await starts(queue, 23)
    assert [j[:4] for j in order[:6]] in (["acme", "beta"] * 3, ["beta", "acme"] * 3), order
    assert [j for j in order if j.startswith("acme")] == [f"acme_{i:02}" for i in range(20)]  # FIFO within
    assert await r.zrange(KEYS.tenants, 0, -1) == [b"~"] or not await r.zrange(KEYS.queue_of("acme"), 0, -1)


async def test_weights_share_the_starts_while_both_tenants_have_a_backlog(queue: Queue) -> None:
    """Weights 3:1: of 40 starts while both have a backlog, 30 are the heavier tenant's (a claim of
    several jobs shares them the same way)."""
    queue.weights = {"heavy": 3.0}
    for i in range(60):
        await put(queue, f"heavy_{i:02}", score=1000 + i)
        await put(queue, f"light_{i:02}", score=1000 + i)
    order = await starts(queue, 40, want=4)
    assert sum(j.startswith("heavy") for j in order) == 30, order


async def test_priorities_hold_within_a_tenant_and_the_default_tenant_takes_its_share(queue: Queue) -> None:
    """A tenant's high-priority job goes before its own earlier jobs; the default tenant's queue is
    one tenant among the others."""
    queue.served = ["acme"]  # a worker that has met acme before
    for i in range(4):
        await put(queue, f"acme_n{i}", score=1000 + i)
        await put(queue, f"plain{i}", score=1000 + i)
    await put(queue, "acme_high", score=500)  # a high-priority job is scored ahead of its enqueue time
    order = await starts(queue, 9)
    assert next(j for j in order if j.startswith("acme")) == "acme_high"
    assert sorted(j.startswith("acme") for j in order[:4]) == [False, False, True, True], order


async def test_a_tenant_back_from_idle_gets_no_credit_for_its_idle_time(queue: Queue, r: Any) -> None:
    """While one tenant runs alone no pass moves; when the other comes back the two alternate again,
    the one back from idle taking no run of extra starts."""
    for i in range(4):
        await put(queue, f"acme_{i:02}", score=1000 + i)
        await put(queue, f"beta_{i:02}", score=1000 + i)
    for i in range(4, 24):
        await put(queue, f"acme_{i:02}", score=1000 + i)
    await starts(queue, 8)
    clock = await r.zscore(KEYS.tenants, "~")
    await starts(queue, 10)  # acme alone: beta, its queue empty, is no longer served, and no pass moves
    assert await r.zscore(KEYS.tenants, "~") == clock and await r.zscore(KEYS.tenants, "beta") is None
    for i in range(4, 10):
        await put(queue, f"beta_{i:02}", score=5000 + i)
    order = await starts(queue, 8)
    assert sum(j.startswith("beta") for j in order) == 4, order


async def test_a_tenant_whose_queue_is_empty_leaves_the_tenants_served(queue: Queue, r: Any) -> None:
    """Its last job done, the next claim drops the tenant from the set; the worker keeps reading its queue
    (no round trip to learn it again when its next job comes) until more than 16 it names are idle."""
    await put(queue, "acme_1")
    assert await starts(queue, 1) == ["acme_1"]
    await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    assert b"acme" not in await r.zrange(KEYS.tenants, 0, -1) and queue.served == ["acme"]
    await put(queue, "acme_2")
    claim = await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    assert [j.job_id for j in claim.jobs] == ["acme_2"] and not claim.learnt
    queue.served = [f"t{i}" for i in range(17)]
    await put(queue, "live_1")
    claim = await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    assert claim.learnt and sorted(queue.served) == ["acme", "live"]


async def test_a_lapsed_lease_in_a_tenants_queue_is_a_death_as_in_the_default_queue(queue: Queue, r: Any) -> None:
    """w1 takes acme's job and dies; once its lease lapses, w2 takes it as a suspect with its try back,
    and renew and release find it in acme's queue."""
    await put(queue, "acme_1")
    await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    taken = await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)
    assert [j.job_id for j in taken.jobs] == ["acme_1"]
    assert await queue.renew("w1", ["acme_1"], lease_ms=LEASE_MS) == []
    await r.zadd(KEYS.queue_of("acme"), {"acme_1": now_ms() - 1})  # the lease lapses
    other = Queue(r, KEYS)
    other.served = ["acme"]
    again = await other.claim("w2", want=2, lease_ms=LEASE_MS, idle=True)
    assert [(j.job_id, j.alone, j.tries, j.job_try) for j in again.jobs] == [("acme_1", True, 1, 2)]
    await other.release("w2", again.jobs)
    assert await score(r, "acme_1") is None and await r.zscore(KEYS.queue_of("acme"), "acme_1") == again.jobs[0].score


async def test_an_idle_look_unasked_leaves_the_tenants_unread_until_they_are_stale(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle worker that knows no tenant and looks at the queue because its wait ran out (no ring) reads
    only the default queue, as before tenants; a ring, a busy claim, or 30 s without a read, reads them."""
    await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True)  # reads them: none yet
    await put(queue, "acme_1")
    unasked = await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True, unasked=True)
    assert (unasked.jobs, unasked.learnt, queue.served) == ([], False, [])
    monkeypatch.setattr(queue_module, "TENANTS_REFRESH_S", 0.0)  # 30 s have passed
    stale = await queue.claim("w1", want=1, lease_ms=LEASE_MS, idle=True, unasked=True)
    assert stale.learnt and queue.served == ["acme"]


async def test_a_tenants_quota_refuses_a_new_job_past_it_and_writes_nothing(queue: Queue, r: Any) -> None:
    """Jobs in flight: the tenant's queue holds as many as allowed, so the next new job is refused (a job
    in flight joined is not new). Jobs a minute: a moving window of enqueue times; the refusal says when
    the oldest leaves it."""
    t = now_ms()
    await put(queue, "acme_1", marker=marker_field("a", "acme"), in_flight=2, now=t)
    await put(queue, "acme_2", in_flight=2, now=t)
    before = (await r.hlen(KEYS.jobs), await r.zcard(KEYS.queue_of("acme")), await r.zcard(KEYS.index))
    with pytest.raises(QuotaExceeded, match="2 jobs in flight") as refused:
        await put(queue, "acme_3", in_flight=2, now=t)
    assert refused.value.retry_after_s > 0
    assert (await r.hlen(KEYS.jobs), await r.zcard(KEYS.queue_of("acme")), await r.zcard(KEYS.index)) == before
    assert (await put(queue, "acme_4", marker=marker_field("a", "acme"), in_flight=2, now=t)).job_id == "acme_1"
    assert (await put(queue, "other_1", in_flight=2, now=t)).deduplicated is False  # another tenant's own count

    for i, at in enumerate((t, t + 1000)):
        await put(queue, f"beta_{i}", per_minute=2, now=at)
    with pytest.raises(QuotaExceeded, match="2 jobs a minute") as late:
        await put(queue, "beta_2", per_minute=2, now=t + 2000)
    assert late.value.retry_after_s == pytest.approx(58.0)
    assert await r.zscore(KEYS.queue_of("beta"), "beta_2") is None
    assert (await put(queue, "beta_3", per_minute=2, now=t + 60_001)).deduplicated is False  # the first left it


# ------------------------------------------------------------------------------------------ a Redis without the scripts
async def test_a_redis_that_lost_the_scripts_runs_them_from_their_text(queue: Queue, r: Any) -> None:
    """After ``SCRIPT FLUSH`` (a restarted Redis, or a replica just promoted: a script cache is not replicated)
    each call, and each run of a batch of finishes, is sent again with the script's text, and runs."""
    for job_id in ("a", "b", "c"):
        await put(queue, job_id)
    await r.script_flush()
    claim = await queue.claim("w1", want=3, lease_ms=LEASE_MS, idle=True)
    assert sorted(j.job_id for j in claim.jobs) == ["a", "b", "c"]
    await r.script_flush()
    endings = [Ending(job_id=j, mode="finish", result=b"r", result_px=60_000) for j in ("a", "b")]
    assert await queue.finish("w1", endings, progress_ttl_s=60, index_size=100) == [True, True]
    assert await r.get(KEYS.result("a")) == b"r" and await r.get(KEYS.result("b")) == b"r"
