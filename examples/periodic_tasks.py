"""A QE-style worker with local periodic tasks (seed 003's PeriodicTask) and maintenance tasks.

    QE_JID=... QE_PASSWORD=... python examples/periodic_tasks.py

`report` runs every 5 s on a thread (it is a plain function), `refresh` every minute on the
event loop (it is async); `health` answers with the latest health check.
"""

from libs.startup import startup

startup()
import asyncio  # noqa: E402
import time  # noqa: E402

from libs.bridge import APISpecs  # noqa: E402
from libs.bridge import App as app
from libs.scheduling import PeriodicTaskManager  # noqa: E402
from libs.scheduling.maintenance import maintenance_tasks  # noqa: E402

App = app(resource="periodic", public=False)
manager = PeriodicTaskManager()


def report() -> dict:
    time.sleep(0.2)  # blocking work is fine: this runs on a pool thread
    print("report written", flush=True)
    return {"written": True}


async def refresh() -> None:
    await asyncio.sleep(0)
    print("cache refreshed", flush=True)


manager.register_task("report", "5s", report)
manager.register_task("refresh", "1m", refresh)
for task in maintenance_tasks(manager=manager):
    manager.add(task)


async def api(specs: APISpecs):
    if specs.cmd == "tasks":
        return {"tasks": manager.get_all_statistics()}
    return None


App.xmpp.onapi = api
App.on_start(manager.start_all)
App.on_close(manager.stop_all)
asyncio.get_event_loop().run_forever()
