"""Test your own workers: QE-style scripts loaded in-process on a ``MemoryNetwork`` (fast, no
server), the same scripts in their own process on a private Prosody (real), and timers on
virtual time. docs/testing.md is the guide.

With pytest, installing qe-worker is enough: its plugin (``libs.testing.plugin``, entry point
``pytest11``) provides the fixtures ``qe_network``, ``qe_worker_module``, ``qe_caller``,
``qe_clock``, ``qe_server``, ``qe_real_worker`` and ``qe_real_caller``. Everything they do is
here as plain async context managers and classes too, for other runners or loop scopes:

* ``worker_module(path)`` -> ``WorkerModule``: the script loaded into the running loop, its
  ``App`` on a ``MemoryNetwork``, ``run_forever()`` not entered, a caller beside it;
* ``VirtualClock``: ``libs.timers`` on virtual time, ``await clock.advance(5.0)``;
* ``PrivateServer``, ``real_worker(path, server)`` -> ``RealWorker``: a throwaway Prosody and
  the script run by ``qe-worker run`` against it;
* ``inbox(client)``: the chat messages a ``Client`` receives, as a queue.

Everything is imported on first use, so that loading the plugin costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..timers.virtual import VirtualClock
    from ._module import DEFAULT_CALLER, DEFAULT_WORKER, WorkerModule, inbox, locate, worker_module
    from ._real import PrivateServer, RealWorker, WorkerFailed, real_worker

__all__ = [
    "DEFAULT_CALLER",
    "DEFAULT_WORKER",
    "PrivateServer",
    "RealWorker",
    "VirtualClock",
    "WorkerFailed",
    "WorkerModule",
    "inbox",
    "locate",
    "real_worker",
    "worker_module",
]

# Imported on first use (PEP 562): pytest imports this package for the plugin in every project
# where qe-worker is installed, and the library (slixmpp with it) costs ~0.1 s to import.
_HOMES = {"VirtualClock": "..timers.virtual", "PrivateServer": "._real", "RealWorker": "._real",
          "WorkerFailed": "._real", "real_worker": "._real"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES.get(name, "._module"), __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
