"""The timer engine: which timers run, what is due, and the hand-over to where it runs.

One ``Engine`` per process (``_timers.ENGINE``) holds the deadline heap, the decorator keys,
the ticks on their way to an event loop and every timer's bookkeeping, all under one lock;
user code is never called while holding it. The engine starts no thread itself: a *driver*
wakes it at its deadlines (``wake_locked``) and runs its plain ticks off the loop. Due ticks
of loop-bound timers (``Safe`` ones, ``async def`` callbacks) are collected per loop and
reach each loop with one ``call_soon_threadsafe`` per wake-up (``post_drains``), which then
runs them all (``drain``).

The injection point: ``Engine(driver=...)``. By default (``driver=None``) the driver is a
``TimerThread``: the process's timer thread and its callback pool. Tests pass a driver of
their own and a virtual ``clock`` and move time by hand (tests/support/timers.py); no
timer class or engine method exists for tests only.

Thread affinity: ``start``/``stop``/``reset``/``clear``/``snapshot``/``live_timers`` from
any thread, also from inside a callback; ``wake_locked`` and ``post_drains`` from the
driver; ``drain`` on the loop it was posted to; ``shutdown`` on the main loop.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import operator
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from .. import _runtime
from .._enums import RunState
from ._callbacks import EXITED, call_plain, contained, log
from ._heap import DeadlineHeap
from ._stats import TimerStats, record_runs, snapshot, stride_for
from ._thread import TimerThread

if TYPE_CHECKING:
    from ._timers import Timer

__all__ = ["Driver", "Engine"]

Loop = asyncio.AbstractEventLoop

_CHUNK: Final = 512  # most ticks taken from the heap per lock hold
_RUNNING: Final = RunState.RUNNING  # bound once: compared per tick on the hot paths
_loop_of: Final = operator.attrgetter("_loop")


class Driver(Protocol):
    """What makes an engine run. Every method is called with the engine's lock held.

    The production driver is ``_thread.TimerThread``; a test's driver typically records
    plain ticks and calls ``wake_locked`` itself on a virtual clock.
    """

    def armed_locked(self, deadline: float) -> None:
        """``start()``/``reset()`` armed a tick due at ``deadline``: make sure the engine
        is woken (``wake_locked``) by then."""

    def run_plain_locked(self, ticks: list[Any]) -> None:
        """Plain ticks are due, given flat (``timer, deadline, ...``): run each off the
        loop, bracketed by ``begin_locked`` and ``finish_locked``."""

    def queued_locked(self) -> Iterable[Any]:
        """Plain ticks handed over and not taken yet (flat), for ``live_timers``."""

    def after_fork_in_child(self) -> None:
        """The engine started afresh (with a new lock) in a fork()ed child: do as well."""


class Engine:
    """The process's timer machinery (see the module doc). Every mutable field, and every
    timer's bookkeeping, is guarded by ``lock``."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall: Callable[[], float] = time.time,
        resolve_loop: Callable[[], Loop] = _runtime.main_loop,
        driver: Callable[[Engine], Driver] | None = None,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.resolve_loop = resolve_loop
        self._fresh()
        self.driver: Driver = (driver or TimerThread)(self)

    def _fresh(self) -> None:
        """Every field that changes while timers run (all guarded by ``lock``)."""
        self.lock = threading.Lock()
        self.heap: DeadlineHeap[Timer] = DeadlineHeap(self.clock)
        self.keys: dict[tuple[str, Hashable], Timer] = {}  # decorator keys
        self.key_of: dict[Timer, tuple[str, Hashable]] = {}
        self.busy = 0  # plain callbacks executing right now (pool or loop)
        self.tasks: set[asyncio.Task[Any]] = set()  # running async callbacks
        self._routed = 0  # live timers bound to a loop
        # Ticks are queued flat (timer, deadline, ...), not as tuples: see _pool.py.
        self._outbox: dict[Loop, list[Any]] = {}  # flat ticks posted to a loop, not drained
        self._idle = threading.Condition(self.lock)  # wait_idle() sleeps here
        self._idle_waiters = 0

    def after_fork_in_child(self) -> None:
        """Timers do not survive ``fork()``, like threads: in the child every inherited timer
        is stopped (its statistics stay readable) and the engine starts afresh, so timers
        created in the child work. Without this, inherited timers would look running and
        never tick (the timer thread is not copied), and the lock could be held forever
        by a thread that no longer exists. Runs with one thread, so no lock is taken."""
        for t in self._live_locked():
            t._state = RunState.STOPPED
            t._armed = 0
        self._fresh()
        self.driver.after_fork_in_child()

    # -- control (any thread) -------------------------------------------------------------

    def start(self, t: Timer, loop: Loop | None, key: tuple[str, Hashable] | None) -> None:
        replaced = None
        with self.lock:
            if t._state is not RunState.NEW:
                what = "is already running" if t._state is RunState.RUNNING else "has finished"
                raise RuntimeError(
                    f"{type(t).__name__} {t._name!r} {what}; a timer starts once "
                    "(create a new one to start again)"
                )
            t._state = RunState.RUNNING
            t._loop = loop
            if loop is not None:
                self._routed += 1
            if key is not None:
                replaced = self.keys.get(key)
                if replaced is not None:
                    self._stop_locked(replaced)
                self.keys[key] = t
                self.key_of[t] = key
            self.heap.arm(t, self.clock())
            self.driver.armed_locked(t._origin + t._interval)
        if replaced is not None and key is not None:
            log.warning("timer key %r was in use: stopped %r, started %r", key[1], replaced, t)

    def stop(self, t: Timer) -> bool:
        with self.lock:
            return self._stop_locked(t)

    def reset(self, t: Timer) -> bool:
        with self.lock:
            if t._state is not RunState.RUNNING or not t._armed:
                return False
            self.heap.arm(t, self.clock())
            self.driver.armed_locked(t._origin + t._interval)
            return True

    def clear(self, key: tuple[str, Hashable]) -> bool:
        with self.lock:
            t = self.keys.get(key)
            return t is not None and self._stop_locked(t)

    def snapshot(self, t: Timer) -> TimerStats:
        with self.lock:
            return snapshot(t, is_running=t._state is RunState.RUNNING, now=self.clock(), wall_now=self.wall())

    def live_timers(self) -> list[Timer]:
        """Timers started and not yet stopped or fired: the armed ones, plus one-shots
        whose tick is handed over but has not started."""
        with self.lock:
            return self._live_locked()

    def _live_locked(self) -> list[Timer]:
        live: dict[Timer, None] = dict.fromkeys(self.heap.armed())
        queued = itertools.chain(self.driver.queued_locked(), *self._outbox.values())
        live.update((t, None) for t in itertools.islice(queued, 0, None, 2) if t._state is RunState.RUNNING)
        return list(live)

    def _stop_locked(self, t: Timer) -> bool:
        if t._state is not RunState.RUNNING:
            return False
        t._state = RunState.STOPPED
        self.heap.disarm(t)
        self._retire_locked(t)
        return True

    def _retire_locked(self, t: Timer) -> None:
        """Bookkeeping when a timer stops running (called once: stop, or a one-shot's start)."""
        if t._loop is not None:
            self._routed -= 1
        key = self.key_of.pop(t, None)
        if key is not None and self.keys.get(key) is t:
            del self.keys[key]

    # -- hand-over (the driver) -----------------------------------------------------------

    def wake_locked(self, now: float) -> list[Loop] | None:
        """One wake-up at ``now``: take every tick due from the heap (in chunks, letting
        other threads take the lock in between), hand plain ticks to the driver and put
        loop-bound ones in their loops' outboxes. Returns None if nothing was due, else the
        loops to post a drain to (``post_drains``, outside the lock), each loop once."""
        posts: list[Loop] = []
        took = False
        while True:
            due = self.heap.due(now, _CHUNK)
            if not due:
                break
            took = True
            self._route_locked(due, posts)
            if len(due) < _CHUNK:
                break
            self.lock.release()  # a huge backlog: let control calls and workers in
            self.lock.acquire()
        for loop in self._outbox:
            if loop not in posts and loop.is_closed():
                # its drain was posted but will never run (the loop closed first): post
                # again, which fails and hands the box to _loop_gone, stopping its timers
                posts.append(loop)
                took = True
        return posts if took else None

    def _route_locked(self, due: list[Any], posts: list[Loop]) -> None:
        """Route flat ticks (``timer, deadline, ...``) to the driver or their loop's outbox.

        The common cases take no step per tick in Python: no loop-bound timer at all, or
        every tick due for one and the same loop (a worker's ``Safe`` timers): checked by
        one ``map`` over the timers, then the ticks move as one slice.
        """
        if self._routed == 0:
            plain = due
        else:
            plain = []
            outbox = self._outbox
            first = due[0]._loop
            if first is not None and all(map(operator.is_, map(_loop_of, due[::2]), itertools.repeat(first))):
                if (box := outbox.get(first)) is None:
                    outbox[first] = due
                    posts.append(first)
                else:  # a drain for this loop is already on its way: ride along
                    box += due
                return
            for i in range(0, len(due), 2):
                t = due[i]
                loop = t._loop
                if loop is None:
                    plain += due[i : i + 2]
                elif (box := outbox.get(loop)) is None:
                    outbox[loop] = due[i : i + 2]
                    posts.append(loop)
                else:
                    box += due[i : i + 2]
        if plain:
            self.driver.run_plain_locked(plain)

    def post_drains(self, loops: list[Loop]) -> None:
        """Post one ``drain`` to each loop (outside the lock)."""
        for loop in loops:
            try:
                loop.call_soon_threadsafe(functools.partial(self.drain, loop))
            except RuntimeError:  # the loop is closed
                self._loop_gone(loop)

    def _loop_gone(self, loop: Loop) -> None:
        stopped = []
        with self.lock:
            for t in self._outbox.pop(loop, [])[::2]:
                t._inflight -= 1
                t._missed += 1
                if self._stop_locked(t):
                    stopped.append(t._name)
        log.warning("event loop %r is closed; stopped timers bound to it: %s", loop, stopped)

    # -- running callbacks ----------------------------------------------------------------

    def drain(self, loop: Loop) -> None:
        """Run the ticks handed to ``loop`` (on the loop's thread).

        The lock is taken twice per batch, not twice per tick: to take the batch, and to
        record every run's statistics at the end (a batch of more than ``BUSY_BATCH`` ticks
        samples lateness: ``_stats.stride_for``). Whether an interval tick may start is
        read without the lock (``stop()`` writes ``_state`` under it; the read is atomic),
        which keeps the guarantee that no tick starts after ``stop()`` returned; one-shots
        change state when they start and take the lock for it. The clock is read once per
        plain tick: a run's end is the next run's start (the few bytecodes between two
        callbacks count as the later one's runtime).
        """
        lock = self.lock
        with lock:
            batch = self._outbox.pop(loop, None)
            if not batch:
                return
            self.busy += 1
        clock = self.clock
        call = call_plain
        runs: list[Any] = []  # flat: timer, deadline, start, end, error
        size = len(batch)
        i = 0
        now = clock()
        try:
            while i < size:
                t = batch[i]
                deadline = batch[i + 1]
                i += 2
                if t._state is not _RUNNING or not t._REPEAT:
                    with lock:
                        if not self.begin_locked(t):
                            continue
                    now = clock()  # (the lock may have been waited for)
                if t._is_coro:
                    self._start_task(t, deadline)
                    now = clock()
                    continue
                start = now
                try:
                    error = call(t)
                except BaseException:  # pragma: no cover - call_plain catches what callbacks raise
                    runs += (t, deadline, start, clock(), True)
                    raise
                now = clock()
                runs += (t, deadline, start, now, error)
        finally:
            with lock:
                self.busy -= 1
                self.record_locked(runs, stride_for(size // 2))
                for t in batch[i::2]:  # never started: a BaseException ended the batch
                    t._inflight -= 1
                    t._missed += 1

    def begin_locked(self, t: Timer) -> bool:
        """May this handed-over tick start? (The check that makes stop() final.)"""
        if t._state is not _RUNNING:
            t._inflight -= 1
            return False
        if not t._REPEAT:
            t._state = RunState.FINISHED
            self._retire_locked(t)
        return True

    def finish_locked(
        self, t: Timer, deadline: float, start: float, end: float, error: bool, stride: int = 1
    ) -> None:
        """Account for one finished run (``error``: the callback failed); ``stride`` > 1
        samples its lateness (``_stats.record_runs``: the caller has a backlog)."""
        record_runs((t, deadline, start, end, error), stride)
        if self.busy == 0 and self._idle_waiters:
            self._idle.notify_all()

    def record_locked(self, runs: Sequence[Any], stride: int = 1) -> None:
        """Account for finished runs, given flat: ``timer, deadline, start, end, error, ...``;
        ``stride`` as for ``finish_locked``."""
        record_runs(runs, stride)
        if self.busy == 0 and self._idle_waiters:
            self._idle.notify_all()

    def _start_task(self, t: Timer, deadline: float) -> None:
        start = self.clock()
        try:
            kwargs = t._kwargs
            coro = t._callback(*t._args, **kwargs) if kwargs else t._callback(*t._args)
            task = asyncio.ensure_future(contained(t, coro), loop=t._loop)
        except Exception:
            log.exception("timer %s: callback raised", t._name)
            end = self.clock()
            with self.lock:
                self.finish_locked(t, deadline, start, end, True)
            return
        self.tasks.add(task)
        task.add_done_callback(functools.partial(self._task_done, t, deadline, start))

    def _task_done(self, t: Timer, deadline: float, start: float, task: asyncio.Task[Any]) -> None:
        end = self.clock()
        self.tasks.discard(task)
        error = False
        if not task.cancelled():
            if (exc := task.exception()) is not None:
                error = True
                log.error("timer %s: callback raised", t._name, exc_info=exc)
            else:
                error = task.result() is EXITED
        with self.lock:
            self.finish_locked(t, deadline, start, end, error)

    # -- shutdown -------------------------------------------------------------------------

    def wait_idle(self, timeout: float) -> bool:
        """Block until no plain callback is executing (True) or ``timeout`` s pass (False)."""
        with self.lock:
            self._idle_waiters += 1
            try:
                return self._idle.wait_for(lambda: self.busy == 0, timeout)
            finally:
                self._idle_waiters -= 1

    async def shutdown(self, timeout: float) -> None:
        """Stop every timer, then wait up to ``timeout`` s for callbacks still running.

        Runs on the main loop (the driver's shutdown hook). Async callbacks on this loop
        still running at the end are cancelled; plain callbacks in worker threads cannot
        be, and are reported.
        """
        with self.lock:
            timers = self._live_locked()
            for t in timers:
                self._stop_locked(t)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        mine = [task for task in list(self.tasks) if task.get_loop() is loop]
        if mine:
            _, pending = await asyncio.wait(mine, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("cancelled %d async timer callback(s) at shutdown", len(pending))
        if self.busy:
            left = max(0.0, end - loop.time())
            if not await _runtime.to_thread(self.wait_idle, left):
                log.warning("%d timer callback(s) still running after shutdown", self.busy)
        log.debug("shutdown: stopped %d timer(s)", len(timers))
