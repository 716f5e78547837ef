"""Periodic tasks: run a function on a trigger, with statistics, on the shared timer thread.

Why not one ``asyncio.sleep`` loop per task (PrismQ's ``PeriodicTask``): sleeping
``interval`` after each run drifts by the run time, a stalled process replays nothing or
everything, and a blocking function freezes the loop. Here the work is split in two:

* :class:`_Schedule` -- the decision logic, sans-IO: given the wall-clock instant the caller
  passes in, *when* to wake up next (``plan``) and *what* to run now (``fire``). It only
  calls the trigger and :func:`~libs.scheduling.triggers.due_runs`; unit tests drive it
  with a virtual clock and no waiting.
* :class:`PeriodicTask` -- the live driver. It arms **one** one-shot ``SetTimeoutSafe`` at
  a time on the process's single timer thread (``libs.timers``), computing the
  delay from the wall clock to the next planned fire time; on each wake-up it asks the
  schedule what to run and re-arms. Sleeps are capped (``_MAX_SLEEP``), so wall-clock jumps
  and suspended machines are noticed within a minute and handled by the misfire policy.

Thread affinity: every callback of this module (the wake-up, ``on_result``, async task
functions) runs on the worker's event loop thread; plain (``def``) task functions run on the
process's shared thread pool (``_runtime.to_thread``, ``qe-pool_N`` threads), never on the
loop. Control methods
(``start``, ``stop``, the manager's methods) must be called on that loop's thread, or
``start`` before the loop runs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from libs import _runtime
from libs._enums import MisfirePolicy, RunState
from libs.timers import SetTimeoutSafe

from ._time import aware_utc, iso
from .triggers import (
    IntervalTrigger,
    Trigger,
    due_runs,
    format_duration,
    trigger_from_spec,
)

__all__ = ["PeriodicTask", "PeriodicTaskManager", "RunRecord"]

log = logging.getLogger(__name__)

_MAX_SLEEP: Final = timedelta(seconds=60)
"""Longest single wait. The timer thread sleeps on the monotonic clock, which stops while a
machine is suspended and ignores wall-clock steps; waking at least this often re-reads the
wall clock so a task is never more than this late after either."""

_GRACE_S: Final = 1.0
"""How late a run may start and still count as on time under ``misfire="skip"`` (plus the
trigger's jitter, which delays runs on purpose)."""

_CANCEL_GRACE_S: Final = 1.0
"""How long ``stop()`` waits for a cancelled async run to unwind before giving up on it."""



def _utc_now() -> datetime:
    return datetime.now(UTC)


def _to_trigger(value: object) -> Trigger:
    """A trigger from what users pass as ``interval``: Trigger, spec dict or a duration."""
    if isinstance(value, Trigger):
        return value
    if isinstance(value, dict):
        return trigger_from_spec(value)
    if isinstance(value, (timedelta, int, float, str)) and not isinstance(value, bool):
        return IntervalTrigger(value)  # raises "bad interval <value>: ..." naming the input
    raise ValueError(
        f"bad interval {value!r}: use a timedelta, seconds, a duration like '5s' or '1h30m', "
        "a Trigger, or a spec dict such as {'every': '5s'}, {'at': [...]}, {'cron': '*/5 * * * *'}"
    )


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What one run did; handed to ``on_result`` (on the event loop) after every run.

    ``task`` is the task's name. ``scheduled_for`` is the planned fire time the run stands
    for (aware UTC; jitter not included); ``started_at``/``finished_at`` are read from the
    task's clock. ``ok`` is False when the function raised or the run was cancelled by
    ``stop()``; then ``error`` holds the exception and ``result`` is None. ``result`` is the
    function's return value (async and plain alike). ``missed`` counts the fire times this
    run coalesced (0 when it ran on time).
    """

    task: str
    scheduled_for: datetime
    started_at: datetime
    finished_at: datetime
    ok: bool
    result: Any
    error: BaseException | None
    missed: int


# --------------------------------------------------------------------------- the schedule


class _Schedule:
    """When a periodic task runs: pure state driven by the instants the caller passes in.

    No clock reads, no IO. ``start(now)`` anchors it; then the driver repeatedly sleeps
    until ``plan(now)`` and calls ``fire(now)``, which says which fire time to run now (or
    None) and how many fire times were missed. Fire times come from the trigger, never from
    "last run + interval", so late wake-ups do not drift the schedule.
    """

    __slots__ = (
        "_grace_s",
        "_jitter_for",
        "_jittered",
        "_rand",
        "max_sleep",
        "misfire",
        "planned",
        "started",
        "trigger",
    )

    def __init__(
        self,
        trigger: Trigger,
        misfire: MisfirePolicy | str = MisfirePolicy.COALESCE,
        *,
        rand: Callable[[], float] = random.random,
        max_sleep: timedelta = _MAX_SLEEP,
    ) -> None:
        self.trigger = trigger
        self.misfire = MisfirePolicy.parse(misfire)
        self.planned: datetime | None = None  # the next fire time that has not run
        self.started = False
        self._rand = rand
        self._grace_s = _GRACE_S + trigger.jitter_s
        self._jitter_for: datetime | None = None  # the planned time _jittered belongs to
        self._jittered: datetime | None = None
        self.max_sleep = max_sleep

    def start(self, now: datetime, next_run: datetime | None = None) -> None:
        """Anchor the trigger at ``now`` and plan the first fire time.

        ``next_run`` restores a persisted plan: that instant is planned instead, even if it
        has passed (``fire`` then applies the misfire policy). An interval trigger without
        a start is anchored so that its grid goes through ``next_run``, which keeps the
        count of missed fire times right after a long downtime.
        """
        now = aware_utc(now, "now")
        if next_run is None:
            self.trigger = self.trigger.anchored(now)
            self.planned = self.trigger.next_fire(now)
        else:
            next_run = aware_utc(next_run, "next_run")
            trigger = self.trigger
            if isinstance(trigger, IntervalTrigger) and trigger.start is None:
                trigger = trigger.anchored(next_run - trigger.interval)
            self.trigger = trigger.anchored(now)
            self.planned = next_run
        self.started = True

    @property
    def finished(self) -> bool:
        """True once started and the trigger has no more fire times."""
        return self.started and self.planned is None

    def _wake_time(self) -> datetime | None:
        """The planned fire time plus its jitter, drawn once per planned fire time."""
        planned = self.planned
        if planned is None:
            return None
        if self._jitter_for != planned:
            self._jittered = self.trigger.apply_jitter(planned, self._rand)
            self._jitter_for = planned
        return self._jittered

    def plan(self, now: datetime) -> datetime | None:
        """When to wake up next: the jittered fire time, but at most ``max_sleep`` after
        ``now``. May be in the past (wake at once). None: finished, nothing more to run."""
        wake = self._wake_time()
        if wake is None:
            return None
        return min(wake, aware_utc(now, "now") + self.max_sleep)

    def fire(self, now: datetime) -> tuple[datetime | None, int]:
        """What to do at ``now``: ``(run_for, missed)``.

        ``run_for`` is the fire time to run once now, or None (not due yet, or a misfire the
        policy drops). ``missed`` counts fire times that get no run of their own. Advances
        the plan past ``now`` whenever something was due.
        """
        now = aware_utc(now, "now")
        wake = self._wake_time()
        if wake is None or now < wake or self.planned is None:
            return None, 0
        run_for, missed, following = due_runs(
            self.trigger, self.planned, now, self.misfire, grace_s=self._grace_s
        )
        self.planned = following
        return run_for, missed


# --------------------------------------------------------------------------- the task


class PeriodicTask:
    """Run ``task_func(*args, **kwargs)`` on a schedule, on the worker's event loop.

    ``interval`` is a ``timedelta``, seconds (int/float), a duration text (``"5s"``,
    ``"1h30m"``), a :class:`Trigger`, or a trigger spec dict (``{"every": "5s"}``,
    ``{"at": [...]}``, ``{"cron": "0 3 * * *", "tz": "Europe/Berlin"}``); anything else
    raises ``ValueError`` naming it. For every option use :meth:`create`.

    Where the function runs: an ``async def`` function runs as a task on the event loop; a
    plain function runs on the process's shared pool of ``qe-pool`` threads (so it never
    blocks the loop; it must be thread-safe with respect to the loop). If a plain function returns
    an awaitable, that is awaited on the loop.

    Behaviour: an exception is logged (``libs.scheduling.periodic``, with the task's name),
    counted and kept as ``last_error``; the task keeps running. A fire time that comes while
    the previous run is still going is skipped and counted (``skipped_count``). Fire times
    missed while the process was busy, suspended or down follow the misfire policy (one
    catch-up run, or none) -- never a burst. Nothing runs before :meth:`start`.
    """

    def __init__(
        self, name: str, interval: object, task_func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        self._setup(name, _to_trigger(interval), task_func, args, kwargs, MisfirePolicy.COALESCE, None, True, None, None)

    @classmethod
    def create(
        cls,
        name: str,
        trigger: Trigger | dict[str, Any] | timedelta | float | str,
        func: Callable[..., Any],
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        misfire: MisfirePolicy | str = MisfirePolicy.COALESCE,
        next_run: datetime | None = None,
        max_overlap_skip: bool = True,
        on_result: Callable[[RunRecord], None] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> PeriodicTask:
        """The full constructor (for programmatic use, e.g. remote scheduling).

        * ``misfire``: ``"coalesce"`` (one catch-up run for fire times missed while the
          process was busy, suspended or down) or ``"skip"`` (none; they are only counted).
        * ``next_run``: restore a persisted plan (``task.next_run`` of an earlier task,
          with ``task.trigger.to_spec()``). If it has passed at ``start()``, the misfire
          policy decides: one run now (coalesce) or none (skip); the missed ones are counted.
        * ``max_overlap_skip``: True (default) skips a fire time while the previous run is
          still going; False lets runs overlap.
        * ``on_result(record)``: called on the event loop after every run with a
          :class:`RunRecord`; its exceptions are logged and ignored.
        * ``clock``: returns the current aware datetime (default: ``datetime.now(UTC)``);
          delays are computed from it, so tests may shift time.
        """
        task = cls.__new__(cls)
        task._setup(
            name,
            _to_trigger(trigger),
            func,
            tuple(args),
            dict(kwargs or {}),
            misfire,
            next_run,
            max_overlap_skip,
            on_result,
            clock,
        )
        return task

    def _setup(
        self,
        name: str,
        trigger: Trigger,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        misfire: MisfirePolicy | str,
        next_run: datetime | None,
        max_overlap_skip: bool,
        on_result: Callable[[RunRecord], None] | None,
        clock: Callable[[], datetime] | None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"bad task name {name!r}: expected a non-empty string")
        if not callable(func):
            raise TypeError(f"task function of {name!r} must be callable, not {type(func).__name__}")
        if on_result is not None and not callable(on_result):
            raise TypeError(f"on_result of {name!r} must be callable, not {type(on_result).__name__}")
        self._name = name
        self._func = func
        self._args = args
        self._kwargs = kwargs
        self._is_async = _runtime.is_async(func)
        self._schedule = _Schedule(trigger, misfire)
        self._restore = None if next_run is None else aware_utc(next_run, "next_run")
        self._overlap_skip = bool(max_overlap_skip)
        self._on_result = on_result
        self._clock = clock if clock is not None else _utc_now
        self._state = RunState.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: SetTimeoutSafe | None = None
        self._runs: dict[asyncio.Task[None], bool] = {}  # in flight -> is a thread run
        self._run_count = 0
        self._error_count = 0
        self._skipped_count = 0
        self._missed_count = 0
        self._last_run: datetime | None = None
        self._last_error: str | None = None
        self._runtime_sum = 0.0
        self._runtime_max = 0.0

    # -- properties

    @property
    def name(self) -> str:
        return self._name

    @property
    def trigger(self) -> Trigger:
        """The trigger; after ``start()`` the anchored one (persist its ``to_spec()``)."""
        return self._schedule.trigger

    @property
    def next_run(self) -> datetime | None:
        """The next planned fire time (aware UTC, without jitter); None once finished.

        Before ``start()`` it is the restored ``next_run`` or None. After ``stop()`` it keeps
        the fire time that would have come next, so it can be persisted and restored.
        """
        if not self._schedule.started:
            return self._restore
        return self._schedule.planned

    @property
    def is_running(self) -> bool:
        """True from ``start()`` until ``stop()`` or until the trigger has no more fire times
        (a :class:`DateTrigger` after its last instant) and the last run has ended."""
        return self._state is RunState.RUNNING

    @property
    def statistics(self) -> dict[str, Any]:
        """A JSON-able snapshot: name, trigger (description), interval (for interval
        triggers, e.g. ``"5m"``, else None), is_running, in_flight, run_count, error_count,
        skipped_count (overlaps), missed_count (misfires), last_run (ISO, start of the last
        finished run), last_error, next_run (ISO), mean_runtime_s, max_runtime_s."""
        trigger = self._schedule.trigger
        runs = self._run_count
        return {
            "name": self._name,
            "trigger": trigger.describe(),
            "interval": format_duration(trigger.interval) if isinstance(trigger, IntervalTrigger) else None,
            "is_running": self.is_running,
            "in_flight": len(self._runs),
            "run_count": runs,
            "error_count": self._error_count,
            "skipped_count": self._skipped_count,
            "missed_count": self._missed_count,
            "last_run": iso(self._last_run),
            "last_error": self._last_error,
            "next_run": iso(self.next_run),
            "mean_runtime_s": self._runtime_sum / runs if runs else None,
            "max_runtime_s": self._runtime_max if runs else None,
        }

    def __repr__(self) -> str:
        return f"<PeriodicTask {self._name!r} {self._schedule.trigger.describe()} {self._state}>"

    # -- control

    def start(self) -> PeriodicTask:
        """Start the schedule; returns self. A task starts once (``RuntimeError`` otherwise).

        Call it on the event loop's thread, or before the loop runs: the task binds to the
        running loop, else to the worker's main loop (``_runtime.main_loop()``). Nothing
        runs on the calling thread; the first run comes at the trigger's first fire time.
        """
        if self._state is not RunState.NEW:
            raise RuntimeError(
                f"periodic task {self._name!r} was already started ({self._state}); "
                "a task starts once: create a new one"
            )
        self._loop = _runtime.main_loop()
        self._schedule.start(self._clock(), self._restore)
        self._state = RunState.RUNNING
        _runtime.add_shutdown_hook(self.stop)
        self._arm()
        return self

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop: no run starts after this returns. Idempotent. Await it on the task's loop.

        A run in flight gets up to ``timeout`` seconds to finish. An async run still going
        then is cancelled (and given up to a second to unwind). A plain function running in
        a thread cannot be cancelled (Python threads cannot be stopped from outside): it is
        left to finish in the background and a warning is logged.
        """
        if self._state in (RunState.NEW, RunState.RUNNING):
            self._state = RunState.STOPPED
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            _runtime.remove_shutdown_hook(self.stop)
        current = asyncio.current_task()
        runs = {task: threaded for task, threaded in self._runs.items() if task is not current}
        if not runs:
            return
        _, pending = await asyncio.wait(runs, timeout=max(0.0, timeout))
        cancelled = [task for task in pending if not runs[task]]
        for task in cancelled:
            task.cancel()
        if cancelled:
            _, stuck = await asyncio.wait(cancelled, timeout=_CANCEL_GRACE_S)
            log.warning(
                "periodic task %r: cancelled %d async run(s) still going after %.3g s%s",
                self._name,
                len(cancelled),
                timeout,
                f" ({len(stuck)} ignored the cancellation)" if stuck else "",
            )
        threads = sum(1 for task in pending if runs[task])
        if threads:
            log.warning(
                "periodic task %r: %d run(s) in a worker thread still going after %.3g s; "
                "threads cannot be cancelled, they finish in the background",
                self._name,
                threads,
                timeout,
            )

    # -- the driver (event loop thread)

    def _arm(self) -> None:
        now = self._clock()
        wake = self._schedule.plan(now)
        if wake is None:
            self._finish_if_idle()
            return
        delay_ms = max(0.0, (wake - now).total_seconds() * 1000.0)
        timer = SetTimeoutSafe(self._wake, delay_ms, name=f"periodic:{self._name}")
        timer.start()
        self._timer = timer

    def _wake(self) -> None:
        """Timer callback (on the loop): run what is due, then re-arm."""
        self._timer = None
        if self._state is not RunState.RUNNING:
            return
        try:
            run_for, missed = self._schedule.fire(self._clock())
            if missed:
                self._missed_count += missed
                log.info("periodic task %r: %d fire time(s) missed (misfire=%s)", self._name, missed, self._schedule.misfire)
            if run_for is not None:
                if self._runs and self._overlap_skip:
                    self._skipped_count += 1
                    log.debug(
                        "periodic task %r: run for %s skipped: the previous run is still going",
                        self._name,
                        iso(run_for),
                    )
                else:
                    self._launch(run_for, missed)
            self._arm()
        except Exception as exc:  # a broken trigger or a closed loop: stop, loudly
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._state = RunState.FINISHED
            _runtime.remove_shutdown_hook(self.stop)
            log.exception("periodic task %r: scheduling failed; the task stops", self._name)

    def _launch(self, run_for: datetime, missed: int) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._run(run_for, missed), name=f"periodic:{self._name}")
        self._runs[task] = not self._is_async
        task.add_done_callback(self._run_done)

    def _run_done(self, task: asyncio.Task[None]) -> None:
        self._runs.pop(task, None)
        self._finish_if_idle()

    def _finish_if_idle(self) -> None:
        if self._state is RunState.RUNNING and self._schedule.finished and not self._runs:
            self._state = RunState.FINISHED
            _runtime.remove_shutdown_hook(self.stop)
            log.debug("periodic task %r: no more fire times, finished", self._name)

    async def _call(self) -> Any:
        if self._is_async:
            return await self._func(*self._args, **self._kwargs)
        result = await _runtime.to_thread(self._func, *self._args, **self._kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _run(self, run_for: datetime, missed: int) -> None:
        started_at = self._clock()
        t0 = time.perf_counter()
        result: Any = None
        error: BaseException | None = None
        try:
            result = await self._call()
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            # SystemExit & co. included: raised in a task they would end run_forever(), the
            # whole worker without its shutdown; App.stop() is how a task stops the worker.
            error = exc
            self._error_count += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            # an exception class may set ``log_traceback = False`` when its message says all
            traceback = exc if getattr(exc, "log_traceback", True) else None
            what = exc if isinstance(exc, Exception) else f"{self._last_error} (the worker keeps running)"
            log.error("periodic task %r: run for %s failed: %s", self._name, iso(run_for), what, exc_info=traceback)
        except BaseException as exc:  # cancelled by stop()
            error = exc
            raise
        finally:
            runtime = time.perf_counter() - t0
            self._run_count += 1
            self._runtime_sum += runtime
            self._runtime_max = max(self._runtime_max, runtime)
            self._last_run = started_at
            current = asyncio.current_task()
            if current is not None:
                self._runs.pop(current, None)
            self._finish_if_idle()
            record = RunRecord(
                task=self._name,
                scheduled_for=run_for,
                started_at=started_at,
                finished_at=self._clock(),
                ok=error is None,
                result=result,
                error=error,
                missed=missed,
            )
            self._report(record)

    def _report(self, record: RunRecord) -> None:
        if self._on_result is None:
            return
        try:
            self._on_result(record)
        except Exception:
            log.exception("periodic task %r: on_result raised", self._name)


# --------------------------------------------------------------------------- the manager


class PeriodicTaskManager:
    """Tasks by name: register, start together, stop together, statistics for all.

    Call its methods on the event loop's thread (``start_all`` also before the loop runs).
    """

    def __init__(self) -> None:
        self._tasks: dict[str, PeriodicTask] = {}

    def register_task(
        self, name: str, interval: object, task_func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> PeriodicTask:
        """Create a :class:`PeriodicTask` (same arguments) and add it; it is not started.

        Raises ``ValueError`` if the name is taken or the interval is bad.
        """
        if name in self._tasks:
            raise ValueError(f"periodic task {name!r} is already registered")
        return self.add(PeriodicTask(name, interval, task_func, *args, **kwargs))

    def add(self, task: PeriodicTask) -> PeriodicTask:
        """Add a task built elsewhere (e.g. with ``PeriodicTask.create``); returns it."""
        if not isinstance(task, PeriodicTask):
            raise TypeError(f"expected a PeriodicTask, not {type(task).__name__}")
        if task.name in self._tasks:
            raise ValueError(f"periodic task {task.name!r} is already registered")
        self._tasks[task.name] = task
        return task

    async def unregister_task(self, name: str, timeout: float = 5.0) -> bool:
        """Stop the task (see ``PeriodicTask.stop``) and forget it. False if unknown."""
        task = self._tasks.pop(name, None)
        if task is None:
            return False
        await task.stop(timeout)
        return True

    def get_task(self, name: str) -> PeriodicTask | None:
        return self._tasks.get(name)

    def start_all(self) -> int:
        """Start every task that was never started; returns how many were started."""
        started = 0
        for task in list(self._tasks.values()):
            if task._state is RunState.NEW:
                task.start()
                started += 1
        return started

    async def stop_all(self, timeout: float = 5.0) -> None:
        """Stop every task, in parallel, each with up to ``timeout`` s for its runs."""
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.gather(*(task.stop(timeout) for task in tasks))

    def get_all_statistics(self) -> list[dict[str, Any]]:
        """``statistics`` of every task, in registration order."""
        return [task.statistics for task in list(self._tasks.values())]

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[PeriodicTask]:
        return iter(list(self._tasks.values()))
