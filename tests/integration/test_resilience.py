"""A worker survives its server: restarts, outages, and shuts down cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import secrets
import signal
import textwrap

import pytest

from libs.bridge import (
    App,
    CallTimeout,
    Client,
    MessageSpecs,
    NotConnected,
    load_config,
    wait_answering,
)
from tests.support.proxy import FaultyProxy
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.core  # runs on every server (./run test-ejabberd: a 2-node ejabberd cluster)


async def test_worker_comes_back_after_server_restart(fresh_prosody):
    fresh_prosody.register("worker", "wpw")
    fresh_prosody.register("client", "cpw")
    app = App(resource="python", public=True, config=load_config(fresh_prosody.env("worker", "wpw")),
              exit_on_fatal=False, keepalive=0)
    try:
        await app.wait_online(10)
        for kill in (True, False):  # SIGKILL, then a clean stop/start
            before = app.transport.sessions
            if kill:
                await asyncio.to_thread(fresh_prosody.kill)
                await asyncio.to_thread(fresh_prosody.start)
            else:
                await asyncio.to_thread(fresh_prosody.restart)
            await app.transport.wait_sessions(before + 1, 20)
            async with Client(load_config(fresh_prosody.env("client", "cpw"))) as client:
                assert await client.call(app.jid, "ping", timeout=5) == {"pong": True, "environment": "python"}
    finally:
        await app.close(2)


async def test_calls_during_outage_fail_clearly_and_are_not_replayed(fresh_prosody):
    fresh_prosody.register("worker", "wpw")
    ran: list[str] = []
    app = App(resource="python", public=True, config=load_config(fresh_prosody.env("worker", "wpw")),
              exit_on_fatal=False, keepalive=0)

    async def onapi(specs):
        ran.append(specs.cmd)
        return {"ok": True}

    app.xmpp.onapi = onapi
    caller = App(resource="caller", config=load_config(fresh_prosody.env("worker", "wpw")),
                 exit_on_fatal=False, keepalive=0)
    try:
        await app.wait_online(10)
        await caller.wait_online(10)
        await asyncio.to_thread(fresh_prosody.kill)
        # either the caller already knows it is offline, or its request goes nowhere
        with pytest.raises((NotConnected, CallTimeout)):
            await caller.call(app.jid, "during-outage", timeout=0.5)
        answer = await caller.api(cmd="during-outage", jid=app.jid, timeout=0.5)
        assert answer["error"] in ("not-connected", "timeout")
        await asyncio.to_thread(fresh_prosody.start)
        await app.transport.wait_sessions(2, 20)
        await caller.transport.wait_sessions(2, 20)
        assert await caller.call(app.jid, "after", timeout=5) == {"ok": True}
        assert ran == ["after"]
    finally:
        await caller.close(2)
        await app.close(2)


async def test_a_blip_loses_no_message_the_server_resends_on_resumption(prosody, accounts):
    """Chat and channel messages in flight when the link breaks are resent by the server when
    the session resumes (XEP-0198), stamped ``<delay/>``: they are live news, not stored
    messages, and reach the handlers (both were dropped as "stored" before)."""
    _account, password = accounts["worker"]
    env = prosody.env("worker", password)
    proxy = await FaultyProxy(env["QE_HOST"], int(env["QE_PORT"])).start()
    worker = App(resource="blip", config=load_config({**env, "QE_HOST": "127.0.0.1", "QE_PORT": str(proxy.port)}),
                 exit_on_fatal=False, keepalive=0)
    caller = App(resource="blip-caller", config=load_config(env), exit_on_fatal=False, keepalive=0)
    channel = f"blip{secrets.token_hex(3)}"
    heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    @worker.nexus.Channel(channel)
    async def on_channel(specs: MessageSpecs) -> None:
        await heard.put(("channel", specs.body))

    @worker.nexus.Direct()
    async def on_direct(specs: MessageSpecs) -> None:
        await heard.put(("direct", specs.body))

    try:
        await asyncio.gather(worker.wait_online(15), caller.wait_online(15))
        transport = worker.transport
        assert transport is not None and caller.transport is not None
        await transport.wait_state(lambda t: t.resumable, 15)
        room = f"{channel}@{worker.config.rooms_domain}"
        await transport.wait_joined(room, 15)
        caller.subscribe(channel)
        await caller.transport.wait_joined(room, 15)

        proxy.cut()  # the worker's link breaks; the server keeps its session for a resumption
        caller.sendtojid(worker.jid, "direct, during the gap")
        caller.sendtochannel(channel, "channel, during the gap")
        await transport.wait_state(lambda t: t.resumptions == 1 and t.online, 20)
        got = {await asyncio.wait_for(heard.get(), 15) for _ in range(2)}
        assert got == {("direct", "direct, during the gap"), ("channel", "channel, during the gap")}
        assert transport.sessions == 1
    finally:
        await asyncio.gather(worker.close(2), caller.close(2))
        await proxy.close()


SLOW_WORKER = textwrap.dedent(
    """
    from libs.startup import startup
    startup()
    import asyncio
    from libs.bridge import App as app

    App = app(resource="python", public=True)

    async def api(specs):
        if specs.cmd == "slow":
            print("slow started", flush=True)
            await asyncio.sleep(float(specs.body["s"]))
            return {"slept": specs.body["s"]}

    App.xmpp.onapi = api
    print("ready", flush=True)
    asyncio.get_event_loop().run_forever()
    print("loop ended", flush=True)
    """
)


async def test_sigterm_finishes_running_request_and_exits_0(prosody, accounts, tmp_path, login):
    script = tmp_path / "slow_worker.py"
    script.write_text(SLOW_WORKER)
    worker_jid, worker_pw = accounts["worker"]
    env = {**prosody.env("worker", worker_pw), "RESOURCE": "sigterm", "QE_SHUTDOWN_TIMEOUT": "10"}
    target = f"{worker_jid}/sigterm"
    client, owner = await login("client"), await login("worker")
    async with WorkerProcess([str(script)], env, tmp_path / "worker.log") as worker:
        await wait_answering(owner, target, 20)
        slow = asyncio.create_task(client.call(target, "slow", {"s": 1.0}, timeout=15))
        await worker.wait_lines(lambda lines: "slow started" in lines, 10)  # the request is running
        worker.signal(signal.SIGTERM)
        assert await slow == {"slept": 1.0}  # finished, not dropped
        code = await worker.wait(20)
    assert code == 0, worker.log()
    assert worker.lines[-1] == "loop ended"
    assert "SIGTERM received" in worker.log_path.read_text()
