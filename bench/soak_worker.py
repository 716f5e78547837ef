"""The worker process of ``bench/soak.py``: one ``App`` plus N intervals, nothing else.

It runs in its own process so that the RSS, file descriptors and threads that the soak
measures are the worker's alone (the load generator, its client and Prosody are elsewhere).
Configuration comes from the ``QE_*`` variables (``soak.py`` passes ``DevServer.env()``);
it is a QE-style script: ``startup()``, ``App``, timers, ``run_forever()``.

Commands: ``echo`` (returns the body: the call the load generator makes) and
``soak-stats`` (timer and request counters plus a few leak indicators; the owner and
``QE_ALLOW`` only, like every command of a non-public worker).

It stops on SIGTERM/SIGINT (graceful, exit 0) and also when its stdin reaches end of file:
``soak.py`` holds the other end of that pipe, so a load generator that dies without
cleaning up (SIGKILL) does not leave a worker behind.

    python bench/soak_worker.py [--intervals 1000] [--interval-ms 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libs.bridge import APISpecs, App, SetInterval, SetIntervalSafe  # noqa: E402
from libs.startup import startup  # noqa: E402

RESOURCE = "soak"


def _tick() -> None:
    """The timers' callback: the soak measures the timer machinery, not the callback."""


def start_intervals(loop: asyncio.AbstractEventLoop, count: int, interval_ms: float) -> list[SetInterval]:
    """Start ``count`` intervals, alternately ``SetInterval`` (callback on the pool) and
    ``SetIntervalSafe`` (on the loop), their starts spread evenly over one interval so that
    ticks arrive as a steady stream (count / interval per second), not in one burst."""
    timers: list[SetInterval] = []
    for i in range(count):
        cls = SetInterval if i % 2 == 0 else SetIntervalSafe
        timer = cls(_tick, interval_ms, name=f"soak-{i}")
        timers.append(timer)
        loop.call_later(i * interval_ms / 1000.0 / count, timer.start)
    return timers


def soak_stats(app: App, timers: list[SetInterval]) -> dict[str, Any]:
    """Cumulative counters; ``soak.py`` turns them into per-window figures."""
    stats = [t.stats() for t in timers]
    lateness = sorted(s.lateness_p99_ms for s in stats if s.lateness_p99_ms is not None)
    transport = app.transport
    return {
        "ticks": sum(s.runs for s in stats),
        "missed": sum(s.missed for s in stats),
        "timer_errors": sum(s.errors for s in stats),
        "timers_running": sum(s.is_running for s in stats),
        # the median timer's p99 lateness: one slow timer does not hide the typical one
        "lateness_p99_ms": lateness[len(lateness) // 2] if lateness else None,
        "requests": dict(vars(app.dispatcher.stats)),
        "sessions": transport.sessions if transport else 0,
        "resumptions": transport.resumptions if transport else 0,
        "tasks": len(asyncio.all_tasks()),
        "gc_objects": len(gc.get_objects()),
        # every live block of Python's allocator: flat blocks under a rising RSS mean the
        # allocator keeps freed memory (a high-water mark), not that objects leak
        "allocated_blocks": sys.getallocatedblocks(),
    }


def _stop_on_eof(loop: asyncio.AbstractEventLoop) -> None:
    """End the worker gracefully (as on SIGTERM) once stdin is closed: the parent is gone."""

    def readable() -> None:
        if not os.read(0, 4096):
            loop.remove_reader(0)
            os.kill(os.getpid(), signal.SIGTERM)

    loop.add_reader(0, readable)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intervals", type=int, default=1000, help="intervals to run (default: %(default)s)")
    parser.add_argument("--interval-ms", type=float, default=1000.0,
                        help="period of each interval in ms (default: %(default)s)")
    args = parser.parse_args(argv)

    startup()
    app = App(resource=RESOURCE)
    loop = asyncio.get_event_loop()
    timers = start_intervals(loop, args.intervals, args.interval_ms)

    @app.command("echo")
    async def echo(specs: APISpecs) -> dict[str, Any]:
        return dict(specs.body)

    @app.command("soak-stats")
    async def stats(specs: APISpecs) -> dict[str, Any]:
        return soak_stats(app, timers)

    _stop_on_eof(loop)
    loop.run_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
