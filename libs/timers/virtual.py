"""Timers on virtual time: ``VirtualClock`` moves time by hand, for tests.

Why: a worker's timers (``SetInterval(cb, 60_000)``) tick on the real clock, and a test that
waits for them sleeps. The engine has a documented injection point, ``Engine(clock=...,
driver=...)``; here it gets a clock that only moves when the test says so and a driver
(``ManualDriver``) that starts no thread. ``VirtualClock.install()`` makes that engine the one
every timer created from then on joins (``use_engine``), including the timers a worker module
starts at import and the Nexus decorators; ``await clock.advance(5.0)`` then runs every tick
that falls due in those five virtual seconds, in deadline order, each at its own time, and
returns once they all ran. Nothing sleeps.

What runs where, under ``advance()``: plain callbacks (``SetInterval``, ``SetTimeout``) on a
thread of the shared pool (``_runtime.executor()``), one at a time, as the timer thread's pool
would run them off the loop; ``Safe`` and ``async def`` callbacks on the loop they were started
for (the running loop, for timers started inside it), awaited until they finish. Only the
timers are virtual: ``asyncio.sleep``, ``loop.call_later`` and timeouts keep real time, and a
callback awaiting one waits for real (``advance(timeout=...)`` bounds the wait).

``ManualDriver`` and ``VClock`` are the parts, for tests of the engine itself;
``live_timers()`` lets a test kit stop the timers a test started, on whichever engine.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from .. import _runtime
from ._callbacks import call_plain
from ._engine import Engine, Loop
from ._timers import Timer, current_engine, use_engine

__all__ = ["ManualDriver", "VClock", "VirtualClock", "live_timers"]

WALL_START = 1_700_000_000.0
"""The wall-clock time (``time.time()``) a virtual clock reads at virtual time 0."""


def _running_loop() -> Loop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def live_timers() -> list[Timer]:
    """The live timers (started, not stopped, not fired) of the engine timers created now
    join: the process's, or an installed ``VirtualClock``'s. Any thread."""
    return current_engine().live_timers()


class VClock:
    """A monotonic clock on virtual time: seconds, moved by its owner (``now``)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ManualDriver:
    """An engine driver with no thread and no pool: nothing runs until ``pump()``, and plain
    ticks land in ``ticks`` until their owner runs them (``run_tick``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ticks: list[tuple[Any, float]] = []  # plain ticks handed to "the pool"

    def armed_locked(self, deadline: float) -> None:
        pass  # nothing sleeps: the owner pumps

    def run_plain_locked(self, ticks: list[Any]) -> None:
        self.ticks.extend(zip(ticks[::2], ticks[1::2]))

    def queued_locked(self) -> Iterable[Any]:
        return [x for tick in self.ticks for x in tick]

    def after_fork_in_child(self) -> None:
        self.ticks = []

    def pump(self, now: float | None = None) -> None:
        """One wake-up of the timer thread at ``now`` (default: the engine's clock)."""
        engine = self.engine
        with engine.lock:
            posts = engine.wake_locked(engine.clock() if now is None else now)
        if posts:
            engine.post_drains(posts)

    def run_tick(self, t: Any, deadline: float) -> None:
        """Run one plain tick on this thread, as a pool worker does."""
        engine = self.engine
        with engine.lock:
            if not engine.begin_locked(t):
                return
            engine.busy += 1
        error = True
        start = engine.clock()
        try:
            error = call_plain(t)
        finally:
            end = engine.clock()
            with engine.lock:
                engine.busy -= 1
                engine.finish_locked(t, deadline, start, end, error)


class VirtualClock:
    """Timers on virtual time (see the module doc). ``install()`` (or ``with``) makes timers
    created from then on run on it, until ``uninstall()``, which stops those still running.

    ``now`` is virtual seconds (``start`` at first); timer statistics read the wall clock as
    ``WALL_START + now``. ``resolve_loop`` finds the loop for ``Safe`` and ``async def``
    callbacks at ``start()`` (default: the worker's loop, ``_runtime.main_loop()``).

    Thread affinity: ``advance`` on the loop the timers' loop-bound callbacks belong to;
    ``install``/``uninstall`` from any thread, not while ``advance`` runs.
    """

    def __init__(self, start: float = 0.0, *, resolve_loop: Callable[[], Loop] | None = None) -> None:
        self.clock = VClock(start)
        self.engine = Engine(self.clock, wall=lambda: WALL_START + self.clock.now,
                             resolve_loop=resolve_loop or _runtime.main_loop, driver=ManualDriver)
        self.driver: ManualDriver = self.engine.driver  # type: ignore[assignment]
        self._replaced: Engine | None = None

    @property
    def now(self) -> float:
        return self.clock.now

    # -- installing ---------------------------------------------------------------------

    def install(self) -> VirtualClock:
        """Timers created from now on (by any thread) run on this clock. Returns self."""
        if self._replaced is not None:
            raise RuntimeError("this VirtualClock is installed already")
        self._replaced = use_engine(self.engine)
        return self

    def uninstall(self) -> None:
        """Stop every timer of this clock and make timers created from now on join the
        engine this clock replaced. A callback still running (``async def`` awaiting real
        time) is cancelled."""
        for t in self.timers():
            t.stop()
        for task in list(self.engine.tasks):
            loop = task.get_loop()
            if loop.is_closed():  # its tasks have ended, or never will
                continue
            if loop.is_running() and _running_loop() is not loop:
                loop.call_soon_threadsafe(task.cancel)  # a task is cancelled on its loop's thread
            else:
                task.cancel()
        if self._replaced is not None:
            replaced, self._replaced = self._replaced, None
            use_engine(replaced)

    def __enter__(self) -> VirtualClock:
        return self.install()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.uninstall()

    # -- time ---------------------------------------------------------------------------

    def timers(self) -> list[Timer]:
        """The live timers of this clock (started, not stopped, not fired), in no set order."""
        return self.engine.live_timers()

    def next_deadline(self) -> float | None:
        """When the next tick is due (virtual seconds), or None when no timer is armed."""
        with self.engine.lock:
            return self.engine.heap.next_deadline()

    async def advance(self, seconds: float, *, timeout: float = 10.0) -> int:
        """Move time ``seconds`` forward, running each tick that falls due on the way at its
        own time, in deadline order, and each to its end before the next (plain callbacks
        on a pool thread, loop-bound ones on their loop). Returns how many ticks ran.

        ``timeout`` bounds the real time it may take (``TimeoutError``): a callback that
        blocks or awaits real time counts against it.
        """
        if not seconds >= 0:
            raise ValueError(f"advance() moves time forward: got {seconds!r} seconds")
        target = self.clock.now + seconds
        ran = 0
        async with asyncio.timeout(timeout):
            while (deadline := self.next_deadline()) is not None and deadline <= target:
                self.clock.now = max(self.clock.now, deadline)
                ran += await self._wake()
            self.clock.now = target
        return ran

    async def _wake(self) -> int:
        """One wake-up of the timer thread at the clock's time; run what it handed over to
        the pool and to this loop, to the end. Returns how many ticks that was."""
        loop = asyncio.get_running_loop()
        engine, driver = self.engine, self.driver
        before = len(driver.ticks)
        tasks_before = set(engine.tasks)
        driver.pump()
        with engine.lock:
            to_loop = len(engine._outbox.get(loop, ())) // 2
        plain, driver.ticks[before:] = driver.ticks[before:], []
        for t, deadline in plain:
            await loop.run_in_executor(_runtime.executor(), functools.partial(driver.run_tick, t, deadline))
        await asyncio.sleep(0)  # the drain posted to this loop runs: Safe callbacks run, async ones start
        started = [task for task in engine.tasks - tasks_before if task.get_loop() is loop]
        if started:
            await asyncio.wait(started)
        await asyncio.sleep(0)  # what the callbacks handed to the loop (a reply, a message) goes out
        return len(plain) + to_loop
