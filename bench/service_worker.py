"""A worker process of ``bench/bench_services.py``: one ``App`` of service ``QE_APP`` with a
``work`` command that burns ``ms`` of CPU on the loop (as a handler that computes does), then
answers. QE-style: ``startup()``, ``App``, ``run_forever()``; stops on SIGTERM."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libs.bridge import APISpecs, App  # noqa: E402
from libs.startup import startup  # noqa: E402

startup()
app = App(resource="bench", public=False)


@app.command("work")
async def work(specs: APISpecs) -> dict[str, Any]:
    end = time.perf_counter() + float(specs.body.get("ms", 0)) / 1000
    n = 0
    while time.perf_counter() < end:
        n += 1
    return {"n": n}


asyncio.get_event_loop().run_forever()
