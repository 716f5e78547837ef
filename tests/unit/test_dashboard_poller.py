"""The dashboard's poller on a ``MemoryNetwork`` (no server): it polls what ``--jid`` names
and what presence announces, records answers and refusals, and stops asking a worker that
left."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from libs.bridge import App, Client, MemoryNetwork
from libs.dashboard import Dashboard, Poller


async def _watch(model: Dashboard, changed: asyncio.Event, condition: Callable[[Dashboard], bool]) -> None:
    """Wait (each change wakes it, 5 s in all) until ``condition(model)`` holds."""
    async with asyncio.timeout(5):
        while not condition(model):
            changed.clear()
            await changed.wait()


async def test_polls_named_and_announced_workers_and_records_refusals(
        net: MemoryNetwork, connect: Callable[[str], Awaitable[Client]]) -> None:
    worker = App(transport=net.transport("worker@localhost/python", allow=("friend@localhost",)))
    other = App(transport=net.transport("worker@localhost/other", allow=("friend@localhost",)))
    try:
        await worker.wait_online(1)
        await other.wait_online(1)
        for name, who in (("friend", "friend@localhost"), ("stranger", "stranger@elsewhere")):
            client = await connect(who)
            model = Dashboard(own_jid=client.transport.jid, stale_after=5)
            changed = asyncio.Event()
            poller = Poller(client, model, interval=0.05, timeout=1.0,
                            jids=(worker.jid, "worker@localhost/absent"), on_change=changed.set)
            poller.start()
            try:
                if name == "stranger":  # a worker answers only its account and QE_ALLOW
                    await _watch(model, changed, lambda m: m.workers[worker.jid].error is not None)
                    assert model.workers[worker.jid].error.startswith("forbidden")
                    assert not model.workers[worker.jid].answered
                    continue
                await _watch(model, changed, lambda m: len(m.workers[worker.jid].series.get("metrics", ())) >= 1
                             and m.workers["worker@localhost/absent"].error is not None)
                assert model.status(model.workers["worker@localhost/absent"], 0.0) == "offline"
                view: dict[str, Any] = model.view(asyncio.get_running_loop().time())
                assert {w["jid"]: w["status"] for w in view["workers"]} == {
                    worker.jid: "online", "worker@localhost/absent": "offline"}
                # presence (as the XMPP transport reports it) brings another worker in, and takes it away
                assert client.transport.on_presence is not None
                client.transport.on_presence(other.jid, True)
                await _watch(model, changed, lambda m: m.workers[other.jid].answered)
                client.transport.on_presence(other.jid, False)
                assert other.jid not in model.to_poll()
                assert other.jid not in poller._tasks  # no more polls of it
            finally:
                await poller.close()
    finally:
        await worker.close(1)
        await other.close(1)
