"""A logged-in slixmpp client without a server: stanzas are fed to its parser as the network
would, and what it writes is recorded. For unit tests of the XMPP adapter and App."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher.base import MatcherBase

from libs.bridge.config import load_config
from libs.bridge.xmpp import XmppTransport

HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' from='localhost' id='s1' "
          b"version='1.0' xml:lang='en'>")


class FakeSocket:
    """Stands in for the asyncio transport: keeps what is written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.changed = asyncio.Event()
        self.socket: Any = None  # what get_extra_info("socket") gives

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.changed.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.socket if name == "socket" and self.socket is not None else default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    abort = close

    def stanzas(self) -> list[ET.Element]:
        """What was written after the stream header, as elements (a write may hold several)."""
        out: list[ET.Element] = []
        for data in self.written:
            if data.startswith((b"<?xml", b"<stream", b"</stream")):
                continue
            out.extend(ET.fromstring(b"<w>" + data + b"</w>"))
        return out

    async def wait_for(self, count: int, timeout: float = 2.0) -> list[ET.Element]:
        async with asyncio.timeout(timeout):
            while len(self.stanzas()) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.stanzas()


def attach(client: slixmpp.ClientXMPP, *, session: bool = True, sm: bool = False) -> FakeSocket:
    """Connect ``client`` to a fake socket, as logged in (``session``), with XEP-0198 enabled
    both ways if ``sm`` (the plugin must be registered)."""
    sock = FakeSocket()
    if client._run_out_filters is None:  # connect() starts it; we do not connect
        client._run_out_filters = asyncio.ensure_future(client.run_filters())
    client.connection_made(sock, send_event=False)  # type: ignore[arg-type]
    client.data_received(HEADER)
    sock.written.clear()
    client._session_started = session
    if sm:
        plugin = client.plugin["xep_0198"]
        plugin.enabled_in = plugin.enabled_out = True
    return sock


def feed(client: slixmpp.ClientXMPP, xml: str) -> None:
    client.data_received(xml.encode())


async def detach(client: slixmpp.ClientXMPP) -> None:
    """Stop the client's send-queue task (what ``attach`` started)."""
    task = client._run_out_filters
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait([task])


class Offline:
    """An ``XmppTransport`` with its slixmpp client on a ``FakeSocket``, online; requests it
    takes are recorded, and so is every stanza slixmpp's handlers see."""

    def __init__(self, sm: bool = False) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        self.iq_types: list[str] = []
        self.raise_on_request: Exception | None = None
        config = load_config({"QE_JID": "worker@localhost", "QE_PASSWORD": "x", "QE_HOST": "127.0.0.1",
                              "QE_TLS": "off", "QE_STREAM_MANAGEMENT": "on" if sm else "off"})
        self.transport = XmppTransport(config, "python", on_request=self._on_request, keepalive=0)
        self.client: slixmpp.ClientXMPP = self.transport._make_client()
        self.transport._client = self.client
        self.sock: FakeSocket = attach(self.client, sm=sm)
        self.transport._online.set()  # as after session_start
        self.seen_by_handlers: list[ET.Element] = []
        self.client.register_handler(Callback("spy", _Everything(self.seen_by_handlers), lambda _s: None))

    def _on_request(self, iq_id: str, sender: str, text: str | None, iq_type: str) -> None:
        if self.raise_on_request is not None:
            raise self.raise_on_request
        self.requests.append((iq_id, sender, text))
        self.iq_types.append(iq_type)


class _Everything(MatcherBase):
    """Records every stanza slixmpp tests against its handlers (and never matches)."""

    def __init__(self, seen: list[ET.Element]) -> None:
        super().__init__(None)
        self.seen = seen

    def match(self, stanza: Any) -> bool:
        self.seen.append(stanza.xml)
        return False
