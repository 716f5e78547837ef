"""The worker API, as QE python-worker scripts import it: ``from libs.bridge import ...``.

Everything public is re-exported here; import from ``libs.bridge``, not from its modules.
"""

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
from .memory import MemoryNetwork, MemoryTransport
from .nexus import NexusAPISpecs, NexusMessageSpecs
from .protocol import ProtocolError
from .serial import serial_generator
from .specs import APISpecs, MessageSpecs
from .transport import Transport

__all__ = [
    "APISpecs",
    "App",
    "AuthenticationFailed",
    "CallError",
    "CallTimeout",
    "Client",
    "ConfigError",
    "MemoryNetwork",
    "MemoryTransport",
    "MessageSpecs",
    "NexusAPISpecs",
    "NexusMessageSpecs",
    "NotConnected",
    "OutOfScope",
    "ProtocolError",
    "RemoteError",
    "RepeatingTaskRunner",
    "Role",
    "SetInterval",
    "SetIntervalSafe",
    "SetTimeout",
    "SetTimeoutSafe",
    "TimerStats",
    "Transport",
    "WorkerConfig",
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
