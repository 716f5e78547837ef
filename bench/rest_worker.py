"""The worker process of ``bench/bench_rest.py``: ``echo`` as a command (reachable over XMPP
and ``POST /api/echo``) and the same as a bare FastAPI route on the same server
(``POST /bare``). QE-style: ``startup()``, ``App``, ``run_forever()``; port from argv."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi import Request  # noqa: E402

from libs.bridge import APISpecs, App  # noqa: E402
from libs.startup import startup  # noqa: E402

startup()
app = App(resource="rest-bench", rest=int(sys.argv[1]))


@app.command("echo")
async def echo(specs: APISpecs) -> dict[str, Any]:
    return specs.body


@app.rest.post("/bare")
async def bare(request: Request) -> Any:
    return await request.json()


asyncio.get_event_loop().run_forever()
