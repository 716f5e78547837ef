"""Asking a worker to run its commands on a schedule, from Python.

    worker = RemoteWorker(client, "worker@example.org/python")   # client: Client or App
    handle = await worker.every("5s").call("report", {"to": "ops"})
    ...
    await handle.cancel()

The triggers are checked locally first (``ValueError`` before anything is sent); the worker
checks them again, since other clients may not. ``PERIOD`` (period.py) is daffi's way of
saying the same through ``exec_modifier=``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any

from libs import _runtime
from libs.bridge.client import Caller
from libs.bridge.errors import RemoteError

from .._enums import MisfirePolicy
from .triggers import format_duration, parse_duration, trigger_from_spec

__all__ = ["Cancellation", "JobHandle", "RemoteWorker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobHandle:
    """A scheduled job on a remote worker."""

    worker: RemoteWorker
    id: str
    next_run: str
    trigger: str
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False, compare=False)
    """The loop the handle was made on, which its connection belongs to."""

    def cancel(self) -> Cancellation:
        """Cancel all remaining runs. The request starts at once (see ``Cancellation``):
        ``await handle.cancel()`` waits for the worker's answer and raises what it says
        (``RemoteError`` if the job is gone or not ours, ``CallTimeout``...);
        ``handle.cancel()`` without ``await``, as daffi's scripts write it, cancels too, and
        a failure is then logged as a warning instead of raised."""
        return Cancellation(self.id, self.worker.cancel(self.id), self.loop)

    async def info(self) -> dict[str, Any]:
        for job in await self.worker.jobs():
            if job["job"] == self.id:
                return job
        raise LookupError(f"job {self.id} is not listed by {self.worker.jid}")


class Cancellation:
    """A cancel request already under way (what ``JobHandle.cancel()`` returns); awaitable.

    Why not a plain coroutine: daffi's ``task.cancel()`` is a statement of its own, and a
    coroutine that nobody awaits never runs, leaving a stored job running forever. This
    starts the request as a task and reports a failure nobody awaited in the log. Where:

    * on the running loop, when called on one (a coroutine, an ``async`` callback);
    * else on ``loop``, the handle's (else the worker's main loop): from another thread (a
      plain ``SetInterval`` callback) it is handed over to it; from a QE script's top-level
      statement under ``qe-worker run``, where no loop runs between statements, it starts
      as soon as the loop runs again (the script's next ``await``, or its shutdown).
    """

    __slots__ = ("_awaited", "_future", "job")

    def __init__(self, job: str, request: Coroutine[Any, Any, None],
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.job = job
        self._awaited = False
        self._future: asyncio.Future[None] | concurrent.futures.Future[None]
        try:
            self._future = asyncio.get_running_loop().create_task(request)
        except RuntimeError:  # no loop runs in this thread
            loop = loop or _runtime.main_loop()
            if loop.is_running():
                self._future = asyncio.run_coroutine_threadsafe(request, loop)
            else:
                self._future = loop.create_task(request)
        self._future.add_done_callback(self._done)

    def __await__(self) -> Generator[Any, None, None]:
        self._awaited = True
        future = self._future
        if isinstance(future, concurrent.futures.Future):
            return asyncio.wrap_future(future).__await__()
        return future.__await__()

    def done(self) -> bool:
        """True once the worker answered (or the request failed)."""
        return self._future.done()

    def _done(self, future: asyncio.Future[None] | concurrent.futures.Future[None]) -> None:
        if future.cancelled():
            return
        exc = future.exception()  # retrieved here, so that asyncio does not call it "never retrieved"
        if exc is not None and not self._awaited:
            log.warning("job %s: cancel failed: %s (await the cancel() to handle it)", self.job, exc)


@dataclass(frozen=True)
class _Plan:
    worker: RemoteWorker
    trigger: dict[str, Any]

    async def call(self, cmd: str, body: dict[str, Any] | None = None, *,
                   misfire: MisfirePolicy | str = MisfirePolicy.COALESCE,
                   notify: bool = False) -> JobHandle:
        """Schedule ``cmd(body)``; ``notify`` sends each run's result to us as a chat message."""
        jid = self.worker.jid
        no_scheduler = (f"{jid} has no job scheduler, so it cannot run {cmd!r} on a schedule "
                        "(a worker schedules jobs once it has JobScheduler(App), as the default worker does)")
        try:
            answer = await self.worker.caller.call(jid, "schedule", {
                "cmd": cmd, "body": body or {}, "trigger": self.trigger, "misfire": misfire, "notify": notify,
            }, timeout=self.worker.timeout)
        except RemoteError as exc:
            if exc.code == "unknown-command":  # nothing takes 'schedule' there
                raise RemoteError("unknown-command", no_scheduler) from None
            raise
        if not all(isinstance(answer.get(key), str) for key in ("job", "next_run", "trigger")):
            # an onapi handler took 'schedule' and answered something else (QE: {} for a command it ignores)
            raise RemoteError("unknown-command", f"{no_scheduler}; it answered 'schedule' with {answer!r:.200}")
        return JobHandle(self.worker, answer["job"], answer["next_run"], answer["trigger"],
                         asyncio.get_running_loop())


class RemoteWorker:
    """The scheduling commands of the worker at full JID ``jid``."""

    def __init__(self, caller: Caller, jid: str, *, timeout: float = 10.0) -> None:
        self.caller = caller
        self.jid = jid
        self.timeout = timeout

    @staticmethod
    def check(spec: dict[str, Any]) -> None:
        """``ValueError`` for a trigger spec the worker would refuse."""
        trigger_from_spec(spec)

    def plan(self, spec: dict[str, Any]) -> _Plan:
        """A plan from a raw trigger spec (``{"every"|"at"|"cron": ...}``)."""
        self.check(spec)  # fail here, with the local message, on bad input
        return _Plan(self, spec)

    def every(self, interval: Any, *, jitter: Any = None) -> _Plan:
        """Every ``interval`` (``"5s"``, seconds, or a ``timedelta``), first run one interval from now."""
        spec: dict[str, Any] = {"every": format_duration(parse_duration(interval))}
        if jitter is not None:
            spec["jitter"] = format_duration(parse_duration(jitter))
        return self.plan(spec)

    def at(self, *times: Any) -> _Plan:
        """At each of ``times`` (aware datetimes, UTC timestamps or ISO strings)."""
        return self.plan({"at": [t.isoformat() if hasattr(t, "isoformat") else t for t in times]})

    def cron(self, expression: str, tz: str = "UTC") -> _Plan:
        return self.plan({"cron": expression, "tz": tz})

    async def jobs(self) -> list[dict[str, Any]]:
        return list((await self.caller.call(self.jid, "jobs", {}, timeout=self.timeout))["jobs"])

    async def cancel(self, job_id: str) -> None:
        await self.caller.call(self.jid, "cancel", {"job": job_id}, timeout=self.timeout)
