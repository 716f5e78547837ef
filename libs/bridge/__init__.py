"""The worker API, as QE python-worker scripts import it: ``from libs.bridge import ...``.

Everything public is re-exported here; import from ``libs.bridge``, not from its modules.
``PERIOD`` and ``ScheduledTask`` (seed 002, daffi's ``from daffi import PERIOD``) live in
``libs.scheduling``, which builds on this package: they are loaded when first asked for, so
that ``import libs.bridge`` (every worker, every ``qe-worker`` command) does not load the
scheduler's SQLite store and cron parser, and no import cycle is made.
"""

from typing import TYPE_CHECKING, Any

from ..timers import (
    RepeatingTaskRunner,
    SetInterval,
    SetIntervalSafe,
    SetTimeout,
    SetTimeoutSafe,
    TimerStats,
    clearInterval,
    clearTimeout,
    setInterval,
    setTimeout,
    timer_stats,
)
from .access import Role
from .app import App, OutOfScope, version
from .client import Client, call, wait_answering
from .config import ConfigError, WorkerConfig, load_config
from .errors import (
    AuthenticationFailed,
    CallError,
    CallTimeout,
    NotConnected,
    RemoteError,
)
from .group import GroupStarted, WorkerGroup
from .memory import MemoryNetwork, MemoryTransport
from .nexus import NexusAPISpecs, NexusMessageSpecs
from .protocol import Progress, ProtocolError
from .serial import serial_generator
from .specs import APISpecs, MessageSpecs
from .transport import Transport

if TYPE_CHECKING:
    from ..scheduling.period import PERIOD, ScheduledTask

_FROM_SCHEDULING = frozenset({"PERIOD", "ScheduledTask"})


def __getattr__(name: str) -> Any:
    if name in _FROM_SCHEDULING:
        from ..scheduling import period

        return getattr(period, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "APISpecs",
    "App",
    "AuthenticationFailed",
    "CallError",
    "CallTimeout",
    "Client",
    "ConfigError",
    "GroupStarted",
    "MemoryNetwork",
    "MemoryTransport",
    "MessageSpecs",
    "NexusAPISpecs",
    "NexusMessageSpecs",
    "NotConnected",
    "OutOfScope",
    "PERIOD",
    "Progress",
    "ProtocolError",
    "RemoteError",
    "RepeatingTaskRunner",
    "Role",
    "ScheduledTask",
    "SetInterval",
    "SetIntervalSafe",
    "SetTimeout",
    "SetTimeoutSafe",
    "TimerStats",
    "Transport",
    "WorkerConfig",
    "WorkerGroup",
    "call",
    "clearInterval",
    "clearTimeout",
    "load_config",
    "serial_generator",
    "setInterval",
    "setTimeout",
    "timer_stats",
    "version",
    "wait_answering",
]
