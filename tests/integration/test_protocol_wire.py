"""What docs/protocol.md promises about the wire, checked through a real Prosody: UTF-8 text
with only what XML forbids escaped, the size limit in UTF-8 bytes, the depth limit, IQ ``get``
refused, and what a payload in another namespace gets."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from libs.bridge import APISpecs, App, Client, RemoteError, load_config
from libs.bridge.protocol import DEFAULT_MAX_PAYLOAD, MAX_DEPTH, NS, decode_error, encode_request, now_ms, wire_size
from tests.support.accounts import logged_in, new_account, xmpp_of
from tests.support.stanzas import answer_to, api_iq, foreign_iq

pytestmark = pytest.mark.core  # runs on every server (./run test-ejabberd: a 2-node ejabberd cluster)

API = f"{{{NS}}}api"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


@dataclass
class Echo:
    """A worker whose ``echo`` returns the body and records every body it was given."""

    app: App
    bodies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def jid(self) -> str:
        return self.app.jid


@pytest.fixture
async def echo(prosody, accounts) -> AsyncIterator[Echo]:
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_ALLOW": accounts["client"][0]}
    worker = Echo(App(resource="wire", config=load_config(env), exit_on_fatal=False, keepalive=0))

    @worker.app.command("echo")
    async def _echo(specs: APISpecs) -> dict[str, Any]:
        worker.bodies.append(specs.body)
        return dict(specs.body)

    try:
        await worker.app.wait_online(10)
        yield worker
    finally:
        await worker.app.close(2)


@pytest.fixture
async def client(prosody, accounts) -> AsyncIterator[Client]:
    """The allowed caller, without XEP-0198 (raw stanzas bypass slixmpp's counters)."""
    env = {**prosody.env("client", accounts["client"][1]), "QE_STREAM_MANAGEMENT": "off"}
    async with Client(load_config(env), connect_timeout=10) as c:
        yield c


def error_of(answer: ET.Element) -> tuple[str | None, str, dict[str, Any] | None]:
    """(error type, condition, our <api/> JSON or None) of an IQ error."""
    assert answer.get("type") == "error", answer
    error = answer.find("{jabber:client}error")
    condition = next(child.tag.split("}")[1] for child in error if child.tag.startswith(f"{{{STANZAS}}}")
                     and not child.tag.endswith("}text"))
    api = answer.find(API)
    return error.get("type"), condition, None if api is None else json.loads(api.text)


# -- encoding and sizes ---------------------------------------------------------------------


async def test_a_225_kb_euro_echo_fits(echo: Echo, client: Client) -> None:
    body = {"text": "€" * 75_000}  # 225,000 bytes of UTF-8; 450,000 as \u20ac escapes
    assert len(json.dumps(body)) > DEFAULT_MAX_PAYLOAD  # what ASCII-only JSON made of it
    request = encode_request("echo", body, deadline_ms=now_ms() + 10_000)
    assert 225_000 < wire_size(request) < DEFAULT_MAX_PAYLOAD
    assert await client.call(echo.jid, "echo", body, timeout=10) == body


ODD = "\ud800 \udfff \ufffe \uffff \x00 \x1f \x7f \x85 \u2028 \U0001f600 é"
"""Lone surrogates and U+FFFE/U+FFFF (only as escapes in XML), controls JSON escapes, and
characters XML allows that are rarely seen raw."""


async def test_characters_xml_forbids_round_trip_as_escapes(echo: Echo, client: Client) -> None:
    body = {"s": ODD, "\ufffe": ["\ud83d"]}
    assert await client.call(echo.jid, "echo", body, timeout=10) == body
    assert echo.bodies == [body]
    # a raw request in another client's style: the answer carries the same escapes, and
    # everything XML allows as UTF-8
    text = '{"cmd":"echo","body":{"s":"\\ud800\\uFFFE\\u00e9\\u20ac"}}'
    answer = await answer_to(client, api_iq(text, "odd-1", echo.jid), "odd-1", 10)
    assert answer.get("type") == "result"
    assert answer.find(API).text == '{"s":"\\ud800\\ufffeé€"}'
    assert await client.call(echo.jid, "echo", {"after": 1}, timeout=5) == {"after": 1}


async def test_a_raw_character_xml_forbids_closes_only_the_senders_stream(prosody, echo: Echo,
                                                                          client: Client) -> None:
    """What the docs say such a request gets: not an answer; the server closes the stream of
    whoever wrote it (so our encoder never does)."""
    sender = new_account(prosody, "raw")
    async with logged_in(prosody, sender, QE_STREAM_MANAGEMENT="off") as doomed:
        closed = asyncio.Event()
        xmpp_of(doomed).add_event_handler("disconnected", lambda _event: closed.set())
        xmpp_of(doomed).send_raw(api_iq('{"cmd":"echo","body":{"s":"\ufffe"}}', "raw-1", echo.jid))
        await asyncio.wait_for(closed.wait(), 10)
    assert echo.bodies == []
    assert await client.call(echo.jid, "echo", {"still": "served"}, timeout=5) == {"still": "served"}


def nested_body(depth: int, note: str | None = None) -> dict[str, Any]:
    """A body that makes the request ``depth`` levels deep (the request object is level 1,
    the body 2); ``note`` is a shallow string beside the nesting."""
    inner: dict[str, Any] = {"v": 1}
    for _ in range(depth - 2):
        inner = {"a": inner}
    return inner if note is None else {**inner, "note": note}


async def test_depth_limit_on_the_wire_ignores_brackets_in_strings(echo: Echo, client: Client) -> None:
    for note in (None, "{", "[" * 100):
        body = nested_body(MAX_DEPTH, note)
        assert await client.call(echo.jid, "echo", body, timeout=5) == body
        with pytest.raises(RemoteError) as info:
            await client.call(echo.jid, "echo", nested_body(MAX_DEPTH + 1, note), timeout=5)
        assert info.value.code == "bad-request"
        assert f"deeper than {MAX_DEPTH} levels" in info.value.remote_message
    assert len(echo.bodies) == 3


# -- IQ types and other payloads ----------------------------------------------------------------


async def test_an_iq_get_is_answered_bad_request_and_not_run(echo: Echo, client: Client) -> None:
    text = encode_request("echo", {"a": 1}, deadline_ms=now_ms() + 10_000)
    answer = await answer_to(client, api_iq(text, "get-1", echo.jid, iq_type="get"), "get-1", 10)
    error_type, condition, api = error_of(answer)
    assert (error_type, condition) == ("modify", "bad-request")
    assert api is not None and api["error"]["code"] == "bad-request"
    assert "IQ of type 'set'" in api["error"]["message"]
    assert echo.bodies == []
    answer = await answer_to(client, api_iq(text, "set-1", echo.jid), "set-1", 10)
    assert json.loads(answer.find(API).text) == {"a": 1}


@pytest.mark.parametrize("iq_type", ["set", "get"])
async def test_a_payload_in_another_namespace_gets_feature_not_implemented(echo: Echo, client: Client,
                                                                          iq_type: str) -> None:
    answer = await answer_to(client, foreign_iq("foreign-1", echo.jid, iq_type), "foreign-1", 10)
    error_type, condition, api = error_of(answer)
    assert (error_type, condition, api) == ("cancel", "feature-not-implemented", None)
    # which a caller reads as the documented mapping says
    assert decode_error(condition, None).code == "unknown-command"
    assert echo.bodies == []
