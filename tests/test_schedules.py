"""Scheduled and recurring questions: ``ask --in/--at``, schedules and their ticks, each enqueued once by
whichever worker comes first, and missed ticks coalesced into one."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from subprocess import Popen
from typing import Any

import pytest

from agentq.errors import StartupError
from agentq.protocol.queue import Queue
from agentq.schedules import Schedule
from agentq.settings import ScheduleSettings, Settings
from producer.client import Client
from tests.test_queue_commands import producer
from worker.engine import scheduler

StartWorkers = Callable[..., list[Popen[bytes]]]
QUESTION = {"question": "Will it rain?"}


# ------------------------------------------------------------------------------------------ the rule
def test_an_every_schedule_ticks_on_whole_multiples_so_every_worker_agrees() -> None:
    every = Schedule(name="s", every_s=10, request=QUESTION)
    assert every.next_after(1_000) == 10_000 and every.next_after(10_000) == 20_000
    assert [Schedule(name="s", every_s=s, request=QUESTION).rule for s in (90, 600, 7200, 1.5)] == [
        "every 90s",
        "every 10m",
        "every 2h",
        "every 1.5s",
    ]
    assert every.latest_due(10_000, 10_500) == 10_000  # the tick itself: nothing missed
    assert every.latest_due(10_000, 45_000) == 40_000  # 10, 20, 30, 40 missed: one job, for 40


def test_a_cron_schedule_ticks_in_utc_and_coalesces_missed_ticks() -> None:
    daily = Schedule(name="s", cron="0 8 * * *", request=QUESTION)
    monday_7 = 1_796_540_400_000  # 2026-12-07 07:00 UTC
    assert daily.next_after(monday_7) == monday_7 + 3_600_000
    assert daily.latest_due(monday_7 + 3_600_000, monday_7 + 3 * 86_400_000) == monday_7 + 3_600_000 + 2 * 86_400_000
    eight = monday_7 + 3_600_000
    assert daily.latest_due(eight, eight) == eight  # due this very second: itself
    minutely = Schedule(name="m", cron="* * * * *", request=QUESTION)
    month_later = eight + 30 * 86_400_000 + 59_999
    assert minutely.latest_due(eight, month_later) == eight + 30 * 86_400_000  # at once, not 43,200 steps


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({}, "exactly one of cron and every"),
        ({"cron": "0 8 * * *", "every_s": 60}, "exactly one of cron and every"),
        ({"cron": "every day"}, "cron 'every day'"),
        ({"every_s": 0.5}, "greater than or equal to 1"),
        ({"every_s": 60, "name": "no spaces"}, "should match pattern"),
    ],
)
def test_a_schedule_that_cannot_be_is_refused(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Schedule(**{"name": "s", "request": QUESTION, **fields})


def test_settings_declare_schedules_with_a_duration_or_a_cron() -> None:
    spec = ScheduleSettings(every="10m", question="Any news?", sources=("news",), priority="high")
    declared = Schedule.declared("news", spec)
    assert (declared.every_s, declared.request, declared.priority) == (
        600,
        {"question": "Any news?", "sources": ["news"]},
        "high",
    )
    with pytest.raises(ValueError, match=r"AGENTQ_SCHEDULES: bad: .*exactly one of cron and every"):
        Schedule.declared("bad", ScheduleSettings(question="q"))


# ------------------------------------------------------------------------------------------ once per tick
async def test_of_two_workers_at_one_tick_one_enqueues_it(fake_redis: Any) -> None:
    """Both tickers read the same due tick; the enqueue script lets the first write the job and move the tick,
    and the second writes nothing."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    queue = Queue(fake_redis, settings.keys)
    await fake_redis.hset(
        settings.keys.schedules, "s", Schedule(name="s", every_s=1, request=QUESTION).model_dump_json()
    )
    await fake_redis.zadd(settings.keys.ticks, {"s": 1_000})  # long due: every tick since was missed
    before = int(time.time()) * 1000
    waits = await asyncio.gather(scheduler.tick_once(queue, settings), scheduler.tick_once(queue, settings))
    after = int(time.time()) * 1000
    assert await fake_redis.zcard(settings.keys.queue) == 1 and all(0 <= w <= settings.poll_delay_s for w in waits)
    ((_, tick),) = await fake_redis.zrange(settings.keys.index, 0, -1, withscores=True)
    assert before <= tick <= after  # one job, for the latest tick missed
    assert await fake_redis.zscore(settings.keys.ticks, "s") > after


async def test_a_tick_without_its_schedule_is_looked_at_later_not_in_a_loop(fake_redis: Any) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    await fake_redis.zadd(settings.keys.ticks, {"gone": 1_000})
    assert await scheduler.tick_once(Queue(fake_redis, settings.keys), settings) == 0.0
    assert await fake_redis.zscore(settings.keys.ticks, "gone") > time.time() * 1000 + 50_000
    assert await fake_redis.zcard(settings.keys.queue) == 0


async def test_a_schedule_declared_badly_stops_the_worker_with_its_name(fake_redis: Any) -> None:
    settings = Settings(_env_file=None, schedules={"x": {"question": "q", "cron": "nope"}})  # type: ignore[call-arg]
    with pytest.raises(StartupError, match=r"AGENTQ_SCHEDULES: x: .*cron 'nope'"):
        await scheduler.declare(Queue(fake_redis, settings.keys), settings)


# ------------------------------------------------------------------------------------------ end to end
async def ticks_of(client: Client, question: str) -> list[tuple[int, float]]:
    """(tick ms, enqueue lateness s) of every job the schedule enqueued: its index score is its tick."""
    listed = [j for j in await client.jobs(limit=200) if j.question == question]
    scores = await client.redis.zmscore(client.keys.index, [j.job_id for j in listed]) if listed else []
    return sorted((round(s), j.enqueued_at - s / 1000) for j, s in zip(listed, scores, strict=True))


async def wait_for_ticks(client: Client, question: str, count: int, timeout: float = 40) -> list[tuple[int, float]]:
    give_up = time.monotonic() + timeout
    while len(found := await ticks_of(client, question)) < count:
        assert time.monotonic() < give_up, f"{len(found)} of {count} ticks enqueued within {timeout}s"
        await asyncio.sleep(0.1)
    return found


@pytest.mark.e2e
async def test_three_workers_enqueue_each_tick_once(client: Client, start_worker_processes: StartWorkers) -> None:
    """A schedule ticking every 2 s, three workers racing for each tick: one job per tick, none missed."""
    start_worker_processes(3)
    await client.schedule("every-2s", "Tick: will it rain?", every_s=2, sources=["weather"])
    found = await wait_for_ticks(client, "Tick: will it rain?", 5)
    await client.unschedule("every-2s")
    ticks = [t for t, _ in found]
    late = [lateness for _, lateness in found]
    print(
        f"\nfigure: schedule every 2 s, 3 workers: {len(set(ticks))} ticks, {len(ticks)} jobs, "
        f"{len(ticks) - len(set(ticks))} doubled, {(ticks[-1] - ticks[0]) // 2000 + 1 - len(set(ticks))} missed; "
        f"enqueued after its tick p50 {statistics.median(late) * 1000:.0f} ms, max {max(late) * 1000:.0f} ms"
    )
    assert len(set(ticks)) == len(ticks)  # no tick twice
    assert all(t % 2000 == 0 for t in ticks) and ticks[-1] - ticks[0] == 2000 * (len(ticks) - 1)  # none missed


@pytest.mark.e2e
async def test_ticks_missed_while_no_worker_ran_are_coalesced_into_one(
    client: Client, start_worker_processes: StartWorkers
) -> None:
    """No worker for 3+ ticks: the first worker back enqueues one job, for the latest missed tick, then one per
    tick again."""
    first = await client.schedule("catch-up", "Missed: any news?", every_s=1, sources=["weather"])
    await asyncio.sleep(max(0.0, first / 1000 + 3.5 - time.time()))  # three ticks pass with no worker to take them
    start_worker_processes(1)
    started = time.time() * 1000
    found = await wait_for_ticks(client, "Missed: any news?", 3)
    await client.unschedule("catch-up")
    ticks = [t for t, _ in found]
    print(f"\nfigure: schedule every 1 s, no worker for {(started - first) / 1000:.1f} s: jobs for ticks {ticks}")
    assert ticks[0] >= first + 3_000  # the ticks before it were not made up, one by one
    assert len(set(ticks)) == len(ticks) and ticks[1] > ticks[0]  # then on from there


@pytest.mark.e2e
async def test_a_deferred_question_waits_until_its_time(client: Client, start_worker_processes: StartWorkers) -> None:
    """``not_before`` (``ask --in``): deferred until then, answered after, never before."""
    start_worker_processes(1)
    due = time.time() + 2.0
    job_id = await client.enqueue("Later: will it rain?", sources=["weather"], not_before=due)
    assert await client.status(job_id) == "deferred"
    result = await client.result(job_id, timeout=30)
    assert result.status == "ok" and result.timing is not None
    assert result.timing.started_at.timestamp() >= due - 0.01


# ------------------------------------------------------------------------------------------ the commands
@pytest.mark.e2e
def test_ask_in_or_at_defers_and_bad_times_are_refused_before_redis(settings_env: dict[str, str]) -> None:
    """``--in 10m`` leaves a deferred job (said on stderr); both, a bad duration or a time past: exit 2, one line."""
    later = producer("ask", "Later?", "--in", "10m", env=settings_env)
    assert later.returncode == 0 and later.stderr.startswith("deferred until 20"), later.stderr
    assert producer("status", later.stdout.strip(), env=settings_env).stdout.strip() == "deferred"
    for args, says in [
        (("--in", "soon"), "--in: 'soon' is not a duration"),
        (("--at", "2020-01-01T00:00Z"), "--at: 2020-01-01T00:00Z has passed"),
        (("--at", "tomorrow"), "--at: 'tomorrow' is not an ISO 8601 time"),
        (("--in", "1m", "--at", "2099-01-01T00:00Z"), "--in and --at: give one of them"),
    ]:
        refused = producer("ask", "When?", *args, env=settings_env)
        assert refused.returncode == 2 and refused.stderr.startswith(f"error: {says}"), refused.stderr
        assert refused.stderr.count("\n") == 1


@pytest.mark.e2e
def test_schedule_add_list_remove(settings_env: dict[str, str]) -> None:
    """The CLI's schedule commands: add prints the next tick, list shows it, remove removes it (exit 3 after)."""
    added = producer("schedule", "add", "morning", "Any news?", "--cron", "0 8 * * *", env=settings_env)
    assert added.returncode == 0 and added.stdout.startswith("morning: next tick 20") and "T08:00:00Z" in added.stdout
    listed = json.loads(producer("schedule", "list", "--json", env=settings_env).stdout)
    assert [(s["name"], s["rule"], s["question"]) for s in listed] == [("morning", "cron 0 8 * * *", "Any news?")]
    bad = producer("schedule", "add", "x", "q", "--every", "0.5s", env=settings_env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "greater than or equal to 1" in bad.stderr
    assert producer("schedule", "remove", "morning", env=settings_env).stdout == "morning: removed\n"
    assert producer("schedule", "remove", "morning", env=settings_env).returncode == 3
