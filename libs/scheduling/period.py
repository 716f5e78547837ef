"""``PERIOD``: seed 002's (daffi's) execution modifier, on our remote scheduling.

In daffi, ``exec_modifier=PERIOD(interval="5s")`` on a remote call makes the remote run the
callback on that schedule instead of once, and the call returns a ``ScheduledTask`` whose
``cancel()`` stops every remaining run. The same words here::

    task = await App.api(jid="worker@example.org/python", cmd="report", body={"to": "ops"},
                         exec_modifier=PERIOD(interval="5s"))
    task = await client.call("worker@example.org/python", "report", exec_modifier=PERIOD(at_time=[t1, t2]))
    await task.cancel()

The worker must have a ``JobScheduler``: the call becomes its ``schedule`` command (so the
job is stored and survives the worker's restarts, and runs with the caller's rights, as any
job scheduled with ``RemoteWorker``), and the handle is the same ``JobHandle``.
``ScheduledTask`` is daffi's name for it.

Pure construction (``ValueError`` at once for a bad ``PERIOD``); I/O only in ``submit``,
which ``Client.call``, ``App.call`` and ``App.api`` call with themselves as the caller.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from libs.bridge.client import Caller

from ._time import iso
from .client import JobHandle, RemoteWorker
from .triggers import DateTrigger, IntervalTrigger

__all__ = ["PERIOD", "ScheduledTask"]

ScheduledTask = JobHandle
"""daffi's name for what a call with ``exec_modifier=PERIOD(...)`` returns: the job's handle."""


class PERIOD:  # daffi's name, as seed 002 writes it
    """Run a call on a schedule: ``PERIOD(interval=...)`` or ``PERIOD(at_time=...)``, exactly one.

    ``interval``: a number of seconds (``5``, ``0.5``), a ``timedelta``, or text: ``"5s"``,
    ``"500ms"``, ``"1m24s"`` (84 s), ``"1.2 minutes"`` (72 s), ``"1h30m"``. The first run is
    one interval after the worker accepts the job; the worker refuses intervals below 100 ms.

    ``at_time``: one time or a list of them, each a UNIX timestamp (UTC seconds, e.g.
    ``time.time() + 10``), an aware ``datetime``, or ISO 8601 text with an offset
    (``"2030-05-01T12:00:00Z"``). A naive datetime or text without an offset is refused: it
    could mean any time zone. Every time must be in the future when the call is made (daffi's
    rule; it catches, among others, ``datetime.utcnow().timestamp()``, which is off by the
    local UTC offset). Duplicates run once.

    A value: immutable, comparable, reusable for many calls (daffi's class-level
    ``exec_modifier = PERIOD(...)``).
    """

    __slots__ = ("_trigger",)

    def __init__(self, at_time: Any = None, interval: Any = None) -> None:
        if (at_time is None) == (interval is None):
            raise ValueError("PERIOD takes exactly one of at_time= (a time or a list of times) and interval= "
                             "(e.g. '5s')")
        if isinstance(at_time, (list, tuple)) and not at_time:
            raise ValueError("PERIOD(at_time=[]): give at least one time")
        try:
            self._trigger: IntervalTrigger | DateTrigger = (
                IntervalTrigger(interval) if interval is not None else DateTrigger(at_time))
        except ValueError as exc:
            raise ValueError(f"PERIOD({'interval' if interval is not None else 'at_time'}=...): {exc}") from None

    @property
    def interval(self) -> timedelta | None:
        """The interval, or None for an ``at_time`` PERIOD."""
        return self._trigger.interval if isinstance(self._trigger, IntervalTrigger) else None

    @property
    def at_time(self) -> tuple[datetime, ...] | None:
        """The times (UTC, sorted, without duplicates), or None for an ``interval`` PERIOD."""
        return self._trigger.times if isinstance(self._trigger, DateTrigger) else None

    def to_spec(self) -> dict[str, Any]:
        """The trigger spec the worker's ``schedule`` command gets (docs/scheduling.md, *Forms*)."""
        return self._trigger.to_spec()

    async def submit(self, caller: Caller, jid: str, cmd: str, body: dict[str, Any] | None, *,
                     timeout: float) -> JobHandle:
        """Ask the worker at ``jid`` (through ``caller``: a ``Client`` or an ``App``) to run
        ``cmd(body)`` on this schedule; its handle, or the caller's ``CallError``s
        (``RemoteError("unknown-command")`` when the worker has no job scheduler),
        ``ValueError`` for a time that has passed (nothing is sent then)."""
        if isinstance(self._trigger, DateTrigger):
            now = datetime.now(UTC)
            passed = [t for t in self._trigger.times if t <= now]
            if passed:
                raise ValueError(f"PERIOD(at_time=...): {iso(passed[0])} is not in the future (now: {iso(now)}); "
                                 "give UTC timestamps such as time.time() + 10, or aware datetimes")
        return await RemoteWorker(caller, jid, timeout=timeout).plan(self.to_spec()).call(cmd, body)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PERIOD):
            return NotImplemented
        return self._trigger == other._trigger

    def __hash__(self) -> int:
        return hash(self._trigger)

    def __repr__(self) -> str:
        if isinstance(self._trigger, IntervalTrigger):
            return f"PERIOD(interval={self.to_spec()['every']!r})"
        return f"PERIOD(at_time={self.to_spec()['at']!r})"
