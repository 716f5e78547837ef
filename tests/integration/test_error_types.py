"""Every row of the error table in docs/protocol.md, on the wire: a real server, raw stanzas,
and the error stanza each caller receives read as XML (``type``, condition, our ``<api/>``
code), not through our client's decoding.

The table is read from the document itself, so a row added there without a case here fails.
"""

from __future__ import annotations

import asyncio
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher.base import MatcherBase

from libs.bridge import App, Client, load_config
from libs.bridge.protocol import CONDITIONS, NS, now_ms
from libs.scheduling.remote import JobScheduler
from libs.scheduling.store import JobStore
from tests.reliability.test_hostile_input import BAD_PAYLOADS, api_iq
from tests.support.accounts import xmpp_of

pytestmark = pytest.mark.core  # runs on every server (./run test-ejabberd: a 2-node ejabberd cluster)

ROOT = Path(__file__).resolve().parents[2]
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
_ROW = re.compile(r"^\|\s*`([a-z-]+)`\s*\|\s*`([a-z-]+)`\s*\|\s*(\w+)\s*\|")


def documented_errors() -> dict[str, tuple[str, str]]:
    """docs/protocol.md's error table: code -> (XMPP condition, error type)."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    table = text[text.index("| `code`"):].split("\n\n", 1)[0]
    rows = {m[1]: (m[2], m[3]) for line in table.splitlines() if (m := _ROW.match(line))}
    assert len(rows) == len(table.splitlines()) - 2, "a row of the table was not understood"
    return rows


Seen = tuple[str | None, str, str | None]  # (error type, condition, our <api/> code or None)


def seen(iq: ET.Element) -> Seen:
    """What an error answer says, straight from its XML."""
    assert iq.get("type") == "error", ET.tostring(iq)
    error = iq.find("{jabber:client}error")
    assert error is not None, ET.tostring(iq)
    (condition,) = [child.tag.split("}")[1] for child in error
                    if child.tag.startswith(f"{{{STANZAS}}}") and child.tag != f"{{{STANZAS}}}text"]
    api = iq.find(f"{{{NS}}}api")
    doc = None if api is None else json.loads(api.text or "")
    # A server's bounce may carry the request back (ejabberd does, as RFC 6120 8.3.1 allows):
    # an <api/> without "error" is the caller's own payload, not an answer of ours.
    code = doc["error"]["code"] if isinstance(doc, dict) and "error" in doc else None
    return error.get("type"), condition, code


class _AnswerTo(MatcherBase):
    def match(self, stanza: Any) -> bool:
        xml = stanza.xml
        return xml.get("id") == self._criteria and xml.get("type") in ("result", "error")


class Raw:
    """A logged-in client that sends raw stanzas and awaits the answer to each by its id."""

    def __init__(self, client: Client) -> None:
        self.xmpp = xmpp_of(client)

    def send(self, stanza: str, iq_id: str) -> asyncio.Future[ET.Element]:
        """Send ``stanza`` now; the future gets the XML of the answer with id ``iq_id``."""
        answer: asyncio.Future[ET.Element] = asyncio.get_running_loop().create_future()

        def take(iq: Any) -> None:
            if not answer.done():
                answer.set_result(iq.xml)

        self.xmpp.register_handler(Callback(f"answer-{iq_id}", _AnswerTo(iq_id), take, once=True))
        self.xmpp.send_raw(stanza)
        return answer


@pytest.fixture
async def raw(prosody, accounts) -> AsyncIterator[dict[str, Raw]]:
    """Raw senders logged in as ``client`` (allowed) and ``stranger`` (not), without XEP-0198
    (raw stanzas bypass its counters)."""
    clients = [Client(load_config({**prosody.env(name, accounts[name][1]), "QE_STREAM_MANAGEMENT": "off"}))
               for name in ("client", "stranger")]
    for client in clients:
        await client.__aenter__()
    yield dict(zip(("client", "stranger"), map(Raw, clients)))
    for client in clients:
        await client.__aexit__(None, None, None)


async def test_every_documented_error_has_its_condition_and_type_on_the_wire(prosody, accounts, raw, tmp_path):
    documented = documented_errors()
    assert set(documented) == set(CONDITIONS)  # the table and the code name the same codes ...
    assert {code: condition for code, (condition, _) in documented.items()} == CONDITIONS  # ... and conditions

    env = {**prosody.env("worker", accounts["worker"][1]), "QE_ALLOW": accounts["client"][0],
           "QE_MAX_PER_CALLER": "1"}
    app = App(resource="errors", config=load_config(env), exit_on_fatal=False, keepalive=0)
    JobScheduler(app, JobStore(tmp_path / "jobs.sqlite3"))  # its `cancel` answers not-found for an unknown job
    release = asyncio.Event()

    @app.command("boom")
    async def boom(specs):
        raise ValueError("boom")

    @app.command("not-a-dict")
    async def not_a_dict(specs):
        return [1, 2]

    @app.command("hold")
    async def hold(specs):
        await release.wait()
        return {}

    client, stranger = raw["client"], raw["stranger"]
    got: dict[str, Seen] = {}
    try:
        await app.wait_online(10)

        async def ask(code: str, sender: Raw, text: str) -> None:
            got[code] = seen(await asyncio.wait_for(sender.send(api_iq(text, code, app.jid), code), 10))

        await ask("bad-request", client, BAD_PAYLOADS["not-json"])
        await ask("too-large", client, BAD_PAYLOADS["over-max-payload-escaped"])
        await ask("forbidden", stranger, '{"cmd": "ping"}')
        await ask("unknown-command", client, '{"cmd": "no-such-command"}')
        await ask("not-found", client, '{"cmd": "cancel", "body": {"job": "no-such-job"}}')
        await ask("handler-error", client, '{"cmd": "boom"}')
        await ask("bad-result", client, '{"cmd": "not-a-dict"}')
        await ask("expired", client, json.dumps({"cmd": "ping", "deadline": now_ms() - 1000}))
        held = client.send(api_iq('{"cmd": "hold"}', "held", app.jid), "held")  # QE_MAX_PER_CALLER=1: taken
        await ask("busy", client, '{"cmd": "ping"}')
        closing = asyncio.create_task(app.close(1.0))  # with `hold` still running
        await asyncio.sleep(0)  # close() stops taking requests before its first wait
        assert not app.dispatcher.accepting
        await ask("unavailable", client, '{"cmd": "ping"}')  # refused: never started
        await closing  # `hold` was cancelled at the end of the shutdown time: answered before leaving
        got["interrupted"] = seen(await asyncio.wait_for(held, 10))
        from_server = seen(await asyncio.wait_for(client.send(api_iq('{"cmd": "ping"}', "gone", app.jid), "gone"), 10))
    finally:
        release.set()
        await app.close(1.0)

    assert got == {code: (error_type, condition, code) for code, (condition, error_type) in documented.items()}
    # "or, from the server: offline": the same condition and type, without our <api/>
    assert from_server == (documented["unavailable"][1], documented["unavailable"][0], None)
