"""The default worker: :func:`run` is what ``qe-worker run`` starts (through the entry point
``python`` in group ``qe_worker.workers``, pyproject.toml) and ``python -m workers.python`` calls.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from libs.cli import RunOptions

__all__ = ["run"]


def run(options: RunOptions) -> int:
    """Start the default worker (``options.workers`` of them: a ``WorkerGroup``) and serve until
    Ctrl+C / SIGTERM; the exit status (0 after a clean stop, 2 for a job file written by a
    newer qe-worker; a fatal login ends the process with 1 on its own, except in a group,
    which reports it and goes on with the others). Call it once per process, on the main
    thread."""
    from libs.startup import startup

    startup()  # configuration, logging and the event loop, before the worker is imported and built
    from libs.scheduling.store import StoreVersionError

    from .worker import build

    loop = asyncio.get_event_loop()
    try:
        if options.workers == 1:
            build(resource=options.resource, public=options.public, maintenance=options.maintenance)
        else:  # RESOURCE-0 .. RESOURCE-{N-1} in this process; SIGINT/SIGTERM close them all
            from libs.bridge import WorkerGroup

            group = WorkerGroup(options.workers, resource=options.resource, factory=build, public=options.public,
                                maintenance=options.maintenance)
            loop.create_task(group.start())
    except StoreVersionError as exc:  # a job file from a newer qe-worker: say so, touch nothing
        print(f"qe-worker: {exc}", file=sys.stderr)
        return 2
    loop.run_forever()
    return 0
