"""The timer thread: the production driver of an engine.

One daemon thread per process (``qe-timers``) sleeps until the engine's earliest deadline,
then has the engine take every due tick (``Engine.wake_locked``) and posts the drains to
the loops outside the lock. Plain ticks go to the ``CallbackPool`` it owns, which it
watches while there is a backlog. It never runs user code, so a callback cannot delay
another timer's tick. It also ties the engine to the process: the first ``start()`` (again
after each shutdown) registers ``shutdown_hook`` with ``_runtime``.

Precision: timed waits overshoot by ~0.1 ms (more on VMs). Before a deadline more than
``_SPIN_AFTER`` away the thread wakes ``_SPIN`` early and yield-spins (``sleep(0)``, GIL
released) the rest: at most 10 % of a core for a 2 ms timer, 2 % for a 10 ms one, ~0 for
1 s ones. On Linux it also asks for 1 ns timer slack (``_precise_sleeps``). After a wake-up
that handed ticks over it waits at least ``_GAP`` before the next one, so that thousands of
timers due every millisecond make batches, not tens of thousands of tiny wake-ups (each a
futex wake, a GIL hand-off and a loop wake-up), at a cost of at most ``_GAP`` of lateness.

Thread affinity: ``armed_locked``/``run_plain_locked``/``queued_locked`` are called by the
engine with its lock held, from any thread; ``shutdown_hook`` runs on the main loop.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Final

# Imported here, on the importing thread, not by the timer thread when it starts: an import in
# a background thread races whatever the main thread does to sys.path and sys.modules meanwhile
# (seen: "No module named '_ctypes'" while a test kit loaded a script).
try:
    import ctypes as _ctypes
except ImportError:  # pragma: no cover - a Python built without ctypes
    _ctypes = None  # type: ignore[assignment]

from .. import _runtime
from ._callbacks import log
from ._pool import POOL_SIZE, WATCH, CallbackPool

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._engine import Engine

__all__ = ["TimerThread"]

_SPIN: Final = 0.0002
_SPIN_AFTER: Final = 0.002
_GAP: Final = 0.00025
_PR_SET_TIMERSLACK: Final = 29


class TimerThread:
    """Wakes ``engine`` at its deadlines and runs its plain ticks on a ``CallbackPool``.

    Implements the engine's ``Driver`` protocol; ``Engine()`` creates one unless a test
    passes another driver.
    """

    def __init__(self, engine: Engine, pool_size: int = POOL_SIZE) -> None:
        self.engine = engine
        self.pool = CallbackPool(engine, pool_size)
        self._fresh()

    def _fresh(self) -> None:
        self._wakeup = threading.Condition(self.engine.lock)  # the thread sleeps here
        self._wake_at = -math.inf  # deadline the thread sleeps until; -inf: awake
        self._thread: threading.Thread | None = None
        self._hook_registered = False

    # -- the Driver protocol (engine lock held) -------------------------------------------

    def armed_locked(self, deadline: float) -> None:
        if deadline < self._wake_at:
            self._wakeup.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="qe-timers", daemon=True)
            self._thread.start()
        if not self._hook_registered:  # (_runtime's lock is a leaf: safe under ours)
            self._hook_registered = True
            _runtime.remove_shutdown_hook(self.shutdown_hook)  # a hook called directly stays registered
            _runtime.add_shutdown_hook(self.shutdown_hook)

    def run_plain_locked(self, ticks: list[Any]) -> None:
        self.pool.put_locked(ticks)

    def queued_locked(self) -> Iterable[Any]:
        return self.pool.ready

    def after_fork_in_child(self) -> None:
        self.pool.after_fork_in_child()
        self._fresh()

    # -- process ties -----------------------------------------------------------------------

    @property
    def thread(self) -> threading.Thread | None:
        """The timer thread, once the first timer started it."""
        return self._thread

    async def shutdown_hook(self, timeout: float) -> None:
        """``Engine.shutdown(timeout)``, registered with ``_runtime.add_shutdown_hook``."""
        with self.engine.lock:
            self._hook_registered = False
        await self.engine.shutdown(timeout)

    # -- the thread -------------------------------------------------------------------------

    def _main(self) -> None:
        _precise_sleeps()
        while True:
            try:
                self._run()
            except Exception:  # pragma: no cover - a bug here must not stop every timer
                log.exception("timer thread failed; restarting it")
                time.sleep(0.01)

    def _run(self) -> None:
        engine = self.engine
        pool = self.pool
        clock = engine.clock
        lock = engine.lock
        spin_until = -math.inf  # a wake-up time we woke up early for
        handed = -math.inf  # when the last wake-up handed ticks over
        with lock:
            while True:
                now = clock()
                if now - handed >= _GAP:
                    posts = engine.wake_locked(now)
                    if posts is not None:
                        handed = now
                        if posts:
                            lock.release()
                            try:
                                engine.post_drains(posts)
                            finally:
                                lock.acquire()
                        continue
                deadline = engine.heap.next_deadline()
                wake = None if deadline is None else max(deadline, handed + _GAP)
                if wake is not None and wake <= now:
                    continue
                if wake is not None and wake == spin_until and wake - now <= _SPIN:
                    # Woken _SPIN early on purpose: yield-spin the rest (lock released).
                    lock.release()
                    try:
                        while clock() < wake:
                            time.sleep(0)
                    finally:
                        lock.acquire()
                    spin_until = -math.inf
                    continue
                timeout = None if wake is None else wake - now
                if wake is not None and wake - now > _SPIN_AFTER:
                    timeout = wake - now - _SPIN
                    spin_until = wake
                if pool.ready:  # watch the pool while it has a backlog
                    pool.watch_locked(now)
                    if timeout is None or timeout > WATCH / 2:
                        timeout = WATCH / 2
                self._wake_at = math.inf if wake is None else wake
                self._wakeup.wait(timeout)
                self._wake_at = -math.inf


def _precise_sleeps() -> None:
    """Ask Linux for exact wake-ups on the calling (timer) thread.

    By default the kernel may defer a timed wait by the thread's "timer slack" (50 us,
    more on VMs) to batch wake-ups; for the one thread whose job is waking on time a slack
    of 1 ns is right (docs/timers.md, "Design notes"). Best effort: a no-op where prctl is
    unavailable.
    """
    if not sys.platform.startswith("linux") or _ctypes is None:
        return
    try:
        _ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        pass
