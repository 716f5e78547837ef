"""Timer statistics under load: counts stay exact, lateness is sampled (issue #15, point 5).

On a virtual clock with a manual driver (tests/support/timers.py): ``Safe`` timers started
together fall due in the same wake-up and reach the loop in one batch, so the batch size,
and with it the sampling (``_stats.stride_for``), is set by how many timers a test starts.
Lateness on the virtual clock is exactly how far past the grid point a test pumps.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from libs.timers import _stats
from libs.timers._stats import (
    BUSY_BATCH,
    SAMPLE_EVERY,
    WINDOW,
    lateness_add,
    lateness_quantiles,
    lateness_samples,
    stride_for,
)
from tests.support.timers import FakeLoop, Virtual

TICK = 0.010  # s: the interval of every timer here
US = 1e-6


def start_safe(v: Virtual, n: int, callback: Any = None) -> list[Any]:
    return [v.SetIntervalSafe(callback or (lambda: None), TICK * 1000.0).start() for _ in range(n)]


def run_rounds(v: Virtual, rounds: int, late: Any = lambda k: 0.0) -> None:
    """Pump grid points 1..rounds, round k ``late(k)`` seconds after it, and run the drains."""
    for k in range(1, rounds + 1):
        v.pump(k * TICK + late(k))
        v.loop.run_posted()


@pytest.fixture
def add_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts ``lateness_add`` calls (record_runs looks it up at each call)."""
    calls: list[int] = []
    real = _stats.lateness_add

    def counting(counts: Any, seconds: float, weight: int = 1) -> Any:
        calls.append(weight)
        return real(counts, seconds, weight)

    monkeypatch.setattr(_stats, "lateness_add", counting)
    return calls


def test_stride_is_one_for_small_batches_and_sampled_above() -> None:
    assert [stride_for(n) for n in (1, BUSY_BATCH)] == [1, 1]
    assert stride_for(BUSY_BATCH + 1) == SAMPLE_EVERY > 1


def test_a_lone_timer_samples_every_run(add_calls: list[int]) -> None:
    v = Virtual()
    (t,) = start_safe(v, 1)
    run_rounds(v, 20)
    s = t.stats()
    assert s.runs == 20
    assert s.lateness_samples == 20
    assert add_calls == [1] * 20


def test_busy_batches_sample_every_8th_run_and_keep_counts_exact(add_calls: list[int]) -> None:
    v = Virtual()
    n = BUSY_BATCH * 2
    calls = [0]

    def callback() -> None:
        calls[0] += 1
        if calls[0] % 5 == 0:
            raise ValueError("every fifth call fails")

    timers = start_safe(v, n, callback)
    rounds = 4 * SAMPLE_EVERY + 3
    run_rounds(v, rounds)
    assert calls[0] == n * rounds
    stats = [t.stats() for t in timers]
    assert all(s.runs == rounds for s in stats)  # exact, sampled or not
    assert sum(s.errors for s in stats) == n * rounds // 5
    assert all(s.in_flight == 0 and s.missed == 0 for s in stats)
    # each timer's 8th, 16th, 24th, 32nd run, each standing for 8 runs
    assert add_calls == [SAMPLE_EVERY] * (n * (rounds // SAMPLE_EVERY))
    assert all(s.lateness_samples == rounds // SAMPLE_EVERY * SAMPLE_EVERY for s in stats)


def test_missed_ticks_are_counted_exactly_while_sampling() -> None:
    v = Virtual()
    timers = start_safe(v, BUSY_BATCH * 2)
    run_rounds(v, 10)
    v.pump(15 * TICK)  # a stall: grid points 11..14 coalesced into one run for 15
    v.loop.run_posted()
    stats = [t.stats() for t in timers]
    assert all(s.runs == 11 and s.missed == 4 for s in stats)


def test_the_sampled_runs_are_the_timers_own_every_8th() -> None:
    # Every round is late by its own amount, all but the 8th and 16th by far more: the
    # percentiles can only be as small as this if no other round was sampled.
    v = Virtual()
    timers = start_safe(v, BUSY_BATCH + 1)
    lates = {SAMPLE_EVERY: 3 * US, 2 * SAMPLE_EVERY: 5 * US}
    run_rounds(v, 2 * SAMPLE_EVERY + 1, late=lambda k: lates.get(k, 2000 * US))
    for t in timers:
        s = t.stats()
        assert s.runs == 2 * SAMPLE_EVERY + 1
        assert s.lateness_samples == 2 * SAMPLE_EVERY
        assert s.lateness_p50_ms == pytest.approx(0.0035)  # the middle of the 3 us bucket
        assert s.lateness_p99_ms == pytest.approx(0.0055)


def test_one_timer_in_busy_and_quiet_batches_is_sampled_by_its_own_run_count() -> None:
    # A lone timer (batches of 1: every run sampled), then the same timer among many
    # (sampled): the stride follows the batch, the run count stays the timer's own.
    v = Virtual()
    (t,) = start_safe(v, 1)
    run_rounds(v, 5)
    assert t.stats().lateness_samples == 5
    v.clock.now = 5 * TICK
    start_safe(v, BUSY_BATCH * 2)  # their grid: 5 * TICK + j * TICK, t's k * TICK
    for k in range(6, 6 + 2 * SAMPLE_EVERY):
        v.pump(k * TICK + US)  # (past both grids, whatever their float rounding)
        v.loop.run_posted()
    s = t.stats()
    assert s.runs == 5 + 2 * SAMPLE_EVERY
    # busy from run 6 on: runs 8 and 16 sampled, 8 each, on top of the first 5
    assert s.lateness_samples == 5 + 2 * SAMPLE_EVERY


def test_weighted_samples_keep_the_window_in_runs_and_the_quantiles_accurate() -> None:
    rng = random.Random(11)
    counts = None
    recent: list[float] = []
    for _ in range(20_000):
        x = rng.expovariate(1 / 300e-6)
        counts = lateness_add(counts, x, SAMPLE_EVERY)
        recent.append(x)
    assert counts is not None
    runs = lateness_samples(counts)
    assert WINDOW - SAMPLE_EVERY < runs <= 2 * WINDOW  # runs, not samples
    assert runs % SAMPLE_EVERY == 0
    n = runs // SAMPLE_EVERY
    window = sorted(recent[-n:])
    p50, p99 = lateness_quantiles(counts, (0.5, 0.99))
    assert p50 == pytest.approx(window[math.ceil(0.50 * n) - 1], rel=0.125)
    assert p99 == pytest.approx(window[math.ceil(0.99 * n) - 1], rel=0.125)


def test_weights_mixed_with_single_runs_never_overflow_a_window() -> None:
    rng = random.Random(5)
    counts = None
    for i in range(5_000):
        counts = lateness_add(counts, rng.expovariate(1 / 100e-6), SAMPLE_EVERY if i % 3 else 1)
        assert counts[0] <= WINDOW and counts[1] <= WINDOW
        assert max(counts[3:]) <= WINDOW


# -- the hand-over's routing (one pass per wake-up, fast when every tick is for one loop) --


def test_one_wake_up_routes_plain_ticks_and_each_loops_ticks_where_they_belong() -> None:
    v = Virtual()
    other = FakeLoop()
    ran: list[str] = []
    v.SetIntervalSafe(lambda: ran.append("a"), 10).start()
    v.engine.resolve_loop = lambda: other  # type: ignore[assignment,return-value]
    v.SetIntervalSafe(lambda: ran.append("b"), 10).start()
    plain = v.SetInterval(lambda: ran.append("p"), 10).start()
    v.pump(TICK, run=False)
    assert [t for t, _ in v.ticks] == [plain]
    assert (len(v.loop.posted), len(other.posted)) == (1, 1)
    v.loop.run_posted()
    other.run_posted()
    assert ran == ["a", "b"]


def test_ticks_due_before_the_posted_drain_ran_ride_along_with_it() -> None:
    v = Virtual()
    ran: list[str] = []
    for i in range(BUSY_BATCH):
        v.SetIntervalSafe(lambda i=i: ran.append(f"fast{i}"), TICK * 1000).start()
        v.SetIntervalSafe(lambda i=i: ran.append(f"slow{i}"), 2 * TICK * 1000).start()
    v.pump(TICK)
    v.pump(2 * TICK)  # the first drain has not run: the fast ones are still in flight
    assert len(v.loop.posted) == 1
    v.loop.run_posted()
    assert sorted(ran) == sorted([f"fast{i}" for i in range(BUSY_BATCH)] + [f"slow{i}" for i in range(BUSY_BATCH)])
