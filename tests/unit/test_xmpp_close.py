"""``XmppTransport.close()`` on a slixmpp client fed by hand (no server): what it writes
before it ends the stream.

Why it matters: with XEP-0198 on, a stanza we received but did not acknowledge is, for the
server, undelivered; when our session ends, Prosody bounces each such stanza to its sender
as ``recipient-unavailable``. A caller that leaves right after its answer arrived (every
``qe-worker call``) thus sent the worker its own answer back as an error.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from libs.bridge.config import load_config
from libs.bridge.xmpp import XmppTransport
from tests.support.offline import attach, detach, feed

SM = "urn:xmpp:sm:3"


def _transport(sm: bool) -> XmppTransport:
    config = load_config({"QE_JID": "client@localhost", "QE_PASSWORD": "x", "QE_HOST": "127.0.0.1",
                          "QE_TLS": "off", "QE_STREAM_MANAGEMENT": "on" if sm else "off"})
    transport = XmppTransport(config, "cli", keepalive=0)
    transport._client = transport._make_client()
    return transport


async def test_close_acknowledges_what_was_received_before_the_end_of_stream() -> None:
    transport = _transport(sm=True)
    client = transport._client
    assert client is not None
    sock = attach(client, sm=True)
    try:
        # the answer to our call, and the server's ack request right behind it
        feed(client, "<iq type='result' id='c1' from='worker@localhost/python' to='client@localhost/cli'/>")
        feed(client, f"<r xmlns='{SM}'/>")
        await asyncio.wait_for(transport.close(0.2), 5)
    finally:
        await detach(client)
    written = [data.decode() for data in sock.written]
    end = next(i for i, data in enumerate(written) if data.startswith("</stream"))
    acks = [ET.fromstring(data) for data in written[:end] if data.startswith("<a ")]
    assert [(a.tag, a.get("h")) for a in acks] == [(f"{{{SM}}}a", "1")], written


async def test_close_without_stream_management_sends_no_ack() -> None:
    transport = _transport(sm=False)
    client = transport._client
    assert client is not None
    sock = attach(client)
    try:
        feed(client, "<iq type='result' id='c1' from='worker@localhost/python' to='client@localhost/cli'/>")
        await asyncio.wait_for(transport.close(0.2), 5)
    finally:
        await detach(client)
    assert not any(data.startswith(b"<a ") for data in sock.written), sock.written
    assert any(data.startswith(b"</stream") for data in sock.written)
