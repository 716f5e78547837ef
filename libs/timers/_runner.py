"""``RepeatingTaskRunner``: seed 001's repeating task runner with a watchdog ``reset()``.

The seed ("Building a Repeating Task Runner in Python") gives each runner a thread of its
own that waits ``interval`` seconds on an ``Event`` between runs; ``reset()`` sets the event
and the wait starts over. Its API, ``RepeatingTaskRunner(interval=<seconds>, task=...,
task_args=...)`` with ``start()``, ``stop()`` and ``reset()``, is kept here as a thin layer
over one ``SetInterval``, which already has every part of it: a watchdog ``reset()``,
``stop()`` from any thread (the task's own included), start-once.

Why here and not in ``libs.scheduling``: it is one timer under another name, with the
timers' thread model, engine and statistics, and nothing of the scheduler's (triggers,
stores, wall-clock misfires); ``libs.timers`` is importable without the scheduler's
SQLite and cron modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

from ._stats import TimerStats
from ._timers import SetInterval, SetIntervalSafe

__all__ = ["RepeatingTaskRunner"]


class RepeatingTaskRunner:
    """Run ``task(*task_args)`` every ``interval`` **seconds** from ``start()`` until ``stop()``.

    ``reset()`` postpones the next run to one interval from now, as the seed's does: a
    watchdog that only fires when nobody kicked it for a whole interval.

    Where the task runs: a plain function on a worker thread of the timers' shared pool
    (the seed ran it on a thread of its own; no event loop is needed, so the seed's
    ``time.sleep`` scripts work as written), an ``async def`` function as a task on the
    worker's event loop; with ``safe=True`` a plain function runs on the event loop too
    (``SetIntervalSafe``).

    Differences from the seed, on purpose: runs are on a fixed grid (``start + k*interval``,
    restarted by ``reset()``), so a slow task does not shift the later runs; a run still
    going when the next one is due makes that one skipped (counted in ``stats().missed``),
    never queued; an exception in the task is logged and counted and the runner goes on
    (the seed's thread died with it).

    ``start()``, ``stop()`` and ``reset()`` may be called from any thread, including from
    inside the task. A runner starts once: ``start()`` again, even after ``stop()``, raises
    ``RuntimeError`` (the seed's thread cannot be started twice either).
    """

    __slots__ = ("_interval", "_timer")

    _interval_class: ClassVar[type[SetInterval]] = SetInterval
    """The timer behind a plain runner; the injection point for tests (a subclass that sets
    it binds its runners to another engine, as for the timers themselves)."""
    _safe_class: ClassVar[type[SetInterval]] = SetIntervalSafe
    """The timer behind ``safe=True``."""

    def __init__(
        self,
        *,
        interval: float,
        task: Callable[..., Any],
        task_args: tuple[Any, ...] | list[Any] | None = None,
        safe: bool = False,
        name: str | None = None,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) \
                or not math.isfinite(interval) or interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        if task_args is not None and not isinstance(task_args, (tuple, list)):
            raise TypeError(f"task_args must be a tuple or a list of the task's arguments, "
                            f"not {type(task_args).__name__}")
        timer_class = self._safe_class if safe else self._interval_class
        self._interval = float(interval)
        self._timer = timer_class(task, self._interval * 1000.0, *(task_args or ()), name=name)

    def start(self) -> RepeatingTaskRunner:
        """Start the runner; the first run is one interval from now. Returns the runner."""
        self._timer.start()
        return self

    def stop(self) -> bool:
        """Stop the runner: once this returns, no new run starts (one already under way
        finishes; this does not wait for it). Idempotent. True if this call stopped it."""
        return self._timer.stop()

    def reset(self) -> bool:
        """Postpone the next run to one interval from now. False (and nothing happens) if
        the runner is not running."""
        return self._timer.reset()

    @property
    def is_running(self) -> bool:
        return self._timer.is_running

    @property
    def interval(self) -> float:
        """Seconds between runs."""
        return self._interval

    def stats(self) -> TimerStats:
        """The statistics of the timer behind the runner (runs, errors, missed, lateness)."""
        return self._timer.stats()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "not running"
        return f"<RepeatingTaskRunner {self._timer.name!r} every {self._interval:g} s, {state}>"
