"""Remote scheduling: callers ask a worker over XMPP to run one of its commands on a trigger.

daffi's ``PERIOD`` idea on our wire protocol. A ``JobScheduler`` attached to an ``App`` adds
three commands:

- ``schedule`` ``{"cmd", "body"?, "trigger": {"every"|"at"|"cron"...}, "misfire"?, "notify"?}``
  -> ``{"job", "next_run", "trigger"}``;
- ``cancel`` ``{"job"}`` -> ``{"cancelled"}`` (own jobs; the worker's owner: any job);
- ``jobs`` -> ``{"jobs": [...]}`` (own jobs; the owner: all).

Jobs live in a ``JobStore`` (SQLite) and survive restarts; runs missed while the worker was
down follow the job's misfire policy (``coalesce``: one catch-up run; ``skip``: none). Each
run goes through the dispatcher as if the requester had called, with the requester's role
checked again at run time: a caller removed from ``QE_ALLOW`` loses its jobs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from libs._enums import JobStatus, MisfirePolicy
from libs.bridge.protocol import ApiError, ApiRequest, ProtocolError, decode_result
from libs.bridge.serial import serial_generator
from libs.bridge.specs import APISpecs
from libs.observability.tracing import carrier

from ._time import iso
from .periodic import PeriodicTask, RunRecord
from .store import Job, JobStore, default_state_dir
from .triggers import IntervalTrigger, Trigger, trigger_from_spec

if TYPE_CHECKING:
    from libs.bridge.app import App

__all__ = ["JobRunError", "JobScheduler", "default_store_path"]

log = logging.getLogger(__name__)

_MIN_INTERVAL_S = 0.1


class JobRunError(Exception):
    """A scheduled run whose command answered with an error (logged in one line: the
    command's own failure was already logged with its traceback by the dispatcher)."""

    log_traceback = False

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def default_store_path(app: App) -> Path:
    """``<QE_STATE_DIR or ~/.local/state/qe-worker>/jobs-<user@domain>-<resource>.sqlite3``."""
    base = Path(app.config.state_dir) if app.config.state_dir else default_state_dir()
    safe = "".join(c if c.isalnum() or c in "@.-_" else "_" for c in f"{app.config.jid}-{app.resource}")
    return base / f"jobs-{safe}.sqlite3"


class JobScheduler:
    """Owns the remotely scheduled jobs of one worker. Create it before the loop runs (or
    inside it); jobs stored earlier start when the worker starts."""

    RESERVED = frozenset({"schedule", "cancel", "jobs"})

    def __init__(self, app: App, store: JobStore | None = None, *, max_jobs_per_caller: int = 100) -> None:
        self.app = app
        self.store = store or JobStore(default_store_path(app))
        self.max_jobs_per_caller = max_jobs_per_caller
        self.tasks: dict[str, PeriodicTask] = {}
        self._scheduled_by: dict[str, dict[str, str]] = {}  # job id -> trace context of the call that made it
        app.scheduler = self  # its jobs in the worker's metrics
        self._changed: asyncio.Condition | None = None
        app.command("schedule")(self._cmd_schedule)
        app.command("cancel")(self._cmd_cancel)
        app.command("jobs")(self._cmd_jobs)
        app.on_start(self.start)
        app.on_close(self.stop)

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        for job in self.store.list(status=JobStatus.ACTIVE):
            self._launch(job)
        log.info("job scheduler started with %d stored job(s)", len(self.tasks))

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop all jobs (they stay stored and resume at the next start) and close the store;
        ``App.close()`` calls this."""
        tasks, self.tasks = list(self.tasks.values()), {}
        await asyncio.gather(*(task.stop(timeout=timeout) for task in tasks))
        self.store.close()

    def _launch(self, job: Job) -> None:
        trigger = trigger_from_spec(job.trigger)
        next_run = None if job.next_run is None else datetime.fromtimestamp(job.next_run, UTC)
        task = PeriodicTask.create(
            f"job:{job.id}", trigger, self._run_job, args=(job.id,), misfire=job.misfire,
            next_run=next_run, on_result=self._on_result,
        )
        self.tasks[job.id] = task
        task.start()

    # -- runs -----------------------------------------------------------------------------

    async def _run_job(self, job_id: str) -> dict[str, Any]:
        job = self.store.get(job_id)
        if job is None or job.status != JobStatus.ACTIVE:
            raise JobRunError("not-found", "the job no longer exists")
        role = self.app.policy.role_of(job.requester)
        if role is None:
            self._end(job, JobStatus.CANCELLED, "the requester is no longer allowed on this worker")
            raise JobRunError("forbidden", "the requester is no longer allowed on this worker")
        request = ApiRequest(id=f"job-{job.id}-{job.run_count + 1}", sender=job.requester, cmd=job.cmd, body=job.body,
                             trace=self._scheduled_by.get(job.id))
        answer = await self.app.dispatcher.execute(request, role)
        if isinstance(answer, ApiError):
            raise JobRunError(answer.code, answer.message)
        return decode_result(answer.payload)

    def _on_result(self, record: RunRecord) -> None:
        if isinstance(record.error, asyncio.CancelledError):
            return  # stopped at shutdown: not a failure; the stored next_run makes it up later
        job_id = record.task.removeprefix("job:")
        job = self.store.get(job_id)
        task = self.tasks.get(job_id)
        if job is None:
            return
        next_run = task.next_run if task is not None else None
        changes: dict[str, Any] = {
            "run_count": job.run_count + 1,
            "missed_count": job.missed_count + record.missed,
            "last_run": record.started_at.timestamp(),
            "next_run": None if next_run is None else next_run.timestamp(),
        }
        if not record.ok:
            changes["error_count"] = job.error_count + 1
            changes["last_error"] = str(record.error)
        if job.status == JobStatus.ACTIVE and next_run is None:
            changes["status"] = JobStatus.FINISHED
            self.tasks.pop(job_id, None)
            self._scheduled_by.pop(job_id, None)
        job = self.store.update(job, **changes)
        if job.notify:
            self._notify(job, record)
        self.app.loop.create_task(self._notify_changed())

    async def _notify_changed(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            self._changed.notify_all()

    async def wait_job(self, job_id: str, predicate: Callable[[Job], bool], timeout: float) -> Job:
        """Wait until the stored job satisfies ``predicate`` (re-checked after every run and
        when the job ends: cancelled, or its requester no longer allowed)."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: (job := self.store.get(job_id)) is not None and predicate(job))
        job = self.store.get(job_id)
        assert job is not None
        return job

    def _notify(self, job: Job, record: RunRecord) -> None:
        message: dict[str, Any] = {"job": job.id, "cmd": job.cmd, "scheduled_for": iso(record.scheduled_for),
                                   "ok": record.ok}
        if record.ok:
            message["result"] = record.result
        else:
            message["error"] = str(record.error)
        try:
            self.app.sendtojid(job.requester, message)
        except RuntimeError:
            log.warning("job %s: result not sent, the worker is not connected", job.id)

    def _end(self, job: Job, status: JobStatus, reason: str | None = None) -> Job:
        task = self.tasks.pop(job.id, None)
        self._scheduled_by.pop(job.id, None)
        if task is not None:
            self.app.loop.create_task(task.stop(timeout=1.0))
        log.info("job %s %s%s", job.id, status, f": {reason}" if reason else "")
        job = self.store.update(job, status=status, next_run=None, last_error=reason or job.last_error)
        self.app.loop.create_task(self._notify_changed())
        return job

    # -- commands -------------------------------------------------------------------------

    def _trigger(self, spec: Any) -> Trigger:
        if not isinstance(spec, dict):
            raise ProtocolError("bad-request", "'trigger' must be an object: {\"every\": \"5s\"}, {\"at\": [...]} "
                                               "or {\"cron\": \"*/5 * * * *\", \"tz\": \"UTC\"}")
        try:
            trigger = trigger_from_spec(spec)
        except ValueError as exc:
            raise ProtocolError("bad-request", str(exc)) from None
        if isinstance(trigger, IntervalTrigger) and trigger.interval.total_seconds() < _MIN_INTERVAL_S:
            raise ProtocolError("bad-request", f"intervals below {_MIN_INTERVAL_S * 1000:.0f} ms are not accepted")
        return trigger

    async def _cmd_schedule(self, specs: APISpecs) -> dict[str, Any]:
        body = specs.body
        cmd = body.get("cmd")
        if not isinstance(cmd, str) or not cmd:
            raise ProtocolError("bad-request", "'cmd' (the command to run) must be a non-empty string")
        if cmd in self.RESERVED:
            raise ProtocolError("bad-request", f"{cmd!r} cannot be scheduled")
        known = self.app.dispatcher.commands.keys() | self.app.dispatcher.fallbacks.keys()
        if self.app.dispatcher.onapi is None and cmd not in known:
            raise ProtocolError("bad-request", f"this worker has no command {cmd!r} (it has: {', '.join(sorted(known))})")
        job_body = body.get("body") or {}
        if not isinstance(job_body, dict):
            raise ProtocolError("bad-request", "'body' must be an object")
        try:
            misfire = MisfirePolicy.parse(body.get("misfire", MisfirePolicy.COALESCE))
        except ValueError as exc:
            raise ProtocolError("bad-request", str(exc)) from None
        notify = body.get("notify", False)
        if not isinstance(notify, bool):
            raise ProtocolError("bad-request", "'notify' must be true or false")
        now = datetime.now(UTC)
        trigger = self._trigger(body.get("trigger")).anchored(now)
        first = trigger.next_fire(now)
        if first is None:
            raise ProtocolError("bad-request", "the trigger never fires (all its times are in the past)")
        owner = specs.uid  # the caller's bare JID
        if self.store.count_active(owner) >= self.max_jobs_per_caller:
            raise ProtocolError("busy", f"you have {self.max_jobs_per_caller} active jobs here; cancel some first")
        job = Job(id=serial_generator(12), owner=owner, requester=specs.jid, cmd=cmd, body=job_body,
                  trigger=trigger.to_spec(), misfire=misfire, notify=notify, next_run=first.timestamp())
        self.store.add(job)
        if (context := carrier()) is not None:  # each run's span links to this call's (in this process life)
            self._scheduled_by[job.id] = context
        self._launch(job)
        log.info("job %s scheduled by %s: %r %s", job.id, specs.jid, cmd, trigger.describe())
        return {"job": job.id, "next_run": iso(first), "trigger": trigger.describe()}

    def _visible(self, specs: APISpecs, job: Job | None) -> Job:
        """The job, if this caller may see it. Another caller's job is answered exactly like
        an unknown id, so that no caller can learn which job ids exist."""
        if job is None or (job.owner != specs.uid and specs.role != "owner"):
            raise ProtocolError("not-found", "no such job")
        return job

    async def _cmd_cancel(self, specs: APISpecs) -> dict[str, Any]:
        job_id = specs.body.get("job")
        if not isinstance(job_id, str):
            raise ProtocolError("bad-request", "'job' must be the job id returned by 'schedule'")
        job = self._visible(specs, self.store.get(job_id))
        if job.status == JobStatus.ACTIVE:
            self._end(job, JobStatus.CANCELLED, f"cancelled by {specs.jid}")
        return {"cancelled": job.id}

    async def _cmd_jobs(self, specs: APISpecs) -> dict[str, Any]:
        owner = None if specs.role == "owner" else specs.uid
        return {"jobs": [self.describe(job) for job in self.store.list(owner=owner)]}

    def describe(self, job: Job) -> dict[str, Any]:
        task = self.tasks.get(job.id)
        return {
            "job": job.id,
            "cmd": job.cmd,
            "body": job.body,
            "owner": job.owner,
            "status": job.status,
            "trigger": trigger_from_spec(job.trigger).describe(),
            "misfire": job.misfire,
            "notify": job.notify,
            "created_at": iso(job.created_at),
            "next_run": iso(job.next_run if task is None or task.next_run is None else task.next_run),
            "last_run": iso(job.last_run),
            "run_count": job.run_count,
            "error_count": job.error_count,
            "missed_count": job.missed_count,
            "last_error": job.last_error,
        }

    def cleanup(self, cutoff: float | None = None) -> int:
        """Forget finished and cancelled jobs older than ``cutoff`` (default: a day ago)."""
        return self.store.cleanup(time.time() - 86400 if cutoff is None else cutoff)
