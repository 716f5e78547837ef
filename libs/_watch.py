"""``qe-worker schedule --notify``: stay connected and print each run of the new job.

The worker does the notifying (``JobScheduler``, ``"notify": true``): after every run it sends
the requester's full JID a chat message ``{"job", "cmd", "scheduled_for", "ok", "result" |
"error"}``. So the CLI only listens; it asks the worker's ``jobs`` command about the job after
each run and every ``poll`` seconds, which is how it learns that the job ended (its last
``--at`` instant ran, or someone cancelled it), since no message says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from typing import TYPE_CHECKING, Any

from libs._cli_output import job_line, run_line
from libs.bridge.access import bare_jid, resource_of

if TYPE_CHECKING:
    from libs.bridge import Client
    from libs.bridge.transport import Message

__all__ = ["JobWatch"]

log = logging.getLogger(__name__)

_POLL: dict[str, Any] = {}  # put in the queue by nothing: the wait timed out, time to ask


class JobWatch:
    """Collects the run notifications the worker at ``worker_jid`` sends ``client`` (create it
    before scheduling: a run may come right after the answer), then :meth:`follow` prints
    them. Runs on the client's event loop; ``timeout`` bounds each ``jobs`` call."""

    def __init__(self, client: Client, worker_jid: str, *, timeout: float, poll: float) -> None:
        self.client = client
        self.worker = (bare_jid(worker_jid), resource_of(worker_jid))
        self.timeout = timeout
        self.poll = poll
        self._runs: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        client.transport.on_message = self._on_message

    def _on_message(self, message: Message) -> None:
        if message.delayed or message.room is not None or \
                (bare_jid(message.sender), resource_of(message.sender)) != self.worker:
            return
        try:
            notification = json.loads(message.text)
        except ValueError:
            return
        if isinstance(notification, dict) and isinstance(notification.get("job"), str):
            self._runs.put_nowait(notification)

    async def follow(self, job_id: str, *, as_json: bool) -> None:
        """Print one line per run of ``job_id`` (``as_json``: the notification itself) until the
        job ends (then one line saying how; ``as_json``: its entry in ``jobs``) or SIGINT/SIGTERM
        (then nothing: the job goes on). Raises the ``CallError`` of a ``jobs`` call that fails
        for another reason than the worker or our session being away for a while."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for signum in signals:
            loop.add_signal_handler(signum, self._runs.put_nowait, None)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self._runs.get(), self.poll)
                except TimeoutError:
                    item = _POLL
                if item is None:  # SIGINT/SIGTERM
                    return
                if item is not _POLL:
                    if item.get("job") != job_id:
                        continue
                    print(json.dumps(item, ensure_ascii=False) if as_json else run_line(item), flush=True)
                job = await self._job(job_id)
                if job is not None and job.get("status") != "active":
                    print(json.dumps(job, ensure_ascii=False) if as_json else job_line(job), flush=True)
                    return
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)

    async def _job(self, job_id: str) -> dict[str, Any] | None:
        """The job's entry in the worker's ``jobs`` (``status`` ``gone`` if it is no longer
        listed); None if the worker or our session is away now (asked again later)."""
        from libs.bridge import CallTimeout, NotConnected, RemoteError

        try:
            answer = await self.client.call(f"{self.worker[0]}/{self.worker[1]}", "jobs", {}, timeout=self.timeout)
        except (CallTimeout, NotConnected) as exc:
            log.info("job %s: no answer from jobs now (%s); asking again later", job_id, exc)
            return None
        except RemoteError as exc:
            if exc.code not in ("unavailable", "interrupted"):
                raise
            log.info("job %s: the worker is away (%s); asking again later", job_id, exc)
            return None
        jobs = answer.get("jobs")
        for job in jobs if isinstance(jobs, list) else ():
            if isinstance(job, dict) and job.get("job") == job_id:
                return job
        return {"job": job_id, "status": "gone"}
