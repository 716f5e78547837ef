"""QE python-worker parity on a ``MemoryNetwork`` (no server): the names and behaviour QE
scripts rely on (Nexus decorators, roles, ``{}`` for falsy results, direct and channel
messages, services found by name, out-of-scope names), each shown by a check that fails when
the behaviour is missing. docs/compat.md points at these tests.

A message that must *not* arrive is shown without sleeping: a marker is sent after it over a
path that delivers in order, and the receiver's next message must be the marker.
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest

from libs import _runtime
from libs.bridge import App, MemoryNetwork, MessageSpecs, RemoteError, Role, serial_generator
from libs.bridge.app import OutOfScope
from libs.bridge.services import Announcement, ServiceDirectory, service_room
from libs.bridge.transport import Message

Factory = Callable[..., App]
PONG = {"pong": True, "environment": "python"}


@pytest.fixture
async def make_app(net: MemoryNetwork) -> AsyncIterator[Factory]:
    apps: list[App] = []

    def factory(jid: str = "worker@localhost/python", *, allow: tuple[str, ...] = (), **kwargs: Any) -> App:
        app = App(transport=net.transport(jid, allow=allow), exit_on_fatal=False, **kwargs)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.close(0.1)


class Inbox:
    """Keeps what its ``handler`` (an ``async def``, as the decorators require) gets, in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[MessageSpecs] = asyncio.Queue()

        async def handler(specs: MessageSpecs) -> None:
            self.queue.put_nowait(specs)

        self.handler = handler

    async def next(self) -> MessageSpecs:
        return await asyncio.wait_for(self.queue.get(), 2)

    def empty(self) -> bool:
        return self.queue.empty()


async def online(*apps: App) -> None:
    for app in apps:
        await app.wait_online(1)


# -- Nexus API, exports, ping ------------------------------------------------------------


def test_qe_scripts_import_the_nexus_names_from_libs_bridge() -> None:
    import libs.bridge
    from libs.bridge import NexusAPISpecs, NexusMessageSpecs, OutOfScope  # as QE's docs write it
    from libs.bridge.specs import APISpecs

    assert NexusAPISpecs is APISpecs and NexusMessageSpecs is MessageSpecs
    assert {"NexusAPISpecs", "NexusMessageSpecs", "OutOfScope"} <= set(libs.bridge.__all__)
    assert issubclass(OutOfScope, AttributeError)


async def test_nexus_api_answers_its_command(make_app, connect) -> None:
    app = make_app()
    seen: list[Any] = []

    @app.nexus.API("samplecmd")
    async def sample(specs):
        seen.append(specs)
        return {"code": 0, "myval": specs.body["x"] * 2}

    assert sample.__name__ == "sample"  # the decorator gives the function back
    await online(app)
    owner = await connect("worker@localhost")
    assert await owner.call(app.jid, "samplecmd", {"x": 21}, timeout=2) == {"code": 0, "myval": 42}
    assert seen[0].cmd == "samplecmd" and seen[0].servid is None and seen[0].servsecret is None
    with pytest.raises(TypeError, match="async"):
        app.nexus.API("sync")(lambda specs: {})


async def test_ping_answers_qes_pong_unless_the_script_answers_it(make_app, connect) -> None:
    plain, nexus, legacy, quiet = (make_app(f"worker@localhost/{r}") for r in ("plain", "nexus", "legacy", "quiet"))

    @nexus.nexus.API("ping")
    async def ping(specs):
        return {"pong": "nexus"}

    async def onapi(specs):
        return {"pong": "legacy"} if specs.cmd == "ping" else None

    async def silent(specs):
        return None

    legacy.xmpp.onapi = onapi
    quiet.xmpp.onapi = silent  # onapi took ping and said nothing: the built-in answers
    await online(plain, nexus, legacy, quiet)
    owner = await connect("worker@localhost")
    assert await owner.call(plain.jid, "ping", timeout=2) == PONG
    assert await owner.call(nexus.jid, "ping", timeout=2) == {"pong": "nexus"}
    assert await owner.call(legacy.jid, "ping", timeout=2) == {"pong": "legacy"}
    assert await owner.call(quiet.jid, "ping", timeout=2) == PONG


# -- roles -----------------------------------------------------------------------------------


async def test_handlers_see_qes_roles(make_app, connect) -> None:
    assert Role.ALLOWED is Role.PARTNER and Role.PUBLIC is Role.USER
    assert [str(r) for r in Role] == ["owner", "partner", "user"]
    private = make_app("worker@localhost/private", allow=("friend@localhost",))
    public = make_app("worker@localhost/public", allow=("friend@localhost",), public=True)
    roles: list[tuple[str, str]] = []

    async def whoami(specs):
        roles.append((specs.resource, specs.role))
        return {"role": specs.role}

    private.nexus.API("whoami")(whoami)
    public.xmpp.onapi = whoami
    await online(private, public)
    owner, friend, stranger = [await connect(j) for j in ("worker@localhost", "friend@localhost",
                                                            "stranger@localhost")]
    for app in (private, public):
        assert await owner.call(app.jid, "whoami", timeout=2) == {"role": "owner"}
        assert await friend.call(app.jid, "whoami", timeout=2) == {"role": "partner"}
    assert await stranger.call(public.jid, "whoami", timeout=2) == {"role": "user"}
    with pytest.raises(RemoteError) as err:
        await stranger.call(private.jid, "whoami", timeout=2)
    assert err.value.code == "forbidden"
    assert [role for _res, role in roles] == ["owner", "partner", "owner", "partner", "user"]


# -- answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("falsy", [None, {}, 0, "", False, []])
async def test_a_falsy_return_answers_empty(make_app, connect, falsy) -> None:
    app = make_app()

    @app.nexus.API("nothing")
    async def nothing(specs):
        return falsy

    async def onapi(specs):
        return falsy

    app.xmpp.onapi = onapi
    await online(app)
    owner = await connect("worker@localhost")
    assert await owner.call(app.jid, "nothing", timeout=2) == {}
    assert await owner.call(app.jid, "anything-else", timeout=2) == {}  # onapi took it


async def test_a_command_nobody_takes_is_unknown(make_app, connect) -> None:
    app = make_app()

    @app.nexus.API("known")
    async def known(specs):
        return {"ok": 1}

    await online(app)
    owner = await connect("worker@localhost")
    with pytest.raises(RemoteError) as err:
        await owner.call(app.jid, "nosuch", timeout=2)
    assert err.value.code == "unknown-command"
    assert await App.api(app, jid=app.jid, cmd="nosuch") == {"error": "unknown-command",
                                                             "message": "unknown command 'nosuch'"}


async def test_app_api_returns_errors_as_dicts_never_raises(make_app) -> None:
    worker = make_app("worker@localhost/w")
    caller = make_app("worker@localhost/c")
    release = asyncio.Event()

    @worker.nexus.API("slow")
    async def slow(specs):
        await release.wait()

    @worker.nexus.API("boom")
    async def boom(specs):
        raise RuntimeError("detail")

    await online(worker, caller)
    assert (await caller.api(jid=worker.jid, cmd="slow", timeout=0.05))["error"] == "timeout"
    assert await caller.api(jid=worker.jid, cmd="boom") == {"error": "handler-error",
                                                            "message": "'boom' failed: RuntimeError: detail"}
    assert (await caller.api(jid="worker@localhost/offline", cmd="ping"))["error"] == "unavailable"
    assert (await caller.api(jid="worker@localhost", cmd="ping"))["error"] == "bad-request"  # a bare JID
    assert await caller.api(cmd="ping", resource="w") == PONG  # a sibling on our own account
    release.set()


async def test_specs_app_is_the_calling_apps_service(make_app, connect) -> None:
    worker = make_app("worker@localhost/w")
    caller = make_app("worker@localhost/c", app="caller")
    default = make_app("worker@localhost/byresource")
    apps: list[str | None] = []

    @worker.nexus.API("whoami")
    async def whoami(specs):
        apps.append(specs.app)
        return {}

    await online(worker, caller, default)
    await caller.api(jid=worker.jid, cmd="whoami")
    await default.api(jid=worker.jid, cmd="whoami")  # an App's service defaults to its resource
    await (await connect("worker@localhost")).call(worker.jid, "whoami", timeout=2)
    assert apps == ["caller", "byresource", None]


# -- direct messages ---------------------------------------------------------------------


async def test_direct_messages_and_their_specs(make_app) -> None:
    receiver = make_app("worker@localhost/r")
    sender = make_app("worker@localhost/s")
    inbox = Inbox()
    receiver.xmpp.msgreceiver = inbox.handler
    await online(receiver, sender)
    sender.sendtojid(receiver.jid, {"a": 1})
    sender.sendtojid(receiver.jid, [1, "two"])
    sender.sendtojid(receiver.jid, "plain text")
    sender.sendtojid(receiver.jid, "{not json")
    assert await sender.direct(jid=receiver.jid, body={"b": 2}) == {"code": 0, "jid": receiver.jid}
    got = [await inbox.next() for _ in range(5)]
    assert [m.body for m in got] == [{"a": 1}, [1, "two"], "plain text", "{not json", {"b": 2}]
    first = got[0]
    assert (first.fromjid, first.uid, first.resource, first.role) == (sender.jid, "worker@localhost", "s", "owner")
    assert (first.channel, first.itsme, first.itsbro) == (None, False, True)

    receiver.sendtojid(receiver.jid, "to myself")
    mine = await inbox.next()
    assert mine.itsme and mine.itsbro


async def test_a_direct_handler_takes_direct_messages_before_msgreceiver(make_app) -> None:
    receiver = make_app("worker@localhost/r")
    sender = make_app("worker@localhost/s")
    direct, fallback = Inbox(), Inbox()
    receiver.xmpp.msgreceiver = fallback.handler
    receiver.nexus.Direct()(direct.handler)
    await online(receiver, sender)
    sender.sendtojid(receiver.jid, "hello")
    assert (await direct.next()).body == "hello"
    assert fallback.empty()  # delivered in the same loop pass as to `direct`


async def test_the_msgreceiver_decorator_is_the_legacy_slot(make_app) -> None:
    receiver = make_app("worker@localhost/r")
    sender = make_app("worker@localhost/s")
    inbox = Inbox()
    assert receiver.nexus.MsgReceiver()(inbox.handler) is inbox.handler
    assert receiver.xmpp.msgreceiver is inbox.handler
    receiver.subscribe("news")
    sender.subscribe("news")
    await online(receiver, sender)
    sender.sendtojid(receiver.jid, "direct")
    assert (await inbox.next()).channel is None
    sender.sendtochannel("news", "in a channel")
    assert (await inbox.next()).channel == "news"


async def test_a_strangers_message_reaches_only_a_public_worker(net, make_app) -> None:
    private = make_app("worker@localhost/private", allow=("friend@localhost",))
    public = make_app("worker@localhost/public", public=True)
    inboxes = {private.jid: Inbox(), public.jid: Inbox()}
    private.xmpp.msgreceiver = inboxes[private.jid].handler
    public.xmpp.msgreceiver = inboxes[public.jid].handler
    await online(private, public)
    stranger = net.transport("stranger@localhost/x")
    friend = net.transport("friend@localhost/y")
    stranger.start()
    friend.start()
    for app in (private, public):
        stranger.send_message(app.jid, "from a stranger")
    friend.send_message(private.jid, "marker")
    got = await inboxes[private.jid].next()
    assert (got.body, got.role) == ("marker", "partner")  # the stranger's came first and was dropped
    got = await inboxes[public.jid].next()
    assert (got.body, got.role, got.fromjid) == ("from a stranger", "user", stranger.jid)
    await stranger.close(1)
    await friend.close(1)


async def test_sendtojid_before_the_worker_started_is_sent_once_it_has(make_app) -> None:
    receiver = make_app("worker@localhost/r")
    inbox = Inbox()
    receiver.xmpp.msgreceiver = inbox.handler
    await online(receiver)
    sender = make_app("worker@localhost/s")  # created in a coroutine: starts on the next loop pass
    assert sender.transport is None
    sender.sendtojid(receiver.jid, {"early": True})
    assert (await inbox.next()).body == {"early": True}


async def test_sending_from_another_thread_is_sent_from_the_loop(make_app) -> None:
    """A plain ``SetInterval`` callback runs on a worker thread; QE scripts send from it."""
    receiver = make_app("worker@localhost/r")
    sender = make_app("worker@localhost/s")
    inbox, news = Inbox(), Inbox()
    receiver.xmpp.msgreceiver = inbox.handler
    receiver.nexus.Channel("news")(news.handler)
    sender.subscribe("news")
    await online(receiver, sender)
    await asyncio.to_thread(sender.sendtojid, receiver.jid, "from a thread")
    assert (await inbox.next()).body == "from a thread"
    await asyncio.to_thread(sender.sendtochannel, "news", "to a channel from a thread")
    assert (await news.next()).body == "to a channel from a thread"


@pytest.mark.parametrize("accept", [False, True])
async def test_delayed_messages_are_dropped_unless_accepted(make_app, accept) -> None:
    app = make_app(accept_delayed=accept) if accept else make_app()
    inbox = Inbox()
    app.xmpp.msgreceiver = inbox.handler
    await online(app)
    assert app.accept_delayed is accept
    loop = asyncio.get_running_loop()
    transport = app.transport
    assert transport is not None
    # as the network delivers: each message in its own loop callback, in this order
    loop.call_soon(transport._receive_message, Message("worker@localhost/x", "stored", delayed=True))  # type: ignore[attr-defined]
    loop.call_soon(transport._receive_message, Message("worker@localhost/x", "live"))  # type: ignore[attr-defined]
    first = await inbox.next()
    assert first.body == ("stored" if accept else "live")


async def test_channel_history_is_dropped_even_when_delayed_messages_are_accepted(make_app) -> None:
    app = make_app(accept_delayed=True)
    inbox = Inbox()
    app.nexus.Channel("news")(inbox.handler)
    await online(app)
    room = "news@conference.localhost"
    loop = asyncio.get_running_loop()
    sender = "worker@localhost/x"
    loop.call_soon(app.transport._receive_message, Message(sender, "history", room=room, delayed=True))  # type: ignore[union-attr]
    loop.call_soon(app.transport._receive_message, Message(sender, "live", room=room))  # type: ignore[union-attr]
    assert (await inbox.next()).body == "live"


# -- channels --------------------------------------------------------------------------------


async def test_channel_messages_reach_the_other_subscribers(make_app) -> None:
    a, b, c = (make_app(f"worker@localhost/{r}") for r in "abc")
    inbox_a, inbox_b, inbox_c, direct_c, news_b = Inbox(), Inbox(), Inbox(), Inbox(), Inbox()
    a.xmpp.msgreceiver, b.xmpp.msgreceiver, c.xmpp.msgreceiver = inbox_a.handler, inbox_b.handler, inbox_c.handler
    c.nexus.Direct()(direct_c.handler)  # takes direct messages, not channel ones
    for app in (a, b, c):
        app.subscribe("news")
    b.nexus.Channel("news")(news_b.handler)
    await online(a, b, c)

    a.sendtochannel("news", {"n": 1})
    got_b, got_c = await news_b.next(), await inbox_c.next()
    for got in (got_b, got_c):
        assert (got.body, got.channel, got.fromjid, got.role) == ({"n": 1}, "news", a.jid, "owner")
        assert got.itsbro and not got.itsme
    assert inbox_b.empty() and direct_c.empty()  # the Channel handler took it from msgreceiver
    b.sendtojid(a.jid, "marker")
    assert (await inbox_a.next()).body == "marker"  # the sender does not get its own message back

    c.unsubscribe("news")
    with pytest.raises(ValueError, match="not subscribed"):
        c.sendtochannel("news", "x")
    a.sendtochannel("news", "second")
    assert (await news_b.next()).body == "second"
    a.sendtojid(c.jid, "marker")
    assert (await direct_c.next()).body == "marker" and inbox_c.empty()


async def test_sendtochannel_needs_a_subscription(make_app) -> None:
    app = make_app()
    with pytest.raises(ValueError, match=r"App.subscribe\('news'\)"):
        app.sendtochannel("news", "x")


async def test_access_rules_apply_to_channel_senders(make_app) -> None:
    private = make_app("worker@localhost/private")
    public = make_app("worker@localhost/public", public=True)
    stranger = make_app("stranger@localhost/x")
    inbox_private, inbox_public = Inbox(), Inbox()
    private.xmpp.msgreceiver, public.xmpp.msgreceiver = inbox_private.handler, inbox_public.handler
    for app in (private, public, stranger):
        app.subscribe("news")
    await online(private, public, stranger)
    stranger.sendtochannel("news", "from a stranger")
    got = await inbox_public.next()
    assert (got.body, got.role, got.channel, got.fromjid) == ("from a stranger", "user", "news", stranger.jid)
    public.sendtojid(private.jid, "marker")
    assert (await inbox_private.next()).body == "marker"


async def test_messages_sent_to_channels_before_the_worker_started_arrive(make_app) -> None:
    listener = make_app("worker@localhost/l")
    inbox = Inbox()
    listener.nexus.Channel("news")(inbox.handler)  # subscribes too
    await online(listener)
    early = make_app("worker@localhost/e")
    early.subscribe("news")
    early.sendtochannel("news", "early")  # queued: not started, not in the room yet
    assert early.transport is None
    got = await inbox.next()
    assert (got.body, got.channel) == ("early", "news")


async def test_a_channel_is_one_room_whatever_the_case_of_its_name(make_app) -> None:
    listener = make_app("worker@localhost/l")
    sender = make_app("worker@localhost/s")
    news, other = Inbox(), Inbox()
    listener.xmpp.msgreceiver = other.handler
    listener.subscribe("News")
    listener.nexus.Channel("news")(news.handler)  # the same room: its handler takes the messages
    sender.subscribe("NEWS")
    await online(listener, sender)
    sender.sendtochannel("NEWS", "hi")
    got = await news.next()
    assert (got.body, got.channel) == ("hi", "News")  # the name as first subscribed
    assert other.empty()


async def test_a_service_room_cannot_be_subscribed_as_a_channel(make_app) -> None:
    worker = make_app("worker@localhost/w", app="resize")
    with pytest.raises(ValueError, match="reserved for services"):
        worker.subscribe(service_room("resize", worker.config.rooms_domain))


# -- services --------------------------------------------------------------------------------


class Service:
    """Two workers of service ``resize`` and a caller, all on one account; ``hold`` runs
    until released and counts its executions per worker."""

    def __init__(self, make_app: Factory) -> None:
        self.workers = [make_app(f"worker@localhost/r{i}", app="resize") for i in (1, 2)]
        self.caller = make_app("worker@localhost/caller", app="caller")
        self.ran: dict[str, int] = {w.jid: 0 for w in self.workers}
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.inbox = Inbox()
        for worker in self.workers:
            self._register(worker)

    def _register(self, worker: App) -> None:
        @worker.nexus.API("hold")
        async def hold(specs):
            self.ran[worker.jid] += 1
            self.started.set()
            await self.release.wait()
            return {"jid": worker.jid}

        @worker.nexus.API("whoami")
        async def whoami(specs):
            self.ran[worker.jid] += 1
            return {"jid": worker.jid}

        worker.xmpp.msgreceiver = self.inbox.handler

    @property
    def jids(self) -> list[str]:
        return [w.jid for w in self.workers]

    @property
    def room(self) -> str:
        return service_room("resize", self.caller.config.rooms_domain)

    async def online(self) -> None:
        await online(*self.workers, self.caller)
        # equal loads in JID order (r1 first) instead of at random: a check of the order
        # fails every time the rule is broken, not half of the time
        self.directory._rand = lambda: 0.5

    @property
    def directory(self) -> ServiceDirectory:
        assert self.caller._finder is not None
        return self.caller._finder.directory


async def test_a_workers_service_comes_from_app_then_qe_app_then_its_resource(net, make_app) -> None:
    transport = net.transport("worker@localhost/py1")
    from_config = App(transport=transport, config=replace(transport.config, app="resize"), exit_on_fatal=False)
    assert from_config.app == "resize"  # QE_APP
    assert make_app("worker@localhost/py2", app="other").app == "other"
    assert make_app("worker@localhost/py3").app == "py3"
    assert make_app("worker@localhost/-dash").app is None  # a resource that cannot name one: none
    with pytest.raises(ValueError, match="not a service name"):
        make_app("worker@localhost/py4", app="no spaces")
    caller = make_app("worker@localhost/caller")
    await online(from_config, caller)
    assert await caller.find(app="resize") == {"code": 0, "jids": [from_config.jid]}
    await from_config.close(0.1)


async def test_find_lists_the_workers_of_a_service(make_app) -> None:
    service = Service(make_app)
    await service.online()
    found = await service.caller.find(app="resize")
    assert found["code"] == 0 and sorted(found["jids"]) == sorted(service.jids)
    assert type(found) is dict
    known = service.caller.find(app="resize")  # without await: what the caller knows already
    assert known["code"] == 0 and sorted(known["jids"]) == sorted(service.jids)
    assert await service.caller.find(app="nobody") == {"code": 0, "jids": []}
    assert (await service.caller.find(app="not a name"))["code"] == -1


async def test_find_puts_the_least_loaded_first(make_app, connect) -> None:
    service = Service(make_app)
    busy, idle = service.workers  # r1 would come first on a tie
    await service.online()
    assert (await service.caller.find(app="resize"))["jids"] == [busy.jid, idle.jid]
    owner = await connect("worker@localhost")
    held = asyncio.ensure_future(owner.call(busy.jid, "hold", timeout=5))  # not through the caller
    await service.started.wait()
    busy._announce()  # its announcer would say so within a second: say it now
    assert (await service.caller.find(app="resize"))["jids"] == [idle.jid, busy.jid]
    service.release.set()
    await held


async def test_a_service_call_goes_to_one_worker_and_our_calls_in_flight_spread(make_app) -> None:
    service = Service(make_app)
    await service.online()
    answer = await service.caller.api(app="resize", cmd="whoami")
    assert answer["jid"] in service.jids and sum(service.ran.values()) == 1
    service.ran = dict.fromkeys(service.jids, 0)
    calls = [asyncio.ensure_future(service.caller.api(app="resize", cmd="hold")) for _ in range(2)]
    await service.started.wait()
    service.release.set()
    answers = await asyncio.gather(*calls)
    assert [a["jid"] for a in answers] == service.jids  # r1, then r2: our call to r1 counted as its load
    assert service.ran == dict.fromkeys(service.jids, 1)
    assert (await service.caller.api(app="resize", cmd="whoami", resource="r2"))["jid"] == service.jids[1]


async def test_a_worker_that_refuses_before_running_passes_the_call_on(make_app) -> None:
    service = Service(make_app)
    closing, other = service.workers
    await service.online()
    hold = service.directory.sending(other.jid)  # `closing` is chosen first
    closing.dispatcher.accepting = False  # where close() begins: it answers unavailable
    assert await service.caller.api(app="resize", cmd="whoami") == {"jid": other.jid}
    assert service.ran == {closing.jid: 0, other.jid: 1}
    hold()


async def test_a_worker_gone_before_its_room_said_so_passes_the_call_on(make_app) -> None:
    service = Service(make_app)
    await service.online()
    await service.caller.find(app="resize")
    directory = service.directory
    ghost = "worker@localhost/ghost"  # offline: the network answers unavailable at once
    directory.occupant(service.room, ghost, ghost, Announcement("resize", 0).encode(), True)
    holds = [directory.sending(jid) for jid in service.jids]
    assert (await service.caller.find(app="resize"))["jids"][0] == ghost
    answer = await service.caller.api(app="resize", cmd="whoami")
    assert answer["jid"] in service.jids and sum(service.ran.values()) == 1
    for done in holds:
        done()


async def test_a_request_running_when_its_worker_shuts_down_is_interrupted_not_retried(make_app) -> None:
    service = Service(make_app)
    await service.online()
    call = asyncio.ensure_future(service.caller.api(app="resize", cmd="hold", timeout=5))
    await service.started.wait()
    [running] = [w for w in service.workers if service.ran[w.jid]]
    await running.close(0.1)
    answer = await asyncio.wait_for(call, 2)
    assert answer["error"] == "interrupted"
    assert sum(service.ran.values()) == 1  # not run again on the other worker
    service.release.set()


async def test_a_service_without_workers(make_app) -> None:
    caller = make_app("worker@localhost/caller")
    await online(caller)
    answer = await caller.api(app="nobody", cmd="ping")
    assert answer["error"] == "no worker found" and "nobody" in answer["message"]
    answer = await caller.direct(app="nobody", body="x")
    assert answer["error"] == "no worker found"
    assert (await caller.api(cmd="ping"))["error"] == "no worker found"  # neither app=, jid= nor resource=


async def test_a_closing_worker_leaves_its_service_before_it_drains(make_app, connect) -> None:
    service = Service(make_app)
    closing, other = service.workers
    await service.online()
    owner = await connect("worker@localhost")
    held = asyncio.ensure_future(owner.call(closing.jid, "hold", timeout=5))
    await service.started.wait()
    close = asyncio.ensure_future(closing.close(5))  # waits for `hold` to finish
    await asyncio.sleep(0)  # one loop pass: close() starts, leaves the room, waits for `hold`
    assert (await service.caller.find(app="resize"))["jids"] == [other.jid]
    assert await service.caller.api(app="resize", cmd="whoami") == {"jid": other.jid}
    assert not close.done()
    service.release.set()
    assert await held == {"jid": closing.jid}  # drained: the running request was answered
    await close


async def test_a_closed_worker_leaves_its_service(make_app) -> None:
    service = Service(make_app)
    await service.online()
    await service.workers[0].close(0.1)
    assert (await service.caller.find(app="resize"))["jids"] == [service.jids[1]]
    for _ in range(3):
        assert await service.caller.api(app="resize", cmd="whoami") == {"jid": service.jids[1]}


async def test_direct_to_a_service_reaches_one_worker(make_app) -> None:
    service = Service(make_app)
    await service.online()
    answer = await service.caller.direct(app="resize", body={"job": 1})
    assert answer["code"] == 0 and answer["jid"] in service.jids
    got = await service.inbox.next()
    assert (got.body, got.fromjid, got.channel) == ({"job": 1}, service.caller.jid, None)
    service.caller.sendtojid(answer["jid"], "marker")
    assert (await service.inbox.next()).body == "marker"  # only one worker got it


# -- helpers ------------------------------------------------------------------------------------


def test_serial_generator_is_letters_and_digits_of_the_length_asked() -> None:
    assert serial_generator() != serial_generator() and len(serial_generator()) == 10
    value = serial_generator(64)
    assert len(value) == 64 and set(value) <= set(string.ascii_letters + string.digits)
    assert serial_generator(0) == ""


# -- out of scope ------------------------------------------------------------------------------


async def test_hosted_platform_names_say_where_to_read_why(make_app) -> None:
    app = make_app()
    for name in ("udb", "xdb"):
        with pytest.raises(OutOfScope, match="docs/compat.md"):
            getattr(app, name)
    with pytest.raises(AttributeError, match="docs/compat.md") as err:
        app.no_such_thing  # noqa: B018
    assert not isinstance(err.value, OutOfScope)
    assert not hasattr(app, "udb")


async def test_rest_is_a_fastapi_app_only_when_asked_for(net) -> None:
    from fastapi import FastAPI

    plain = App(transport=net.transport("worker@localhost/plain"))
    with pytest.raises(RuntimeError, match=r"App\(rest=True\)"):
        plain.rest.get("/x")
    served = App(transport=net.transport("worker@localhost/served"), rest=3999)
    assert isinstance(served.rest, FastAPI)
    await served.close(1)  # before it started: it never will (no socket in a unit test)
    await asyncio.sleep(0)  # the start scheduled by the constructor runs, and does nothing
    assert served.transport is None
    for bad in (-1, 70000, "3000", 3.5):
        with pytest.raises(ValueError, match="port number"):
            App(transport=net.transport("worker@localhost/bad"), rest=bad)


# -- before the loop runs ----------------------------------------------------------------------


def test_find_before_the_loop_runs_runs_it_until_it_has_the_answer() -> None:
    """QE scripts call ``App.find`` at module level, before ``run_forever()``."""
    net = MemoryNetwork()
    loop = asyncio.new_event_loop()
    previous = _runtime._RT.loop
    _runtime.set_main_loop(loop)
    try:
        workers = [App(transport=net.transport(f"worker@localhost/r{i}"), app="resize", handle_signals=False)
                   for i in (1, 2)]
        caller = App(transport=net.transport("worker@localhost/caller"), handle_signals=False)
        assert caller.loop is loop and not loop.is_running() and caller.transport is None
        inbox, news = Inbox(), Inbox()
        workers[0].xmpp.msgreceiver = inbox.handler
        workers[1].nexus.Channel("news")(news.handler)
        caller.subscribe("news")  # at module level, as QE's docs do
        caller.sendtojid(workers[0].jid, "queued before the loop ran")
        caller.sendtochannel("news", "to a channel before the loop ran")
        found = caller.find(app="resize")
        assert found["code"] == 0 and sorted(found["jids"]) == sorted(w.jid for w in workers)
        assert not loop.is_running()
        assert loop.run_until_complete(inbox.next()).body == "queued before the loop ran"
        got = loop.run_until_complete(news.next())
        assert (got.body, got.channel, got.fromjid) == ("to a channel before the loop ran", "news", caller.jid)
        for app in (*workers, caller):
            loop.run_until_complete(app.close(0.1))
    finally:
        _runtime._RT.loop = previous
        loop.close()
