"""Scripts written as QE users write them (examples/qe_*.py), run as subprocesses on a real
Prosody: Nexus decorators, top-level await, App.find and App.api(app=...), direct messages,
channels (with a server restart), and a pool of one service losing a worker mid-run."""

from __future__ import annotations

import asyncio
import collections
import secrets
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import pytest

from libs.bridge import App, MessageSpecs, load_config
from tests.support.accounts import account_env, new_account, xmpp_of
from tests.support.calls import found_all
from tests.support.scripts import EXAMPLES, Script, qe_worker_run, start_script

pytestmark = pytest.mark.core  # runs on every server (./run test-ejabberd: a 2-node ejabberd cluster)

NEXUS = EXAMPLES / "qe_nexus_worker.py"
LEGACY = EXAMPLES / "qe_legacy_channel.py"


@pytest.fixture
async def scripts() -> AsyncIterator[list[Script]]:
    started: list[Script] = []
    yield started
    for script in started:
        if script.proc.returncode is None:
            assert await script.stop() == 0, (await script.proc.stderr.read()).decode()  # type: ignore[union-attr]


@pytest.fixture
async def peer(prosody, accounts) -> AsyncIterator[tuple[App, asyncio.Queue[MessageSpecs]]]:
    """An in-process App of the ``client`` account that accepts messages from ``worker``."""
    env = {**prosody.env("client", accounts["client"][1]), "QE_ALLOW": accounts["worker"][0]}
    app = App(resource=f"peer{secrets.token_hex(3)}", config=load_config(env), exit_on_fatal=False, keepalive=0)
    inbox: asyncio.Queue[MessageSpecs] = asyncio.Queue()

    async def receive(specs: MessageSpecs) -> None:
        inbox.put_nowait(specs)

    app.xmpp.msgreceiver = receive
    await app.wait_online(10)
    yield app, inbox
    await app.close(2)


async def test_nexus_script_as_in_qes_docs(prosody, accounts, scripts, peer):
    app, inbox = peer
    service = f"emyapp{secrets.token_hex(3)}"
    worker_jid = f"{accounts['worker'][0]}/n1"
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_APP": service, "RESOURCE": "n1"}
    script = await qe_worker_run(NEXUS, env, "nexus")
    scripts.append(script)

    # module level: App.find before the loop ran, then a top-level await of App.api(app=...)
    found = await script.line_matching(r"^found (.*)", 30)
    assert found.group(1) == str({"code": 0, "jids": [worker_jid]})
    api = await script.line_matching(r"^api (.*)", 10)
    assert api.group(1) == str({"pong": True, "environment": "python"})

    # a stranger may call a public worker: role "user"; replies pass through as the handler made them
    assert await app.api(jid=worker_jid, cmd="samplecmd", body={"x": 5}) == {
        "code": 0, "myval": 5, "role": "user", "by": worker_jid}
    assert (await app.api(app=service, cmd="samplecmd", body={"x": 6}))["by"] == worker_jid
    assert await app.api(app=service, cmd="nohandler") == {"code": -1000, "msg": "no api handler"}
    assert (await app.find(app=service)) == {"code": 0, "jids": [worker_jid]}

    # a direct message reaches @App.nexus.Direct(), which answers with App.sendtojid
    assert await app.direct(jid=worker_jid, body={"hi": 1}) == {"code": 0, "jid": worker_jid}
    await script.line_matching(rf"^direct from {app.jid}: {{'hi': 1}}$", 10)
    echo = await asyncio.wait_for(inbox.get(), 10)
    assert (echo.fromjid, echo.body, echo.channel, echo.role) == (worker_jid, {"echo": {"hi": 1}}, None, "partner")
    assert await app.direct(app=service, body=[1, 2]) == {"code": 0, "jid": worker_jid}  # to a worker of the service
    await script.line_matching(rf"^direct from {app.jid}: \[1, 2\]$", 10)
    assert (await asyncio.wait_for(inbox.get(), 10)).body == {"echo": [1, 2]}

    # a message the server stored while the worker was away (<delay/>) is old news: dropped, as
    # QE drops it; the live one sent after it is the next one the script sees
    raw = xmpp_of(app)
    stored = raw.make_message(mto=worker_jid, mbody="stored long ago", mtype="chat")
    stored.xml.append(ET.fromstring('<delay xmlns="urn:xmpp:delay" stamp="2026-01-01T00:00:00Z"/>'))
    stored.send()
    raw.make_message(mto=worker_jid, mbody="live", mtype="chat").send()
    await script.line_matching(rf"^direct from {app.jid}: live$", 10)
    assert not any("stored long ago" in line for line in script.lines)

    # a channel message reaches @App.nexus.Channel("mychannel") with the sender's real JID
    app.subscribe("mychannel")
    app.sendtochannel("mychannel", "hello all")
    await script.line_matching(rf"^channel mychannel from {app.jid}: hello all$", 10)


async def test_legacy_channel_between_three_workers_across_a_server_restart(fresh_prosody, scripts):
    account = new_account(fresh_prosody, "legacy")
    workers = {}
    for name in ("l1", "l2", "l3"):
        workers[name] = await start_script([str(LEGACY)], account_env(fresh_prosody, account, RESOURCE=name), name)
        scripts.append(workers[name])
    caller_env = account_env(fresh_prosody, account)
    jid = {name: f"{account.jid}/{name}" for name in workers}

    async def say_until_heard(speaker: str, timeout: float) -> None:
        """``say`` through ``speaker`` until both others printed it (after a reconnect the
        workers rejoin the room on their own time; a message sent before is not theirs)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        listeners = [w for w in workers if w != speaker]
        heard: set[str] = set()
        caller = App(resource=f"caller{secrets.token_hex(3)}", config=load_config(caller_env),
                     exit_on_fatal=False, keepalive=0)
        try:
            n = 0
            while heard != set(listeners):
                assert loop.time() < end, f"not heard by {set(listeners) - heard}"
                n += 1
                answer = await caller.api(jid=jid[speaker], cmd="say", body={"n": n, "from": speaker}, timeout=5)
                if answer != {"code": 0}:
                    continue  # not back online yet
                for w in listeners:
                    if w in heard:
                        continue
                    try:
                        await workers[w].line_matching(rf"^got news {jid[speaker]} {{'n': {n}, ", 1.0)
                        heard.add(w)
                    except TimeoutError:
                        pass
        finally:
            await caller.close(2)

    await say_until_heard("l1", 30)  # all three are in the room now

    # a stranger's message in the channel: these workers are not public, so none of them takes it
    outsider = new_account(fresh_prosody, "outsider")
    stranger = App(resource="s", config=load_config(account_env(fresh_prosody, outsider)), exit_on_fatal=False,
                   keepalive=0)
    stranger.subscribe("news")
    stranger.sendtochannel("news", {"n": 0, "from": "stranger"})
    await stranger.wait_online(10)
    assert stranger.transport is not None
    await stranger.transport.wait_joined(f"news@{load_config(caller_env).rooms_domain}", 10)

    await say_until_heard("l3", 30)  # after the stranger's message in the room's order
    await stranger.close(2)
    fresh_prosody.restart()
    await say_until_heard("l2", 30)
    # nobody hears itself: stop them all and read everything they printed
    for w, script in workers.items():
        assert await script.stop() == 0
        lines = await script.rest(5)
        assert not any(f"got news {jid[w]} " in line for line in lines), (w, lines)
        assert not any(outsider.jid in line or "stranger" in line for line in lines), (w, lines)


async def test_pool_of_one_service_loses_a_worker_mid_run(prosody, accounts, scripts, peer):
    """Two workers of one service and a caller using App.api(app=...); one worker is killed
    (SIGKILL) mid-run: every call ends exactly once, no request runs twice, and the pool
    keeps serving from the survivor."""
    app, _inbox = peer
    service = f"pool{secrets.token_hex(3)}"
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_APP": service}
    pool = {}
    for name in ("p1", "p2"):
        pool[name] = await qe_worker_run(NEXUS, {**env, "RESOURCE": name}, name)
        scripts.append(pool[name])
        await pool[name].line_matching(r"^api ", 30)  # up, and in its service's room
    expected = sorted(f"{accounts['worker'][0]}/{n}" for n in pool)
    assert await found_all(app, service, expected) == expected  # on a cluster, the caller may hear later

    total, killed_at = 300, 100
    results: dict[int, dict] = {}
    ran_before_kill: list[str] = []

    async def one(i: int) -> None:
        results[i] = await app.api(app=service, cmd="samplecmd", body={"x": i, "hold": 0.05}, timeout=3)

    running: set[asyncio.Task[None]] = set()
    for i in range(total):
        if i == killed_at:
            pool["p1"].proc.kill()
            await pool["p1"].proc.wait()
            ran_before_kill = await pool["p1"].rest(5)
        task = asyncio.create_task(one(i))
        running.add(task)
        task.add_done_callback(running.discard)
        if len(running) >= 10:
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.wait_for(asyncio.gather(*running), 30)

    assert sorted(results) == list(range(total))  # every call ended, once
    outcomes = collections.Counter("ok" if r.get("code") == 0 else r.get("error") for r in results.values())
    assert set(outcomes) <= {"ok", "timeout", "interrupted"}, outcomes
    assert all(results[i].get("code") == 0 for i in range(total - 50, total)), outcomes  # still serving

    assert await pool["p2"].stop() == 0
    ran = [line for s in (ran_before_kill, await pool["p2"].rest(5)) for line in s if line.startswith("ran ")]
    counts = collections.Counter(ran)
    assert max(counts.values()) == 1, [line for line, n in counts.items() if n > 1]  # none ran twice
    assert all(f"ran {i}" in counts for i, r in results.items() if r.get("code") == 0)
