"""``VirtualClock`` (libs.timers.virtual): the process's timers on virtual time, for tests of
users' workers (``qe_clock``). The engine's own scheduling is tested in test_timers.py; here:
installing and uninstalling, and ``advance()`` running every kind of callback where it runs
in production, each at its own virtual time, to its end."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from libs.timers import (
    SetInterval,
    SetIntervalSafe,
    SetTimeout,
    SetTimeoutSafe,
    clearInterval,
    setInterval,
    timer_stats,
)
from libs.timers._timers import ENGINE, current_engine
from libs.timers.virtual import WALL_START, VirtualClock, live_timers


@pytest.fixture
def clock() -> Any:
    with VirtualClock() as clock:
        yield clock


async def test_advance_runs_each_tick_at_its_own_time_in_order(clock: VirtualClock) -> None:
    seen: list[tuple[str, float]] = []
    SetInterval(lambda: seen.append(("1s", clock.now)), 1000).start()
    SetTimeout(lambda: seen.append(("2.5s", clock.now)), 2500).start()
    assert await clock.advance(3.0) == 4
    assert seen == [("1s", 1.0), ("1s", 2.0), ("2.5s", 2.5), ("1s", 3.0)]
    assert clock.now == 3.0
    assert await clock.advance(0.5) == 0 and clock.now == 3.5
    assert clock.next_deadline() == 4.0


async def test_plain_callbacks_run_off_the_loop_safe_and_async_ones_on_it(clock: VirtualClock) -> None:
    loop_thread = threading.get_ident()
    where: dict[str, list[bool]] = {"plain": [], "safe": [], "async": []}

    async def on_loop() -> None:
        await asyncio.sleep(0)
        where["async"].append(threading.get_ident() == loop_thread)

    SetInterval(lambda: where["plain"].append(threading.get_ident() == loop_thread), 1000).start()
    SetIntervalSafe(lambda: where["safe"].append(threading.get_ident() == loop_thread), 1000).start()
    SetTimeoutSafe(on_loop, 1000).start()
    assert await clock.advance(2.0) == 5
    assert where == {"plain": [False, False], "safe": [True, True], "async": [True]}  # each awaited to its end


async def test_statistics_read_virtual_time(clock: VirtualClock) -> None:
    timer = SetInterval(lambda: None, 1000, name="beat").start()
    await clock.advance(10.0)
    stats = timer.stats()
    assert stats.runs == 10 and stats.missed == 0
    assert [s.name for s in timer_stats()] == ["beat"]  # the installed clock's timers
    assert stats.last_run == pytest.approx(WALL_START + 10.0)  # wall time: WALL_START + virtual seconds


async def test_decorators_and_clear_use_the_installed_clock(clock: VirtualClock) -> None:
    calls = []

    @setInterval(1000, key="tick")
    def tick() -> None:
        calls.append(clock.now)

    await clock.advance(2.0)
    assert clearInterval("tick") is True
    await clock.advance(2.0)
    assert calls == [1.0, 2.0]


def test_timers_made_before_keep_their_engine_and_uninstall_stops_the_clocks() -> None:
    real = SetInterval(lambda: None, 3_600_000).start()
    try:
        with VirtualClock() as clock:
            assert current_engine() is clock.engine
            virtual = SetInterval(lambda: None, 1000).start()
            assert live_timers() == [virtual]
            assert real.stop() is True  # on the real engine, where it was started
        assert current_engine() is ENGINE
        assert not virtual.is_running  # uninstall stopped it
    finally:
        real.stop()


async def test_advance_is_bounded_by_real_time(clock: VirtualClock) -> None:
    release = asyncio.Event()

    async def waits_for_real() -> None:
        await release.wait()

    SetTimeoutSafe(waits_for_real, 1000).start()
    with pytest.raises(TimeoutError):
        await clock.advance(1.0, timeout=0.2)
    release.set()


async def test_advance_only_moves_forward(clock: VirtualClock) -> None:
    with pytest.raises(ValueError):
        await clock.advance(-1.0)
    with pytest.raises(RuntimeError):
        clock.install()  # installed already
