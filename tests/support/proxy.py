"""A TCP proxy on 127.0.0.1 that a test can stall or cut, to fake network faults."""

from __future__ import annotations

import asyncio
import contextlib


class FaultyProxy:
    """Forwards 127.0.0.1:<port> to a target. ``stall()`` stops forwarding on the current
    connections (a half-dead link: the sockets stay open, nothing arrives); ``cut()`` closes
    them; new connections always work, so a client that reconnects gets through."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None
        self._links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, asyncio.Event]] = []

    async def start(self) -> FaultyProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        stalled = asyncio.Event()
        self._links.append((writer, up_writer, stalled))
        await asyncio.gather(self._pipe(reader, up_writer, stalled), self._pipe(up_reader, writer, stalled),
                             return_exceptions=True)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stalled: asyncio.Event) -> None:
        try:
            while data := await reader.read(65536):
                if stalled.is_set():
                    continue  # swallow: the peer never hears of it
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def stall(self) -> None:
        for _client, _upstream, stalled in self._links:
            stalled.set()

    def cut(self) -> None:
        for client, upstream, _stalled in self._links:
            client.transport.abort()
            upstream.transport.abort()
        self._links.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
