"""Malformed and hostile stanzas on the live server: each gets the right error or is
ignored, and the worker keeps serving its owner."""

from __future__ import annotations

import asyncio
import json
from xml.sax.saxutils import escape

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from libs.bridge import App, Client, load_config
from libs.bridge.protocol import NS

_BAD_PAYLOADS = [
    "not json",
    "[1, 2, 3]",
    '{"cmd": 5}',
    '{"cmd": ""}',
    '{"cmd": "x", "body": [1]}',
    '{"cmd": "x", "deadline": "soon"}',
    '{"cmd": "x", "deadline": 1e400}',
    '{"cmd": "x", "body": ' + "[" * 5000 + "]" * 5000 + "}",
    '{"cmd": "x", "body": {"a": "' + '\\"' * 40_000 + '"}}',  # 120 kB, but 320 kB once XML-escaped
    "",
]


async def test_hostile_stanzas_get_errors_and_the_owner_is_still_served(prosody, accounts, login):
    app = App(resource="hostile", public=True, config=load_config(prosody.env("worker", accounts["worker"][1])),
              exit_on_fatal=False, keepalive=0)
    ran: list[str] = []

    async def onapi(specs):
        ran.append(specs.cmd)
        return {"ok": True}

    app.xmpp.onapi = onapi
    # raw stanzas bypass slixmpp's XEP-0198 counters: use a client without it
    stranger = Client(load_config({**prosody.env("stranger", accounts["stranger"][1]), "QE_STREAM_MANAGEMENT": "off"}))
    try:
        await app.wait_online(10)
        await stranger.__aenter__()
        xmpp = stranger.transport._client
        errors: dict[str, str] = {}
        done = asyncio.Event()
        expected = set()

        def on_error(iq) -> None:
            errors[iq["id"]] = iq["error"]["condition"]
            if expected <= errors.keys():
                done.set()

        xmpp.register_handler(Callback("errors", MatchXPath("{jabber:client}iq"),
                                       lambda iq: on_error(iq) if iq["type"] == "error" else None))
        rounds = 100  # 1,300 stanzas; bench-sized runs belong in bench/
        for r in range(rounds):
            for i, payload in enumerate(_BAD_PAYLOADS):
                iq_id = f"h{r}-{i}"
                expected.add(iq_id)
                xmpp.send_raw(f'<iq type="set" id="{iq_id}" to="{app.jid}">'
                              f'<api xmlns="{NS}">{escape(payload)}</api></iq>')
            # unknown namespace: not ours, slixmpp answers feature-not-implemented
            xmpp.send_raw(f'<iq type="set" id="u{r}" to="{app.jid}"><query xmlns="urn:evil"/></iq>')
            expected.add(f"u{r}")
            # no id at all: nothing to answer, nothing must break
            xmpp.send_raw(f'<iq type="set" to="{app.jid}"><api xmlns="{NS}">{{"cmd":"x"}}</api></iq>')
            xmpp.send_raw(f'<message to="{app.jid}" type="chat"><body>{escape("[" * 3000)}</body></message>')
        try:
            await asyncio.wait_for(done.wait(), 30)
        except TimeoutError:
            raise AssertionError(f"no answer to {sorted(expected - errors.keys())[:20]}") from None
        by_kind = {payload: {errors[f"h{r}-{i}"] for r in range(rounds)} for i, payload in enumerate(_BAD_PAYLOADS)}
        assert all(conditions <= {"bad-request", "not-acceptable"} for conditions in by_kind.values()), by_kind
        assert by_kind["not json"] == {"bad-request"}
        assert by_kind[_BAD_PAYLOADS[8]] == {"not-acceptable"}  # too large
        assert {errors[f"u{r}"] for r in range(rounds)} == {"feature-not-implemented"}
        assert ran == []  # not one of them reached the handler
        owner = await login("worker")
        assert await owner.call(app.jid, "still-there", timeout=5) == {"ok": True}
        assert json.dumps(app.dispatcher.stats.__dict__)  # counters stayed sane
        assert app.dispatcher.stats.in_flight == 0
    finally:
        await stranger.__aexit__(None, None, None)
        await app.close(2)
