"""The default worker (resource ``python``): ``ping``, ``info``, ``echo``, ``stats``, ``health``
and remote scheduling (``schedule``, ``cancel``, ``jobs``).

``ping`` and ``info`` are built into every ``App``; this worker adds the rest and is what
``qe-worker run`` and ``qe-worker demo`` start. It is also the smallest example of a worker
written in the new style (``App.command``) rather than QE's single ``onapi``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from libs.bridge import APISpecs, App, timer_stats
from libs.scheduling import PeriodicTaskManager
from libs.scheduling.maintenance import check_system_health, maintenance_tasks
from libs.scheduling.remote import JobScheduler
from libs.scheduling.store import JobStore

__all__ = ["build"]


def build(*, resource: str = "python", public: bool = False, store: JobStore | None = None,
          maintenance: bool = False, **app_kwargs: Any) -> App:
    """Create the default worker (not started until its loop runs). ``maintenance`` adds
    seed 003's periodic health check, statistics log and job-history cleanup."""
    app = App(resource=resource, public=public, **app_kwargs)
    scheduler = JobScheduler(app, store)
    periodic = PeriodicTaskManager()
    if maintenance:

        async def forget_old_jobs(cutoff: float) -> int:
            return scheduler.cleanup(cutoff)  # on the loop: the store is not shared with threads

        for task in maintenance_tasks(history_cleanup=forget_old_jobs, manager=periodic):
            periodic.add(task)
        app.on_start(periodic.start_all)
        app.on_close(periodic.stop_all)

    @app.command("echo")
    async def echo(specs: APISpecs) -> dict[str, Any]:
        """Return the body as sent: the simplest end-to-end check of a caller's encoding."""
        return dict(specs.body)

    @app.command("stats")
    async def stats(specs: APISpecs) -> dict[str, Any]:
        """Timers, scheduled jobs and request counters of this worker."""
        jobs = [scheduler.describe(job) for job in scheduler.store.list(status="active")]
        own = specs.role == "owner"
        return {
            "requests": dict(vars(app.dispatcher.stats)),
            "timers": [t.as_dict() for t in timer_stats()] if own else [],
            "periodic": periodic.get_all_statistics() if own else [],
            "jobs": jobs if own else [j for j in jobs if j["owner"] == specs.uid],
        }

    @app.command("health")
    async def health(specs: APISpecs) -> dict[str, Any]:
        """psutil: memory, disk, CPU and asyncio tasks vs thresholds (read in a thread)."""
        return await asyncio.to_thread(check_system_health, loop=app.loop)

    return app
