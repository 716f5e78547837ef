"""QE's timer classes: SetInterval, SetIntervalSafe, SetTimeout, SetTimeoutSafe, and ``timer_stats()``.

Why not QE's design: QE starts one thread per timer and sleeps ``interval`` after each run,
so ticks drift by the callback's runtime and errors are only printed. Here every timer of
the process lives in one engine (``ENGINE``) whose one timer thread sleeps until the
earliest absolute deadline and hands due ticks over:

* ``SetInterval`` / ``SetTimeout``: a plain (``def``) callback runs on a small bounded
  pool of daemon worker threads (``_pool.POOL_SIZE``), never on the event loop and never
  on the timer thread, so a slow callback delays neither the loop nor other timers.
* ``SetIntervalSafe`` / ``SetTimeoutSafe``: the callback runs on the worker's event loop
  (``_runtime.main_loop()`` resolved at ``start()``). All ticks that fall due in one
  wake-up of the timer thread reach a loop in a single ``call_soon_threadsafe``.
* ``async def`` callbacks are always started as tasks on the event loop, for all four
  classes.

All durations in this API are **milliseconds**. The k-th tick is due at
``start + k * interval`` (monotonic clock): no cumulative drift. A tick that cannot run
on time is never replayed as a burst: see ``misfire`` and ``max_instances``.

Thread affinity of the control methods: ``start``, ``stop``/``cancel``, ``reset``,
``stats`` and the decorators may be called from any thread, including from inside the
timer's own callback.

Injection points: a subclass that sets the class attribute ``_engine`` binds its timers to
another ``Engine`` (tests/support/timers.py); ``use_engine()`` makes another engine the one
every timer created from then on joins, process-wide (``libs.timers.virtual``: virtual time
for a test). A timer keeps the engine it was created with, so timers created before the
switch go on where they are.
"""

from __future__ import annotations

import math
import os
from array import array
from collections.abc import Callable, Hashable
from typing import Any, ClassVar, Final

from .. import _runtime
from .._enums import MisfirePolicy, RunState
from ._callbacks import name_of
from ._engine import Engine, Loop
from ._stats import TimerStats

__all__ = [
    "ENGINE",
    "SetInterval",
    "SetIntervalSafe",
    "SetTimeout",
    "SetTimeoutSafe",
    "Timer",
    "current_engine",
    "timer_stats",
    "use_engine",
]

ENGINE: Final = Engine()
"""The process's one timer engine (its thread starts with the first timer)."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=ENGINE.after_fork_in_child)


class Timer:
    """Common core of the four timer classes (not public: use the QE names)."""

    __slots__ = (
        "_acc",
        "_args",
        "_armed",
        "_callback",
        "_eng",
        "_hist",
        "_inflight",
        "_interval",
        "_is_coro",
        "_kwargs",
        "_loop",
        "_max_instances",
        "_missed",
        "_n",
        "_name",
        "_origin",
        "_skip",
        "_state",
    )
    _REPEAT: ClassVar[bool] = True
    _SAFE: ClassVar[bool] = False
    _engine: ClassVar[Engine] = ENGINE  # the engine new timers join (see the module doc)

    def __init__(
        self,
        callback: Callable[..., Any],
        ms: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str | None,
        misfire: MisfirePolicy | str,
        max_instances: int,
    ) -> None:
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        seconds = float(ms) / 1000.0
        if not math.isfinite(seconds) or seconds < 0.0 or (self._REPEAT and seconds == 0.0):
            need = "> 0" if self._REPEAT else ">= 0"
            raise ValueError(f"{type(self).__name__}: milliseconds must be finite and {need}")
        policy = MisfirePolicy.parse(misfire)
        if not isinstance(max_instances, int) or max_instances < 1:
            raise ValueError("max_instances must be an int >= 1")
        self._eng = self._engine  # for its whole life, whichever engine new timers join later
        self._callback = callback
        self._args = args
        self._kwargs = kwargs or None
        self._interval = seconds
        self._name = name if name is not None else name_of(callback)
        self._skip = policy is MisfirePolicy.SKIP
        self._max_instances = max_instances
        self._is_coro = _runtime.is_async(callback)
        self._loop: Loop | None = None
        self._state = RunState.NEW
        self._armed = 0
        self._origin = 0.0
        self._n = 0
        self._inflight = 0
        self._acc: array[float] | None = None  # allocated at the first run
        self._missed = 0
        self._hist: array[int] | None = None

    def _start(self, key: tuple[str, Hashable] | None) -> None:
        eng = self._eng
        loop = eng.resolve_loop() if (self._SAFE or self._is_coro) else None
        eng.start(self, loop, key)

    def stop(self) -> bool:
        """Stop the timer. Idempotent; callable from any thread and from the callback.

        Once it returns, no new tick is started: whether a handed-over tick may run is
        decided under the engine lock, so only a run already under way (or decided just
        before) finishes. Returns True if this call stopped it, False if it was not running.
        """
        return self._eng.stop(self)

    def reset(self) -> bool:
        """Postpone the next tick to now + interval (a watchdog kick); the grid restarts there.

        Returns False (and does nothing) if the timer is not running, or if it is a
        timeout whose tick has already been handed over.
        """
        return self._eng.reset(self)

    @property
    def is_running(self) -> bool:
        """True from ``start()`` until ``stop()`` (for a timeout: until its callback starts)."""
        return self._state is RunState.RUNNING

    @property
    def name(self) -> str:
        """The name used in logs and statistics (``name=`` or the callback's qualname)."""
        return self._name

    def stats(self) -> TimerStats:
        """A snapshot of this timer's statistics (also valid after it stopped)."""
        return self._eng.snapshot(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r} {self._interval * 1000.0:g} ms {self._state}>"


class SetInterval(Timer):
    """Call ``callback(*args, **kwargs)`` every ``interval_ms`` milliseconds after ``start()``.

    Which thread runs the callback: a plain function runs on a worker thread of a small
    shared pool (never on the event loop, never on the timer thread); an ``async def``
    function is started as a task on the worker's event loop. Use ``SetIntervalSafe`` to
    run a plain function on the event loop.

    Timing: tick k is due at start + k * interval_ms (monotonic clock), so there is no
    cumulative drift. At most ``max_instances`` runs of this timer are in flight at once;
    a tick that would exceed it is counted in ``missed`` and dropped. If the process
    stalls past whole intervals, ``misfire="coalesce"`` runs once as soon as possible and
    counts the rest as missed; ``misfire="skip"`` drops them all and waits for the next
    grid point. Never a burst.

    Errors: an exception is logged on ``libs.bridge.timers`` with the timer's name and
    counted in ``stats().errors``; the timer keeps running.

    ``name``, ``misfire`` and ``max_instances`` are options; every other keyword argument
    is passed to the callback.
    """

    __slots__ = ()

    def __init__(
        self,
        callback: Callable[..., Any],
        interval_ms: float,
        *args: Any,
        name: str | None = None,
        misfire: MisfirePolicy | str = MisfirePolicy.COALESCE,
        max_instances: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(callback, interval_ms, args, kwargs, name, misfire, max_instances)

    def start(self) -> SetInterval:
        """Start ticking; the first tick is one interval from now. Returns self.

        Raises RuntimeError if the timer was started before (timers start once).
        """
        self._start(None)
        return self

    @property
    def interval_ms(self) -> float:
        return self._interval * 1000.0


class SetIntervalSafe(SetInterval):
    """``SetInterval`` whose callback always runs on the worker's event loop thread.

    The loop is ``main_loop()`` at ``start()`` (the running loop, if started from a
    coroutine). Ticks reach the loop via ``call_soon_threadsafe``, one call per timer-thread
    wake-up for all due ticks together. A tick queued on a busy loop counts as in flight,
    so a blocked loop yields one late run afterwards, not a burst. A plain callback that
    blocks, blocks the loop: keep it short.
    """

    __slots__ = ()
    _SAFE = True


class SetTimeout(Timer):
    """Call ``callback(*args, **kwargs)`` once, ``delay_ms`` milliseconds after ``start()``.

    Runs where ``SetInterval`` runs its callbacks (plain: worker thread; async: a task on
    the event loop). ``cancel()`` (QE's name) or ``stop()`` prevents it; ``reset()``
    postpones it to now + delay. ``name`` is an option; other keyword arguments go to the
    callback.
    """

    __slots__ = ()
    _REPEAT = False

    def __init__(
        self,
        callback: Callable[..., Any],
        delay_ms: float,
        *args: Any,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(callback, delay_ms, args, kwargs, name, MisfirePolicy.COALESCE, 1)

    def start(self) -> SetTimeout:
        """Arm the timeout. Returns self. Raises RuntimeError if started before."""
        self._start(None)
        return self

    def cancel(self) -> bool:
        """QE's name for ``stop()``: True if the callback was prevented from starting."""
        return self._eng.stop(self)

    @property
    def delay_ms(self) -> float:
        return self._interval * 1000.0


class SetTimeoutSafe(SetTimeout):
    """``SetTimeout`` whose callback runs on the worker's event loop thread (see
    ``SetIntervalSafe``)."""

    __slots__ = ()
    _SAFE = True




def current_engine() -> Engine:
    """The engine timers created now join: ``ENGINE``, unless ``use_engine()`` said otherwise."""
    return Timer._engine


def use_engine(engine: Engine) -> Engine:
    """Make ``engine`` the one timers created from now on join (process-wide: every thread);
    returns the one it replaces, to put back. Timers already created keep theirs."""
    previous, Timer._engine = Timer._engine, engine
    return previous


def timer_stats() -> list[TimerStats]:
    """Statistics of every live timer (started, not yet stopped or fired) of the current
    engine, in no set order."""
    engine = current_engine()
    return [engine.snapshot(t) for t in engine.live_timers()]
