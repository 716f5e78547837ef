"""Maintenance tasks a worker may opt into: health check, temp-file and history cleanup,
statistics logging (after PrismQ's maintenance tasks, seed 003).

Nothing here starts by itself. :func:`maintenance_tasks` builds ordinary
:class:`~libs.scheduling.periodic.PeriodicTask` objects with the default intervals; the
worker adds them to its manager and starts them::

    for task in maintenance_tasks(temp_dir="/var/tmp/myworker", manager=manager):
        manager.add(task)
    manager.start_all()

The functions are plain and usable on their own. Thread affinity: they block (psutil, file
system) and are meant to run off the event loop; the tasks built by
:func:`maintenance_tasks` run them on the process's shared thread pool. ``psutil`` is imported
on first use, so importing this module costs nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from libs import _runtime

from ._time import iso
from .periodic import PeriodicTask, PeriodicTaskManager

__all__ = [
    "DEFAULT_INTERVALS",
    "check_system_health",
    "cleanup_history",
    "cleanup_temp_files",
    "log_statistics",
    "maintenance_tasks",
]

log = logging.getLogger(__name__)

DEFAULT_INTERVALS: Final[dict[str, timedelta]] = {
    "system_health_check": timedelta(minutes=5),
    "cleanup_temp_files": timedelta(hours=6),
    "cleanup_history": timedelta(hours=1),
    "log_statistics": timedelta(minutes=15),
}
"""Task name -> how often it runs (the seed's defaults)."""

DEFAULT_MAX_AGE_HOURS: Final = 24.0


def _psutil() -> Any:
    import psutil  # type: ignore[import-untyped,unused-ignore]  # lazy: libs.scheduling stays light

    return psutil


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _count_tasks(loop: asyncio.AbstractEventLoop | None) -> int | None:
    """Unfinished asyncio tasks of ``loop`` (default: the running loop); None if no loop.

    ``asyncio.all_tasks(loop)`` may be called from another thread: CPython copies its task
    set with a retry for concurrent changes for exactly that reason.
    """
    loop = loop if loop is not None else _running_loop()
    if loop is None or loop.is_closed():
        return None
    return len(asyncio.all_tasks(loop))


def _percent_check(read: Callable[[], float], warn: float, what: str) -> dict[str, Any]:
    try:
        value = float(read())
    except Exception as exc:  # noqa: BLE001 - any probe failure is reported, not raised
        log.warning("health check: cannot read %s: %s", what, exc)
        return {"percent_used": None, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
    status = "warning" if value > warn else "ok"
    if status == "warning":
        log.warning("health check: %s usage %.1f%% is above %.1f%%", what, value, warn)
    return {"percent_used": value, "status": status}


def check_system_health(
    *,
    memory_warn: float = 80,
    disk_warn: float = 90,
    cpu_warn: float = 90,
    tasks_warn: int = 100,
    disk_path: str = "/",
    loop: asyncio.AbstractEventLoop | None = None,
) -> dict[str, Any]:
    """Memory, disk, CPU and asyncio-task checks against thresholds (warn when above).

    Returns ``{"timestamp": ISO UTC, "status": "ok" | "warning", "checks": {"memory":
    {"percent_used", "status"}, "disk": {...}, "cpu": {...}, "asyncio_tasks": {"count",
    "status"}}}``. A check's status is ``ok``, ``warning`` (above its threshold), ``error``
    (could not be read) or, for asyncio tasks with no loop known, ``unknown``; the overall
    status is ``warning`` if any check is ``warning`` or ``error``. Each warning is logged.

    CPU is ``psutil.cpu_percent(interval=None)``: usage since the previous call, without
    waiting (the very first call in a process reads 0.0). Disk is ``disk_path``'s file
    system. ``loop`` is the loop whose tasks are counted (default: the running loop).
    Blocking calls (disk): run it off the event loop.
    """
    psutil = _psutil()
    checks: dict[str, dict[str, Any]] = {
        "memory": _percent_check(lambda: psutil.virtual_memory().percent, memory_warn, "memory"),
        "disk": _percent_check(lambda: psutil.disk_usage(disk_path).percent, disk_warn, f"disk ({disk_path})"),
        "cpu": _percent_check(lambda: psutil.cpu_percent(interval=None), cpu_warn, "CPU"),
    }
    count = _count_tasks(loop)
    if count is None:
        checks["asyncio_tasks"] = {"count": None, "status": "unknown"}
    else:
        task_status = "warning" if count > tasks_warn else "ok"
        if task_status == "warning":
            log.warning("health check: %d asyncio tasks, more than %d", count, tasks_warn)
        checks["asyncio_tasks"] = {"count": count, "status": task_status}
    bad = any(check["status"] in ("warning", "error") for check in checks.values())
    return {
        "timestamp": iso(datetime.now(UTC)),
        "status": "warning" if bad else "ok",
        "checks": checks,
    }


def _cutoff(max_age_hours: float) -> float:
    if isinstance(max_age_hours, bool) or not isinstance(max_age_hours, (int, float)) or not max_age_hours >= 0:
        raise ValueError(f"bad max_age_hours {max_age_hours!r}: expected a number >= 0")
    return time.time() - max_age_hours * 3600.0


def cleanup_temp_files(temp_dir: str | os.PathLike[str], max_age_hours: float = DEFAULT_MAX_AGE_HOURS) -> int:
    """Delete regular files under ``temp_dir`` (recursively) not modified for ``max_age_hours``.

    Returns how many were deleted. Never deletes ``temp_dir`` itself, directories or
    symbolic links, and never follows a symbolic link (a link to a file or directory outside
    ``temp_dir`` is left alone together with its target). On POSIX the walk holds directory
    file descriptors (``os.fwalk``), so a directory swapped for a link mid-walk is not
    followed either. Errors (permissions, files vanishing) are logged, not raised; a missing
    ``temp_dir`` deletes nothing. Blocks on the file system: run it off the event loop.
    """
    cutoff = _cutoff(max_age_hours)
    top = os.path.realpath(os.fspath(temp_dir))  # the given path may itself be a link
    if not os.path.isdir(top):
        log.warning("cleanup_temp_files: %r is not a directory; nothing to clean", top)
        return 0
    removed = 0

    def on_error(exc: OSError) -> None:
        log.warning("cleanup_temp_files: cannot read %s: %s", exc.filename, exc)

    def old_regular_file(name: str, dir_fd: int | None, path: str) -> bool:
        try:
            st = os.stat(name if dir_fd is not None else path, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            log.warning("cleanup_temp_files: cannot stat %s: %s", path, exc)
            return False
        return stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff

    def delete(name: str, dir_fd: int | None, path: str) -> bool:
        try:
            os.unlink(name if dir_fd is not None else path, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("cleanup_temp_files: cannot delete %s: %s", path, exc)
            return False
        return True

    if hasattr(os, "fwalk"):  # POSIX: race-free against links swapped in during the walk
        for dirpath, _dirs, files, dir_fd in os.fwalk(top, onerror=on_error, follow_symlinks=False):
            for name in files:
                path = os.path.join(dirpath, name)
                if old_regular_file(name, dir_fd, path) and delete(name, dir_fd, path):
                    removed += 1
    else:  # pragma: no cover - Windows
        for dirpath, _dirs, files in os.walk(top, onerror=on_error, followlinks=False):
            for name in files:
                path = os.path.join(dirpath, name)
                if old_regular_file(name, None, path) and delete(name, None, path):
                    removed += 1
    if removed:
        log.info("cleanup_temp_files: deleted %d file(s) older than %g h in %s", removed, max_age_hours, top)
    return removed


def cleanup_history(store_cleanup: Callable[[float], int], max_age_hours: float = DEFAULT_MAX_AGE_HOURS) -> int:
    """Ask a history store to drop entries older than ``max_age_hours``; returns how many.

    ``store_cleanup(cutoff)`` gets the cutoff as a UNIX timestamp (seconds) and returns the
    number of entries it removed. It runs on the calling thread; in the task built by
    :func:`maintenance_tasks` that is a pool thread (pass an ``async def`` cleanup there to
    have it awaited on the event loop instead).
    """
    removed = int(store_cleanup(_cutoff(max_age_hours)))
    if removed:
        log.info("cleanup_history: removed %d entr(y/ies) older than %g h", removed, max_age_hours)
    return removed


def log_statistics(
    manager: PeriodicTaskManager | None = None,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    disk_path: str = "/",
) -> dict[str, Any]:
    """Log (INFO) and return a snapshot: asyncio tasks, memory, CPU, disk, and the periodic
    tasks of ``manager`` (their ``statistics``).

    Returns ``{"timestamp", "asyncio_tasks", "memory_percent", "cpu_percent",
    "disk_percent", "periodic_tasks": [...]}``; a value that cannot be read is None.
    ``loop`` is the loop whose tasks are counted (default: the running loop).
    """
    psutil = _psutil()

    def read(fn: Callable[[], float]) -> float | None:
        try:
            return float(fn())
        except Exception as exc:  # noqa: BLE001 - a failed probe reads as None
            log.debug("log_statistics: %s", exc)
            return None

    stats: dict[str, Any] = {
        "timestamp": iso(datetime.now(UTC)),
        "asyncio_tasks": _count_tasks(loop),
        "memory_percent": read(lambda: psutil.virtual_memory().percent),
        "cpu_percent": read(lambda: psutil.cpu_percent(interval=None)),
        "disk_percent": read(lambda: psutil.disk_usage(disk_path).percent),
        "periodic_tasks": manager.get_all_statistics() if manager is not None else [],
    }
    log.info(
        "statistics: asyncio tasks %s, memory %s%%, CPU %s%%, disk %s%%",
        stats["asyncio_tasks"],
        stats["memory_percent"],
        stats["cpu_percent"],
        stats["disk_percent"],
    )
    for task in stats["periodic_tasks"]:
        log.info(
            "statistics: periodic task %s: %d runs, %d errors, %d skipped, %d missed, next %s",
            task["name"],
            task["run_count"],
            task["error_count"],
            task["skipped_count"],
            task["missed_count"],
            task["next_run"],
        )
    return stats


def _off_loop(func: Callable[..., Any], **kwargs: Any) -> Callable[[], Awaitable[Any]]:
    """An async job that runs ``func(loop=<the task's loop>, **kwargs)`` on the pool.

    The loop is passed so that the function can count the loop's asyncio tasks from its
    thread; the blocking psutil/file-system calls never run on the loop.
    """

    async def job() -> Any:
        return await _runtime.to_thread(func, loop=asyncio.get_running_loop(), **kwargs)

    job.__qualname__ = job.__name__ = func.__name__
    return job


async def _cleanup_history_async(
    store_cleanup: Callable[[float], Awaitable[int]], max_age_hours: float
) -> int:
    removed = int(await store_cleanup(_cutoff(max_age_hours)))
    if removed:
        log.info("cleanup_history: removed %d entr(y/ies) older than %g h", removed, max_age_hours)
    return removed


def maintenance_tasks(
    *,
    temp_dir: str | os.PathLike[str] | None = None,
    history_cleanup: Callable[[float], int] | Callable[[float], Awaitable[int]] | None = None,
    manager: PeriodicTaskManager | None = None,
) -> list[PeriodicTask]:
    """The maintenance tasks, built but not started (opt-in), with ``DEFAULT_INTERVALS``:

    * ``system_health_check`` every 5 min: :func:`check_system_health` (always);
    * ``cleanup_temp_files`` every 6 h, files older than 24 h (only with ``temp_dir``);
    * ``cleanup_history`` every 1 h, entries older than 24 h (only with
      ``history_cleanup``; see :func:`cleanup_history`; an ``async def`` one is awaited on
      the loop, a plain one runs on a pool thread and must be thread-safe);
    * ``log_statistics`` every 15 min, including ``manager``'s tasks (always).

    Each is an ordinary ``PeriodicTask``: add it to a manager and start it. Health and
    statistics probes run on the process's shared thread pool, never on the loop.
    """
    _psutil().cpu_percent(interval=None)  # prime: the first reading is meaningless
    tasks = [
        PeriodicTask(
            "system_health_check", DEFAULT_INTERVALS["system_health_check"], _off_loop(check_system_health)
        )
    ]
    if temp_dir is not None:
        tasks.append(
            PeriodicTask(
                "cleanup_temp_files",
                DEFAULT_INTERVALS["cleanup_temp_files"],
                cleanup_temp_files,
                temp_dir,
                max_age_hours=DEFAULT_MAX_AGE_HOURS,
            )
        )
    if history_cleanup is not None:
        if not callable(history_cleanup):
            raise TypeError(f"history_cleanup must be callable, not {type(history_cleanup).__name__}")
        if inspect.iscoroutinefunction(history_cleanup):
            job: Callable[..., Any] = _cleanup_history_async
        else:
            job = cleanup_history
        tasks.append(
            PeriodicTask(
                "cleanup_history",
                DEFAULT_INTERVALS["cleanup_history"],
                job,
                history_cleanup,
                max_age_hours=DEFAULT_MAX_AGE_HOURS,
            )
        )
    tasks.append(
        PeriodicTask("log_statistics", DEFAULT_INTERVALS["log_statistics"], _off_loop(log_statistics, manager=manager))
    )
    return tasks
