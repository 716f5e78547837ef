"""RepeatingTaskRunner (seed 001) on a virtual clock, and on the real timer thread for the
parts that need a loop. The seed's own usage example runs as written in
tests/integration/test_examples.py (examples/repeating_task_runner.py)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from libs.bridge import RepeatingTaskRunner as FromBridge
from libs.timers import RepeatingTaskRunner
from libs.timers._timers import ENGINE
from tests.support.timers import Virtual

WAIT = 10.0  # s: upper bound for anything a real-timer test waits for


@pytest.fixture(autouse=True)
def _stop_real_timers() -> Any:
    yield
    for t in ENGINE.live_timers():
        t.stop()


def virtual_runner(v: Virtual) -> type[RepeatingTaskRunner]:
    """RepeatingTaskRunner bound to ``v``'s engine (its documented injection point)."""
    return type("RepeatingTaskRunner", (RepeatingTaskRunner,),
                {"__slots__": (), "_interval_class": v.SetInterval, "_safe_class": v.SetIntervalSafe})


def test_the_seeds_usage_example_prints_twice_in_three_seconds() -> None:
    """The seed: interval 1 s, reset() at 0.5 s, stop() at 3 s -> runs at 1.5 s and 2.5 s."""
    v = Virtual()
    runs: list[float] = []
    runner = virtual_runner(v)(interval=1.0, task=lambda: runs.append(v.clock.now))
    runner.start()
    v.clock.now = 0.5
    assert runner.reset() is True
    for at in (1.0, 1.49, 1.5, 2.0, 2.5, 2.99):
        v.pump(at)
    v.clock.now = 3.0
    assert runner.stop() is True
    v.pump(3.5)
    v.pump(10.0)
    assert runs == [1.5, 2.5]
    assert runner.is_running is False and runner.stats().runs == 2


def test_without_reset_it_runs_every_interval_on_a_fixed_grid() -> None:
    v = Virtual()
    runner = virtual_runner(v)(interval=0.25, task=lambda: None).start()
    fired: list[float] = []
    for at in (0.25, 0.61, 0.75, 1.0):  # one late wake-up (0.61 for 0.5) does not shift the grid
        fired += v.pump(at)
    assert fired == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert runner.stats().runs == 4 and runner.interval == 0.25


def test_task_args_go_to_the_task_positionally() -> None:
    v = Virtual()
    got: list[tuple[Any, ...]] = []
    runner_class = virtual_runner(v)
    runner_class(interval=1, task=lambda *a: got.append(a), task_args=("a", 2)).start()
    runner_class(interval=1, task=lambda *a: got.append(a), task_args=["b"]).start()
    runner_class(interval=1, task=lambda *a: got.append(a)).start()
    v.pump(1.0)
    assert sorted(got) == [(), ("a", 2), ("b",)]


def test_the_task_may_stop_its_own_runner() -> None:
    v = Virtual()
    runs = []

    def task() -> None:
        runs.append(v.clock.now)
        if len(runs) == 3:
            runner.stop()

    runner = virtual_runner(v)(interval=1.0, task=task).start()
    for at in range(1, 8):
        v.pump(float(at))
    assert runs == [1.0, 2.0, 3.0]
    assert runner.is_running is False
    assert v.engine.live_timers() == []


def test_a_run_still_going_makes_the_next_one_skipped_not_queued() -> None:
    v = Virtual()
    runner = virtual_runner(v)(interval=1.0, task=lambda: None).start()
    assert v.pump(1.0, run=False) == [1.0]  # handed to the pool; the run has not finished
    ((t, deadline),) = v.ticks
    assert v.pump(2.0) == []  # the first run has not finished: this tick is dropped
    v.driver.run_tick(t, deadline)
    del v.ticks[:]
    assert v.pump(3.0) == [3.0]
    stats = runner.stats()
    assert (stats.runs, stats.missed) == (2, 1)


def test_a_failing_task_is_counted_and_the_runner_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    v = Virtual()
    runner = virtual_runner(v)(interval=1.0, task=lambda: 1 / 0, name="divider").start()
    v.pump(1.0)
    v.pump(2.0)
    stats = runner.stats()
    assert (stats.runs, stats.errors, runner.is_running) == (2, 2, True)
    assert "divider" in caplog.text and "ZeroDivisionError" in caplog.text


def test_safe_runs_a_plain_task_on_the_event_loop() -> None:
    v = Virtual()
    runs = []
    virtual_runner(v)(interval=1.0, task=runs.append, task_args=("x",), safe=True).start()
    v.pump(1.0)
    assert runs == [] and len(v.loop.posted) == 1  # handed to the loop, not to the pool
    v.loop.run_posted()
    assert runs == ["x"]


def test_it_starts_once_and_reset_or_stop_before_start_do_nothing() -> None:
    v = Virtual()
    runner = virtual_runner(v)(interval=1.0, task=lambda: None)
    assert (runner.is_running, runner.reset(), runner.stop()) == (False, False, False)
    runner.start()
    with pytest.raises(RuntimeError):
        runner.start()
    runner.stop()
    with pytest.raises(RuntimeError):  # the seed's thread cannot be started twice either
        runner.start()
    assert "every 1 s, not running" in repr(runner)


@pytest.mark.parametrize("interval", [0, -1, math.nan, math.inf, True, "5s", None])
def test_interval_must_be_a_positive_number_of_seconds(interval: Any) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        RepeatingTaskRunner(interval=interval, task=lambda: None)


@pytest.mark.parametrize("task_args", ["ab", 5, {"a": 1}])
def test_task_args_must_be_a_tuple_or_a_list(task_args: Any) -> None:
    with pytest.raises(TypeError, match="task_args"):
        RepeatingTaskRunner(interval=1, task=lambda *a: None, task_args=task_args)


def test_arguments_are_keyword_only_as_in_the_seed() -> None:
    with pytest.raises(TypeError):
        RepeatingTaskRunner(1.0, lambda: None)  # type: ignore[misc]
    with pytest.raises(TypeError, match="callable"):
        RepeatingTaskRunner(interval=1.0, task="print")  # type: ignore[arg-type]


def test_the_qe_import_path_has_it_too() -> None:
    assert FromBridge is RepeatingTaskRunner


async def test_an_async_task_runs_on_the_loop_and_may_stop_the_runner() -> None:
    """Real timer thread, real loop: waits on an event, asserts no timings."""
    loop = asyncio.get_running_loop()
    runs: list[tuple[str, bool]] = []
    done = asyncio.Event()

    async def task(tag: str) -> None:
        runs.append((tag, asyncio.get_running_loop() is loop))
        if len(runs) == 3:
            runner.stop()
            done.set()

    runner = RepeatingTaskRunner(interval=0.01, task=task, task_args=("t",)).start()
    await asyncio.wait_for(done.wait(), WAIT)
    assert runs == [("t", True)] * 3
    assert runner.is_running is False
