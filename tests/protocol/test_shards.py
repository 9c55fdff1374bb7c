"""A sharded queue (``AGENTQ_QUEUE_SHARDS``): where each shard's keys lie, what a job id says, and the
protocol's calls going to the shard of each job, on fakeredis and on the session's real redis-server."""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Any

import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from agentq import tenants
from agentq.errors import QuotaExceeded
from agentq.protocol import acl
from agentq.protocol.keys import Field, Keys, field, shard_for, shard_of, shard_tags
from agentq.protocol.queue import Ending, Queue, now_ms
from agentq.protocol.records import encode_job
from tests.protocol.test_keys import slot_tag

SHARDS = 3
KEYS = Keys("agentq", "test", shards=SHARDS)
RECORD = encode_job("answer_question", ({"question": "q"},), {}, 1)


@pytest.fixture
def sharded(r: Any) -> Queue:
    return Queue(r, KEYS)


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


def ids_on(shard: int, count: int, tenant: str = tenants.DEFAULT) -> list[str]:
    return [KEYS.new_job_id(tenant, shard=shard) for _ in range(count)]


async def put(queue: Queue, job_id: str, **kw: Any) -> Any:
    now = now_ms()
    return await queue.enqueue(job_id, RECORD, score=now - 1000, marker=None, index_score=now, index_size=100, **kw)


# ------------------------------------------------------------------------------------------ keys and ids
def test_one_shard_is_the_queue_as_it_always_was() -> None:
    """K = 1: the tag is the queue's, ids are plain uuid4 hex, every job on shard 0."""
    k = Keys("agentq", "reports")
    assert (k.tag, k.shards, [s.tag for s in k.every_shard]) == ("agentq:{reports}", 1, ["agentq:{reports}"])
    job_id = k.new_job_id("acme", fingerprint="f")
    assert len(job_id.partition("_")[2]) == 32 and int(job_id.partition("_")[2], 16) >= 0
    assert k.of(job_id) is k and k.result(job_id) == f"agentq:{{reports}}:result:{job_id}"


@pytest.mark.parametrize("shards", [2, 3, 6, 12, 64])
def test_each_shard_has_a_tag_of_its_own_in_its_own_part_of_the_slots(shards: int) -> None:
    """Shard 0 keeps the queue's tag; each shard's slot lies in the middle half of a part of the 16,384 slots
    of its own, so the K shards split evenly over primaries that split the slots evenly."""
    k = Keys("agentq", "default", shards=shards)
    tags = shard_tags("agentq", "default", shards)
    assert tags[0] == "default" and len(set(tags)) == shards and k.every_shard[0].tag == "agentq:{default}"
    parts = sorted(slot(s.queue) * shards // REDIS_CLUSTER_HASH_SLOTS for s in k.every_shard)
    assert parts == list(range(shards))
    for s in k.every_shard[1:]:
        offset = slot(s.queue) * shards % REDIS_CLUSTER_HASH_SLOTS / REDIS_CLUSTER_HASH_SLOTS
        assert 0.25 <= offset < 0.75, (s.tag, offset)
    # three primaries of equal runs, as redis-cli --cluster create makes them: K / 3 shards each
    if shards % 3 == 0:
        runs = Counter(slot(s.queue) * 3 // REDIS_CLUSTER_HASH_SLOTS for s in k.every_shard)
        assert sorted(runs.values()) == [shards // 3] * 3


def test_a_job_id_names_its_shard_and_its_keys_are_that_shards() -> None:
    """Sharded ids end in ``-<shard>`` and still fit 64 characters with the longest tenant name; every key of
    the job is on its shard, whichever shard's keys name it."""
    longest = "t" * 31
    for shard in range(SHARDS):
        job_id = KEYS.new_job_id(longest, shard=shard)
        assert len(job_id) <= 64 and shard_of(job_id) == shard and tenants.of(job_id) == longest
        own = KEYS.shard(shard).tag
        for other in KEYS.every_shard:
            for key in (other.result(job_id), other.progress(job_id), other.final(job_id), other.job_queue(job_id)):
                assert slot_tag(key) == slot_tag(own + ":x"), key
    assert shard_of("not-a-shard") == 0 and shard_of("abc-zz") == 0 and shard_of(secrets.token_hex(16)) == 0
    assert KEYS.of("x-7f") is KEYS.shard(0)  # a shard this queue does not have: none of its jobs


def test_the_shard_of_a_request_is_its_fingerprints_and_requests_spread_evenly() -> None:
    """The same fingerprint always gives the same shard (deduplication meets the first job); 6,000 distinct
    ones fall within 10 % of even over 6 shards; a request without deduplication goes to any shard."""
    assert len({shard_for("same", 6) for _ in range(20)}) == 1
    counts = Counter(shard_for(secrets.token_hex(32), 6) for _ in range(6000))
    assert sorted(counts) == list(range(6)) and all(900 <= n <= 1100 for n in counts.values()), counts
    assert set(Counter(shard_for(None, 6) for _ in range(600))) == set(range(6))
    assert shard_for("any", 1) == 0


def test_the_acl_gives_every_shard_to_the_producer_and_the_worker() -> None:
    """The producer may write each shard's queue keys and follow each shard's channels; the worker too."""
    producer = acl.rules("producer", KEYS)
    worker = acl.rules("worker", KEYS)
    for s in KEYS.every_shard:
        assert f"~{s.queue}" in producer and f"~{s.jobs}" in producer and f"&{s.tag}:*" in producer
        assert f"&{s.tag}:*" in worker
    assert f"~{KEYS.ticks}" in producer and KEYS.ticks.startswith("agentq:{test}:")


# ------------------------------------------------------------------------------------------ the protocol
async def test_each_call_goes_to_the_shard_of_its_job(sharded: Queue, r: Any) -> None:
    """Enqueue, claim by shard, renew, release, finish and the state read each touch only the job's shard."""
    by_shard = {shard: ids_on(shard, 2) for shard in range(SHARDS)}
    for ids in by_shard.values():
        for job_id in ids:
            await put(sharded, job_id)
    for shard, ids in by_shard.items():
        k = KEYS.shard(shard)
        assert sorted(m.decode() for m in await r.zrange(k.queue, 0, -1)) == sorted(ids)
        assert await r.zrange(k.bell, 0, -1) == [b"ring"]
    assert await sharded.counts() == (6, 0, 6)

    claim = await sharded.claim("w1", want=5, lease_ms=5000, idle=True, shard=1)
    assert sorted(j.job_id for j in claim.jobs) == sorted(by_shard[1])
    claim2 = await sharded.claim("w1", want=1, lease_ms=5000, idle=False, shard=2)
    [on_two] = [j.job_id for j in claim2.jobs]
    held = [*by_shard[1], on_two]
    assert on_two in by_shard[2]
    assert await sharded.renew("w1", held, lease_ms=9000) == []
    assert await sharded.state(by_shard[1][0]) == "in_progress"

    await sharded.release("w1", [*claim.jobs[:1], *claim2.jobs])
    assert await r.hget(KEYS.shard(2).jobs, field(on_two, Field.HOLDER)) is None
    done = claim.jobs[1].job_id
    ending = Ending(job_id=done, mode="finish", result=b"r", result_px=60_000, final='{"status":"ok"}', status="ok")
    assert await sharded.finish("w1", [ending], progress_ttl_s=60, index_size=100) == [True]
    assert await r.get(KEYS.shard(1).result(done)) == b"r" and await sharded.state(done) == "complete"
    assert await r.zscore(KEYS.shard(1).queue, done) is None and await sharded.counts() == (5, 0, 5)
    assert await sharded.cancel_requested([by_shard[0][0], done]) == [False, False]


async def test_a_tenants_quotas_count_its_jobs_on_every_shard(sharded: Queue, r: Any) -> None:
    """A quota of 2 jobs in flight: two jobs on two shards use it up, the third is refused on a third shard;
    a quota of 3 a minute: the fourth enqueue anywhere is refused, and nothing of it is written."""
    first, second, third = (KEYS.new_job_id("acme", shard=s) for s in range(3))
    await put(sharded, first, in_flight=2)
    await put(sharded, second, in_flight=2)
    with pytest.raises(QuotaExceeded, match="2 jobs in flight"):
        await put(sharded, third, in_flight=2)
    assert await r.hget(KEYS.shard(2).jobs, third) is None

    minute = [KEYS.new_job_id("beta", shard=s) for s in (0, 1, 2, 2)]
    for job_id in minute[:3]:
        await put(sharded, job_id, per_minute=3)
    with pytest.raises(QuotaExceeded, match="3 jobs a minute") as refused:
        await put(sharded, minute[3], per_minute=3)
    assert 0 < refused.value.retry_after_s <= 60 and await r.hget(KEYS.shard(2).jobs, minute[3]) is None
