"""Maintenance tasks: health check with faked psutil readings, temp-file cleanup on a real
temporary directory (mtimes set with os.utime), history cleanup, statistics, the builder."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from libs.scheduling import (
    PeriodicTask,
    PeriodicTaskManager,
    check_system_health,
    cleanup_history,
    cleanup_temp_files,
    log_statistics,
    maintenance_tasks,
)
from libs.scheduling.maintenance import DEFAULT_INTERVALS

HOUR = 3600.0


@pytest.fixture
def fake_psutil(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """psutil readings the test sets: {"memory": %, "disk": %, "cpu": %}; calls are logged."""
    values: dict[str, Any] = {"memory": 40.0, "disk": 50.0, "cpu": 10.0, "calls": []}

    def virtual_memory() -> Any:
        return SimpleNamespace(percent=values["memory"])

    def disk_usage(path: str) -> Any:
        values["calls"].append(("disk", path))
        if isinstance(values["disk"], Exception):
            raise values["disk"]
        return SimpleNamespace(percent=values["disk"])

    def cpu_percent(interval: float | None = 0.0) -> float:
        values["calls"].append(("cpu", interval))
        return float(values["cpu"])

    monkeypatch.setattr(psutil, "virtual_memory", virtual_memory)
    monkeypatch.setattr(psutil, "disk_usage", disk_usage)
    monkeypatch.setattr(psutil, "cpu_percent", cpu_percent)
    return values


# --------------------------------------------------------------------------- health


async def test_health_ok(fake_psutil: dict[str, Any]) -> None:
    report = check_system_health(disk_path="/data")
    assert report["status"] == "ok"
    assert set(report["checks"]) == {"memory", "disk", "cpu", "asyncio_tasks"}
    assert report["checks"]["memory"] == {"percent_used": 40.0, "status": "ok"}
    assert report["checks"]["disk"] == {"percent_used": 50.0, "status": "ok"}
    assert report["checks"]["cpu"] == {"percent_used": 10.0, "status": "ok"}
    tasks = report["checks"]["asyncio_tasks"]
    assert tasks["status"] == "ok" and tasks["count"] >= 1  # this test's own task
    assert ("disk", "/data") in fake_psutil["calls"]
    assert ("cpu", None) in fake_psutil["calls"]  # non-blocking reading, never a 1 s wait
    assert "T" in report["timestamp"]


@pytest.mark.parametrize(
    ("reading", "value", "check"),
    [("memory", 95.0, "memory"), ("disk", 91.0, "disk"), ("cpu", 99.0, "cpu")],
)
async def test_health_warns_above_a_threshold(
    fake_psutil: dict[str, Any], reading: str, value: float, check: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake_psutil[reading] = value
    report = check_system_health()
    assert report["status"] == "warning"
    assert report["checks"][check] == {"percent_used": value, "status": "warning"}
    others = [name for name in report["checks"] if name != check]
    assert all(report["checks"][name]["status"] == "ok" for name in others)
    assert "above" in caplog.text


async def test_health_thresholds_are_parameters(fake_psutil: dict[str, Any]) -> None:
    fake_psutil["memory"] = 80.0
    assert check_system_health(memory_warn=80)["checks"]["memory"]["status"] == "ok"  # not above
    assert check_system_health(memory_warn=79.9)["checks"]["memory"]["status"] == "warning"
    report = check_system_health(tasks_warn=0)
    assert report["checks"]["asyncio_tasks"]["status"] == "warning"
    assert report["status"] == "warning"


async def test_health_reports_a_probe_that_fails(fake_psutil: dict[str, Any]) -> None:
    fake_psutil["disk"] = FileNotFoundError(2, "No such file or directory", "/nope")
    report = check_system_health(disk_path="/nope")
    assert report["checks"]["disk"]["status"] == "error"
    assert report["checks"]["disk"]["percent_used"] is None
    assert report["status"] == "warning"


def test_health_without_a_loop_reports_tasks_unknown(fake_psutil: dict[str, Any]) -> None:
    report = check_system_health()
    assert report["checks"]["asyncio_tasks"] == {"count": None, "status": "unknown"}
    assert report["status"] == "ok"


async def test_health_counts_the_loop_tasks_from_a_thread(fake_psutil: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    report = await asyncio.to_thread(check_system_health, loop=loop)
    assert report["checks"]["asyncio_tasks"]["count"] >= 1


# --------------------------------------------------------------------------- temp files


def touch(path: Path, age_hours: float, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp = time.time() - age_hours * HOUR
    os.utime(path, (stamp, stamp))
    return path


def test_cleanup_temp_files_by_age_recursive_and_never_through_links(tmp_path: Path) -> None:
    temp = tmp_path / "temp"
    outside = tmp_path / "outside"
    old = touch(temp / "old.txt", 48)
    new = touch(temp / "new.txt", 1)
    deep_old = touch(temp / "a" / "b" / "old.log", 25)
    deep_new = touch(temp / "a" / "fresh.log", 0)
    target = touch(outside / "precious.txt", 100)
    outside_old = touch(outside / "dir" / "also-precious.txt", 100)
    link = temp / "link-to-file"
    link.symlink_to(target)
    dir_link = temp / "link-to-dir"
    dir_link.symlink_to(outside / "dir", target_is_directory=True)
    os.utime(link, (time.time() - 100 * HOUR,) * 2, follow_symlinks=False)  # an old link, too

    assert cleanup_temp_files(temp, max_age_hours=24) == 2

    assert not old.exists() and not deep_old.exists()
    assert new.exists() and deep_new.exists()
    assert link.is_symlink() and dir_link.is_symlink()  # links are neither followed nor deleted
    assert target.exists() and outside_old.exists()
    assert temp.is_dir() and (temp / "a" / "b").is_dir()  # directories stay
    assert cleanup_temp_files(str(temp)) == 0  # nothing left to do


def test_cleanup_temp_files_through_a_linked_top_directory(tmp_path: Path) -> None:
    real = tmp_path / "real"
    old = touch(real / "old.txt", 48)
    top = tmp_path / "top"
    top.symlink_to(real, target_is_directory=True)  # the configured path itself is a link
    assert cleanup_temp_files(top) == 1
    assert not old.exists() and real.is_dir() and top.is_symlink()


def test_cleanup_temp_files_logs_permission_errors_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    temp = tmp_path / "temp"
    locked = touch(temp / "locked.txt", 48)
    other = touch(temp / "other.txt", 48)
    real_unlink = os.unlink

    def unlink(path: Any, *, dir_fd: int | None = None) -> None:
        if os.fspath(path).endswith("locked.txt"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)
    with caplog.at_level(logging.WARNING):
        assert cleanup_temp_files(temp) == 1
    assert locked.exists() and not other.exists()
    assert "cannot delete" in caplog.text and "locked.txt" in caplog.text


def test_cleanup_temp_files_missing_dir_and_bad_age(tmp_path: Path) -> None:
    assert cleanup_temp_files(tmp_path / "missing") == 0
    with pytest.raises(ValueError, match="max_age_hours"):
        cleanup_temp_files(tmp_path, max_age_hours=-1)
    with pytest.raises(ValueError, match="max_age_hours"):
        cleanup_temp_files(tmp_path, max_age_hours=float("nan"))


# --------------------------------------------------------------------------- history


def test_cleanup_history_passes_a_cutoff_timestamp() -> None:
    cutoffs: list[float] = []

    def store_cleanup(cutoff: float) -> int:
        cutoffs.append(cutoff)
        return 3

    before = time.time()
    assert cleanup_history(store_cleanup, max_age_hours=2) == 3
    after = time.time()
    assert before - 2 * HOUR <= cutoffs[0] <= after - 2 * HOUR


# --------------------------------------------------------------------------- statistics


async def test_log_statistics_returns_and_logs_a_snapshot(
    fake_psutil: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    manager = PeriodicTaskManager()
    manager.register_task("job", "1h", print)
    with caplog.at_level(logging.INFO, logger="libs.scheduling.maintenance"):
        stats = log_statistics(manager)
    assert set(stats) == {
        "timestamp",
        "asyncio_tasks",
        "memory_percent",
        "cpu_percent",
        "disk_percent",
        "periodic_tasks",
    }
    assert stats["asyncio_tasks"] >= 1
    assert (stats["memory_percent"], stats["cpu_percent"], stats["disk_percent"]) == (40.0, 10.0, 50.0)
    assert [t["name"] for t in stats["periodic_tasks"]] == ["job"]
    assert "periodic task job" in caplog.text and "memory 40.0%" in caplog.text
    assert log_statistics()["periodic_tasks"] == []


# --------------------------------------------------------------------------- the builder


def test_maintenance_tasks_defaults_are_opt_in() -> None:
    tasks = maintenance_tasks()
    assert [t.name for t in tasks] == ["system_health_check", "log_statistics"]
    assert all(isinstance(t, PeriodicTask) and not t.is_running for t in tasks)
    assert tasks[0].statistics["interval"] == "5m"
    assert tasks[1].statistics["interval"] == "15m"


async def test_maintenance_tasks_with_everything(tmp_path: Path) -> None:
    async def async_cleanup(cutoff: float) -> int:
        return 0

    tasks = maintenance_tasks(temp_dir=str(tmp_path), history_cleanup=async_cleanup)
    by_name = {t.name: t for t in tasks}
    assert list(by_name) == ["system_health_check", "cleanup_temp_files", "cleanup_history", "log_statistics"]
    for name, task in by_name.items():
        assert task.trigger.interval == DEFAULT_INTERVALS[name]  # type: ignore[attr-defined]
    assert by_name["cleanup_temp_files"].statistics["interval"] == "6h"
    assert by_name["cleanup_history"].statistics["interval"] == "1h"
    sync_tasks = maintenance_tasks(history_cleanup=lambda cutoff: 0)
    assert [t.name for t in sync_tasks] == ["system_health_check", "cleanup_history", "log_statistics"]
    with pytest.raises(TypeError):
        maintenance_tasks(history_cleanup="not callable")  # type: ignore[arg-type]


async def test_maintenance_probes_run_off_the_loop(fake_psutil: dict[str, Any]) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    real = psutil.virtual_memory

    def virtual_memory() -> Any:
        seen.append(threading.get_ident())
        return real()

    psutil.virtual_memory = virtual_memory  # restored by fake_psutil's monkeypatch
    manager = PeriodicTaskManager()
    tasks = maintenance_tasks(manager=manager)
    health = await tasks[0]._func()  # what each run of the task does
    stats = await tasks[1]._func()
    assert health["status"] == "ok" and health["checks"]["asyncio_tasks"]["count"] >= 1
    assert stats["asyncio_tasks"] >= 1 and stats["periodic_tasks"] == []
    assert len(seen) == 2 and loop_thread not in seen
