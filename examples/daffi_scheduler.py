"""Seed 002's scheduler.py (daffi): the worker whose commands callers run on a schedule.

    QE_JID=... QE_PASSWORD=... [QE_ALLOW=caller@example.org] python examples/daffi_scheduler.py

daffi's callbacks are this worker's commands, and its JobScheduler is what lets callers
send them with exec_modifier=PERIOD(...) (examples/daffi_scheduler_client.py,
examples/daffi_scheduler_service.py). daffi's blocking time.sleep(1) is
`await asyncio.sleep(...)` here: a command runs on the worker's event loop.
TIME_SCALE=0.1 runs the seed's timing ten times faster (the tests do).
"""

from libs.startup import startup

startup()
import asyncio
import os

from libs.bridge import APISpecs
from libs.bridge import App as app
from libs.scheduling import JobScheduler

SECOND = float(os.environ.get("TIME_SCALE", "1"))  # how long one of the seed's seconds lasts

App = app(resource="python")
JobScheduler(App)  # adds the schedule / cancel / jobs commands; jobs are stored in QE_STATE_DIR


@App.command("long_running_task1")
async def long_running_task1(specs: APISpecs) -> None:
    print("Start long running task 1", flush=True)
    for i in range(1, 3):
        print(f"Processing item {i}...", flush=True)
        await asyncio.sleep(SECOND)
    print("Task 1 complete.", flush=True)


@App.command("long_running_task2")
async def long_running_task2(specs: APISpecs) -> None:
    print("Start long running task 2", flush=True)
    for i in range(100, 103):
        print(f"Processing item {i}...", flush=True)
        await asyncio.sleep(SECOND)
    print("Task 2 complete.", flush=True)


asyncio.get_event_loop().run_forever()
