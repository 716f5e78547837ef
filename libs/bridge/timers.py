"""QE-compatible timers on one shared timer thread: SetInterval, SetIntervalSafe, SetTimeout,
SetTimeoutSafe, the Nexus decorators ``setInterval``/``setTimeout`` and ``timer_stats()``.

Why not QE's design: QE starts one thread per timer and sleeps ``interval`` after each run,
so ticks drift by the callback's runtime and errors are only printed. Here one daemon
thread per process sleeps until the earliest absolute deadline of a heap
(``_timer_wheel.TimerWheel``) and hands due ticks over:

* ``SetInterval`` / ``SetTimeout``: a plain (``def``) callback runs on a small bounded
  pool of daemon worker threads (``_POOL_SIZE``), never on the event loop and never on the
  timer thread, so a slow callback delays neither the loop nor other timers.
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
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import logging
import math
import os
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any, ClassVar, Final, TypeVar

from .. import _runtime
from .._enums import MisfirePolicy, RunState
from ._timer_stats import TimerStats, lateness_add, lateness_quantiles, lateness_samples
from ._timer_wheel import TimerWheel

__all__ = [
    "SetInterval",
    "SetIntervalSafe",
    "SetTimeout",
    "SetTimeoutSafe",
    "TimerStats",
    "clearInterval",
    "clearTimeout",
    "setInterval",
    "setTimeout",
    "timer_stats",
]

log = logging.getLogger(__name__)

_POOL_SIZE: Final = min(32, (os.cpu_count() or 1) + 4)
"""Worker threads that run plain callbacks of ``SetInterval``/``SetTimeout``."""

_RUNNING: Final = RunState.RUNNING  # bound once: compared per tick on the hot paths
_CHUNK = 512  # most ticks taken from the wheel per lock hold
_PR_SET_TIMERSLACK = 29
# Timed waits overshoot by ~0.1 ms (more on VMs). Before a deadline more than _SPIN_AFTER
# away the timer thread wakes _SPIN early and yield-spins (sleep(0), GIL released) the
# rest: at most 10 % of a core for a 2 ms timer, 2 % for a 10 ms one, ~0 for 1 s ones.
_SPIN = 0.0002
_SPIN_AFTER = 0.002
_WATCH = 0.002  # s: how often the timer thread checks a pool with a backlog for progress
# After a wake-up that handed ticks over, the timer thread waits at least _GAP before the
# next one. An isolated deadline is unaffected; with thousands of timers due every
# millisecond this turns tens of thousands of tiny wake-ups a second (each a futex wake,
# a GIL hand-off and a loop wake-up) into batches, at a cost of at most _GAP of lateness.
_GAP = 0.00025

# A timer's run statistics live in one array("d") updated in place (``_Timer._acc``):
# replacing a float or int attribute on every run made 100,000 one-second timers churn
# 300,000 long-lived objects a second, and the fragmentation that left doubled the
# memory the statistics cost.
_RUNS, _ERRORS, _LAST, _RT_SUM, _RT_MAX = range(5)
_ACC_ZERO = array("d", bytes(8 * 5))

F = TypeVar("F", bound=Callable[..., Any])
Loop = asyncio.AbstractEventLoop
Tick = tuple["_Timer", float]  # (timer, the deadline it fires for)


class _Engine:
    """The process's timer machinery: wheel + lock + timer thread + worker pool.

    Every mutable field, and every timer's bookkeeping, is guarded by ``lock``; user code
    is never called while holding it. ``threaded=False`` gives a passive engine for unit
    tests: nothing runs until the test calls ``pump()`` (one wake-up of the timer thread);
    ``submit`` receives plain ticks instead of the pool, ``post(loop, fn)`` replaces
    ``loop.call_soon_threadsafe(fn)``.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall: Callable[[], float] = time.time,
        threaded: bool = True,
        resolve_loop: Callable[[], Loop] = _runtime.main_loop,
        submit: Callable[[list[Tick]], None] | None = None,
        post: Callable[[Loop, Callable[[], None]], None] | None = None,
        pool_size: int = _POOL_SIZE,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.resolve_loop = resolve_loop
        self._threaded = threaded
        self._pool_size = pool_size
        self._reset_state()
        self._submit = submit
        self._post = post if post is not None else _call_soon_threadsafe

    def _reset_state(self) -> None:
        """Every field that changes while timers run (all guarded by ``lock``)."""
        self.lock = threading.Lock()
        self.wheel: TimerWheel[_Timer] = TimerWheel(self.clock)
        self.keys: dict[tuple[str, Hashable], _Timer] = {}  # decorator keys
        self.key_of: dict[_Timer, tuple[str, Hashable]] = {}
        self.busy = 0  # plain callbacks executing right now (pool or loop)
        self.tasks: set[asyncio.Task[Any]] = set()  # running async callbacks
        self._routed = 0  # live timers bound to a loop
        # Queued ticks are stored flat, timer then deadline, not as (timer, deadline) tuples:
        # a tuple holding a timer is tracked by the garbage collector, and under a backlog
        # thousands of them survive into the old generation and trigger full collections.
        self._outbox: dict[Loop, list[Any]] = {}  # flat ticks posted to a loop, not drained
        self._ready: deque[Any] = deque()  # flat ticks waiting for a pool worker
        self._wakeup = threading.Condition(self.lock)  # the timer thread sleeps here
        self._work = threading.Condition(self.lock)  # idle pool workers sleep here
        self._idle = threading.Condition(self.lock)  # wait_idle() sleeps here
        self._idle_waiters = 0
        self._wake_at = -math.inf  # deadline the timer thread sleeps until; -inf: awake
        self._thread: threading.Thread | None = None
        self._threads = 0  # pool workers started
        self._idle_workers = 0  # ... waiting for work and not yet notified
        self._pool_busy = 0  # ... inside a callback
        self._taken = 0  # ticks taken from _ready so far (progress, for the watch)
        self._taken_seen = 0
        self._stuck_since = 0.0
        self._hook_registered = False

    def after_fork_in_child(self) -> None:
        """Timers do not survive ``fork()``, like threads: in the child every inherited timer
        is stopped (its statistics stay readable) and the engine starts afresh, so timers
        created in the child work. Without this, inherited timers would look running and
        never tick (the timer thread is not copied), and the lock could be held forever
        by a thread that no longer exists. Runs with one thread, so no lock is taken."""
        for t in self._live_locked():
            t._state = RunState.STOPPED
            t._armed = 0
        self._reset_state()

    # -- control (any thread) -------------------------------------------------------------

    def start(self, t: _Timer, loop: Loop | None, key: tuple[str, Hashable] | None) -> None:
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
            self.wheel.arm(t, self.clock())
            if t._origin + t._interval < self._wake_at:
                self._wakeup.notify()
            if self._threaded and self._thread is None:
                self._thread = threading.Thread(target=self._main, name="qe-timers", daemon=True)
                self._thread.start()
            register = self._threaded and not self._hook_registered
            self._hook_registered = True
        if register:  # (remove first: a hook called directly stays registered)
            _runtime.remove_shutdown_hook(self.shutdown_hook)
            _runtime.add_shutdown_hook(self.shutdown_hook)
        if replaced is not None and key is not None:
            log.warning("timer key %r was in use: stopped %r, started %r", key[1], replaced, t)

    def stop(self, t: _Timer) -> bool:
        with self.lock:
            return self._stop_locked(t)

    def reset(self, t: _Timer) -> bool:
        with self.lock:
            if t._state is not _RUNNING or not t._armed:
                return False
            self.wheel.arm(t, self.clock())
            if t._origin + t._interval < self._wake_at:
                self._wakeup.notify()
            return True

    def clear(self, key: tuple[str, Hashable]) -> bool:
        with self.lock:
            t = self.keys.get(key)
            return t is not None and self._stop_locked(t)

    def snapshot(self, t: _Timer) -> TimerStats:
        with self.lock:
            p50, p99 = lateness_quantiles(t._hist, (0.5, 0.99))
            acc = t._acc if t._acc is not None else _ACC_ZERO
            runs = int(acc[_RUNS])
            last = acc[_LAST] if runs else None
            return TimerStats(
                name=t._name,
                kind="interval" if t._REPEAT else "timeout",
                safe=t._SAFE,
                interval_ms=t._interval * 1000.0,
                is_running=t._state is RunState.RUNNING,
                runs=runs,
                errors=int(acc[_ERRORS]),
                missed=t._missed,
                in_flight=t._inflight,
                last_run=None if last is None else self.wall() - (self.clock() - last),
                runtime_mean_ms=acc[_RT_SUM] / runs * 1000.0 if runs else None,
                runtime_max_ms=acc[_RT_MAX] * 1000.0 if runs else None,
                lateness_p50_ms=None if p50 is None else p50 * 1000.0,
                lateness_p99_ms=None if p99 is None else p99 * 1000.0,
                lateness_samples=lateness_samples(t._hist),
            )

    def live_timers(self) -> list[_Timer]:
        """Timers started and not yet stopped or fired: the armed ones, plus one-shots
        whose tick is handed over but has not started."""
        with self.lock:
            return self._live_locked()

    def _live_locked(self) -> list[_Timer]:
        live: dict[_Timer, None] = dict.fromkeys(self.wheel.armed())
        queued = itertools.chain(self._ready, *self._outbox.values())
        live.update((t, None) for t in itertools.islice(queued, 0, None, 2) if t._state is RunState.RUNNING)
        return list(live)

    def _stop_locked(self, t: _Timer) -> bool:
        if t._state is not _RUNNING:
            return False
        t._state = RunState.STOPPED
        self.wheel.disarm(t)
        self._retire_locked(t)
        return True

    def _retire_locked(self, t: _Timer) -> None:
        """Bookkeeping when a timer stops running (called once: stop, or a one-shot's start)."""
        if t._loop is not None:
            self._routed -= 1
        key = self.key_of.pop(t, None)
        if key is not None and self.keys.get(key) is t:
            del self.keys[key]

    # -- the timer thread -----------------------------------------------------------------

    def _main(self) -> None:
        _precise_sleeps()
        while True:
            try:
                self._run_timer_thread()
            except Exception:  # pragma: no cover - a bug here must not stop every timer
                log.exception("timer thread failed; restarting it")
                time.sleep(0.01)

    def _run_timer_thread(self) -> None:
        clock = self.clock
        lock = self.lock
        spin_until = -math.inf  # a wake-up time we woke up early for
        handed = -math.inf  # when the last wake-up handed ticks over
        with lock:
            while True:
                now = clock()
                if now - handed >= _GAP:
                    handover = self._wake_locked(now)
                    if handover is not None:
                        handed = now
                        if handover[0] or handover[1]:
                            lock.release()
                            try:
                                self._deliver(*handover)
                            finally:
                                lock.acquire()
                        continue
                deadline = self.wheel.next_deadline()
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
                if self._ready:  # watch the pool while it has a backlog
                    self._watch_pool_locked(now)
                    if timeout is None or timeout > _WATCH / 2:
                        timeout = _WATCH / 2
                self._wake_at = math.inf if wake is None else wake
                self._wakeup.wait(timeout)
                self._wake_at = -math.inf

    def pump(self, now: float | None = None) -> None:
        """One wake-up of the timer thread at ``now``, for passive (test) engines."""
        with self.lock:
            handover = self._wake_locked(self.clock() if now is None else now)
        if handover is not None:
            self._deliver(*handover)

    def _wake_locked(self, now: float) -> tuple[list[Tick], list[Loop]] | None:
        """Everything one wake-up does under the lock: take every tick due at ``now`` from
        the wheel (in chunks, letting other threads take the lock in between), put plain
        ticks on the pool's ready queue and loop-bound ones in the loops' outboxes.
        Returns None if nothing was due, else what must be handed over outside the lock:
        plain ticks (only for an engine with ``submit``) and the loops to post a drain to,
        each loop once."""
        posts: list[Loop] = []
        pooled: list[Tick] = []
        took = False
        while True:
            due = self.wheel.due(now, _CHUNK)
            if not due:
                break
            took = True
            self._route_locked(due, pooled, posts)
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
        return (pooled, posts) if took else None

    def _watch_pool_locked(self, now: float) -> None:
        """Called by the timer thread while the ready queue has a backlog. If no worker
        took a tick for ``_WATCH`` seconds and every awake worker is inside a callback,
        they are stuck in slow callbacks: wake or start one more (up to ``pool_size``), so
        one slow callback does not hold up other timers for more than about ``_WATCH``."""
        if self._taken != self._taken_seen:
            self._taken_seen = self._taken
            self._stuck_since = now
        elif now - self._stuck_since >= _WATCH:
            self._stuck_since = now
            if self._threads - self._idle_workers - self._pool_busy <= 0:
                self._add_worker_locked()

    def _route_locked(self, due: list[Any], pooled: list[Tick], posts: list[Loop]) -> None:
        """Route flat ticks (``timer, deadline, ...``) to the pool or their loop's outbox."""
        if self._routed == 0:
            plain = due
        else:
            plain = []
            outbox = self._outbox
            for i in range(0, len(due), 2):
                t = due[i]
                loop = t._loop
                if loop is None:
                    plain += due[i : i + 2]
                elif (box := outbox.get(loop)) is None:
                    outbox[loop] = due[i : i + 2]
                    posts.append(loop)
                else:  # a drain for this loop is already on its way: ride along
                    box += due[i : i + 2]
        if not plain:
            return
        if self._submit is not None:
            pooled.extend(zip(plain[::2], plain[1::2]))
            return
        if not self._ready:  # a fresh backlog: the watch's stuck-clock starts now
            self._taken_seen = self._taken
            self._stuck_since = self.clock()
        self._ready.extend(plain)
        self._kick_locked()

    def _deliver(self, pooled: list[Tick], posts: list[Loop]) -> None:
        if pooled and self._submit is not None:
            self._submit(pooled)
        for loop in posts:
            try:
                self._post(loop, functools.partial(self._drain, loop))
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

    def _kick_locked(self) -> None:
        """Make sure a pool worker is awake to drain the ready queue.

        One awake worker drains it; more workers only help when callbacks block, and cost
        GIL and lock contention otherwise, so further workers are added only by the timer
        thread's watch (``_watch_pool_locked``) when the queue stops making progress.
        """
        if self._threads - self._idle_workers <= 0:
            self._add_worker_locked()

    def _add_worker_locked(self) -> None:
        if self._idle_workers:
            self._idle_workers -= 1  # the woken worker is awake from now on
            self._work.notify()
        elif self._threads < self._pool_size:
            self._threads += 1
            threading.Thread(
                target=self._worker, name=f"qe-timer-cb-{self._threads}", daemon=True
            ).start()

    def _worker(self) -> None:
        lock = self.lock
        ready = self._ready
        clock = self.clock
        call = self._call
        with lock:
            while True:
                # Sleep if there is nothing to do, or if another awake worker is between
                # callbacks and will take it: one worker drains, the others only step in
                # while it is stuck in a slow callback (GIL contention otherwise).
                if not ready or self._threads - self._idle_workers - self._pool_busy > 1:
                    self._idle_workers += 1
                    self._work.wait()  # the notifier already took us off _idle_workers
                    continue
                t = ready.popleft()
                deadline = ready.popleft()
                self._taken += 1
                if not self._begin_locked(t):
                    continue
                self._pool_busy += 1
                self.busy += 1
                lock.release()
                error = True
                start = clock()
                try:
                    error = call(t)
                except BaseException:  # pragma: no cover - _call catches what callbacks raise
                    log.exception("timer %s: callback raised in a worker thread", t._name)
                finally:
                    end = clock()
                    lock.acquire()
                self._pool_busy -= 1
                self.busy -= 1
                self._finish_locked(t, deadline, start, end, error)

    def _drain(self, loop: Loop) -> None:
        """Run the ticks handed to ``loop`` (on the loop's thread).

        The lock is taken twice per batch, not twice per tick: to take the batch, and to
        record every run's statistics at the end. Whether an interval tick may start is
        read without the lock (``stop()`` writes ``_state`` under it; the read is atomic),
        which keeps the guarantee that no tick starts after ``stop()`` returned; one-shots
        change state when they start and take the lock for it.
        """
        lock = self.lock
        with lock:
            batch = self._outbox.pop(loop, None)
            if not batch:
                return
            self.busy += 1
        clock = self.clock
        call = self._call
        runs: list[Any] = []  # flat: timer, deadline, start, end, error
        size = len(batch)
        i = 0
        try:
            while i < size:
                t = batch[i]
                deadline = batch[i + 1]
                i += 2
                if t._state is not _RUNNING or not t._REPEAT:
                    with lock:
                        if not self._begin_locked(t):
                            continue
                if t._is_coro:
                    self._start_task(t, deadline)
                    continue
                start = clock()
                try:
                    error = call(t)
                except BaseException:  # pragma: no cover - _call catches what callbacks raise
                    runs += (t, deadline, start, clock(), True)
                    raise
                runs += (t, deadline, start, clock(), error)
        finally:
            with lock:
                self.busy -= 1
                self._record_locked(runs)
                for t in batch[i::2]:  # never started: a BaseException ended the batch
                    t._inflight -= 1
                    t._missed += 1

    def run_tick(self, t: _Timer, deadline: float) -> None:
        """Run one plain tick on the calling thread (what a pool worker does; for tests)."""
        with self.lock:
            if not self._begin_locked(t):
                return
            self.busy += 1
        error = True
        start = self.clock()
        try:
            error = self._call(t)
        finally:
            end = self.clock()
            with self.lock:
                self.busy -= 1
                self._finish_locked(t, deadline, start, end, error)

    def _begin_locked(self, t: _Timer) -> bool:
        """May this handed-over tick start? (The check that makes stop() final.)"""
        if t._state is not _RUNNING:
            t._inflight -= 1
            return False
        if not t._REPEAT:
            t._state = RunState.FINISHED
            self._retire_locked(t)
        return True

    @staticmethod
    def _call(t: _Timer) -> bool:
        """Call a plain callback; returns True if it failed (logged).

        Whatever it raises is its failure, ``SystemExit`` and ``KeyboardInterrupt``
        included: on the loop's thread they would end ``run_forever()`` -- the whole worker,
        without its shutdown -- and on a pool thread that thread. ``App.stop()`` is how a
        callback stops the worker.
        """
        try:
            kwargs = t._kwargs
            result = t._callback(*t._args, **kwargs) if kwargs else t._callback(*t._args)
        except Exception:
            log.exception("timer %s: callback raised", t._name)
            return True
        except BaseException as exc:
            _log_exit(t, exc)
            return True
        if result is not None and inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            log.error(
                "timer %s: callback returned an awaitable; define it with `async def` "
                "so that it is scheduled on the event loop",
                t._name,
            )
            return True
        return False

    def _start_task(self, t: _Timer, deadline: float) -> None:
        start = self.clock()
        try:
            kwargs = t._kwargs
            coro = t._callback(*t._args, **kwargs) if kwargs else t._callback(*t._args)
            task = asyncio.ensure_future(_contained(t, coro), loop=t._loop)
        except Exception:
            log.exception("timer %s: callback raised", t._name)
            end = self.clock()
            with self.lock:
                self._finish_locked(t, deadline, start, end, True)
            return
        self.tasks.add(task)
        task.add_done_callback(functools.partial(self._task_done, t, deadline, start))

    def _task_done(self, t: _Timer, deadline: float, start: float, task: asyncio.Task[Any]) -> None:
        end = self.clock()
        self.tasks.discard(task)
        error = False
        if not task.cancelled():
            if (exc := task.exception()) is not None:
                error = True
                log.error("timer %s: callback raised", t._name, exc_info=exc)
            else:
                error = task.result() is _EXITED
        with self.lock:
            self._finish_locked(t, deadline, start, end, error)

    def _finish_locked(
        self, t: _Timer, deadline: float, start: float, end: float, error: bool
    ) -> None:
        self._record_locked((t, deadline, start, end, error))

    def _record_locked(self, runs: Sequence[Any]) -> None:
        """Account for finished runs, given flat: ``timer, deadline, start, end, error, ...``.

        The hottest code of a busy timer process (once per tick), hence literal indexes
        into ``_acc`` (see _RUNS ... _RT_MAX) and no call per run but ``lateness_add``.
        """
        add = lateness_add
        for j in range(0, len(runs), 5):
            t = runs[j]
            start = runs[j + 2]
            t._inflight -= 1
            acc = t._acc
            if acc is None:
                acc = t._acc = array("d", _ACC_ZERO)
            acc[0] += 1.0  # _RUNS
            if runs[j + 4]:
                acc[1] += 1.0  # _ERRORS
            acc[2] = start  # _LAST
            runtime = runs[j + 3] - start
            acc[3] += runtime  # _RT_SUM
            if runtime > acc[4]:  # _RT_MAX
                acc[4] = runtime
            t._hist = add(t._hist, start - runs[j + 1])
        if self.busy == 0 and self._idle_waiters:
            self._idle.notify_all()

    # -- shutdown -------------------------------------------------------------------------

    def wait_idle(self, timeout: float) -> bool:
        """Block until no plain callback is executing (True) or ``timeout`` s pass (False)."""
        with self.lock:
            self._idle_waiters += 1
            try:
                return self._idle.wait_for(lambda: self.busy == 0, timeout)
            finally:
                self._idle_waiters -= 1

    async def shutdown_hook(self, timeout: float) -> None:
        """Stop every timer, then wait up to ``timeout`` s for callbacks still running.

        Registered with ``_runtime.add_shutdown_hook`` at the first ``start()``; runs on
        the main loop. Async callbacks on this loop still running at the end are cancelled;
        plain callbacks in worker threads cannot be, and are reported.
        """
        with self.lock:
            self._hook_registered = False
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
            if not await asyncio.to_thread(self.wait_idle, left):
                log.warning("%d timer callback(s) still running after shutdown", self.busy)
        log.debug("shutdown: stopped %d timer(s)", len(timers))


_EXITED: Final = object()  # what _contained returns for a run that raised SystemExit & co.


def _log_exit(t: _Timer, exc: BaseException) -> None:
    log.error("timer %s: callback raised %s; the worker keeps running (App.stop() stops it)",
              t._name, type(exc).__name__, exc_info=exc)


async def _contained(t: _Timer, coro: Any) -> Any:
    """Await an ``async def`` callback's run so that ``SystemExit``/``KeyboardInterrupt``
    end the run, not the event loop (a Task re-raises them out of ``run_forever()``)."""
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        _log_exit(t, exc)
        return _EXITED


def _call_soon_threadsafe(loop: Loop, fn: Callable[[], None]) -> None:
    loop.call_soon_threadsafe(fn)


def _precise_sleeps() -> None:
    """Ask Linux for exact wake-ups on the calling (timer) thread.

    By default the kernel may defer a timed wait by the thread's "timer slack" (50 us,
    more on VMs) to batch wake-ups; for the one thread whose job is waking on time, a
    slack of 1 ns halved the median and p99 lateness in our benchmark. Best effort: a
    no-op where prctl is unavailable.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        pass


_ENGINE: Final = _Engine()
"""The process's one timer engine (its thread starts with the first timer)."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ENGINE.after_fork_in_child)


class _Timer:
    """Common core of the four timer classes (not public: use the QE names)."""

    __slots__ = (
        "_acc",
        "_args",
        "_armed",
        "_callback",
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
    _engine: ClassVar[_Engine] = _ENGINE  # tests subclass with a virtual-clock engine

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
        self._callback = callback
        self._args = args
        self._kwargs = kwargs or None
        self._interval = seconds
        self._name = name if name is not None else _name_of(callback)
        self._skip = policy is MisfirePolicy.SKIP
        self._max_instances = max_instances
        self._is_coro = _is_async(callback)
        self._loop: Loop | None = None
        self._state = RunState.NEW
        self._armed = 0
        self._origin = 0.0
        self._n = 0
        self._inflight = 0
        self._acc: array[float] | None = None  # allocated at the first run
        self._missed = 0
        self._hist: Any = None

    def _start(self, key: tuple[str, Hashable] | None) -> None:
        eng = self._engine
        loop = eng.resolve_loop() if (self._SAFE or self._is_coro) else None
        eng.start(self, loop, key)

    def stop(self) -> bool:
        """Stop the timer. Idempotent; callable from any thread and from the callback.

        Once it returns, no new tick is started: whether a handed-over tick may run is
        decided under the engine lock, so only a run already under way (or decided just
        before) finishes. Returns True if this call stopped it, False if it was not running.
        """
        return self._engine.stop(self)

    def reset(self) -> bool:
        """Postpone the next tick to now + interval (a watchdog kick); the grid restarts there.

        Returns False (and does nothing) if the timer is not running, or if it is a
        timeout whose tick has already been handed over.
        """
        return self._engine.reset(self)

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
        return self._engine.snapshot(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r} {self._interval * 1000.0:g} ms {self._state}>"


class SetInterval(_Timer):
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


class SetTimeout(_Timer):
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
        return self._engine.stop(self)

    @property
    def delay_ms(self) -> float:
        return self._interval * 1000.0


class SetTimeoutSafe(SetTimeout):
    """``SetTimeout`` whose callback runs on the worker's event loop thread (see
    ``SetIntervalSafe``)."""

    __slots__ = ()
    _SAFE = True


def setInterval(ms: float, key: Hashable | None = None, safe: bool = False) -> Callable[[F], F]:
    """Nexus-style decorator: start an interval for the decorated function at once.

    ``@setInterval(1000)`` returns the function itself, unchanged and still directly
    callable, with the running timer attached as ``fn.timer`` (when the object accepts
    attributes). The key for ``clearInterval`` defaults to ``fn.__name__``; decorating
    again with a key in use stops the older timer (logged). ``safe=True`` runs the callback
    on the event loop (``SetIntervalSafe``), otherwise on a worker thread; an ``async def``
    function always runs as a task on the event loop.
    """

    def decorate(fn: F) -> F:
        cls = SetIntervalSafe if safe else SetInterval
        timer = cls(fn, ms)
        timer._start(("interval", _key_of(fn) if key is None else key))
        _attach(fn, timer)
        return fn

    return decorate


def setTimeout(ms: float, key: Hashable | None = None, safe: bool = False) -> Callable[[F], F]:
    """Nexus-style decorator: call the decorated function once, ``ms`` milliseconds from now.

    Same conventions as ``setInterval`` (returns the function, ``fn.timer``, key defaults
    to ``fn.__name__``, ``safe=True`` runs it on the event loop); cancel with
    ``clearTimeout(key)``.
    """

    def decorate(fn: F) -> F:
        cls = SetTimeoutSafe if safe else SetTimeout
        timer = cls(fn, ms)
        timer._start(("timeout", _key_of(fn) if key is None else key))
        _attach(fn, timer)
        return fn

    return decorate


def clearInterval(key: Hashable) -> bool:
    """Stop the interval started by ``@setInterval`` under ``key``.

    Returns True if one was running, False for an unknown or already stopped key.
    """
    return _ENGINE.clear(("interval", key))


def clearTimeout(key: Hashable) -> bool:
    """Cancel the pending ``@setTimeout`` under ``key``; False if unknown or already fired."""
    return _ENGINE.clear(("timeout", key))


def timer_stats() -> list[TimerStats]:
    """Statistics of every live timer (started, not yet stopped or fired), in no set order."""
    return [_ENGINE.snapshot(t) for t in _ENGINE.live_timers()]


def _attach(fn: Any, timer: _Timer) -> None:
    with contextlib.suppress(AttributeError, TypeError):
        fn.timer = timer


def _key_of(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) else _name_of(fn)


def _name_of(callback: Callable[..., Any]) -> str:
    name = getattr(callback, "__qualname__", None)
    return name if isinstance(name, str) else repr(callback)


def _is_async(callback: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(callback):
        return True
    call = getattr(callback, "__call__", None)  # noqa: B004 - async __call__ objects
    return call is not None and inspect.iscoroutinefunction(call)
