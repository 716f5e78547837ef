"""Timers on a virtual clock, driven by hand: the test kit for libs.timers.

The production engine is woken by the timer thread and runs plain callbacks on its pool.
``Virtual`` builds an engine with the documented injection point instead
(``Engine(clock=..., driver=...)``): a ``ManualDriver`` (``libs.timers.virtual``, the parts
of users' ``VirtualClock``) that starts no thread, so nothing runs until the test calls
``pump(at)`` (one wake-up of the timer thread at ``at``), and that collects plain ticks for
the test to run (``run_tick``) when it says so. Loop-bound ticks go to a ``FakeLoop`` that
records each hand-over. Timer classes bound to the engine are subclasses that set
``_engine`` (the classes' injection point).
"""

from __future__ import annotations

from typing import Any

from libs.timers import SetInterval, SetIntervalSafe, SetTimeout, SetTimeoutSafe
from libs.timers._engine import Engine
from libs.timers.virtual import ManualDriver, VClock

__all__ = ["FakeLoop", "ManualDriver", "VClock", "Virtual"]  # ManualDriver, VClock: libs.timers.virtual


class FakeLoop:
    """Stands in for an event loop: records every hand-over instead of running it."""

    def __init__(self) -> None:
        self.posted: list[Any] = []

    def call_soon_threadsafe(self, fn: Any) -> None:
        self.posted.append(fn)

    def is_closed(self) -> bool:
        return False

    def run_posted(self) -> None:
        posted, self.posted = self.posted, []
        for fn in posted:
            fn()


class Virtual:
    """An engine on a virtual clock with a ``ManualDriver``, plus timer classes bound to it."""

    def __init__(self, loop: FakeLoop | None = None) -> None:
        self.clock = VClock()
        self.loop = loop or FakeLoop()
        self.engine = Engine(
            self.clock,
            wall=lambda: 1_700_000_000.0 + self.clock.now,
            resolve_loop=lambda: self.loop,  # type: ignore[arg-type,return-value]
            driver=ManualDriver,
        )
        self.driver: ManualDriver = self.engine.driver  # type: ignore[assignment]
        self.ticks = self.driver.ticks
        ns = {"__slots__": (), "_engine": self.engine}
        self.SetInterval: Any = type("SetInterval", (SetInterval,), ns)
        self.SetIntervalSafe: Any = type("SetIntervalSafe", (SetIntervalSafe,), ns)
        self.SetTimeout: Any = type("SetTimeout", (SetTimeout,), ns)
        self.SetTimeoutSafe: Any = type("SetTimeoutSafe", (SetTimeoutSafe,), ns)

    def pump(self, at: float, run: bool = True) -> list[float]:
        """Move the clock to ``at``, do one timer-thread wake-up, run the plain ticks
        (unless ``run`` is False) and return the deadlines handed over."""
        self.clock.now = at
        before = len(self.ticks)
        self.driver.pump()
        fresh = self.ticks[before:]
        if run:
            del self.ticks[before:]
            for t, deadline in fresh:
                self.driver.run_tick(t, deadline)
        return [deadline for _, deadline in fresh]
