"""A dead link is noticed by the keepalive and rebuilt; XEP-0198 resumes the session."""

from __future__ import annotations

import pytest

from libs.bridge import App, Client, load_config
from tests.support.proxy import FaultyProxy


@pytest.fixture
async def proxy(prosody):
    p = await FaultyProxy(prosody.host, prosody.port).start()
    yield p
    await p.close()


def _config(prosody, accounts, proxy, **extra: str):
    jid, password = accounts["worker"]
    env = {**prosody.env("worker", password), "QE_PORT": str(proxy.port), **extra}
    return load_config(env)


async def test_stalled_link_is_detected_and_session_resumed(prosody, accounts, proxy):
    app = App(resource="faulty", public=True, config=_config(prosody, accounts, proxy), exit_on_fatal=False,
              keepalive=0.3)
    try:
        await app.wait_online(10)
        await app.transport.wait_state(lambda t: t.resumable, 10)
        app.transport.keepalive_timeout = 0.5
        proxy.stall()  # packets vanish; no FIN, no RST: only a keepalive can tell
        await app.transport.wait_state(lambda t: t.resumptions >= 1 and t.online, 15)
        assert proxy.connections == 2
        assert app.transport.resumptions == 1 and app.transport.sessions == 1  # resumed, not a new session
        client_jid, client_pw = accounts["client"]
        async with Client(load_config(prosody.env("client", client_pw))) as client:
            assert await client.call(app.jid, "ping", timeout=5) == {"pong": True}
    finally:
        await app.close(2)


async def test_cut_link_without_stream_management_gets_a_new_session(prosody, accounts, proxy):
    app = App(resource="faulty2", public=True,
              config=_config(prosody, accounts, proxy, QE_STREAM_MANAGEMENT="off"),
              exit_on_fatal=False, keepalive=0)
    try:
        await app.wait_online(10)
        proxy.cut()
        await app.transport.wait_sessions(2, 15)
        assert app.transport.resumptions == 0
        client_jid, client_pw = accounts["client"]
        async with Client(load_config(prosody.env("client", client_pw))) as client:
            assert await client.call(app.jid, "ping", timeout=5) == {"pong": True}
    finally:
        await app.close(2)
