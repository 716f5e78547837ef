"""``App``'s request path on a slixmpp client fed by hand (no server): a request arrives in a
plain loop callback, as from the network, and its answer is what the client writes.

What must hold with requests started eagerly (their first step runs inside the stanza's
callback; Python 3.11 emulates 3.12's eager tasks): a handler that does not wait is answered
within that callback; one that waits is tracked, answered later, bound by its deadline,
cancelled and answered ``unavailable`` at shutdown; per-caller limits and context variables
behave as with ordinary tasks.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from libs.bridge import APISpecs, App
from libs.bridge.config import load_config
from libs.bridge.protocol import NS, now_ms
from libs.bridge.xmpp import XmppTransport
from tests.support.offline import FakeSocket, attach, detach

API = f"{{{NS}}}api"
OWNER = "worker@localhost/laptop"
STRANGER = "stranger@elsewhere/x"

request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")


class Worker:
    def __init__(self, app: App, sock: FakeSocket) -> None:
        self.app = app
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.n = 0

    def stanza(self, cmd: str, body: dict[str, Any] | None = None, *, sender: str = OWNER,
               deadline_ms: int | None = None) -> tuple[str, bytes]:
        self.n += 1
        iq_id = f"q{self.n}"
        doc: dict[str, Any] = {"cmd": cmd, "body": body or {}}
        if deadline_ms is not None:
            doc["deadline"] = deadline_ms
        text = json.dumps(doc).replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
        xml = f"<iq type='set' id='{iq_id}' from='{sender}' to='{self.app.jid}'><api xmlns='{NS}'>{text}</api></iq>"
        return iq_id, xml.encode()

    async def arrive(self, *stanzas: bytes) -> int:
        """Feed ``stanzas`` from one loop callback; return how many answers were written by
        the end of that callback."""
        done = self.loop.create_future()

        def callback() -> None:
            client = self.app.transport._client  # type: ignore[union-attr]
            for data in stanzas:
                client.data_received(data)
            done.set_result(len(self.answers()))

        self.loop.call_soon(callback)
        return await done

    def answers(self) -> dict[str, ET.Element]:
        return {s.get("id"): s for s in self.sock.stanzas() if s.tag == "iq"}

    async def answer(self, iq_id: str, timeout: float = 2.0) -> ET.Element:
        async with asyncio.timeout(timeout):
            while iq_id not in self.answers():
                self.sock.changed.clear()
                await self.sock.changed.wait()
        return self.answers()[iq_id]


def result_of(iq: ET.Element) -> dict[str, Any]:
    assert iq.get("type") == "result", ET.tostring(iq)
    return json.loads(iq.find(API).text or "{}")  # type: ignore[union-attr]


def error_of(iq: ET.Element) -> str:
    assert iq.get("type") == "error", ET.tostring(iq)
    return str(json.loads(iq.find(API).text)["error"]["code"])  # type: ignore[union-attr]


@pytest.fixture
async def make_worker(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    monkeypatch.setattr(XmppTransport, "_connect", lambda self: None)  # no server here
    apps: list[App] = []

    async def make(**env: str) -> Worker:
        config = load_config({"QE_JID": "worker@localhost", "QE_PASSWORD": "x", "QE_HOST": "127.0.0.1",
                              "QE_TLS": "off", "QE_STREAM_MANAGEMENT": "off", **env})
        app = App(resource="python", public=True, config=config, keepalive=0, exit_on_fatal=False,
                  handle_signals=False)
        apps.append(app)
        await app._started.wait()
        assert app.transport is not None and app.transport._client is not None
        return Worker(app, attach(app.transport._client))

    yield make
    for app in apps:
        client = app.transport._client if app.transport is not None else None
        if client is not None:
            await detach(client)
            client.transport = None  # nothing to say goodbye to
        await app.close(0.5)


async def test_handler_that_does_not_wait_is_answered_within_the_stanzas_callback(make_worker: Any) -> None:
    w = await make_worker()

    @w.app.command("echo")
    async def echo(specs: APISpecs) -> dict[str, Any]:
        return {"echo": specs.body["x"]}

    first, data = w.stanza("echo", {"x": 1}, deadline_ms=now_ms() + 60_000)
    second, ping = w.stanza("ping")
    assert await w.arrive(data, ping) == 2
    assert result_of(w.answers()[first]) == {"echo": 1}
    assert result_of(w.answers()[second]) == {"pong": True}
    assert not w.app._tasks


async def test_handler_that_waits_is_tracked_and_answered_later(make_worker: Any) -> None:
    w = await make_worker()
    gate = asyncio.Event()

    @w.app.command("slow")
    async def slow(specs: APISpecs) -> dict[str, Any]:
        for _ in range(3):
            await asyncio.sleep(0)
        await gate.wait()
        return {"ok": True}

    iq_id, data = w.stanza("slow")
    assert await w.arrive(data) == 0
    (task,) = w.app._tasks
    ended = asyncio.Event()
    task.add_done_callback(lambda _task: ended.set())  # runs after the App's own done callback
    gate.set()
    assert result_of(await w.answer(iq_id)) == {"ok": True}
    await asyncio.wait_for(ended.wait(), 2)
    assert not w.app._tasks


async def test_deadline_ends_a_handler_that_waits_too_long(make_worker: Any) -> None:
    w = await make_worker()
    cancelled = asyncio.Event()

    @w.app.command("stuck")
    async def stuck(specs: APISpecs) -> dict[str, Any]:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    iq_id, data = w.stanza("stuck", deadline_ms=now_ms() + 50)
    await w.arrive(data)
    assert error_of(await w.answer(iq_id)) == "expired"
    assert cancelled.is_set()
    assert w.app.dispatcher.stats.expired == 1 and w.app.dispatcher.stats.in_flight == 0


async def test_shutdown_cancels_waiting_handlers_and_answers_unavailable(make_worker: Any) -> None:
    w = await make_worker()
    cancelled: list[int] = []

    @w.app.command("forever")
    async def forever(specs: APISpecs) -> dict[str, Any]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(specs.body["n"])
            raise
        return {}

    ids = []
    for n in range(3):
        iq_id, data = w.stanza("forever", {"n": n})
        ids.append(iq_id)
        await w.arrive(data)
    assert len(w.app._tasks) == 3
    await w.app.close(0.3)
    assert sorted(cancelled) == [0, 1, 2]
    assert [error_of(w.answers()[i]) for i in ids] == ["unavailable"] * 3


async def test_exceptions_become_error_answers(make_worker: Any) -> None:
    w = await make_worker()

    @w.app.command("now")
    async def now(specs: APISpecs) -> dict[str, Any]:
        raise ValueError("at once")

    @w.app.command("later")
    async def later(specs: APISpecs) -> dict[str, Any]:
        await asyncio.sleep(0)
        raise ValueError("after a wait")

    a, now_data = w.stanza("now")
    b, later_data = w.stanza("later")
    await w.arrive(now_data, later_data)
    assert error_of(await w.answer(a)) == "handler-error"
    assert error_of(await w.answer(b)) == "handler-error"


async def test_each_request_has_its_own_context(make_worker: Any) -> None:
    w = await make_worker()
    seen: list[str] = []

    @w.app.command("ctx")
    async def ctx(specs: APISpecs) -> dict[str, Any]:
        seen.append(request_var.get())
        request_var.set(specs.id)
        if specs.body.get("wait"):
            await asyncio.sleep(0)
        return {"var": request_var.get()}

    ids = []
    for wait in (False, True, False):
        iq_id, data = w.stanza("ctx", {"wait": wait})
        ids.append(iq_id)
        await w.arrive(data)
    answers = [result_of(await w.answer(i)) for i in ids]
    assert answers == [{"var": i} for i in ids]
    assert seen == ["unset"] * 3  # nothing leaked from one request into the next


async def test_per_caller_limit_counts_waiting_requests(make_worker: Any) -> None:
    w = await make_worker(QE_MAX_PER_CALLER="1")
    gate = asyncio.Event()

    @w.app.command("work")
    async def work(specs: APISpecs) -> dict[str, Any]:
        if specs.body.get("wait"):
            await gate.wait()
        return {"ok": True}

    quick, quick_data = w.stanza("work", sender=STRANGER)
    waits, waits_data = w.stanza("work", {"wait": True}, sender=STRANGER)
    busy, busy_data = w.stanza("work", sender=STRANGER)
    owner, owner_data = w.stanza("work", {"wait": True})
    await w.arrive(quick_data, waits_data, busy_data, owner_data)
    assert result_of(w.answers()[quick]) == {"ok": True}  # finished at once: its slot is free again
    assert error_of(w.answers()[busy]) == "busy"  # the waiting one holds the only slot
    gate.set()
    assert result_of(await w.answer(waits)) == {"ok": True}
    assert result_of(await w.answer(owner)) == {"ok": True}
    assert w.app.dispatcher._per_caller == {}
