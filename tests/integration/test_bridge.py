"""The bridge against a real Prosody: calls, errors, access, messages, worker-to-worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from libs.bridge import App, RemoteError, load_config
from libs.bridge.protocol import encode_request, now_ms

Factory = Callable[..., App]


@pytest.fixture
async def make_app(prosody, accounts) -> AsyncIterator[Factory]:
    apps: list[App] = []

    def factory(account: str = "worker", *, resource: str = "python", extra_env: dict[str, str] | None = None,
                **kwargs: Any) -> App:
        jid, password = accounts[account]
        env = {**prosody.env(jid.split("@")[0], password), **(extra_env or {})}
        kwargs.setdefault("keepalive", 0)
        app = App(resource=resource, config=load_config(env), exit_on_fatal=False, **kwargs)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.close(2)


async def test_ping_builtin_and_onapi_override(make_app, login):
    app = make_app(public=True)
    await app.wait_online(10)
    client = await login("client")
    assert await client.call(app.jid, "ping", timeout=5) == {"pong": True, "environment": "python"}

    async def onapi(specs):
        if specs.cmd == "ping":
            return {"pong": True, "by": "onapi", "role": specs.role}
        return None

    app.xmpp.onapi = onapi
    assert await client.call(app.jid, "ping", timeout=5) == {"pong": True, "by": "onapi", "role": "user"}


async def test_errors_come_back_as_remote_errors(make_app, login):
    app = make_app(public=True)

    async def onapi(specs):
        if specs.cmd == "boom":
            raise RuntimeError("secret detail")
        if specs.cmd == "set":
            return {"s": {1, 2}}
        if specs.cmd == "list":
            return [1, 2]
        if specs.cmd == "big":
            return {"x": "y" * 300_000}
        return None

    app.xmpp.onapi = onapi
    await app.wait_online(10)
    client = await login("stranger")
    expected = {"boom": "handler-error", "set": "bad-result", "list": "bad-result", "big": "too-large"}
    for cmd, code in expected.items():
        with pytest.raises(RemoteError) as info:
            await client.call(app.jid, cmd, timeout=5)
        assert info.value.code == code, cmd
    assert await client.call(app.jid, "nope", timeout=5) == {}  # onapi took it and said nothing: QE's {}
    with pytest.raises(RemoteError) as info:
        await client.call(app.jid, "boom", timeout=5)
    assert "secret detail" not in info.value.remote_message  # strangers learn that, not why
    # the worker still serves after all that
    assert await client.call(app.jid, "ping", timeout=5) == {"pong": True, "environment": "python"}


async def test_oversize_request_refused_before_sending_and_by_worker(make_app, login, prosody, accounts):
    app = make_app(public=True)
    await app.wait_online(10)
    client = await login("client")
    with pytest.raises(ValueError, match="too-large|bytes"):
        await client.call(app.jid, "echo", {"x": "y" * 300_000}, timeout=5)
    # a caller with a bigger limit than the worker's is refused by the worker
    small = make_app("client", resource="small", public=True,
                     extra_env={"QE_MAX_PAYLOAD": "2000"})
    await small.wait_online(10)
    text = encode_request("echo", {"x": "y" * 5000}, deadline_ms=now_ms() + 5000)
    with pytest.raises(RemoteError) as info:
        await client.transport.request(small.jid, text, 5)
    assert info.value.code == "too-large"
    assert await client.call(small.jid, "ping", timeout=5) == {"pong": True, "environment": "python"}


async def test_access_owner_allowed_stranger(make_app, login, accounts):
    allowed_jid = accounts["client"][0]
    app = make_app(public=False, extra_env={"QE_ALLOW": allowed_jid})
    seen: list[str] = []

    async def onapi(specs):
        seen.append(specs.role)
        return {"role": specs.role, "uid": specs.uid, "jid": specs.jid}

    app.xmpp.onapi = onapi
    await app.wait_online(10)
    owner = await login("worker")
    allowed = await login("client")
    stranger = await login("stranger")
    assert (await owner.call(app.jid, "who", timeout=5))["role"] == "owner"
    answer = await allowed.call(app.jid, "who", timeout=5)
    assert answer["role"] == "partner" and answer["uid"] == allowed_jid
    assert answer["jid"] == allowed.transport.jid
    with pytest.raises(RemoteError) as info:
        await stranger.call(app.jid, "who", timeout=5)
    assert info.value.code == "forbidden"
    assert seen == ["owner", "partner"]  # the stranger's call never reached the handler
    assert app.dispatcher.stats.forbidden == 1


async def test_expired_request_is_not_executed(make_app, login):
    app = make_app(public=True)
    ran: list[str] = []

    async def onapi(specs):
        ran.append(specs.cmd)
        return {}

    app.xmpp.onapi = onapi
    await app.wait_online(10)
    client = await login("client")
    stale = encode_request("work", {}, deadline_ms=now_ms() - 1)
    with pytest.raises(RemoteError) as info:
        await client.transport.request(app.jid, stale, 5)
    assert info.value.code == "expired"
    assert ran == []


async def test_handler_past_deadline_is_cancelled(make_app, login):
    app = make_app(public=True)
    cancelled = asyncio.Event()

    async def onapi(specs):
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    app.xmpp.onapi = onapi
    await app.wait_online(10)
    client = await login("client")
    text = encode_request("slow", {}, deadline_ms=now_ms() + 300)
    with pytest.raises(RemoteError) as info:
        await client.transport.request(app.jid, text, 5)
    assert info.value.code == "expired"
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_bare_jid_and_bad_body_are_usage_errors(login, accounts):
    client = await login("client")
    with pytest.raises(ValueError, match="full JID"):
        await client.call(accounts["worker"][0], "ping", timeout=5)
    with pytest.raises(ValueError, match="dict"):
        await client.call(accounts["worker"][0] + "/python", "ping", [1], timeout=5)  # type: ignore[arg-type]


async def test_offline_worker_is_unavailable_at_once(login, accounts):
    client = await login("client")
    with pytest.raises(RemoteError) as info:
        await client.call(accounts["worker"][0] + "/nobody-here", "ping", timeout=5)
    assert info.value.code == "unavailable"


async def test_messages_reach_msgreceiver_and_reply(make_app, login, accounts):
    app = make_app(public=False, extra_env={"QE_ALLOW": accounts["client"][0]})
    got: asyncio.Queue = asyncio.Queue()

    async def receiver(specs):
        await got.put(specs)
        specs.reply({"echo": specs.body})

    app.xmpp.msgreceiver = receiver
    await app.wait_online(10)
    client = await login("client")
    replies: asyncio.Queue = asyncio.Queue()
    client.transport._client.add_event_handler("message", lambda m: replies.put_nowait(m["body"]))
    client.transport.send_message(app.jid, '{"a": 1}')
    specs = await asyncio.wait_for(got.get(), 5)
    assert specs.body == {"a": 1} and specs.role == "partner" and specs.channel is None
    assert specs.itsbro is False and specs.itsme is False
    assert await asyncio.wait_for(replies.get(), 5) == '{"echo": {"a": 1}}'
    client.transport.send_message(app.jid, "plain text")
    assert (await asyncio.wait_for(got.get(), 5)).body == "plain text"

    stranger = await login("stranger")
    stranger.transport.send_message(app.jid, "let me in")
    client.transport.send_message(app.jid, "after the stranger")
    # messages from one server arrive in order per sender; the stranger's is dropped
    assert (await asyncio.wait_for(got.get(), 5)).body == "after the stranger"
    assert got.empty()


async def test_worker_calls_worker_with_app_api(make_app):
    a = make_app(resource="alpha")
    b = make_app(resource="beta")

    @b.command("add")
    async def add(specs):
        return {"sum": specs.body["x"] + specs.body["y"], "caller": specs.resource}

    await a.wait_online(10)
    await b.wait_online(10)
    assert await a.api(cmd="add", body={"x": 2, "y": 3}, jid=b.jid, timeout=5) == {"sum": 5, "caller": "alpha"}
    assert await a.api(cmd="add", body={"x": 1, "y": 1}, resource="beta", timeout=5) == {"sum": 2, "caller": "alpha"}
    answer = await a.api(cmd="nope", jid=b.jid, timeout=5)
    assert answer["error"] == "unknown-command"
    assert (await a.api(cmd="ping", jid=a.jid + "x", timeout=5))["error"] == "unavailable"


async def test_info_reports_counts(make_app, login):
    app = make_app(public=True)
    await app.wait_online(10)
    client = await login("client")
    await client.call(app.jid, "ping", timeout=5)
    info = await client.call(app.jid, "info", timeout=5)
    assert info["jid"] == app.jid
    assert {"ping", "info"} <= set(info["commands"])
    assert "requests" not in info and "sessions" not in info  # a stranger on a public worker: no internals
    owner = await login("worker")
    info = await owner.call(app.jid, "info", timeout=5)
    assert info["requests"]["answered"] >= 1 and info["sessions"] == 1


async def test_wrong_password_is_fatal_not_retried(prosody, accounts, monkeypatch):
    from libs.bridge import AuthenticationFailed
    from libs.bridge.xmpp import XmppTransport
    from tests.support.accounts import xmpp_of

    connects = []
    connect = XmppTransport._connect

    def counting_connect(self: XmppTransport, host: str, port: int) -> None:
        connects.append(self.jid)
        connect(self, host, port)

    monkeypatch.setattr(XmppTransport, "_connect", counting_connect)
    jid = accounts["worker"][0]
    config = load_config(prosody.env(jid.split("@")[0], "wrong-password"))
    reasons: list[str] = []
    app = App(resource="badpw", config=config, exit_on_fatal=False, keepalive=0)
    app._on_fatal = reasons.append  # type: ignore[method-assign]
    try:
        with pytest.raises(AuthenticationFailed, match="QE_PASSWORD"):
            await app.wait_online(10)
        transport = app.transport
        assert transport is not None
        xmpp = xmpp_of(app)
        if xmpp.transport is not None:  # the failed stream is closed (or about to be) ...
            await asyncio.wait_for(xmpp.disconnected, 5)
        assert transport._retry is None and transport.backoff.attempts == 0, "a reconnect is planned"  # ... for good
        assert connects == [app.jid]  # one attempt, ever
        assert len(reasons) == 1 and "refused the password" in reasons[0] and "QE_PASSWORD" in reasons[0]
        assert transport.sessions == 0 and not app.online
    finally:
        await app.close(1)


async def test_handlers_start_in_arrival_order_and_answer_independently(make_app, login):
    """XMPP delivers one sender's stanzas in order; the worker starts handlers in that order
    (a handler may finish later than one started after it: answers are not ordered)."""
    app = make_app(public=True)
    started: list[int] = []
    release = asyncio.Event()

    async def onapi(specs):
        started.append(specs.body["n"])
        if specs.body["n"] == 0:
            await release.wait()  # the first call is held until all the others have answered
        return {"n": specs.body["n"]}

    app.xmpp.onapi = onapi
    await app.wait_online(10)
    client = await login("client")
    first = asyncio.ensure_future(client.call(app.jid, "work", {"n": 0}, timeout=10))
    rest = await asyncio.gather(*(client.call(app.jid, "work", {"n": n}, timeout=10) for n in range(1, 50)))
    assert [r["n"] for r in rest] == list(range(1, 50))
    assert not first.done()
    release.set()
    assert await asyncio.wait_for(first, 10) == {"n": 0}
    assert started == list(range(50))


async def test_wait_answering_wakes_at_the_workers_presence(make_app, login, accounts, monkeypatch):
    """A session of the worker's own account is told by the server when the worker logs in
    (its available presence): ``wait_answering`` pings again then, not at its next retry."""
    from libs.bridge import client as client_module
    from libs.bridge import wait_answering

    monkeypatch.setattr(client_module, "_RETRY_OWN_ACCOUNT_S", 60.0)  # only the presence can wake it in time
    owner = await login("worker")
    pings: list[str] = []
    refused = asyncio.Event()
    call = owner.call

    async def counting_call(jid: str, cmd: str, body: Any = None, *, timeout: float = 10.0) -> dict[str, Any]:
        pings.append(cmd)
        try:
            return await call(jid, cmd, body, timeout=timeout)
        except RemoteError as exc:
            if exc.code == "unavailable":
                refused.set()
            raise

    owner.call = counting_call  # type: ignore[method-assign]
    waiting = asyncio.create_task(wait_answering(owner, f"{accounts['worker'][0]}/late", 20))
    await asyncio.wait_for(refused.wait(), 5)  # not online yet: the first ping is refused
    app = make_app(resource="late")  # now the worker logs in
    assert await asyncio.wait_for(waiting, 10) == {"pong": True, "environment": "python"}
    assert pings == ["ping", "ping"]
    assert app.online


@pytest.mark.parametrize("setting", ["on", "off"])
async def test_one_request_line_per_call(make_app, login, accounts, caplog, setting):
    import logging

    caplog.set_level(logging.INFO)
    app = make_app(public=True, extra_env={"QE_REQUEST_LOG": setting})
    await app.wait_online(10)
    client = await login("client")
    assert (await client.call(app.jid, "ping", timeout=5))["pong"] is True
    lines = [r for r in caplog.records if r.name == "libs.bridge.requests"]
    if setting == "off":
        assert lines == []
        return
    [line] = lines
    assert line.levelno == logging.INFO
    fields = line.request
    assert (fields["cmd"], fields["caller"], fields["outcome"]) == ("ping", accounts["client"][0], "ok")
    assert isinstance(fields["ms"], float) and fields["ms"] >= 0
