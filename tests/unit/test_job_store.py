"""Job-history cleanup (``JobStore.cleanup``, ``JobScheduler.cleanup``) on a real SQLite file:
it forgets finished and cancelled jobs last changed before the cutoff, and never an active
job, however old."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from libs.scheduling.remote import JobScheduler
from libs.scheduling.store import Job, JobStore

NOW = time.time()
HOUR = 3600.0
DAY = 24 * HOUR

# (status, hours since the last change) of every job in the store the tests start from
HISTORY = {
    "active-new": ("active", 0.0),
    "active-old": ("active", 24 * 365),  # e.g. a yearly cron job: changed only when it runs
    "active-at-cutoff": ("active", 48),
    "finished-new": ("finished", 1),
    "finished-old": ("finished", 48),
    "cancelled-new": ("cancelled", 1),
    "cancelled-old": ("cancelled", 30),
    "cancelled-at-cutoff": ("cancelled", 24),
}


def _job(job_id: str, status: str, age_h: float) -> Job:
    changed = NOW - age_h * HOUR
    return Job(id=job_id, owner="client@localhost", requester="client@localhost/cli", cmd="echo", body={"id": job_id},
               trigger={"every": "1h"}, status=status, created_at=changed - HOUR, updated_at=changed)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore(tmp_path / "state" / "jobs.sqlite3")
    for job_id, (status, age_h) in HISTORY.items():
        store.add(_job(job_id, status, age_h))
    yield store
    store.close()


def _left(store: JobStore) -> set[str]:
    return {job.id for job in store.list()}


def test_cleanup_forgets_only_finished_and_cancelled_jobs_changed_before_the_cutoff(store: JobStore) -> None:
    assert store.cleanup(NOW - 24 * HOUR) == 2  # "at-cutoff" is not before it
    assert _left(store) == set(HISTORY) - {"finished-old", "cancelled-old"}
    assert store.cleanup(NOW - 24 * HOUR) == 0  # nothing more to do
    # whatever the cutoff, even one in the future, every active job stays
    assert store.cleanup(NOW + DAY) == 3
    assert _left(store) == {"active-new", "active-old", "active-at-cutoff"}
    assert all(job.status == "active" for job in store.list())


def test_cleanup_leaves_active_jobs_unchanged(store: JobStore) -> None:
    before = {job.id: job for job in store.list(status="active")}
    store.cleanup(NOW + DAY)
    assert {job.id: job for job in store.list(status="active")} == before  # not even touched


def test_a_job_is_forgotten_a_cutoff_after_it_ended_not_after_it_was_created(store: JobStore) -> None:
    old = _job("ran-for-a-year", "active", 24 * 365)
    store.add(old)
    store.update(old, status="finished")  # ends now: its history is fresh
    store.cleanup(NOW - HOUR)
    assert "ran-for-a-year" in _left(store)


class _App:
    """What ``JobScheduler`` needs of an ``App`` to be built (no server, no loop)."""

    def command(self, name: str) -> Any:
        return lambda handler: handler

    def on_start(self, hook: Any) -> None:
        pass

    def on_close(self, hook: Any) -> None:
        pass


def test_scheduler_cleanup_defaults_to_a_day_ago(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    for job_id, status, age_h in (("finished-25h", "finished", 25), ("finished-23h", "finished", 23),
                                  ("cancelled-25h", "cancelled", 25), ("active-25h", "active", 25)):
        store.add(_job(job_id, status, age_h))
    scheduler = JobScheduler(_App(), store)  # type: ignore[arg-type]
    try:
        assert scheduler.cleanup() == 2
        assert _left(store) == {"finished-23h", "active-25h"}
        assert scheduler.cleanup(cutoff=time.time() + DAY) == 1
        assert _left(store) == {"active-25h"}
    finally:
        store.close()
