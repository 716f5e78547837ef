"""Seed 002's scheduler_client.py (daffi, class-based): a client has the worker run its
commands on a schedule, with daffi's PERIOD.

    QE_JID=... QE_PASSWORD=... python examples/daffi_scheduler_client.py worker@example.org/python

The worker is examples/daffi_scheduler.py (or any worker with a JobScheduler that allows
us). What differs from the seed: Client.call in place of daffi's Fetcher methods, `await`
(the calls go over XMPP), asyncio.sleep in place of time.sleep, and time.time() in place of
datetime.utcnow().timestamp(), which is only right where local time is UTC.
TIME_SCALE=0.1 runs the seed's timing ten times faster (the tests do).
"""

import asyncio
import logging
import os
import sys
import time

from libs.bridge import PERIOD, Client

logging.basicConfig(level=logging.INFO)

SECOND = float(os.environ.get("TIME_SCALE", "1"))  # how long one of the seed's seconds lasts


async def main(worker: str) -> None:
    async with Client() as client:
        # Execute `long_running_task1` on the worker every 5 seconds.
        task_ident = await client.call(worker, "long_running_task1", exec_modifier=PERIOD(interval=5 * SECOND))
        print(f"scheduled {task_ident.id}: {task_ident.trigger}", flush=True)
        await asyncio.sleep(30 * SECOND)

        # Stop the current recurring task.
        task_ident.cancel()

        now = time.time()
        at_time = [now + 10 * SECOND, now + 30 * SECOND]

        # Execute the `long_running_task2` function twice on the remote.
        # The first execution will occur 10 seconds from now, and the second will occur 30 seconds from now.
        task_ident = await client.call(worker, "long_running_task2", exec_modifier=PERIOD(at_time=at_time))
        print(f"scheduled {task_ident.id}: {task_ident.trigger}", flush=True)
    # g.stop(): the connection closes; the worker keeps the job (it is stored) and runs it


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/daffi_scheduler_client.py WORKER_FULL_JID")
    asyncio.run(main(sys.argv[1]))
