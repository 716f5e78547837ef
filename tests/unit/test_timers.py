"""Timers: the scheduling core on a virtual clock, and the threads/loop hand-over for real.

Virtual-clock tests drive an engine with a manual driver (tests/support/timers.py, no
threads): ``pump(now)`` is one wake-up of the timer thread, plain ticks land in a list and
run when the test says so. Real-thread
tests wait on events, never on sleeps, and assert no timings.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import random
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs import _runtime
from libs._enums import RunState
from libs.timers import (
    SetInterval,
    SetIntervalSafe,
    SetTimeout,
    SetTimeoutSafe,
    TimerStats,
    clearInterval,
    clearTimeout,
    setInterval,
    setTimeout,
    timer_stats,
)
from libs.timers._heap import DeadlineHeap
from libs.timers._stats import WINDOW, lateness_add, lateness_quantiles, lateness_samples
from libs.timers._timers import ENGINE
from tests.support.timers import FakeLoop, Virtual

WAIT = 10.0  # s: upper bound for any event a real-thread test waits for
EPS = 1e-9  # s: past a deadline computed in floating point
ROOT = Path(__file__).resolve().parents[2]


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _stop_real_timers() -> Any:
    yield
    for t in ENGINE.live_timers():
        t.stop()


def wait(event: threading.Event) -> None:
    assert event.wait(WAIT), "timed out waiting for the timer thread"


async def until(predicate: Any) -> None:
    """Yield to the loop (no sleeping) until ``predicate()`` holds; bounded."""
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(0)
    assert predicate()


# -- the scheduling core (virtual clock) ------------------------------------------------


def test_no_drift_over_10000_virtual_ticks() -> None:
    v = Virtual()
    calls = []
    t = v.SetInterval(lambda: calls.append(v.clock.now), 10).start()
    rng = random.Random(4)
    fired: list[float] = []
    next_due = v.engine.heap.next_deadline()
    while len(fired) < 10_000:
        assert next_due is not None
        # wake late by up to 90 % of an interval: jitter must never accumulate
        fired += v.pump(next_due + rng.uniform(0.0, 0.009))
        next_due = v.engine.heap.next_deadline()
    assert len(calls) == 10_000
    for k, deadline in enumerate(fired, start=1):
        assert deadline == pytest.approx(k * 0.010, abs=1e-9)
    assert next_due == pytest.approx(10_001 * 0.010, abs=1e-9)
    s = t.stats()
    assert (s.runs, s.missed, s.errors) == (10_000, 0, 0)


@given(
    steps=st.lists(st.floats(min_value=0.0, max_value=0.05), min_size=1, max_size=60),
    skip=st.booleans(),
)
def test_heap_invariants_under_arbitrary_wakeups(steps: list[float], skip: bool) -> None:
    """Whatever the wake-up times: at most one tick per wake-up, every fired deadline is a
    grid point, fired + missed == grid points passed, the next deadline is in the future."""
    v = Virtual()
    t = v.SetInterval(lambda: None, 10, misfire="skip" if skip else "coalesce").start()
    now = 0.0
    fired: list[float] = []
    for step in steps:
        now += step
        got = v.pump(now)
        assert len(got) <= 1
        fired += got
        nd = v.engine.heap.next_deadline()
        assert nd is not None and nd > now
    for deadline in fired:
        k = round(deadline / 0.010)
        assert deadline == pytest.approx(k * 0.010, abs=1e-9)
    assert fired == sorted(set(fired))
    passed = sum(1 for k in range(1, 10_000) if k * 0.010 <= now)  # the heap's own arithmetic
    assert len(fired) + t.stats().missed == passed


def first_after(now: float, origin: float, interval: float) -> float:
    """The first grid point origin + k * interval (k >= 1) after ``now``, computed the way
    the heap computes deadlines (so float rounding agrees)."""
    k = max(1, math.floor((now - origin) / interval))
    while k > 1 and origin + (k - 1) * interval > now:
        k -= 1
    while origin + k * interval <= now:
        k += 1
    return origin + k * interval


@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["start", "stop", "reset", "advance"]),
            st.integers(0, 7),
            st.floats(min_value=0.0, max_value=0.03),
        ),
        max_size=80,
    )
)
def test_heap_agrees_with_a_model_under_start_stop_reset(
    ops: list[tuple[str, int, float]],
) -> None:
    """Random starts, stops, resets and clock moves on 8 timers: a stopped timer never
    fires again, every tick is on its timer's current grid, and the heap's next deadline
    is the earliest deadline the model expects."""
    v = Virtual()
    fired: list[int] = []
    ts = [v.SetInterval(fired.append, 5 + 3 * i, i) for i in range(8)]
    grid: dict[int, tuple[float, float]] = {}  # running timer -> (origin, interval)
    now = 0.0
    for op, i, dt in ops:
        t = ts[i]
        if op == "start" and not t.is_running and i not in grid and t._state is RunState.NEW:
            t.start()
            grid[i] = (now, t.interval_ms / 1000)
        elif op == "stop":
            t.stop()
            grid.pop(i, None)
        elif op == "reset" and t.reset():
            grid[i] = (now, grid[i][1])
        elif op == "advance":
            now += dt
            before = len(fired)
            v.clock.now = now
            v.driver.pump()
            handed, v.ticks[:] = list(v.ticks), []
            for timer, deadline in handed:
                k = ts.index(timer)
                assert k in grid  # only running timers fire
                origin, interval = grid[k]
                steps = round((deadline - origin) / interval)
                assert steps >= 1 and deadline == pytest.approx(origin + steps * interval)
                assert deadline <= now
                v.driver.run_tick(timer, deadline)
            assert len(fired) - before == len(handed)
        expected = [first_after(now, origin, interval) for origin, interval in grid.values()]
        nd = v.engine.heap.next_deadline()
        if not grid:
            assert nd is None
        elif op == "advance":
            assert nd == pytest.approx(min(expected))


class _Plain:
    """The least a timer needs to be queued in a ``DeadlineHeap`` (see ``Schedulable``)."""

    _REPEAT = True

    def __init__(self, interval: float, skip: bool) -> None:
        self._interval = interval
        self._skip = skip
        self._origin = 0.0
        self._n = 0
        self._armed = 0
        self._missed = 0
        self._inflight = 0
        self._max_instances = 1 << 30


@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["start", "stop", "reset", "advance", "advance", "stall"]),
            st.integers(0, 11),
            st.floats(min_value=0.0, max_value=1.0),
        ),
        max_size=120,
    ),
    skip=st.booleans(),
)
def test_many_timers_on_shared_intervals_agree_with_a_model(
    ops: list[tuple[str, int, float]], skip: bool
) -> None:
    """Twelve timers on two intervals (equal deadlines and keys that differ only in the
    slot), stalls of many intervals (coalesce or skip re-arms whole groups at once) and
    stops/resets (dead heap items): every tick, missed count and next deadline is what a
    plain per-timer model computes."""
    heap: DeadlineHeap[Any] = DeadlineHeap(lambda: now)
    ts = [_Plain(0.005 if i % 2 else 0.010, skip) for i in range(12)]
    model: dict[int, list[float]] = {}  # running timer -> [origin, interval, next k]
    missed = [0] * 12
    now = 0.0
    for op, i, x in ops:
        t = ts[i]
        if op == "start" or (op == "reset" and i in model):
            heap.arm(t, now)
            model[i] = [now, t._interval, 1]
        elif op == "stop":
            heap.disarm(t)
            model.pop(i, None)
        elif op in ("advance", "stall"):
            now += x * (0.01 if op == "advance" else 0.2)
            expected = {}
            for k, (origin, interval, nk) in model.items():
                if origin + nk * interval > now:
                    continue
                last = nk
                while origin + (last + 1) * interval <= now:
                    last += 1
                if skip and last > nk:
                    missed[k] += last - nk + 1
                else:
                    missed[k] += last - nk
                    expected[k] = origin + last * interval
                model[k][2] = last + 1
            got = heap.due(now)
            fired = {ts.index(got[j]): got[j + 1] for j in range(0, len(got), 2)}
            assert len(fired) == len(got) // 2  # each timer at most once
            assert fired == pytest.approx(expected, abs=1e-12)
            for j in range(0, len(got), 2):
                got[j]._inflight -= 1
            assert [p._missed for p in ts] == missed
        nxt = [origin + nk * interval for origin, interval, nk in model.values()]
        # deadlines are kept in whole nanoseconds: the same 1e-12 s tolerance as `fired` above
        next_deadline = heap.next_deadline()
        assert (next_deadline is None) == (not nxt)
        assert next_deadline is None or next_deadline == pytest.approx(min(nxt), abs=1e-12)
        assert sorted(map(id, heap.armed())) == sorted(id(ts[k]) for k in model)


def test_a_deadline_equal_to_now_off_the_nanosecond_grid_fires() -> None:
    """Found by hypothesis: started at 0.015625 with 20 ms, due at 0.015625 + 0.02, which is
    not a whole number of nanoseconds; a wake-up at exactly that time must fire it."""
    v = Virtual()
    v.clock.now = 0.015625
    v.SetInterval(lambda: None, 20).start()
    assert v.pump(0.015625 + 0.02) == [0.015625 + 0.02]


def test_reset_postpones_next_tick_like_a_watchdog() -> None:
    v = Virtual()
    t = v.SetInterval(lambda: None, 100).start()
    v.clock.now = 0.05
    assert t.reset() is True
    assert v.pump(0.10) == []  # the original deadline is gone
    assert v.pump(0.15 + EPS) == [pytest.approx(0.15)]
    assert v.pump(0.25 + EPS) == [pytest.approx(0.25)]  # the grid restarted at the reset
    t.stop()
    assert t.reset() is False


def test_reset_of_a_timeout_defers_it() -> None:
    v = Virtual()
    fired = []
    t = v.SetTimeout(lambda: fired.append(v.clock.now), 100).start()
    for at in (0.05, 0.10, 0.15):  # kicked every 50 ms: never fires
        v.clock.now = at
        assert v.pump(at) == []
        assert t.reset() is True
    assert v.pump(0.25 + EPS) == [pytest.approx(0.25)]
    assert fired == [0.25 + EPS]
    assert not t.is_running
    assert t.reset() is False  # fired: nothing to postpone


def test_coalesce_after_a_stall() -> None:
    v = Virtual()
    t = v.SetInterval(lambda: None, 10).start()
    assert v.pump(0.010) == [pytest.approx(0.010)]
    # the process stalls 95 ms: ticks at 20..100 ms are due at once; one runs, for the
    # latest grid point, and the 8 older ones are counted as missed
    assert v.pump(0.105) == [pytest.approx(0.100)]
    assert t.stats().missed == 8
    assert v.engine.heap.next_deadline() == pytest.approx(0.110)
    assert v.pump(0.110) == [pytest.approx(0.110)]
    s = t.stats()
    assert (s.runs, s.missed) == (3, 8)


def test_skip_policy_drops_missed_ticks_and_waits_for_the_grid() -> None:
    v = Virtual()
    t = v.SetInterval(lambda: None, 10, misfire="skip").start()
    assert v.pump(0.010) == [pytest.approx(0.010)]
    assert v.pump(0.105) == []  # nothing runs late
    assert t.stats().missed == 9  # 20..100 ms
    assert v.pump(0.110) == [pytest.approx(0.110)]
    s = t.stats()
    assert (s.runs, s.missed) == (2, 9)


def test_late_but_within_one_interval_still_runs_under_skip() -> None:
    v = Virtual()
    t = v.SetInterval(lambda: None, 10, misfire="skip").start()
    assert v.pump(0.0199) == [pytest.approx(0.010)]
    assert t.stats().missed == 0


def test_max_instances_counts_overlapping_ticks_as_missed() -> None:
    v = Virtual()
    t = v.SetInterval(lambda: None, 10).start()
    assert v.pump(0.010, run=False) == [pytest.approx(0.010)]  # still running...
    assert v.pump(0.020, run=False) == []
    assert v.pump(0.030, run=False) == []
    assert t.stats().missed == 2
    assert t.stats().in_flight == 1
    held = v.ticks.pop()
    v.driver.run_tick(*held)  # ...and done
    assert v.pump(0.040) == [pytest.approx(0.040)]
    s = t.stats()
    assert (s.runs, s.missed, s.in_flight) == (2, 2, 0)


def test_max_instances_two_allows_one_overlap() -> None:
    v = Virtual()
    t = v.SetInterval(lambda: None, 10, max_instances=2).start()
    assert len(v.pump(0.010, run=False)) == 1
    assert len(v.pump(0.020, run=False)) == 1
    assert v.pump(0.030, run=False) == []
    assert t.stats().missed == 1
    assert t.stats().in_flight == 2


def test_error_isolation_counts_and_logs_and_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    v = Virtual()
    calls = []

    def boom() -> None:
        calls.append(1)
        raise ValueError("boom")

    t = v.SetInterval(boom, 10, name="boom-timer").start()
    with caplog.at_level(logging.ERROR, logger="libs.bridge.timers"):
        for k in range(1, 4):
            v.pump(k * 0.010)
    assert len(calls) == 3
    s = t.stats()
    assert (s.runs, s.errors, s.is_running) == (3, 3, True)
    assert sum("boom-timer" in r.getMessage() for r in caplog.records) == 3
    assert all(r.exc_info is not None for r in caplog.records)


def test_sync_callback_returning_a_coroutine_is_an_error_not_a_leak(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def work() -> None:  # pragma: no cover - never awaited, by design
        pass

    v = Virtual()
    t = v.SetInterval(lambda: work(), 10).start()
    with caplog.at_level(logging.ERROR, logger="libs.bridge.timers"):
        v.pump(0.010)
    assert t.stats().errors == 1
    assert "async def" in caplog.text


def test_stop_is_final_for_ticks_already_handed_over() -> None:
    v = Virtual()
    calls = []
    t = v.SetInterval(lambda: calls.append(1), 10).start()
    v.pump(0.010, run=False)
    assert t.stop() is True
    v.driver.run_tick(*v.ticks.pop())  # the worker picks it up after stop(): no start
    assert calls == []
    s = t.stats()
    assert (s.runs, s.in_flight, s.is_running) == (0, 0, False)
    assert t.stop() is False  # idempotent


def test_timeout_runs_once_and_cancel_prevents_it() -> None:
    v = Virtual()
    calls = []
    once = v.SetTimeout(calls.append, 50, "once").start()
    never = v.SetTimeout(calls.append, 50, "never").start()
    assert never.cancel() is True
    assert never.cancel() is False
    v.pump(0.050)
    v.pump(0.100)
    assert calls == ["once"]
    assert not once.is_running
    assert once.cancel() is False  # already fired
    assert v.engine.live_timers() == []


def test_args_and_kwargs_are_passed_and_options_are_not() -> None:
    v = Virtual()
    got = []
    v.SetInterval(lambda *a, **k: got.append((a, k)), 10, 1, 2, name="n", x=3).start()
    v.pump(0.010)
    assert got == [((1, 2), {"x": 3})]


def test_safe_ticks_of_one_wakeup_reach_the_loop_in_one_call() -> None:
    v = Virtual()
    ran: list[str] = []
    fast = [v.SetIntervalSafe(ran.append, 10, "fast") for _ in range(50)]
    slow = [v.SetIntervalSafe(ran.append, 20, "slow") for _ in range(30)]
    for t in fast + slow:
        t.start()
    plain = v.SetInterval(lambda: None, 10).start()
    v.pump(0.010)
    assert len(v.loop.posted) == 1  # 50 due ticks, one call_soon_threadsafe
    assert ran == []  # nothing runs before the loop does
    # The loop has not drained yet. The 30 "slow" ticks ride along with the pending call;
    # the "fast" timers' second ticks are missed: their first one is still queued.
    v.pump(0.020)
    assert len(v.loop.posted) == 1
    v.loop.run_posted()
    assert (ran.count("fast"), ran.count("slow")) == (50, 30)
    assert {t.stats().missed for t in fast} == {1}
    assert plain.stats().runs == 2  # plain ticks went to the pool, not to the loop
    v.pump(0.030)
    assert len(v.loop.posted) == 1  # a wake-up after the drain: one new call
    v.loop.run_posted()
    assert ran.count("fast") == 100


def test_a_timeout_waiting_on_the_loop_is_live_and_can_still_be_cancelled() -> None:
    v = Virtual()
    ran: list[str] = []
    t = v.SetTimeoutSafe(ran.append, 10, "late").start()
    v.pump(0.010)  # handed to the loop, which has not run yet
    assert v.engine.heap.next_deadline() is None
    assert v.engine.live_timers() == [t]
    assert t.cancel() is True  # not started yet: cancel still wins
    v.loop.run_posted()
    assert ran == []
    s = t.stats()
    assert (s.runs, s.in_flight, s.is_running) == (0, 0, False)
    assert v.engine.live_timers() == []


def test_safe_ticks_for_two_loops_make_one_call_each() -> None:
    v = Virtual()
    other = FakeLoop()
    for _ in range(5):
        v.SetIntervalSafe(lambda: None, 10).start()
    v.engine.resolve_loop = lambda: other  # type: ignore[assignment,return-value]
    for _ in range(5):
        v.SetIntervalSafe(lambda: None, 10).start()
    v.pump(0.010)
    assert (len(v.loop.posted), len(other.posted)) == (1, 1)


def test_safe_timer_on_a_closed_loop_is_stopped(caplog: pytest.LogCaptureFixture) -> None:
    class ClosedLoop(FakeLoop):
        def call_soon_threadsafe(self, fn: Any) -> None:
            raise RuntimeError("Event loop is closed")

    v = Virtual(loop=ClosedLoop())
    t = v.SetIntervalSafe(lambda: None, 10).start()
    with caplog.at_level(logging.WARNING, logger="libs.bridge.timers"):
        v.pump(0.010)
    assert not t.is_running
    assert t.stats().missed == 1
    assert "closed" in caplog.text


def test_loop_closed_after_a_drain_was_posted_still_stops_its_timers() -> None:
    # the drain is posted, the loop closes before running it: later ticks must not pile up
    # behind that drain forever (the timer would look alive and the loop would never be freed)
    class ClosingLoop(FakeLoop):
        closed = False

        def is_closed(self) -> bool:
            return self.closed

        def call_soon_threadsafe(self, fn: Any) -> None:
            if self.closed:
                raise RuntimeError("Event loop is closed")
            super().call_soon_threadsafe(fn)

    loop = ClosingLoop()
    v = Virtual(loop=loop)
    t = v.SetIntervalSafe(lambda: None, 10).start()
    v.pump(0.010)
    assert len(loop.posted) == 1  # a drain is on its way...
    loop.closed = True  # ...and never runs
    v.pump(0.020)
    assert not t.is_running
    assert t.stats().missed == 2


def test_stats_are_json_and_timer_stats_lists_live_timers() -> None:
    v = Virtual()
    t = v.SetInterval(lambda: None, 10, name="stat").start()
    v.pump(0.0102)
    s = t.stats()
    assert isinstance(s, TimerStats)
    d = json.loads(json.dumps(s.as_dict()))
    assert d["name"] == "stat" and d["kind"] == "interval" and d["runs"] == 1
    assert d["interval_ms"] == 10.0
    assert d["lateness_p50_ms"] == pytest.approx(0.2, rel=0.13)
    assert d["last_run"] == pytest.approx(1_700_000_000.0102)
    with pytest.raises(AttributeError):
        s.runs = 5  # type: ignore[misc]  # frozen
    assert [x.name for x in (v.engine.snapshot(x) for x in v.engine.live_timers())] == ["stat"]
    t.stop()
    assert v.engine.live_timers() == []


def test_lateness_reservoir_is_bounded_and_accurate() -> None:
    rng = random.Random(7)
    counts = None
    recent: list[float] = []
    for _ in range(100_000):
        x = rng.expovariate(1 / 300e-6)
        counts = lateness_add(counts, x)
        recent.append(x)
    assert counts is not None
    n = lateness_samples(counts)
    assert WINDOW < n <= 2 * WINDOW  # the last 255..510 samples, never more
    assert len(counts) < 200  # a few hundred bytes, whatever the number of samples
    window = sorted(recent[-n:])
    p50, p99 = lateness_quantiles(counts, (0.5, 0.99))
    assert p50 == pytest.approx(window[math.ceil(0.50 * n) - 1], rel=0.125)  # nearest rank
    assert p99 == pytest.approx(window[math.ceil(0.99 * n) - 1], rel=0.125)
    assert lateness_quantiles(None, (0.5,)) == [None]


def test_lateness_reservoir_is_rarely_reallocated() -> None:
    """A timer's first runs must not make a new array per sample as lateness wanders over
    a few octaves: with 100,000 one-second timers those allocations were the largest cost
    of recording a run (an exact-fit array needed a new one for 46 % of samples)."""
    rng = random.Random(3)
    new_arrays = samples = 0
    for _ in range(2000):
        counts = None
        for _ in range(10):
            before = counts
            counts = lateness_add(counts, rng.lognormvariate(math.log(300e-6), 1.0))
            new_arrays += counts is not before
            samples += 1
    assert new_arrays / samples < 0.25  # 0.1 is the first sample of each timer


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        SetInterval(lambda: None, 0)
    with pytest.raises(ValueError):
        SetInterval(lambda: None, float("nan"))
    with pytest.raises(ValueError):
        SetTimeout(lambda: None, -1)
    with pytest.raises(ValueError):
        SetInterval(lambda: None, 10, misfire="burst")
    with pytest.raises(ValueError):
        SetInterval(lambda: None, 10, max_instances=0)
    with pytest.raises(TypeError):
        SetInterval("not callable", 10)  # type: ignore[arg-type]
    SetTimeout(lambda: None, 0)  # a zero delay is fine


def test_double_start_raises() -> None:
    v = Virtual()
    t = v.SetInterval(lambda: None, 10, name="twice")
    assert t.start() is t
    with pytest.raises(RuntimeError, match="'twice' is already running"):
        t.start()
    t.stop()
    with pytest.raises(RuntimeError, match="has finished"):
        t.start()


# -- real threads and loops -------------------------------------------------------------


def test_stop_from_inside_the_callback() -> None:
    count = 0
    stopped = threading.Event()

    def tick() -> None:
        nonlocal count
        count += 1
        if count == 5:
            assert t.stop() is True
            stopped.set()

    t = SetInterval(tick, 1).start()
    wait(stopped)
    # let the timer thread pass several more of its deadlines, then look again
    later = threading.Event()
    SetTimeout(later.set, 10).start()
    wait(later)
    assert count == 5
    assert not t.is_running
    assert t.stop() is False


def test_plain_callback_runs_off_the_loop_and_errors_keep_it_going() -> None:
    calls = 0
    fourth = threading.Event()
    idents: set[int] = set()

    def flaky() -> None:
        nonlocal calls
        calls += 1
        idents.add(threading.get_ident())
        if calls == 4:
            fourth.set()
        raise RuntimeError("flaky")

    t = SetInterval(flaky, 1, name="flaky").start()
    wait(fourth)
    t.stop()
    assert t.stats().errors >= 3  # max_instances=1: runs 1-3 finished before run 4 began
    assert threading.get_ident() not in idents
    assert ENGINE.driver.thread is not None and ENGINE.driver.thread.ident not in idents


def test_a_slow_callback_does_not_hold_up_other_timers() -> None:
    release = threading.Event()
    entered = threading.Event()
    fast_done = threading.Event()
    fast_runs = 0

    def slow() -> None:
        entered.set()
        release.wait(WAIT)

    def fast() -> None:
        nonlocal fast_runs
        fast_runs += 1
        if fast_runs == 5:
            fast_done.set()

    SetTimeout(slow, 0).start()
    wait(entered)
    f = SetInterval(fast, 1).start()
    try:
        wait(fast_done)  # while `slow` still blocks its worker thread
    finally:
        release.set()
        f.stop()


async def test_safe_interval_runs_on_the_loop_thread() -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    done = asyncio.Event()

    def tick() -> None:
        seen.append(threading.get_ident())
        if len(seen) == 3:
            t.stop()
            done.set()

    t = SetIntervalSafe(tick, 1).start()
    await asyncio.wait_for(done.wait(), WAIT)
    assert seen == [loop_thread] * 3


async def test_coroutine_callbacks_are_scheduled_on_the_loop() -> None:
    loop_thread = threading.get_ident()
    seen: list[tuple[str, int]] = []
    done = asyncio.Event()
    timeout_done = asyncio.Event()

    async def tick() -> None:
        await asyncio.sleep(0)
        seen.append(("interval", threading.get_ident()))
        if sum(tag == "interval" for tag, _ in seen) == 2:
            t.stop()
            done.set()

    async def once(tag: str) -> None:
        seen.append((tag, threading.get_ident()))
        timeout_done.set()
        raise ValueError("counted, not fatal")

    t = SetInterval(tick, 1).start()  # not Safe: coroutines still go to the loop
    o = SetTimeoutSafe(once, 1, "timeout").start()
    await asyncio.wait_for(done.wait(), WAIT)
    await asyncio.wait_for(timeout_done.wait(), WAIT)
    assert {ident for _, ident in seen} == {loop_thread}
    # statistics are recorded by each task's done-callback: let the loop run those
    await until(lambda: t.stats().runs == 2 and o.stats().runs == 1)
    assert o.stats().errors == 1


@pytest.mark.parametrize("exc", [SystemExit, KeyboardInterrupt])
@pytest.mark.parametrize("kind", ["plain", "async"])
@pytest.mark.parametrize("cls", [SetInterval, SetIntervalSafe])
async def test_system_exit_in_a_callback_is_its_error_not_the_end_of_the_worker(
        cls: type[SetInterval], kind: str, exc: type[BaseException], caplog: pytest.LogCaptureFixture) -> None:
    """On the loop's thread (``Safe``, ``async def``) a SystemExit would end ``run_forever()``:
    the worker gone without its shutdown, with nothing logged. It is the run's error instead;
    the timer, the timer thread and the loop go on."""
    runs = 0
    third = threading.Event()

    def count() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            t.stop()
            third.set()
        raise exc(3)

    async def acount() -> None:
        await asyncio.sleep(0)
        count()

    name = f"exits-{cls.__name__}-{kind}"
    with caplog.at_level(logging.ERROR, logger="libs.bridge.timers"):
        t = cls(count if kind == "plain" else acount, 1, name=name).start()
        assert await asyncio.to_thread(third.wait, WAIT)
        await until(lambda: t.stats().runs == 3)
    assert t.stats().errors == 3
    logged = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert len(logged) == 3 and all(exc.__name__ in m for m in logged), logged
    assert ENGINE.driver.thread is not None and ENGINE.driver.thread.is_alive()
    fired = asyncio.Event()
    SetTimeoutSafe(fired.set, 1).start()  # the timer thread and the loop still serve
    await asyncio.wait_for(fired.wait(), WAIT)


def test_decorators_and_clear() -> None:
    third = threading.Event()
    fired = threading.Event()
    runs = 0

    @setInterval(1)
    def heartbeat() -> str:
        nonlocal runs
        runs += 1
        if runs == 3:
            third.set()
        return "direct call still works"

    @setTimeout(1, key="once")
    def later() -> None:
        fired.set()

    @setTimeout(3_600_000)
    def never() -> None:  # pragma: no cover - cleared before it fires
        pass

    assert isinstance(heartbeat.timer, SetInterval)  # type: ignore[attr-defined]
    assert heartbeat() == "direct call still works"  # the function is returned unchanged
    wait(third)
    wait(fired)
    assert clearInterval("heartbeat") is True  # key defaults to __name__
    assert clearInterval("heartbeat") is False
    assert clearInterval("no-such-key") is False
    assert not heartbeat.timer.is_running  # type: ignore[attr-defined]
    assert clearTimeout("once") is False  # already fired
    assert clearTimeout("never") is True
    assert clearInterval("never") is False  # intervals and timeouts have separate keys


def test_decorating_again_with_a_key_in_use_replaces_the_timer() -> None:
    @setInterval(3_600_000, key="job")
    def first() -> None:  # pragma: no cover
        pass

    @setInterval(3_600_000, key="job")
    def second() -> None:  # pragma: no cover
        pass

    assert not first.timer.is_running  # type: ignore[attr-defined]
    assert second.timer.is_running  # type: ignore[attr-defined]
    assert clearInterval("job") is True


async def test_safe_decorator_runs_on_the_loop() -> None:
    loop_thread = threading.get_ident()
    done = asyncio.Event()
    seen = []

    @setTimeout(1, safe=True)
    def on_loop() -> None:
        seen.append(threading.get_ident())
        done.set()

    await asyncio.wait_for(done.wait(), WAIT)
    assert seen == [loop_thread]
    assert isinstance(on_loop.timer, SetTimeoutSafe)  # type: ignore[attr-defined]


def test_100k_timers_start_and_stop() -> None:
    n = 100_000
    engine = ENGINE

    def hundred_k() -> None:  # pragma: no cover - an hour away; its name tells its timers apart
        pass

    def ours() -> int:
        return sum(s.name.endswith("hundred_k") for s in timer_stats())

    others = len(timer_stats())  # timers other tests left running, if any
    ts = [SetInterval(hundred_k, 3_600_000) for _ in range(n)]
    for t in ts:
        t.start()
    assert ours() == n
    for t in ts:
        t.stop()
    assert not any(t.is_running for t in ts)
    assert ours() == 0, "stopped timers are still listed as live"
    assert len(timer_stats()) == others
    assert len(engine.heap) < n // 2  # dead heap items were compacted away
    del ts
    gc.collect()


async def test_shutdown_hook_stops_timers_and_waits_for_running_callbacks() -> None:
    entered = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    def blocking() -> None:
        entered.set()
        release.wait(WAIT)
        finished.set()

    SetTimeout(blocking, 0).start()
    others = [SetInterval(lambda: None, 3_600_000).start() for _ in range(3)]
    safe = SetIntervalSafe(lambda: None, 3_600_000).start()
    await asyncio.to_thread(entered.wait, WAIT)
    assert entered.is_set()

    engine = ENGINE
    assert engine.driver.shutdown_hook in _runtime._RT.hooks  # registered by the first start()
    hook = asyncio.create_task(engine.driver.shutdown_hook(WAIT))  # what _runtime.shutdown() runs
    await asyncio.sleep(0)  # one step of the hook: it stops the timers, then waits for the callback
    assert not any(t.is_running for t in [*others, safe]) and not hook.done()
    release.set()
    await asyncio.wait_for(hook, WAIT + 1)
    assert finished.is_set()  # the hook returned only after the running callback ended
    assert not any(t.is_running for t in [*others, safe])
    assert timer_stats() == []


def test_timer_thread_never_keeps_a_finished_script_alive() -> None:
    script = textwrap.dedent(
        """
        import threading
        from libs.bridge import SetInterval, SetTimeout
        SetInterval(lambda: None, 5).start()
        SetTimeout(print, 3_600_000, "never").start()
        ran = threading.Event()
        SetTimeout(ran.set, 1).start()
        assert ran.wait(10)
        print("done")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    assert ENGINE.driver.thread is None or ENGINE.driver.thread.daemon


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
def test_timers_do_not_survive_fork_but_work_in_the_child() -> None:
    script = textwrap.dedent(
        """
        import os, threading, warnings
        from libs.bridge import SetInterval, SetTimeout, timer_stats
        ticks = threading.Semaphore(0)
        inherited = SetInterval(ticks.release, 5, name="inherited").start()
        assert ticks.acquire(timeout=10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads, 3.12+
            pid = os.fork()
        if pid == 0:  # the child: the inherited timer is stopped, new ones work
            ok = not inherited.is_running and timer_stats() == []
            ran = threading.Event()
            SetTimeout(ran.set, 1).start()
            os._exit(0 if ok and ran.wait(10) else 1)
        _, status = os.waitpid(pid, 0)
        for _ in range(3):  # the parent's timer goes on ticking
            assert ticks.acquire(timeout=10)
        print("child", os.waitstatus_to_exitcode(status), "parent", inherited.is_running)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "child 0 parent True"
