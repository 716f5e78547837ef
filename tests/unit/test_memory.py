"""Workers and callers on a ``MemoryNetwork``: the same App, Client and dispatch as over XMPP,
with no server. What the network itself must do as a server would (stamp the sender, answer
an offline JID at once, deliver later, take over a resource) is tested here too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from libs.bridge import (
    App,
    MemoryNetwork,
    MessageSpecs,
    NotConnected,
    RemoteError,
    wait_answering,
)
from libs.bridge.errors import CallTimeout

Factory = Callable[..., App]


@pytest.fixture
async def make_app(net: MemoryNetwork) -> AsyncIterator[Factory]:
    apps: list[App] = []

    def factory(jid: str = "worker@localhost/python", *, allow: tuple[str, ...] = ("friend@localhost",),
                **kwargs: Any) -> App:
        app = App(transport=net.transport(jid, allow=allow), **kwargs)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.close(1)


async def test_ping_info_and_the_apps_identity_come_from_the_transport(make_app, connect) -> None:
    app = make_app("worker@localhost/py1")
    await app.wait_online(1)
    assert (app.jid, app.resource, app.config.jid) == ("worker@localhost/py1", "py1", "worker@localhost")
    friend = await connect("friend@localhost")
    assert await friend.call(app.jid, "ping", timeout=2) == {"pong": True, "environment": "python"}
    owner = await connect("worker@localhost")
    info = await owner.call(app.jid, "info", timeout=2)
    assert info["sessions"] == 1 and info["resumptions"] == 0 and info["requests"]["answered"] == 1  # the ping (info is not answered yet)


async def test_access_is_decided_on_the_sender_the_network_stamps(make_app, connect) -> None:
    app = make_app()
    roles: list[str] = []

    @app.command("whoami")
    async def whoami(specs):
        roles.append(specs.role)
        return {"uid": specs.uid}

    await app.wait_online(1)
    owner, friend, stranger = [await connect(j) for j in ("worker@localhost", "friend@localhost",
                                                            "stranger@localhost")]
    assert (await owner.call(app.jid, "whoami", timeout=2))["uid"] == "worker@localhost"
    assert (await friend.call(app.jid, "whoami", timeout=2))["uid"] == "friend@localhost"
    with pytest.raises(RemoteError) as err:
        await stranger.call(app.jid, "whoami", timeout=2)
    assert err.value.code == "forbidden"
    assert roles == ["owner", "partner"]


async def test_a_public_worker_answers_strangers(make_app, connect) -> None:
    app = make_app(public=True)
    await app.wait_online(1)
    stranger = await connect("stranger@localhost")
    assert await stranger.call(app.jid, "ping", timeout=2) == {"pong": True, "environment": "python"}


async def test_errors_deadlines_and_sizes_as_over_xmpp(make_app, connect) -> None:
    app = make_app(allow=("friend@localhost",))
    release = asyncio.Event()

    async def onapi(specs):
        if specs.cmd == "boom":
            raise RuntimeError("detail")
        if specs.cmd == "slow":
            await release.wait()
            return {}
        if specs.cmd == "huge":
            return {"x": "a" * 300_000}
        return None

    app.xmpp.onapi = onapi
    await app.wait_online(1)
    friend = await connect("friend@localhost")
    for cmd, code in (("boom", "handler-error"), ("huge", "too-large")):
        with pytest.raises(RemoteError) as err:
            await friend.call(app.jid, cmd, timeout=2)
        assert err.value.code == code, cmd
    assert await friend.call(app.jid, "nosuch", timeout=2) == {}  # onapi took it and said nothing: QE's {}
    with pytest.raises(CallTimeout):  # the worker gives up at the caller's deadline: a timeout
        await friend.call(app.jid, "slow", timeout=0.2)
    with pytest.raises(ValueError, match="the limit is"):  # refused before it is sent
        await friend.call(app.jid, "echo", {"x": "a" * 300_000}, timeout=2)
    release.set()


async def test_an_offline_worker_is_unavailable_at_once(connect) -> None:
    friend = await connect("friend@localhost")
    with pytest.raises(RemoteError) as err:
        await friend.call("worker@localhost/python", "ping", timeout=30)
    assert err.value.code == "unavailable"


async def test_delivery_is_a_loop_pass_later_never_inside_the_senders_call(make_app, connect) -> None:
    app = make_app()
    seen: list[str] = []
    app.xmpp.onapi = None

    @app.command("mark")
    async def mark(specs):
        seen.append("handler")
        return {}

    await app.wait_online(1)
    friend = await connect("friend@localhost")
    call = asyncio.ensure_future(friend.call(app.jid, "mark", timeout=2))
    await asyncio.sleep(0)  # the call is sent: the request waits in the loop's queue
    seen.append("sent")
    await call
    assert seen == ["sent", "handler"]


async def test_workers_call_each_other_and_chat(make_app) -> None:
    first = make_app("worker@localhost/a", allow=())
    second = make_app("worker@localhost/b", allow=())
    got: asyncio.Queue[MessageSpecs] = asyncio.Queue()

    async def receiver(specs: MessageSpecs) -> None:
        await got.put(specs)

    second.xmpp.msgreceiver = receiver
    await first.wait_online(1)
    await second.wait_online(1)
    assert await first.api(cmd="ping", resource="b") == {"pong": True, "environment": "python"}  # QE's sibling call
    first.sendtojid(second.jid, {"hello": 1})
    specs = await asyncio.wait_for(got.get(), 2)
    assert specs.fromjid == first.jid and specs.body == {"hello": 1} and specs.itsbro


async def test_wait_answering_wakes_when_the_worker_comes_online(net, make_app, connect) -> None:
    owner = await connect("worker@localhost")
    waiting = asyncio.ensure_future(wait_answering(owner, "worker@localhost/late", timeout=5))
    await asyncio.sleep(0)
    assert not waiting.done()
    app = make_app("worker@localhost/late")
    assert await asyncio.wait_for(waiting, 5) == {"pong": True, "environment": "python"}
    assert app.online


async def test_a_second_login_on_the_resource_takes_it_over(net, make_app, connect, caplog) -> None:
    reasons: list[str] = []
    first = make_app(exit_on_fatal=False)
    first._on_fatal = reasons.append  # type: ignore[method-assign]
    await first.wait_online(1)
    second = make_app()
    await second.wait_online(1)
    assert reasons == ["another client logged in as worker@localhost/python and took over this resource"]
    # and the newcomer says so too (on a real server, the loser's farewell message tells it)
    told = [r for r in caplog.records if "took over this resource from another session" in r.getMessage()]
    assert len(told) == 1 and told[0].levelname == "WARNING"
    assert told[0].getMessage().startswith("worker@localhost/python took over")
    assert not first.online and second.online
    friend = await connect("friend@localhost")
    assert await friend.call(second.jid, "ping", timeout=2) == {"pong": True, "environment": "python"}


async def test_closing_a_caller_ends_its_calls_in_flight(make_app, connect) -> None:
    app = make_app()

    @app.command("hang")
    async def hang(specs):
        await asyncio.Event().wait()

    await app.wait_online(1)
    friend = await connect("friend@localhost")
    call = asyncio.ensure_future(friend.call(app.jid, "hang", timeout=5))
    await asyncio.sleep(0)
    await friend.transport.close(1)
    with pytest.raises(NotConnected):
        await call


def test_a_transport_needs_a_jid(net) -> None:
    with pytest.raises(ValueError, match="not a JID"):
        net.transport("worker")
