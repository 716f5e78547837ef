"""A TCP proxy on 127.0.0.1 that a test can break the ways real networks break.

Why a proxy and not a firewall rule: tests run unprivileged and in parallel, and each fault
must hit one worker's connection only. The worker connects to the proxy, the proxy to
Prosody; the test then changes what the proxy does with the bytes:

* ``stall()``: current connections forward nothing either way; the sockets stay open
  (a dead route: no FIN, no RST, only a keepalive can tell);
* ``cut()``: current connections are reset on both sides (the worker sees it at once);
* ``drop(TO_SERVER | TO_CLIENT)``: half-open: one direction of the current connections
  is silently swallowed while the other still flows;
* ``close_server_side()``: half-open: the server's side of the current connections is
  closed (Prosody sees the connection end) while the worker's side stays open and hears
  nothing, as behind a NAT or firewall that forgot the flow;
* ``slow(latency, bandwidth)``: every byte, on current and future connections, arrives
  ``latency`` seconds later, at most ``bandwidth`` bytes per second each way (a slow but
  alive link); ``heal()`` ends that.

New connections always reach the server (a client that reconnects gets through), and the
proxy records when the worker closed each connection (``Link.client_closed``): that is when
the worker gave up on a dead link.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

__all__ = ["TO_CLIENT", "TO_SERVER", "FaultyProxy", "Link"]

TO_SERVER = "to-server"
"""Bytes the client (the worker) sends to the server."""
TO_CLIENT = "to-client"
"""Bytes the server sends to the client."""

_CHUNK = 65536
_CONNECT_TIMEOUT = 10.0


@dataclass(eq=False)
class Link:
    """One proxied connection: the client's socket to us and ours to the server."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    dropped: set[str] = field(default_factory=set)  # directions whose bytes are swallowed
    keep_client_open: bool = False  # the server side ended, but the client must not hear of it
    client_closed: asyncio.Event = field(default_factory=asyncio.Event)  # the client closed or reset its side
    client_closed_at: float | None = None  # loop time of that


class FaultyProxy:
    """Forwards 127.0.0.1:<port> to ``target_host:target_port``; see the module docstring."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.connections = 0  # accepted so far
        self.links: list[Link] = []  # open connections, oldest first
        self.latency = 0.0  # seconds added to every chunk, each way
        self.bandwidth: float | None = None  # bytes per second, each way; None: unlimited
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> FaultyProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def current(self) -> Link:
        """The newest open connection (the worker's, in a test with one worker)."""
        if not self.links:
            raise LookupError("no connection through the proxy")
        return self.links[-1]

    # -- faults -----------------------------------------------------------------------------

    def stall(self) -> None:
        for link in self.links:
            link.dropped.update((TO_SERVER, TO_CLIENT))

    def cut(self) -> None:
        for link in self.links:
            link.client.transport.abort()
            link.upstream.transport.abort()
        self.links.clear()

    def drop(self, direction: str) -> None:
        if direction not in (TO_SERVER, TO_CLIENT):
            raise ValueError(f"direction must be {TO_SERVER!r} or {TO_CLIENT!r}, not {direction!r}")
        for link in self.links:
            link.dropped.add(direction)

    def close_server_side(self) -> None:
        for link in self.links:
            link.keep_client_open = True
            link.dropped.update((TO_SERVER, TO_CLIENT))  # what the client sends goes nowhere
            link.upstream.close()  # FIN to the server; the client side is left as it is

    def slow(self, latency: float = 0.2, bandwidth: float | None = None) -> None:
        if latency < 0 or (bandwidth is not None and bandwidth <= 0):
            raise ValueError("latency must be >= 0 and bandwidth > 0 (or None)")
        self.latency = latency
        self.bandwidth = bandwidth

    def heal(self) -> None:
        """End ``slow()`` (for bytes read from now on); other faults are per connection."""
        self.latency = 0.0
        self.bandwidth = None

    # -- forwarding -------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target),
                                                              _CONNECT_TIMEOUT)
            except (OSError, TimeoutError):
                writer.transport.abort()
                return
            link = Link(writer, up_writer)
            self.links.append(link)
            to_server: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
            to_client: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
            await asyncio.gather(
                self._read(link, reader, to_server, TO_SERVER),
                self._read(link, up_reader, to_client, TO_CLIENT),
                self._deliver(link, to_server, up_writer, TO_SERVER),
                self._deliver(link, to_client, writer, TO_CLIENT),
                return_exceptions=True,
            )
            if link in self.links:
                self.links.remove(link)
            for side in (writer, up_writer):  # both directions are over (a kept client side too)
                with contextlib.suppress(Exception):
                    side.close()
        finally:
            self._handlers.discard(task)

    async def _read(self, link: Link, reader: asyncio.StreamReader,
                    queue: asyncio.Queue[tuple[float, bytes] | None], direction: str) -> None:
        """Read one direction and queue each chunk with the instant it may be delivered."""
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(_CHUNK):
                if direction not in link.dropped:
                    queue.put_nowait((loop.time() + self.latency, data))
        except OSError:
            pass  # a reset ends the direction like an end of file
        finally:
            if direction == TO_SERVER:
                link.client_closed_at = loop.time()
                link.client_closed.set()
            queue.put_nowait(None)

    async def _deliver(self, link: Link, queue: asyncio.Queue[tuple[float, bytes] | None],
                       writer: asyncio.StreamWriter, direction: str) -> None:
        """Write chunks in order, each no earlier than its due instant and no faster than
        ``bandwidth``: the waits here *are* the simulated slow link. At the end of the
        direction, pass the close on (unless the client must not hear of it)."""
        loop = asyncio.get_running_loop()
        try:
            while (item := await queue.get()) is not None:
                due, data = item
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                if self.bandwidth is not None:
                    await asyncio.sleep(len(data) / self.bandwidth)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            if not (direction == TO_CLIENT and link.keep_client_open):
                with contextlib.suppress(Exception):
                    writer.close()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=5)
