"""Stored state carries its format version: the job file (``PRAGMA user_version``) and every
trigger spec (``"v"``). Files written before versioning open as version 1; files and specs
from a newer format are refused with a sentence, never misread."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from libs.scheduling import trigger_from_spec
from libs.scheduling.store import SCHEMA_VERSION, Job, JobStore, StoreVersionError
from libs.scheduling.triggers import SPEC_VERSION, CronTrigger, IntervalTrigger

ROOT = Path(__file__).resolve().parents[2]

# The job table as the first release wrote it, before user_version was set.
_UNVERSIONED = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, requester TEXT NOT NULL, cmd TEXT NOT NULL,
    body TEXT NOT NULL, trigger TEXT NOT NULL, misfire TEXT NOT NULL, notify INTEGER NOT NULL,
    status TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, next_run REAL,
    last_run REAL, run_count INTEGER NOT NULL DEFAULT 0, error_count INTEGER NOT NULL DEFAULT 0,
    missed_count INTEGER NOT NULL DEFAULT 0, last_error TEXT
);
INSERT INTO jobs VALUES ('j1', 'c@x', 'c@x/r', 'report', '{"a": 1}', '{"every": "5s"}', 'coalesce', 0,
                         'active', 1.0, 2.0, 3.0, NULL, 4, 0, 1, NULL);
"""


def _user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_a_new_job_file_gets_the_current_version(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    store.close()
    assert _user_version(tmp_path / "jobs.sqlite") == SCHEMA_VERSION == 1


def test_a_file_from_before_versioning_opens_with_its_jobs_and_is_marked(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(_UNVERSIONED)
    assert _user_version(path) == 0
    store = JobStore(path)
    job = store.get("j1")
    assert job == Job(id="j1", owner="c@x", requester="c@x/r", cmd="report", body={"a": 1},
                      trigger={"every": "5s"}, created_at=1.0, updated_at=2.0, next_run=3.0,
                      run_count=4, missed_count=1)
    assert trigger_from_spec(job.trigger) == IntervalTrigger("5s")  # an unversioned spec is version 1
    store.close()
    assert _user_version(path) == SCHEMA_VERSION


def test_a_file_from_a_newer_qe_worker_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, future_column TEXT)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreVersionError, match="newer qe-worker"):
        JobStore(path)
    assert _user_version(path) == SCHEMA_VERSION + 1
    with sqlite3.connect(path) as db:
        assert [r[1] for r in db.execute("PRAGMA table_info(jobs)")] == ["id", "future_column"]


def test_the_default_worker_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with sqlite3.connect(state / "jobs-w@localhost-python.sqlite3") as db:  # remote.default_store_path
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    env = {"QE_JID": "w@localhost", "QE_PASSWORD": "x", "QE_HOST": "127.0.0.1", "QE_PORT": "9",
           "QE_TLS": "off", "QE_STATE_DIR": str(state), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "workers.python"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "written by a newer qe-worker" in proc.stderr


def test_every_trigger_spec_carries_its_version() -> None:
    for trigger in (IntervalTrigger("5s"), CronTrigger("*/5 * * * *", "UTC"),
                    trigger_from_spec({"at": "2030-01-01T00:00:00Z"})):
        spec = trigger.to_spec()
        assert spec["v"] == SPEC_VERSION == 1
        assert trigger_from_spec(spec) == trigger


@pytest.mark.parametrize("version", [2, 99, "1", True, None])
def test_a_spec_of_another_version_is_refused(version: object) -> None:
    with pytest.raises(ValueError, match="version") as err:
        trigger_from_spec({"every": "5s", "v": version})
    assert ("newer qe-worker" in str(err.value)) is (version in (2, 99) and version is not True)
