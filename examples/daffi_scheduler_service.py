# Seed 002's scheduler_service.py (daffi, decorator-based) as a QE-style worker script:
# App.api(..., exec_modifier=PERIOD(...)), top-level `await`. Run it with
#   QE_JID=... QE_PASSWORD=... qe-worker run examples/daffi_scheduler_service.py worker@example.org/python
# The worker is examples/daffi_scheduler.py. App.api answers a failure as {"error": ..., "message": ...}
# (QE's convention) instead of the handle. TIME_SCALE=0.1 runs the seed's timing ten times faster.
# ruff: noqa: F704 - top-level await, as QE's scripts write it (qe-worker run allows it)
import asyncio
import logging
import os
import sys
import time

from libs.bridge import PERIOD
from libs.bridge import App as AppClass

logging.basicConfig(level=logging.INFO)

SECOND = float(os.environ.get("TIME_SCALE", "1"))  # how long one of the seed's seconds lasts
WORKER = sys.argv[1]

App = AppClass(resource="scheduler_service")

# Execute `long_running_task1` every 5 seconds on the remote.
task_ident = await App.api(jid=WORKER, cmd="long_running_task1", exec_modifier=PERIOD(interval=5 * SECOND))
print("scheduled", task_ident.id, task_ident.trigger, flush=True)
await asyncio.sleep(30 * SECOND)

# Stop the current recurring task.
task_ident.cancel()

now = time.time()
at_time = [now + 10 * SECOND, now + 30 * SECOND]

# Execute the `long_running_task2` function twice on the remote.
# The first execution will occur 10 seconds from now, and the second will occur 30 seconds from now.
task_ident = await App.api(jid=WORKER, cmd="long_running_task2", exec_modifier=PERIOD(at_time=at_time))
print("scheduled", task_ident.id, task_ident.trigger, flush=True)

App.stop()  # g.stop()
