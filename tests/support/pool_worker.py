"""``python -m tests.support.pool_worker``: a public worker of service ``$QE_APP`` that says on
stdout what it ran and heard, for the cluster failover test (tests/integration/
test_cluster_failover.py).

Why a script of its own: the test must prove from outside that no request ran twice and none
started after its deadline, across workers that are killed, reconnect and move between
servers. Each line is one JSON document:

- ``{"ready": PORT}`` once online, in channel ``$CHANNEL`` and in the service's room (PORT:
  the server's c2s port);
- ``{"ran": X, "start_ms": ..., "deadline_ms": ..., "port": PORT}`` when ``work`` starts
  request ``X`` (wall-clock ms, as deadlines are);
- ``{"heard": BODY, "port": PORT}`` for every message in the channel.

``work`` holds ``body["hold"]`` s and answers ``{"code": 0, "x": X, "port": PORT}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from libs.bridge import APISpecs, App, MessageSpecs
from libs.bridge.services import service_room
from libs.startup import startup


def _say(doc: dict[str, Any]) -> None:
    print(json.dumps(doc, separators=(",", ":")), flush=True)


def main() -> None:
    startup()
    app = App(public=True)
    channel = os.environ["CHANNEL"]

    def port() -> int | None:
        transport = app.transport
        current = getattr(getattr(transport, "session", None), "current", None)
        return current[1] if current else None

    @app.command("work")
    async def work(specs: APISpecs) -> dict[str, Any]:
        x = specs.body.get("x")
        _say({"ran": x, "start_ms": int(time.time() * 1000), "deadline_ms": specs.deadline_ms, "port": port()})
        await asyncio.sleep(float(specs.body.get("hold", 0)))
        return {"code": 0, "x": x, "port": port()}

    async def heard(specs: MessageSpecs) -> None:
        _say({"heard": specs.body, "port": port()})

    app.xmpp.msgreceiver = heard
    app.subscribe(channel)

    async def ready() -> None:
        transport = await app._transport()
        await transport.wait_joined(f"{channel}@{app.config.rooms_domain}", 30)
        await transport.wait_joined(service_room(app.app, app.config.rooms_domain), 30)
        _say({"ready": port()})

    loop = asyncio.get_event_loop()
    loop.create_task(ready())
    loop.run_forever()


if __name__ == "__main__":
    main()
