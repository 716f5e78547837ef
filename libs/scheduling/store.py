"""Durable storage of remotely scheduled jobs: one SQLite file per worker.

Why SQLite: it ships with Python, survives ``kill -9`` (WAL journal, each change its own
transaction), and a worker's job list is small. Every call is a short indexed statement
(well under a millisecond with ``synchronous=NORMAL``), so the store is used from the
event loop directly; nothing here blocks for long.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from libs._enums import JobStatus, MisfirePolicy

__all__ = ["SCHEMA_VERSION", "Job", "JobStore", "StoreVersionError", "default_state_dir"]

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of a job file this code writes. A file with a lower version is
migrated when opened (``_MIGRATIONS``); a higher one is refused (a newer qe-worker made it)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    requester TEXT NOT NULL,
    cmd TEXT NOT NULL,
    body TEXT NOT NULL,
    trigger TEXT NOT NULL,
    misfire TEXT NOT NULL,
    notify INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    next_run REAL,
    last_run REAL,
    run_count INTEGER NOT NULL DEFAULT 0,
    error_count INTEGER NOT NULL DEFAULT 0,
    missed_count INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, updated_at);
"""


# version -> the SQL that brings a file of that version to the next one. Files written before
# versioning (user_version 0) already have the version 1 layout: nothing to change.
_MIGRATIONS: dict[int, str] = {0: ""}


class StoreVersionError(RuntimeError):
    """The job file was written by a newer qe-worker; ``str()`` says which file and what to do."""


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/qe-worker`` (``~/.local/state/qe-worker``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "qe-worker"


@dataclass(frozen=True, slots=True)
class Job:
    """A command a caller asked this worker to run on a trigger. Times are Unix seconds."""

    id: str
    owner: str          # the requester's bare JID: who may see and cancel it
    requester: str      # full JID that scheduled it (results go there when ``notify``)
    cmd: str
    body: dict[str, Any]
    trigger: dict[str, Any]  # a trigger spec (libs.scheduling.triggers.trigger_from_spec)
    misfire: MisfirePolicy = MisfirePolicy.COALESCE
    notify: bool = False
    status: JobStatus = JobStatus.ACTIVE
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    next_run: float | None = None
    last_run: float | None = None
    run_count: int = 0
    error_count: int = 0
    missed_count: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _row_to_job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["body"] = json.loads(data["body"])
    data["trigger"] = json.loads(data["trigger"])
    data["notify"] = bool(data["notify"])
    data["misfire"] = MisfirePolicy(data["misfire"])
    data["status"] = JobStatus(data["status"])
    return Job(**data)


class JobStore:
    """Jobs of one worker in ``path`` (created with its folder, mode 0700)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        """Create the schema, or bring an older file up to ``SCHEMA_VERSION``, in one
        transaction (a crash midway leaves the file as it was)."""
        with self._tx() as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreVersionError(
                    f"{self.path} is a job file of version {version}, written by a newer qe-worker "
                    f"(this one reads up to version {SCHEMA_VERSION}): upgrade qe-worker, or point "
                    "QE_STATE_DIR elsewhere")
            # statement by statement: executescript() would commit the transaction first
            for script in (*(_MIGRATIONS[step] for step in range(version, SCHEMA_VERSION)), _SCHEMA):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add(self, job: Job) -> None:
        data = job.as_dict()
        data["body"] = json.dumps(data["body"])
        data["trigger"] = json.dumps(data["trigger"])
        data["notify"] = int(data["notify"])
        columns = ", ".join(data)
        marks = ", ".join(f":{k}" for k in data)
        with self._tx() as db:
            db.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", data)

    def update(self, job: Job, **changes: Any) -> Job:
        """Store ``changes`` to ``job`` and return the updated job."""
        new = replace(job, updated_at=time.time(), **changes)
        sets = ", ".join(f"{k} = :{k}" for k in (*changes, "updated_at"))
        values = {k: getattr(new, k) for k in (*changes, "updated_at")}
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE id = :id", {**values, "id": job.id})
        return new

    def get(self, job_id: str) -> Job | None:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _row_to_job(row)

    def list(self, *, owner: str | None = None, status: JobStatus | str | None = None) -> list[Job]:
        query, args = "SELECT * FROM jobs WHERE 1=1", []
        if owner is not None:
            query += " AND owner = ?"
            args.append(owner)
        if status is not None:
            query += " AND status = ?"
            args.append(status)
        return [_row_to_job(r) for r in self._db.execute(query + " ORDER BY created_at", args)]

    def count_active(self, owner: str) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM jobs WHERE owner = ? AND status = ?",
                               (owner, JobStatus.ACTIVE)).fetchone()
        return int(row[0])

    def cleanup(self, cutoff: float) -> int:
        """Delete finished and cancelled jobs last changed before ``cutoff`` (Unix s)."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM jobs WHERE status != ? AND updated_at < ?", (JobStatus.ACTIVE, cutoff))
        return cur.rowcount

    def close(self) -> None:
        self._db.close()
