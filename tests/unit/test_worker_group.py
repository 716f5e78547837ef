"""``WorkerGroup`` on a ``MemoryNetwork`` (no server): many workers in one process, each its
own resource, logged in with a bound, failures reported without stopping the others."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from libs import _runtime
from libs.bridge import APISpecs, App, Client, MemoryNetwork, MemoryTransport, WorkerConfig, WorkerGroup

ACCOUNT = "worker@localhost"
CONFIG = WorkerConfig(jid=ACCOUNT, password="", host="memory", tls="off", keepalive=0, blocked_ms=0)
PONG = {"pong": True, "environment": "python"}
Connect = Callable[[str], Awaitable[Client]]


def on(net: MemoryNetwork, **extra: Any) -> Callable[..., App]:
    """A group factory whose workers join ``net`` as ACCOUNT/<their resource>."""

    def factory(*, resource: str, config: WorkerConfig, **kwargs: Any) -> App:
        return App(transport=net.transport(f"{ACCOUNT}/{resource}"), config=config, **{**kwargs, **extra})

    return factory


async def test_each_worker_is_its_own_resource_and_answers(net: MemoryNetwork, connect: Connect) -> None:
    async with WorkerGroup(5, resource="svc", factory=on(net), config=CONFIG) as group:
        assert group.online == 5
        assert net.online() == [f"{ACCOUNT}/svc-{i}" for i in range(5)]
        owner = await connect(ACCOUNT)
        for i in range(5):
            assert await owner.call(f"{ACCOUNT}/svc-{i}", "ping", timeout=2) == PONG
    assert not [jid for jid in net.online() if "/svc-" in jid]  # leaving the block closed every worker


async def test_handlers_are_registered_per_worker_and_see_their_own_app(net: MemoryNetwork, connect: Connect) -> None:
    group = WorkerGroup(3, factory=on(net), config=CONFIG)

    def register(app: App) -> None:
        @app.command("whoami")
        async def whoami(specs: APISpecs) -> dict[str, Any]:
            return {"jid": app.jid}

    for app in group:
        register(app)

    async with group:
        owner = await connect(ACCOUNT)
        answers = [await owner.call(f"{ACCOUNT}/python-{i}", "whoami", timeout=2) for i in range(3)]
    assert answers == [{"jid": f"{ACCOUNT}/python-{i}"} for i in range(3)]


async def test_logins_run_at_most_logins_at_a_time(net: MemoryNetwork) -> None:
    running = 0
    most = 0
    gate = asyncio.Event()

    class Slow(MemoryTransport):
        async def wait_online(self, timeout: float) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            if most >= 3:
                gate.set()
            await asyncio.wait_for(gate.wait(), 2)
            running -= 1
            await super().wait_online(timeout)

    def factory(*, resource: str, config: WorkerConfig, **kwargs: Any) -> App:
        plain = net.transport(f"{ACCOUNT}/{resource}")
        return App(transport=Slow(net, plain.jid, plain.config), config=config, **kwargs)

    async with WorkerGroup(10, factory=factory, logins=3, config=CONFIG) as group:
        assert group.online == 10
    assert most == 3


async def test_a_refused_login_is_reported_and_the_others_serve(net: MemoryNetwork, connect: Connect) -> None:
    class Refused(MemoryTransport):
        def start(self) -> None:
            self.fatal = "authentication refused (not-authorized)"

    def factory(*, resource: str, config: WorkerConfig, **kwargs: Any) -> App:
        plain = net.transport(f"{ACCOUNT}/{resource}")
        transport = Refused(net, plain.jid, plain.config) if resource == "python-2" else plain
        return App(transport=transport, config=config, **kwargs)

    async with WorkerGroup(4, factory=factory, config=CONFIG) as group:
        started = await group.start()  # a second start() answers what the first found
        assert started.online == 3
        assert started.failed == {f"{ACCOUNT}/python-2": "authentication refused (not-authorized)"}
        owner = await connect(ACCOUNT)
        for i in (0, 1, 3):
            assert await owner.call(f"{ACCOUNT}/python-{i}", "ping", timeout=2) == PONG


async def test_the_resource_setting_names_the_group_not_every_worker(net: MemoryNetwork) -> None:
    group = WorkerGroup(2, resource="ignored", factory=on(net), config=CONFIG.__class__(
        **{**{f: getattr(CONFIG, f) for f in CONFIG.__dataclass_fields__}, "resource": "fromenv"}))
    assert [app.resource for app in group] == ["fromenv-0", "fromenv-1"]
    await group.close(0.1)


async def test_workers_join_no_service_room_unless_asked(net: MemoryNetwork) -> None:
    plain = WorkerGroup(2, factory=on(net), config=CONFIG)
    assert [app.app for app in plain] == [None, None]
    served = WorkerGroup(2, resource="other", factory=on(net), config=CONFIG, service="resize")
    caller = App(transport=net.transport("caller@localhost/c"), exit_on_fatal=False, join_service=False)
    async with plain, served:
        found = await caller.find("resize", timeout=2)
        assert sorted(found["jids"]) == [f"{ACCOUNT}/other-0", f"{ACCOUNT}/other-1"]
        assert (await caller.find("python", timeout=2))["jids"] == []
    await caller.close(0.1)


async def test_the_group_holds_the_one_shutdown_hook_and_workers_do_not_end_the_process(net: MemoryNetwork) -> None:
    group = WorkerGroup(2, factory=on(net), config=CONFIG)
    assert all(app.managed for app in group)
    await group.start()
    hooks = list(_runtime._RT.hooks)
    assert group.close in hooks
    assert all(app.close not in hooks for app in group)  # SIGTERM closes them together, not one by one
    await group.close(0.1)
    assert group.close not in _runtime._RT.hooks


async def test_closing_while_logins_run_stops_them(net: MemoryNetwork) -> None:
    never = asyncio.Event()

    class Hanging(MemoryTransport):
        async def wait_online(self, timeout: float) -> None:
            await never.wait()

    def factory(*, resource: str, config: WorkerConfig, **kwargs: Any) -> App:
        plain = net.transport(f"{ACCOUNT}/{resource}")
        return App(transport=Hanging(net, plain.jid, plain.config), config=config, **kwargs)

    group = WorkerGroup(4, factory=factory, logins=2, config=CONFIG)
    starting = asyncio.create_task(group.start())
    await asyncio.sleep(0)  # let start() take its first logins
    await asyncio.sleep(0)
    await asyncio.wait_for(group.close(0.1), 2)
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert net.online() == []


def test_count_and_logins_must_be_positive() -> None:
    with pytest.raises(ValueError, match="count"):
        WorkerGroup(0, config=CONFIG)
    with pytest.raises(ValueError, match="logins"):
        WorkerGroup(1, logins=0, config=CONFIG)


@pytest.mark.parametrize("presence", [True, False])
async def test_a_new_session_sends_available_presence_only_if_asked(presence: bool) -> None:
    from types import SimpleNamespace

    from libs.bridge.xmpp import XmppTransport
    from libs.bridge.xmpp._session import Online

    sent: list[dict[str, Any]] = []
    config = WorkerConfig(jid=ACCOUNT, password="pw", host="127.0.0.1", tls="off", keepalive=0)
    transport = XmppTransport(config, "python-0", keepalive=0, presence=presence)
    transport._client = SimpleNamespace(send_presence=lambda **kw: sent.append(kw))  # type: ignore[assignment]
    transport._carry_out(Online(resumed=False))
    assert transport.online
    assert sent == ([{}] if presence else [])
    transport._client = None  # the stand-in has nothing to disconnect
    await transport.close(0.1)


async def test_group_workers_send_no_presence_unless_asked(net: MemoryNetwork) -> None:
    group = WorkerGroup(1, factory=on(net), config=CONFIG)
    assert group.workers[0]._presence is False
    loud = WorkerGroup(1, resource="loud", factory=on(net), config=CONFIG, presence=True)
    assert loud.workers[0]._presence is True
    await group.close(0.1)
    await loud.close(0.1)


async def test_a_managed_app_starts_only_when_told(net: MemoryNetwork) -> None:
    app = App(transport=net.transport(f"{ACCOUNT}/solo"), config=CONFIG, managed=True, join_service=False)
    await asyncio.sleep(0)  # an unmanaged App would have started in this pass
    await asyncio.sleep(0)
    assert not app.online and app.app is None
    app.start()
    await app.wait_online(2)
    assert net.online() == [f"{ACCOUNT}/solo"]
    await app.close(0.1)


async def test_stop_closes_the_group_when_the_program_owns_the_loop(net: MemoryNetwork) -> None:
    group = WorkerGroup(3, factory=on(net), config=CONFIG)
    await group.start()
    assert len(net.online()) == 3
    group.stop()  # inside asyncio.run-style code: only the group closes, the loop goes on
    await asyncio.sleep(0)  # one loop pass: stop() hands over to the loop
    closing = group._closed
    assert closing is not None
    await asyncio.wait_for(closing, 2)
    assert net.online() == []
