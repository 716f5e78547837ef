"""A flood from one caller is limited; the owner's calls still get through."""

from __future__ import annotations

import asyncio

from libs.bridge import App, RemoteError, load_config


async def test_flood_from_one_caller_does_not_starve_the_owner(prosody, accounts, login):
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_MAX_PER_CALLER": "8"}
    app = App(resource="flooded", public=True, config=load_config(env), exit_on_fatal=False, keepalive=0)
    release = asyncio.Event()

    async def onapi(specs):
        if specs.cmd == "hold":
            await release.wait()  # each flood call occupies a slot until released
        return {"ok": specs.cmd}

    app.xmpp.onapi = onapi
    try:
        await app.wait_online(10)
        stranger = await login("stranger")
        flood = [asyncio.ensure_future(stranger.call(app.jid, "hold", timeout=20)) for _ in range(200)]
        busy = 0
        for done in asyncio.as_completed(flood[:]):
            try:
                await asyncio.wait_for(done, 10)
            except RemoteError as exc:
                assert exc.code == "busy"
                busy += 1
            if busy == 192:  # every call beyond the 8 running ones was refused at once
                break
        assert app.dispatcher.stats.in_flight == 8
        owner = await login("worker")
        answers = await asyncio.gather(*(owner.call(app.jid, "work", timeout=5) for _ in range(20)))
        assert answers == [{"ok": "work"}] * 20  # served while the stranger's 8 still hold
        release.set()
        held = [f for f in flood if not f.done()]
        assert [await f for f in held] == [{"ok": "hold"}] * 8
    finally:
        release.set()
        await app.close(2)
