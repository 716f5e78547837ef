"""Scheduling: when jobs fire. Import from ``libs.scheduling``, not from its modules.

The triggers are sans-IO (see ``triggers.py``): pure values, no clock reads, no threads.
``PeriodicTask`` runs a function on a trigger inside a worker; ``JobScheduler`` lets callers
schedule a worker's commands over XMPP, and ``RemoteWorker`` is their side of it, as is
``PERIOD`` (daffi's ``exec_modifier=``, also importable from ``libs.bridge``), whose calls
return a ``ScheduledTask`` (daffi's name for ``JobHandle``).
"""

from .._enums import MisfirePolicy
from .client import JobHandle, RemoteWorker
from .maintenance import (
    check_system_health,
    cleanup_history,
    cleanup_temp_files,
    log_statistics,
    maintenance_tasks,
)
from .period import PERIOD, ScheduledTask
from .periodic import PeriodicTask, PeriodicTaskManager, RunRecord
from .remote import JobScheduler
from .store import JobStore
from .triggers import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    Trigger,
    due_runs,
    format_duration,
    parse_duration,
    trigger_from_spec,
)

__all__ = [
    "CronTrigger",
    "DateTrigger",
    "IntervalTrigger",
    "JobHandle",
    "JobScheduler",
    "JobStore",
    "MisfirePolicy",
    "PERIOD",
    "PeriodicTask",
    "PeriodicTaskManager",
    "RemoteWorker",
    "RunRecord",
    "ScheduledTask",
    "Trigger",
    "check_system_health",
    "cleanup_history",
    "cleanup_temp_files",
    "due_runs",
    "format_duration",
    "log_statistics",
    "maintenance_tasks",
    "parse_duration",
    "trigger_from_spec",
]
