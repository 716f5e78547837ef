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
    monkeypatch.setattr(XmppTransport, "_connect", lambda *_: None)  # no server here
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
    assert result_of(w.answers()[second]) == {"pong": True, "environment": "python"}
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
    assert [error_of(w.answers()[i]) for i in ids] == ["interrupted"] * 3


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


# -- what a handler raises cannot end the worker or speak for it ------------------------------


def answer_text(iq: ET.Element) -> str:
    return str(json.loads(iq.find(API).text)["error"]["message"])  # type: ignore[union-attr]


@pytest.mark.parametrize("wait", [False, True], ids=["at-once", "after-a-wait"])
async def test_system_exit_keyboard_interrupt_and_own_cancelled_error_each_get_their_answer(
        make_worker: Any, wait: bool, caplog: pytest.LogCaptureFixture) -> None:
    """The worker lives on: each caller gets ``handler-error`` naming what was raised (not
    ``unavailable``, not a timeout), and the next request is served."""
    w = await make_worker()
    raised: dict[str, BaseException] = {
        "exit": SystemExit(3), "interrupt": KeyboardInterrupt(), "cancelled": asyncio.CancelledError()}

    @w.app.command("raise")
    async def raise_(specs: APISpecs) -> dict[str, Any]:
        if wait:
            await asyncio.sleep(0.001)
        raise raised[specs.body["what"]]

    ids = {}
    for what in raised:
        iq_id, data = w.stanza("raise", {"what": what}, deadline_ms=now_ms() + 60_000)
        ids[what] = iq_id
        with caplog.at_level("ERROR"):
            await w.arrive(data)
    answers = {what: await w.answer(iq_id) for what, iq_id in ids.items()}
    assert {what: error_of(a) for what, a in answers.items()} == dict.fromkeys(raised, "handler-error")
    assert "SystemExit: 3" in answer_text(answers["exit"])
    assert "KeyboardInterrupt" in answer_text(answers["interrupt"])
    assert "the handler was cancelled" in answer_text(answers["cancelled"])
    ping, data = w.stanza("ping")
    await w.arrive(data)
    assert result_of(await w.answer(ping)) == {"pong": True, "environment": "python"}
    await asyncio.sleep(0)
    assert not w.app._tasks
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 3 and all("'raise'" in r.getMessage() for r in errors)  # once each, by command name
    assert w.app.dispatcher.stats.failed == 3


async def test_a_handler_cancelling_its_own_task_is_handler_error_not_unavailable(make_worker: Any) -> None:
    w = await make_worker()

    @w.app.command("quit")
    async def quit_(specs: APISpecs) -> dict[str, Any]:
        asyncio.current_task().cancel()  # type: ignore[union-attr]
        await asyncio.sleep(1)
        return {}

    iq_id, data = w.stanza("quit", deadline_ms=now_ms() + 60_000)
    await w.arrive(data)
    answer = await w.answer(iq_id)
    assert error_of(answer) == "handler-error"
    assert "the handler was cancelled" in answer_text(answer)
    assert w.app.dispatcher.accepting  # not shutting down


async def test_shutdown_is_still_unavailable_when_a_handler_swaps_the_cancelled_error(make_worker: Any) -> None:
    w = await make_worker()
    waiting = asyncio.Event()

    @w.app.command("swap")
    async def swap(specs: APISpecs) -> dict[str, Any]:
        waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise asyncio.CancelledError("my own") from None
        return {}

    iq_id, data = w.stanza("swap")
    await w.arrive(data)
    await asyncio.wait_for(waiting.wait(), 2)
    await w.app.close(0.3)
    assert error_of(w.answers()[iq_id]) == "interrupted"


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt(), asyncio.CancelledError()],
                         ids=["exit", "keyboard-interrupt", "cancelled"])
async def test_a_msgreceiver_that_raises_does_not_end_the_worker(
        make_worker: Any, exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    w = await make_worker()
    got = asyncio.Event()

    async def receiver(specs: Any) -> None:
        got.set()
        await asyncio.sleep(0)
        raise exc

    w.app.xmpp.msgreceiver = receiver
    message = f"<message type='chat' from='{OWNER}' to='{w.app.jid}'><body>hi</body></message>".encode()
    with caplog.at_level("ERROR"):
        await w.arrive(message)
        await asyncio.wait_for(got.wait(), 2)
        ping, data = w.stanza("ping")
        await w.arrive(data)
        assert result_of(await w.answer(ping)) == {"pong": True, "environment": "python"}
        for _ in range(3):
            await asyncio.sleep(0)
    assert not w.app._tasks
    (logged,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "msgreceiver" in logged.getMessage()


async def test_stop_from_a_handler_answers_it_then_closes_the_worker(make_worker: Any) -> None:
    """In a program that runs the loop itself (signals not ours), ``App.stop()`` closes the
    worker; the handler that asked still gets its answer."""
    w = await make_worker(QE_SHUTDOWN_TIMEOUT="0.5")  # the fake socket never answers our goodbye

    @w.app.command("stop")
    async def stop(specs: APISpecs) -> dict[str, Any]:
        w.app.stop()
        await asyncio.sleep(0.01)
        return {"stopping": True}

    iq_id, data = w.stanza("stop")
    await w.arrive(data)
    assert result_of(await w.answer(iq_id)) == {"stopping": True}
    for _ in range(3):
        await asyncio.sleep(0)
    assert w.app._stopping is not None
    await asyncio.wait_for(w.app._stopping, 5)
    assert not w.app.dispatcher.accepting
    assert w.app.transport is not None and w.app.transport._closed
