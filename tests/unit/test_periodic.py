"""Periodic tasks: the pure schedule on a virtual clock, and the live driver for real.

Virtual-clock tests drive ``_Schedule`` directly (``plan``/``fire`` with instants the test
chooses): no waiting at all. Live tests use short real intervals and await events or
futures set by the task function or ``on_result``; they never sleep to synchronise and
assert no timings.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from libs import _runtime
from libs.scheduling import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    PeriodicTask,
    PeriodicTaskManager,
    RunRecord,
)
from libs.scheduling.periodic import _Schedule

WAIT = 10.0  # s: upper bound for anything a live test awaits
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SEC = timedelta(seconds=1)
STAT_KEYS = {
    "name",
    "trigger",
    "interval",
    "is_running",
    "in_flight",
    "run_count",
    "error_count",
    "skipped_count",
    "missed_count",
    "last_run",
    "last_error",
    "next_run",
    "mean_runtime_s",
    "max_runtime_s",
}


def drive(sched: _Schedule, now: datetime, limit: int = 100_000) -> list[tuple[datetime, int]]:
    """Run a schedule to completion on a virtual clock that jumps to each wake-up."""
    runs: list[tuple[datetime, int]] = []
    for _ in range(limit):
        wake = sched.plan(now)
        if wake is None:
            return runs
        now = max(now, wake)
        run_for, missed = sched.fire(now)
        if run_for is not None:
            runs.append((run_for, missed))
    raise AssertionError("schedule did not finish")


# --------------------------------------------------------------------------- pure schedule


@pytest.mark.parametrize("policy", ["coalesce", "skip"])
def test_no_drift_over_10000_late_wakeups(policy: str) -> None:
    sched = _Schedule(IntervalTrigger("1s"), policy)
    sched.start(T0)
    rng = random.Random(7)
    now = T0
    for k in range(1, 10_001):
        wake = sched.plan(now)
        assert wake == T0 + k * SEC  # on the grid, whatever the lateness so far
        now = wake + timedelta(microseconds=rng.randrange(0, 900_000))  # woke up late
        assert sched.fire(now) == (T0 + k * SEC, 0)
    assert sched.planned == T0 + 10_001 * SEC


def test_an_early_wakeup_runs_nothing_and_keeps_the_plan() -> None:
    sched = _Schedule(IntervalTrigger("10s"))
    sched.start(T0)
    assert sched.fire(T0 + 9 * SEC) == (None, 0)
    assert sched.plan(T0 + 9 * SEC) == T0 + 10 * SEC
    assert sched.fire(T0 + 10 * SEC) == (T0 + 10 * SEC, 0)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("coalesce", (T0 + 1000 * SEC, 99)), ("skip", (None, 100))],
)
def test_a_stall_coalesces_or_skips_never_bursts(policy: str, expected: tuple[Any, int]) -> None:
    sched = _Schedule(IntervalTrigger("10s"), policy)
    sched.start(T0)
    now = T0 + 1005 * SEC  # the process stalled through 100 fire times
    assert sched.fire(now) == expected
    assert sched.plan(now) == T0 + 1010 * SEC  # back on the original grid
    assert sched.fire(now) == (None, 0)  # nothing else is due: no burst


def test_skip_still_runs_a_fire_time_that_is_only_a_little_late() -> None:
    sched = _Schedule(IntervalTrigger("1s"), "skip")
    sched.start(T0)
    # 100 fire times passed, but the latest one is only 0.5 s old: it runs, 99 are missed
    assert sched.fire(T0 + timedelta(seconds=100.5)) == (T0 + 100 * SEC, 99)


@pytest.mark.parametrize("policy", ["coalesce", "skip"])
def test_restore_after_three_weeks_down(policy: str) -> None:
    persisted = T0  # next_run saved before going down; the trigger was "every 1m"
    now = T0 + timedelta(weeks=3, seconds=30)
    sched = _Schedule(IntervalTrigger("1m"), policy)
    sched.start(now, next_run=persisted)
    assert sched.plan(now) == persisted  # in the past: wake at once
    due = 3 * 7 * 24 * 60 + 1  # T0 + k minutes for k = 0 .. 30240
    run_for, missed = sched.fire(now)
    if policy == "coalesce":
        assert (run_for, missed) == (T0 + timedelta(weeks=3), due - 1)  # one catch-up run
    else:
        assert (run_for, missed) == (None, due)
    assert sched.planned == T0 + timedelta(weeks=3, minutes=1)  # the old grid continues
    assert sched.fire(now) == (None, 0)


def test_restore_in_the_future_waits_for_it() -> None:
    sched = _Schedule(IntervalTrigger("1m"))
    sched.start(T0, next_run=T0 + 10 * SEC)
    assert sched.plan(T0) == T0 + 10 * SEC
    assert sched.fire(T0 + 10 * SEC) == (T0 + 10 * SEC, 0)
    assert sched.planned == T0 + 70 * SEC


def test_date_trigger_with_two_instants_runs_twice_then_finishes() -> None:
    times = [T0 + 10 * SEC, T0 + 20 * SEC]
    sched = _Schedule(DateTrigger(times))
    sched.start(T0)
    assert not sched.finished
    assert drive(sched, T0) == [(times[0], 0), (times[1], 0)]
    assert sched.finished
    assert sched.plan(T0 + timedelta(days=1)) is None
    assert sched.fire(T0 + timedelta(days=1)) == (None, 0)


def test_date_trigger_in_the_past_finishes_at_once() -> None:
    sched = _Schedule(DateTrigger([T0 - SEC]))
    sched.start(T0)
    assert sched.finished
    assert drive(sched, T0) == []


def test_cron_next_times() -> None:
    sched = _Schedule(CronTrigger("*/15 * * * *"))
    sched.start(T0 + timedelta(minutes=1))
    runs = [run for run, _ in drive_n(sched, T0 + timedelta(minutes=1), 4)]
    assert runs == [T0 + timedelta(minutes=m) for m in (15, 30, 45, 60)]
    daily = _Schedule(CronTrigger("0 3 * * *", "Europe/Berlin"))
    daily.start(T0)
    assert daily.planned == datetime(2024, 5, 2, 1, 0, tzinfo=UTC)  # 03:00 CEST


def drive_n(sched: _Schedule, now: datetime, n: int) -> list[tuple[datetime, int]]:
    runs: list[tuple[datetime, int]] = []
    while len(runs) < n:
        wake = sched.plan(now)
        assert wake is not None
        now = max(now, wake)
        run_for, missed = sched.fire(now)
        if run_for is not None:
            runs.append((run_for, missed))
    return runs


def test_long_waits_are_capped_so_clock_jumps_are_noticed() -> None:
    sched = _Schedule(CronTrigger("@yearly"))
    sched.start(T0)
    assert sched.plan(T0) == T0 + timedelta(seconds=60)
    assert sched.fire(T0 + timedelta(seconds=60)) == (None, 0)
    # the wall clock jumps past the fire time (suspend, NTP step): the next capped wake-up runs it
    late = datetime(2025, 1, 1, 0, 10, tzinfo=UTC)
    assert sched.fire(late) == (datetime(2025, 1, 1, tzinfo=UTC), 0)


def test_jitter_is_drawn_once_per_fire_time_and_skip_still_runs_it() -> None:
    draws: list[float] = []

    def rand() -> float:
        draws.append(1.0)
        return 1.0

    sched = _Schedule(IntervalTrigger("10s", jitter="2s"), "skip", rand=rand)
    sched.start(T0)
    assert sched.plan(T0) == T0 + 12 * SEC
    assert sched.plan(T0 + SEC) == T0 + 12 * SEC
    assert len(draws) == 1
    assert sched.fire(T0 + 11 * SEC) == (None, 0)  # planned time passed, jittered one not
    assert sched.fire(T0 + 12 * SEC) == (T0 + 10 * SEC, 0)  # 2 s late on purpose: still runs
    assert sched.plan(T0 + 12 * SEC) == T0 + 22 * SEC  # jitter never shifts the grid


def test_schedule_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="misfire"):
        _Schedule(IntervalTrigger("1s"), "burst")
    sched = _Schedule(IntervalTrigger("1s"))
    with pytest.raises(ValueError, match="naive"):
        sched.start(datetime(2024, 1, 1))


# --------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("interval", "described"),
    [
        (timedelta(minutes=5), "every 5m"),
        (5, "every 5s"),
        (0.5, "every 500ms"),
        ("1h30m", "every 1h30m"),
        (IntervalTrigger("2s"), "every 2s"),
        ({"every": "5s"}, "every 5s"),
        ({"cron": "*/5 * * * *", "tz": "Europe/Berlin"}, "cron '*/5 * * * *' (Europe/Berlin)"),
        ({"at": ["2030-01-01T00:00:00Z"]}, "once at 2030-01-01T00:00:00Z"),
    ],
)
def test_interval_forms(interval: object, described: str) -> None:
    task = PeriodicTask("t", interval, print)
    assert task.trigger.describe() == described
    assert task.statistics["trigger"] == described


@pytest.mark.parametrize("bad", ["5x", -1, 0, True, None, object(), {"every": "zz"}, {"bogus": 1}, "", [1]])
def test_bad_interval_raises_value_error_naming_it(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        PeriodicTask("t", bad, print)
    assert repr(bad)[:20] in str(info.value) or "zz" in str(info.value)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="name"):
        PeriodicTask("", 1, print)
    with pytest.raises(TypeError, match="callable"):
        PeriodicTask("t", 1, "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="misfire"):
        PeriodicTask.create("t", 1, print, misfire="later")
    with pytest.raises(ValueError, match="naive"):
        PeriodicTask.create("t", 1, print, next_run=datetime(2024, 1, 1))


def test_statistics_of_a_new_task() -> None:
    restore = T0 + SEC
    task = PeriodicTask.create("fresh", "5m", print, next_run=restore)
    stats = task.statistics
    assert set(stats) == STAT_KEYS
    assert stats["name"] == "fresh"
    assert stats["interval"] == "5m"
    assert stats["is_running"] is False
    assert (stats["run_count"], stats["error_count"], stats["skipped_count"], stats["missed_count"]) == (0, 0, 0, 0)
    assert stats["last_run"] is None and stats["last_error"] is None
    assert stats["mean_runtime_s"] is None and stats["max_runtime_s"] is None
    assert task.next_run == restore
    assert stats["next_run"] == "2024-05-01T12:00:01Z"
    assert PeriodicTask("cron", {"cron": "@daily"}, print).statistics["interval"] is None


# --------------------------------------------------------------------------- live


@pytest.fixture
async def track() -> AsyncIterator[Callable[[PeriodicTask], PeriodicTask]]:
    """Remember tasks a test creates and stop them all at the end."""
    tasks: list[PeriodicTask] = []

    def add(task: PeriodicTask) -> PeriodicTask:
        tasks.append(task)
        return task

    yield add
    for task in tasks:
        await task.stop(timeout=1.0)


async def aset(event: asyncio.Event) -> None:
    event.set()


class Records:
    """An ``on_result`` that queues the records for the test to await."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[RunRecord] = asyncio.Queue()

    def __call__(self, record: RunRecord) -> None:
        self.queue.put_nowait(record)

    async def next(self) -> RunRecord:
        return await asyncio.wait_for(self.queue.get(), WAIT)


class LogEvent(logging.Handler):
    """Sets an asyncio event once ``count`` log records contain ``text``."""

    def __init__(self, text: str, count: int = 1) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.count = count
        self.seen = 0
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen += 1
            if self.seen >= self.count:
                self.loop.call_soon_threadsafe(self.event.set)


async def test_sync_function_runs_on_a_pool_thread_not_the_loop(track: Any) -> None:
    loop_thread = threading.get_ident()
    records = Records()

    def where() -> tuple[int, str]:
        return threading.get_ident(), threading.current_thread().name

    task = track(PeriodicTask.create("sync", "20ms", where, on_result=records)).start()
    record = await records.next()
    assert record.ok and record.error is None
    ident, thread_name = record.result
    assert ident != loop_thread
    assert thread_name.startswith("qe-pool")
    assert task.is_running


async def test_async_function_runs_on_the_loop(track: Any) -> None:
    loop_thread = threading.get_ident()
    records = Records()

    async def where() -> tuple[int, bool]:
        return threading.get_ident(), asyncio.current_task() is not None

    track(PeriodicTask.create("async", "20ms", where, on_result=records)).start()
    record = await records.next()
    assert record.ok
    assert record.result == (loop_thread, True)


async def test_args_and_kwargs_reach_the_function(track: Any) -> None:
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def fn(a: int, b: int, *, c: int) -> None:
        if not got.done():
            got.set_result((a, b, c))

    track(PeriodicTask("args", "20ms", fn, 1, 2, c=3)).start()
    assert await asyncio.wait_for(got, WAIT) == (1, 2, 3)


async def test_a_sync_function_returning_a_coroutine_is_awaited_on_the_loop(track: Any) -> None:
    records = Records()

    async def coro() -> int:
        return threading.get_ident()

    track(PeriodicTask.create("lambda", "20ms", lambda: coro(), on_result=records)).start()
    record = await records.next()
    assert record.ok and record.result == threading.get_ident()


async def test_run_records(track: Any) -> None:
    records = Records()
    task = track(PeriodicTask.create("rec", "20ms", lambda: 42, on_result=records)).start()
    first, second = await records.next(), await records.next()
    for record in (first, second):
        assert record.task == "rec"
        assert record.ok and record.result == 42 and record.error is None and record.missed >= 0
        assert record.scheduled_for.tzinfo is not None
        assert record.started_at <= record.finished_at
    step = second.scheduled_for - first.scheduled_for  # one grid step, more if one was skipped
    assert step > timedelta(0) and step % timedelta(milliseconds=20) == timedelta(0)
    stats = task.statistics
    assert stats["run_count"] >= 2
    assert stats["last_run"] is not None and stats["mean_runtime_s"] is not None
    assert stats["max_runtime_s"] >= stats["mean_runtime_s"]
    assert task.next_run is not None and task.next_run > first.scheduled_for


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_errors_are_logged_counted_and_the_task_keeps_going(
    track: Any, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    records = Records()

    def boom() -> None:
        raise ValueError("boom")

    async def aboom() -> None:
        raise ValueError("boom")

    fn = boom if kind == "sync" else aboom
    task = track(PeriodicTask.create(f"failing-{kind}", "20ms", fn, on_result=records)).start()
    for _ in range(3):
        record = await records.next()
        assert not record.ok and isinstance(record.error, ValueError) and record.result is None
    stats = task.statistics
    assert stats["error_count"] >= 3
    assert stats["last_error"] == "ValueError: boom"
    assert task.is_running
    assert f"'failing-{kind}'" in caplog.text


@pytest.mark.parametrize("exc", [SystemExit, KeyboardInterrupt])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_system_exit_in_a_run_is_its_error_not_the_end_of_the_worker(
    track: Any, kind: str, exc: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    """Raised in the run's task, SystemExit/KeyboardInterrupt would end ``run_forever()``
    (the worker, without its shutdown); they are the run's error, like any other."""
    records = Records()

    def leave() -> None:
        raise exc(3)

    async def aleave() -> None:
        raise exc(3)

    task = track(PeriodicTask.create(f"leaving-{kind}", "20ms", leave if kind == "sync" else aleave,
                                     on_result=records)).start()
    for _ in range(2):
        record = await records.next()
        assert not record.ok and isinstance(record.error, exc)
    assert task.is_running
    assert task.statistics["error_count"] >= 2
    assert task.statistics["last_error"] == f"{exc.__name__}: 3"
    assert f"'leaving-{kind}'" in caplog.text and "the worker keeps running" in caplog.text


async def test_overlapping_runs_are_skipped_and_counted(track: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="libs.scheduling.periodic")
    skipped = LogEvent("skipped", count=2)
    logging.getLogger("libs.scheduling.periodic").addHandler(skipped)
    gate = asyncio.Event()
    calls = 0
    records = Records()

    async def slow() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return calls

    try:
        task = track(PeriodicTask.create("slow", "20ms", slow, on_result=records)).start()
        await asyncio.wait_for(skipped.event.wait(), WAIT)
        assert calls == 1
        assert task.statistics["skipped_count"] >= 2
        assert task.statistics["in_flight"] == 1
        gate.set()
        record = await records.next()
        assert record.ok and record.result == 1
    finally:
        logging.getLogger("libs.scheduling.periodic").removeHandler(skipped)


async def test_overlap_allowed_runs_concurrently(track: Any) -> None:
    gate = asyncio.Event()
    second = asyncio.Event()
    calls = 0

    async def slow() -> None:
        nonlocal calls
        calls += 1
        if calls >= 2:
            second.set()
        await gate.wait()

    task = track(PeriodicTask.create("overlap", "20ms", slow, max_overlap_skip=False)).start()
    await asyncio.wait_for(second.wait(), WAIT)
    assert task.statistics["skipped_count"] == 0
    assert task.statistics["in_flight"] >= 2
    gate.set()


async def test_stop_cancels_a_hanging_async_run_and_returns(track: Any) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()
    records = Records()

    async def hang() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = track(PeriodicTask.create("hang", "20ms", hang, on_result=records)).start()
    await asyncio.wait_for(started.wait(), WAIT)
    await asyncio.wait_for(task.stop(timeout=0.05), WAIT)
    assert cancelled.is_set()
    assert not task.is_running
    assert task.statistics["in_flight"] == 0
    record = await records.next()
    assert not record.ok and isinstance(record.error, asyncio.CancelledError)
    assert task.statistics["error_count"] == 0  # a cancelled run is not the function's error
    task._wake()  # a tick that was already on its way starts nothing after stop()
    assert task.statistics["in_flight"] == 0
    await task.stop()  # idempotent


async def test_stop_waits_for_a_thread_and_warns_when_it_overruns(
    track: Any, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    release = threading.Event()
    records = Records()

    def block() -> str:
        loop.call_soon_threadsafe(started.set)
        release.wait(WAIT)
        return "done"

    task = track(PeriodicTask.create("block", "20ms", block, on_result=records)).start()
    await asyncio.wait_for(started.wait(), WAIT)
    await asyncio.wait_for(task.stop(timeout=0.02), WAIT)
    assert "threads cannot be cancelled" in caplog.text
    assert not task.is_running
    release.set()
    record = await records.next()  # it finished in the background and was still recorded
    assert record.ok and record.result == "done"


async def test_stop_waits_for_a_run_that_finishes_in_time(track: Any) -> None:
    started = asyncio.Event()
    gate = asyncio.Event()
    records = Records()

    async def short() -> str:
        started.set()
        await gate.wait()
        return "finished"

    task = track(PeriodicTask.create("short", "20ms", short, on_result=records)).start()
    await asyncio.wait_for(started.wait(), WAIT)
    stopping = asyncio.ensure_future(task.stop(timeout=WAIT))
    gate.set()
    await asyncio.wait_for(stopping, WAIT)
    record = await records.next()
    assert record.ok and record.result == "finished"


async def test_start_twice_raises_and_stop_before_start_is_fine() -> None:
    task = PeriodicTask("twice", "1h", print)
    task.start()
    with pytest.raises(RuntimeError, match="already started"):
        task.start()
    await task.stop()
    with pytest.raises(RuntimeError):
        task.start()
    never = PeriodicTask("never", "1h", print)
    await never.stop()
    assert not never.is_running


async def test_start_registers_a_shutdown_hook_and_stop_removes_it() -> None:
    task = PeriodicTask("hooked", "1h", print).start()
    assert task.stop in _runtime._RT.hooks
    assert task.is_running
    await task.stop()
    assert task.stop not in _runtime._RT.hooks


async def test_date_trigger_finishes_by_itself(track: Any) -> None:
    now = datetime.now(UTC)
    times = [now + timedelta(milliseconds=30), now + timedelta(milliseconds=60)]
    finished: asyncio.Future[list[RunRecord]] = asyncio.get_running_loop().create_future()
    seen: list[RunRecord] = []
    task: PeriodicTask

    def on_result(record: RunRecord) -> None:
        seen.append(record)
        if not task.is_running and not finished.done():
            finished.set_result(seen)

    task = track(PeriodicTask.create("dates", {"at": times}, lambda: None, on_result=on_result)).start()
    records = await asyncio.wait_for(finished, WAIT)
    # two runs; on a stalled machine one run may stand for both (coalesced, or the second
    # skipped while the first was still going): never more
    assert sum(1 + r.missed for r in records) + task.statistics["skipped_count"] == 2
    assert records[-1].scheduled_for == times[1]
    assert task.next_run is None
    assert task.statistics["next_run"] is None


async def test_restore_with_next_run_in_the_past_runs_once_and_counts_the_missed(track: Any) -> None:
    records = Records()
    persisted = datetime.now(UTC) - timedelta(weeks=3)
    task = track(
        PeriodicTask.create("restored", {"every": "1h"}, lambda: "caught up", next_run=persisted, on_result=records)
    ).start()
    record = await records.next()
    assert record.ok and record.result == "caught up"
    assert record.missed == 3 * 7 * 24
    assert record.scheduled_for == persisted + timedelta(hours=3 * 7 * 24)
    assert task.statistics["missed_count"] == 3 * 7 * 24
    assert task.next_run == persisted + timedelta(hours=3 * 7 * 24 + 1)
    assert task.trigger.to_spec()["every"] == "1h"  # anchored on the persisted grid


async def test_one_timer_thread_for_many_tasks(track: Any) -> None:
    firsts = [asyncio.Event() for _ in range(5)]
    tasks = [track(PeriodicTask(f"many-{i}", "20ms", aset, event)).start() for i, event in enumerate(firsts)]
    for event in firsts:
        try:
            await asyncio.wait_for(event.wait(), WAIT)
        except TimeoutError:  # say which task did not run, and what its timer says
            timers = [t._timer and t._timer.stats() for t in tasks]
            raise AssertionError(f"{[t.statistics for t in tasks]} {timers}") from None
    assert [t.name for t in threading.enumerate()].count("qe-timers") == 1


async def test_manager_api(track: Any) -> None:
    manager = PeriodicTaskManager()
    ran = asyncio.Event()
    a: PeriodicTask = track(manager.register_task("a", "20ms", aset, ran))
    with pytest.raises(ValueError, match="'a' is already registered"):
        manager.register_task("a", "1s", print)
    b: PeriodicTask = track(manager.add(PeriodicTask.create("b", {"every": "1h"}, print)))
    with pytest.raises(ValueError, match="'b'"):
        manager.add(PeriodicTask("b", 1, print))
    with pytest.raises(ValueError, match="bad interval"):
        manager.register_task("c", "soon", print)
    assert "c" not in manager
    assert manager.get_task("a") is a and manager.get_task("b") is b
    assert manager.get_task("nope") is None
    assert len(manager) == 2 and "a" in manager and list(manager) == [a, b]
    assert not a.is_running
    assert manager.start_all() == 2
    assert manager.start_all() == 0  # already started: left alone
    await asyncio.wait_for(ran.wait(), WAIT)
    stats = manager.get_all_statistics()
    assert [s["name"] for s in stats] == ["a", "b"]
    assert all(set(s) == STAT_KEYS and s["is_running"] for s in stats)
    assert await manager.unregister_task("a")
    assert not a.is_running and manager.get_task("a") is None
    assert not await manager.unregister_task("a")
    await manager.stop_all()
    assert not b.is_running
    assert manager.get_all_statistics()[0]["is_running"] is False
