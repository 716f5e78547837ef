"""The callback pool: the worker threads that run plain callbacks of ``SetInterval``/``SetTimeout``.

Why not a ``ThreadPoolExecutor`` (like ``_runtime.executor()``): a tick is two items in a
deque (timer, deadline), not a work item and a Future per tick, and the pool shares the
engine's lock, so taking a tick and deciding whether it may still start (``stop()`` is
final) is one lock hold.

One awake worker drains the ready queue; more workers only help when callbacks block, and
cost GIL and lock contention otherwise. So a further worker is woken (or started, up to
``size``) only by the timer thread's watch (``watch_locked``), when the queue made no
progress for ``WATCH`` seconds while every awake worker was inside a callback: one slow
callback holds up other timers for about ``WATCH`` at most.

Thread affinity: ``put_locked`` and ``watch_locked`` with the engine's lock held (the timer
thread); the workers are daemon threads named ``qe-timer-cb-N``.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from ._callbacks import call_plain, log
from ._stats import stride_for

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["POOL_SIZE", "WATCH", "CallbackPool"]

POOL_SIZE: Final = min(32, (os.cpu_count() or 1) + 4)
"""Most worker threads for plain callbacks (the same bound as asyncio's default executor)."""

WATCH: Final = 0.002
"""Seconds without progress on a backlog after which the watch adds a worker."""


class CallbackPool:
    """Worker threads for plain ticks handed over by the engine (see the module doc)."""

    def __init__(self, engine: Engine, size: int = POOL_SIZE) -> None:
        self.engine = engine
        self.size = size
        self.after_fork_in_child()

    def after_fork_in_child(self) -> None:
        """Start afresh on the engine's (new) lock: the workers were not copied by fork()."""
        # Queued ticks are stored flat, timer then deadline, not as (timer, deadline) tuples:
        # tuples holding a timer are tracked by the garbage collector, and under a backlog
        # thousands of them would survive into the old generation.
        self.ready: deque[Any] = deque()
        self._work = threading.Condition(self.engine.lock)  # idle workers sleep here
        self._threads = 0  # workers started
        self._idle = 0  # ... waiting for work and not yet notified
        self._busy = 0  # ... inside a callback
        self._taken = 0  # ticks taken from ready so far (progress, for the watch)
        self._taken_seen = 0
        self._stuck_since = 0.0

    def put_locked(self, ticks: list[Any]) -> None:
        """Queue flat plain ticks (``timer, deadline, ...``) and make sure a worker is awake."""
        if not self.ready:  # a fresh backlog: the watch's stuck-clock starts now
            self._taken_seen = self._taken
            self._stuck_since = self.engine.clock()
        self.ready.extend(ticks)
        if self._threads - self._idle <= 0:
            self._add_worker_locked()

    def watch_locked(self, now: float) -> None:
        """Called by the timer thread while ``ready`` has a backlog: if no worker took a tick
        for ``WATCH`` seconds and every awake worker is inside a callback, wake or start one
        more (up to ``size``)."""
        if self._taken != self._taken_seen:
            self._taken_seen = self._taken
            self._stuck_since = now
        elif now - self._stuck_since >= WATCH:
            self._stuck_since = now
            if self._threads - self._idle - self._busy <= 0:
                self._add_worker_locked()

    def _add_worker_locked(self) -> None:
        if self._idle:
            self._idle -= 1  # the woken worker is awake from now on
            self._work.notify()
        elif self._threads < self.size:
            self._threads += 1
            threading.Thread(target=self._worker, name=f"qe-timer-cb-{self._threads}", daemon=True).start()

    def _worker(self) -> None:
        eng = self.engine
        lock = eng.lock
        ready = self.ready
        clock = eng.clock
        begin = eng.begin_locked
        finish = eng.finish_locked
        call = call_plain
        with lock:
            while True:
                # Sleep if there is nothing to do, or if another awake worker is between
                # callbacks and will take it: one worker drains, the others only step in
                # while it is stuck in a slow callback (GIL contention otherwise).
                if not ready or self._threads - self._idle - self._busy > 1:
                    self._idle += 1
                    self._work.wait()  # the notifier already took us off _idle
                    continue
                t = ready.popleft()
                deadline = ready.popleft()
                self._taken += 1
                if not begin(t):
                    continue
                self._busy += 1
                eng.busy += 1
                lock.release()
                error = True
                start = clock()
                try:
                    error = call(t)
                except BaseException:  # pragma: no cover - call_plain catches what callbacks raise
                    log.exception("timer %s: callback raised in a worker thread", t._name)
                finally:
                    end = clock()
                    lock.acquire()
                self._busy -= 1
                eng.busy -= 1
                # the backlog is this worker's batch: sample lateness under load (_stats.py)
                finish(t, deadline, start, end, error, stride_for(len(ready) // 2 + 1))
