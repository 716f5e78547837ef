"""A plain slixmpp client, as any XMPP tool (or a QE client) is: none of our code on its side.

Tests that check what the worker says to the rest of the XMPP world (disco, ad-hoc commands,
QE's chat wire format) talk to it through this, with slixmpp's own plugins.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import slixmpp


class PlainClient:
    """``async with PlainClient(jid, password, host, port, plugins=("xep_0030",)) as c:`` logged
    in as ``jid/resource`` on a plain-text loopback server; ``c.xmpp`` is the slixmpp client."""

    def __init__(self, jid: str, password: str, host: str, port: int, *, resource: str = "tool",
                 plugins: Iterable[str] = ()) -> None:
        self.xmpp = slixmpp.ClientXMPP(f"{jid}/{resource}", password)
        self.xmpp.enable_plaintext, self.xmpp.enable_starttls, self.xmpp.enable_direct_tls = True, False, False
        self.xmpp.plugin["feature_mechanisms"].unencrypted_scram = True
        for plugin in plugins:
            self.xmpp.register_plugin(plugin)
        self.host, self.port = host, port

    async def __aenter__(self) -> Any:
        started = asyncio.get_running_loop().create_future()
        self.xmpp.add_event_handler("session_start", lambda _e: started.done() or started.set_result(True))
        self.xmpp.connect(self.host, self.port)
        await asyncio.wait_for(started, 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.xmpp.disconnect()
        await asyncio.wait_for(self.xmpp.disconnected, 10)


_C = TypeVar("_C", bound=PlainClient)


@contextlib.asynccontextmanager
async def plain_clients(kind: Callable[[str, str, str, int], _C], server: Any,
                        accounts: dict[str, tuple[str, str]]) -> AsyncIterator[Callable[[str], Awaitable[_C]]]:
    """``connect("client")``: a logged-in ``kind`` for one of the session's accounts; all are
    logged out on exit."""
    clients: list[_C] = []

    async def connect(name: str) -> _C:
        jid, password = accounts[name]
        client = kind(jid, password, server.host, server.port)
        await client.__aenter__()
        clients.append(client)
        return client

    try:
        yield connect
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)
