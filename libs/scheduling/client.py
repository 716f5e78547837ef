"""Asking a worker to run its commands on a schedule, from Python.

    worker = RemoteWorker(client, "worker@example.org/python")   # client: Client or App
    handle = await worker.every("5s").call("report", {"to": "ops"})
    ...
    await handle.cancel()

The triggers are checked locally first (``ValueError`` before anything is sent); the worker
checks them again, since other clients may not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .._enums import MisfirePolicy
from .triggers import format_duration, parse_duration, trigger_from_spec

__all__ = ["JobHandle", "RemoteWorker"]


class _Caller(Protocol):
    async def call(self, jid: str, cmd: str, body: dict[str, Any] | None = None, *,
                   timeout: float = 10.0) -> dict[str, Any]: ...


@dataclass(frozen=True)
class JobHandle:
    """A scheduled job on a remote worker."""

    worker: RemoteWorker
    id: str
    next_run: str
    trigger: str

    async def cancel(self) -> None:
        """Cancel all remaining runs (``RemoteError`` if the job is gone or not ours)."""
        await self.worker.cancel(self.id)

    async def info(self) -> dict[str, Any]:
        for job in await self.worker.jobs():
            if job["job"] == self.id:
                return job
        raise LookupError(f"job {self.id} is not listed by {self.worker.jid}")


@dataclass(frozen=True)
class _Plan:
    worker: RemoteWorker
    trigger: dict[str, Any]

    async def call(self, cmd: str, body: dict[str, Any] | None = None, *,
                   misfire: MisfirePolicy | str = MisfirePolicy.COALESCE,
                   notify: bool = False) -> JobHandle:
        """Schedule ``cmd(body)``; ``notify`` sends each run's result to us as a chat message."""
        answer = await self.worker.caller.call(self.worker.jid, "schedule", {
            "cmd": cmd, "body": body or {}, "trigger": self.trigger, "misfire": misfire, "notify": notify,
        }, timeout=self.worker.timeout)
        return JobHandle(self.worker, answer["job"], answer["next_run"], answer["trigger"])


class RemoteWorker:
    """The scheduling commands of the worker at full JID ``jid``."""

    def __init__(self, caller: _Caller, jid: str, *, timeout: float = 10.0) -> None:
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
