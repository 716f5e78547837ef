"""Scheduling overhead per run: a remotely scheduled job vs a local PeriodicTask, one run.

Both fire on the same kind of anchored interval through the same timer core. A run's
*dispatch latency* is the time from its planned fire instant to the moment the command's
code starts. For the local PeriodicTask that code is the task function; for the remote job
it is the worker's command handler, reached through the job scheduler (store read, access
check, dispatcher) as a scheduled run really is; the SQLite update after each run is timed
separately.

    python bench/bench_scheduling.py [--runs 200] [--interval 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libs.bridge import App, Client, load_config  # noqa: E402
from libs.devserver import DevServer  # noqa: E402
from libs.scheduling import IntervalTrigger, JobScheduler, JobStore, PeriodicTask, RemoteWorker  # noqa: E402


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def lateness_ms(entries: list[float], start: float, interval: float) -> list[float]:
    """Entry time minus the planned fire instant it belongs to (anchor + k * interval)."""
    out = []
    for t in entries:
        k = max(1, int((t - start) / interval + 1e-9))
        out.append((t - (start + k * interval)) * 1000)
    return out


async def local_run(runs: int, interval: float) -> list[float]:
    entries: list[float] = []
    done = asyncio.Event()
    start = datetime.now(UTC)

    async def work_async() -> None:
        entries.append(time.time())
        if len(entries) >= runs:
            done.set()

    task = PeriodicTask.create("bench-local", IntervalTrigger(timedelta(seconds=interval), start=start),
                               work_async)
    task.start()
    await asyncio.wait_for(done.wait(), runs * interval * 5 + 10)
    await task.stop()
    return lateness_ms(entries, start.timestamp(), interval)


async def remote_run(runs: int, interval: float, server: DevServer, state: Path) -> tuple[list[float], list[float]]:
    config = load_config(server.env("worker", "wpw"))
    app = App(resource="bench-sched", public=True, config=config, keepalive=0, exit_on_fatal=False)
    scheduler = JobScheduler(app, JobStore(state / "jobs.sqlite3"))
    entries: list[float] = []
    done = asyncio.Event()

    @app.command("mark")
    async def mark(specs):
        entries.append(time.time())
        if len(entries) >= runs:
            done.set()
        return {}

    store_ms: list[float] = []
    original = scheduler.store.update

    def timed_update(job, **changes):
        t = time.perf_counter()
        try:
            return original(job, **changes)
        finally:
            store_ms.append((time.perf_counter() - t) * 1000)

    scheduler.store.update = timed_update  # type: ignore[method-assign]
    await app.wait_online(10)
    async with Client(load_config(server.env("worker", "wpw"))) as client:
        handle = await RemoteWorker(client, app.jid).every(timedelta(seconds=interval)).call("mark")
        await asyncio.wait_for(done.wait(), runs * interval * 5 + 10)
        await handle.cancel()
    job = scheduler.store.get(handle.id)
    start = datetime.fromisoformat(job.trigger["start"]).timestamp()
    await app.close(2)
    return lateness_ms(entries, start, interval), store_ms


async def main(args: argparse.Namespace) -> None:
    with DevServer() as server, tempfile.TemporaryDirectory() as state:
        server.register("worker", "wpw")
        local = await local_run(args.runs, args.interval)
        remote, store_ms = await remote_run(args.runs, args.interval, server, Path(state))
    print(f"# {time.strftime('%Y-%m-%d')} Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"{args.runs} runs every {args.interval * 1000:.0f} ms")
    print("| dispatch latency per run | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|")
    for name, values in (("local PeriodicTask", local), ("remote job (qe-worker schedule)", remote)):
        print(f"| {name} | {statistics.median(values):.3f} | {pct(values, 99):.3f} | {max(values):.3f} |")
    print(f"| SQLite update after each remote run | {statistics.median(store_ms):.3f} | {pct(store_ms, 99):.3f} | "
          f"{max(store_ms):.3f} |")
    print(f"remote overhead per run (p50): {statistics.median(remote) - statistics.median(local):+.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between runs (the worker's minimum: 0.1)")
    asyncio.run(main(parser.parse_args()))
