"""QE's chat wire format (QE_WIRE=qe) on a real Prosody, spoken by a plain slixmpp client that
knows nothing of our IQ protocol: base64 of zlib-deflated JSON in chat bodies, with ``mid``."""

from __future__ import annotations

import asyncio
import base64
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from libs.bridge import APISpecs, App, MessageSpecs, load_config
from tests.support.plain import PlainClient

pytestmark = pytest.mark.core  # runs on every server (./run test-ejabberd: a 2-node ejabberd cluster)


def qe_encode(doc: dict[str, Any]) -> str:  # as a QE client writes it, not with our codec
    return base64.b64encode(zlib.compress(json.dumps(doc).encode())).decode()


def qe_decode(text: str) -> dict[str, Any]:
    return json.loads(zlib.decompress(base64.b64decode(text)))


class QeClient(PlainClient):
    """A plain slixmpp client: sends chat messages, collects the chat bodies it gets."""

    def __init__(self, jid: str, password: str, host: str, port: int) -> None:
        super().__init__(jid, password, host, port, resource="qeclient")
        self.inbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.xmpp.add_event_handler("message", lambda m: self.inbox.put_nowait((str(m["from"]), m["body"])))

    def send(self, to: str, body: str) -> None:
        self.xmpp.send_message(mto=to, mbody=body, mtype="chat")

    async def reply(self, timeout: float = 10) -> tuple[str, str]:
        return await asyncio.wait_for(self.inbox.get(), timeout)


@pytest.fixture
async def qe_worker(prosody, accounts) -> AsyncIterator[tuple[App, list[MessageSpecs]]]:
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_WIRE": "qe", "QE_ALLOW": accounts["client"][0]}
    app = App(resource="qewire", config=load_config(env), exit_on_fatal=False, keepalive=0)
    plain: list[MessageSpecs] = []

    @app.command("add")
    async def add(specs: APISpecs) -> dict[str, Any]:
        return {"code": 0, "sum": specs.body["x"] + specs.body["y"], "role": specs.role}

    @app.command("boom")
    async def boom(specs: APISpecs) -> dict[str, Any]:
        raise ValueError("no")

    async def receiver(specs: MessageSpecs) -> None:
        plain.append(specs)

    app.xmpp.msgreceiver = receiver
    await app.wait_online(10)
    yield app, plain
    await app.close(2)


@pytest.fixture
async def qe_client(prosody, accounts) -> AsyncIterator[QeClient]:
    jid, password = accounts["client"]
    async with QeClient(jid, password, "127.0.0.1", prosody.port) as client:
        yield client


async def test_a_qe_client_calls_a_worker_in_qes_format(qe_worker, qe_client):
    app, plain = qe_worker
    qe_client.send(app.jid, qe_encode({"mid": "k3J9aQ0ZpL", "api": "add", "x": 2, "y": 3}))
    sender, body = await qe_client.reply()
    assert sender == app.jid
    assert qe_decode(body) == {"code": 0, "sum": 5, "role": "partner", "mid": "k3J9aQ0ZpL"}

    # errors come back QE-style: a normal reply with a negative code
    for api, code in (("nosuch", -1000), ("boom", -1004)):
        qe_client.send(app.jid, qe_encode({"mid": f"m-{api}", "api": api}))
        _sender, body = await qe_client.reply()
        reply = qe_decode(body)
        assert (reply["code"], reply["mid"]) == (code, f"m-{api}"), reply
    qe_client.send(app.jid, qe_encode({"mid": "nocmd"}))  # the mid is known: answered bad-request
    assert qe_decode((await qe_client.reply())[1])["code"] == -1001

    # plain text is not a call: it reaches msgreceiver untouched
    qe_client.send(app.jid, "hello there")
    qe_client.send(app.jid, qe_encode({"mid": "last", "api": "add", "x": 0, "y": 0}))
    assert qe_decode((await qe_client.reply())[1])["mid"] == "last"  # in order: the text came first
    assert [s.body for s in plain] == ["hello there"]


async def test_without_qe_wire_a_qe_call_is_just_a_message(prosody, accounts, qe_client):
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_ALLOW": accounts["client"][0]}
    app = App(resource="noqewire", config=load_config(env), exit_on_fatal=False, keepalive=0)
    got: asyncio.Queue[MessageSpecs] = asyncio.Queue()

    async def receiver(specs: MessageSpecs) -> None:
        got.put_nowait(specs)

    app.xmpp.msgreceiver = receiver
    try:
        await app.wait_online(10)
        text = qe_encode({"mid": "x1", "api": "ping"})
        qe_client.send(app.jid, text)
        assert (await asyncio.wait_for(got.get(), 10)).body == text
        assert qe_client.inbox.empty()
    finally:
        await app.close(2)
