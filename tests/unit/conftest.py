"""Fixtures for unit tests that run workers and callers on a ``MemoryNetwork`` (no server)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from libs.bridge import Client, MemoryNetwork


@pytest.fixture
def net() -> MemoryNetwork:
    return MemoryNetwork()


@pytest.fixture
async def connect(net: MemoryNetwork) -> AsyncIterator[Callable[[str], Awaitable[Client]]]:
    """``await connect("friend@localhost")``: an entered ``Client`` on ``net`` for that
    account (a bare JID gets a random resource), closed at the end of the test."""
    clients: list[Client] = []

    async def _connect(jid: str) -> Client:
        client = Client(transport=net.transport(jid))
        await client.__aenter__()
        clients.append(client)
        return client

    yield _connect
    for client in clients:
        await client.__aexit__(None, None, None)
