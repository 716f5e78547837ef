"""A logged-in slixmpp client without a server: stanzas are fed to its parser as the network
would, and what it writes is recorded. For unit tests of the XMPP adapter and App."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

import slixmpp

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
