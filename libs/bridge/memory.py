"""Workers and callers in one process, without a server: the in-memory twin of the XMPP
transport (httpcore's ``MockStream``, h11's ``ConnectionPair``).

Why: most of a worker's behaviour (access, deadlines, sizes, dispatch, handlers, errors) is
decided above the network, and a test of it should not need Prosody or take its time. A
``MemoryNetwork`` carries the same ``<api/>`` texts as XMPP between ``App``s and ``Client``s
of one event loop, with what the server adds: the sender's JID stamped on every request (so
access rules see who really asked), an offline full JID answered ``unavailable`` at once,
and delivery one loop pass later, never inside the sender's call. What it leaves out is what
only a server has: TLS, login, reconnects, stream management, presence subscriptions.

    net = MemoryNetwork()
    app = App(transport=net.transport("worker@localhost/python", allow=["friend@localhost"]))
    async with Client(transport=net.transport("friend@localhost")) as client:
        assert await client.call(app.jid, "ping") == {"pong": True, "environment": "python"}
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable

from .access import bare_jid
from .config import WorkerConfig
from .errors import CallTimeout, NotConnected, RemoteError
from .protocol import DEFAULT_MAX_PAYLOAD, ApiError, ApiResult, decode_error
from .serial import serial_generator
from .transport import Message, OnProgress, Takeover, Transport

__all__ = ["MemoryNetwork", "MemoryTransport"]


class MemoryNetwork:
    """The "server" of in-memory transports: routes requests, answers and chat messages
    between the transports it made that are online, by full JID."""

    def __init__(self) -> None:
        self._online: dict[str, MemoryTransport] = {}
        self._watchers: dict[str, list[Callable[[], None]]] = {}
        self._rooms: dict[str, dict[str, tuple[MemoryTransport, str | None]]] = {}  # room -> nick -> who

    def transport(self, jid: str, *, allow: Iterable[str] = (), max_payload: int = DEFAULT_MAX_PAYLOAD,
                  max_per_caller: int = 64, shutdown_timeout: float = 10.0) -> MemoryTransport:
        """A transport for ``jid``: a full JID (a worker), or a bare one (a caller: a random
        resource is added, as ``Client`` does). The keywords are the ``QE_*`` settings a
        worker on it uses (``allow`` is ``QE_ALLOW``)."""
        bare, _, resource = jid.partition("/")
        if "@" not in bare:
            raise ValueError(f"{jid!r} is not a JID like worker@localhost/python")
        config = WorkerConfig(jid=bare_jid(bare), password="", host="memory", tls="off",
                              allow=frozenset(bare_jid(a) for a in allow), max_payload=max_payload,
                              max_per_caller=max_per_caller, shutdown_timeout=shutdown_timeout, keepalive=0)
        return MemoryTransport(self, f"{config.jid}/{resource or f'client_{serial_generator(8)}'}", config)

    def online(self) -> list[str]:
        """Full JIDs online now."""
        return sorted(self._online)

    # -- what the server does -----------------------------------------------------------

    def _join(self, transport: MemoryTransport) -> None:
        previous = self._online.get(transport.jid)
        if previous is not None and previous is not transport:
            self._leave(previous)
            previous._taken_over()  # as a server does with a second login on one resource
            Takeover.here().report(transport.jid)  # as the loser's farewell makes the newcomer do
        self._online[transport.jid] = transport
        for callback in list(self._watchers.get(transport.jid, ())):
            asyncio.get_running_loop().call_soon(callback)

    def _leave(self, transport: MemoryTransport) -> None:
        if self._online.get(transport.jid) is transport:
            del self._online[transport.jid]
        for room in [r for r, occupants in self._rooms.items() if any(t is transport for t, _ in occupants.values())]:
            self._room_leave(room, transport)

    # rooms: non-anonymous (real JIDs shown), temporary, no history, as the private server's

    def _room_enter(self, room: str, nick: str, transport: MemoryTransport, payload: str | None) -> None:
        occupants = self._rooms.setdefault(room, {})
        taken = occupants.get(nick)
        if taken is not None and taken[0] is not transport:
            raise RemoteError("conflict", f"nick {nick!r} is taken in {room}")
        first = taken is None
        occupants[nick] = (transport, payload)
        loop = asyncio.get_running_loop()
        for other_nick, (other, other_payload) in list(occupants.items()):
            if other is not transport:
                loop.call_soon(other._occupant, room, nick, transport.jid, payload, True)
                if first:
                    loop.call_soon(transport._occupant, room, other_nick, other.jid, other_payload, True)

    def _room_leave(self, room: str, transport: MemoryTransport) -> None:
        occupants = self._rooms.get(room, {})
        for nick, (who, _payload) in list(occupants.items()):
            if who is transport:
                del occupants[nick]
                for other, _ in occupants.values():
                    asyncio.get_running_loop().call_soon(other._occupant, room, nick, transport.jid, None, False)
        if not occupants:
            self._rooms.pop(room, None)

    def _room_send(self, room: str, sender: MemoryTransport, body: str) -> None:
        occupants = self._rooms.get(room, {})
        if not any(who is sender for who, _ in occupants.values()):
            return  # a server answers not-acceptable; nothing arrives
        for who, _ in occupants.values():
            if who is not sender:
                asyncio.get_running_loop().call_soon(who._receive_message, Message(sender.jid, body, room=room))

    def _route(self, to: str) -> MemoryTransport | None:
        return self._online.get(to)

    def _watch(self, jid: str, callback: Callable[[], None]) -> Callable[[], None]:
        watchers = self._watchers.setdefault(jid, [])
        watchers.append(callback)

        def stop() -> None:
            if callback in watchers:
                watchers.remove(callback)

        return stop


class MemoryTransport(Transport):
    """One session on a ``MemoryNetwork``; made by ``MemoryNetwork.transport()``."""

    def __init__(self, network: MemoryNetwork, jid: str, config: WorkerConfig) -> None:
        self.network = network
        self.jid = jid
        self.config = config
        self.on_request = None
        self.on_message = None
        self.on_fatal = None
        self.on_occupant = None
        self.on_cancel = None
        self.fatal: str | None = None
        self._rooms: dict[str, tuple[str, str | None]] = {}  # room -> (nick, payload)
        self._refused: dict[str, RemoteError] = {}
        self._online = False
        self._sessions = 0
        self._pending: dict[str, tuple[str, asyncio.Future[str | None]]] = {}
        self._progress: dict[str, OnProgress] = {}

    def start(self) -> None:
        if self._sessions:
            raise RuntimeError("transport already started")
        self._sessions = 1
        self._online = True
        self.network._join(self)

    @property
    def online(self) -> bool:
        return self._online

    async def wait_online(self, timeout: float) -> None:
        if not self._online:
            raise NotConnected(self.fatal or f"{self.jid} is not started or was closed")

    def stats(self) -> dict[str, int]:
        return {"sessions": self._sessions, "resumptions": 0}

    def watch_available(self, jid: str, callback: Callable[[], None]) -> Callable[[], None]:
        return self.network._watch(jid, callback)

    # -- calls ---------------------------------------------------------------------------

    async def request(self, to: str, text: str, timeout: float, on_progress: OnProgress | None = None) -> str | None:
        await self.wait_online(timeout)
        peer = self.network._route(to)
        if peer is None:  # what the server answers for an offline full JID: at once
            raise RemoteError("unavailable", f"{to} is not online")
        iq_id = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | None] = loop.create_future()
        self._pending[iq_id] = (to, future)
        if on_progress is not None:
            self._progress[iq_id] = on_progress
        loop.call_soon(peer._receive_request, iq_id, self.jid, text)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise CallTimeout(f"no answer from {to} within {timeout:g} s") from None
        except asyncio.CancelledError:
            if (target := self.network._route(to)) is not None and self._online:
                loop.call_soon(target._receive_cancel, self.jid, iq_id)
            raise
        finally:
            self._pending.pop(iq_id, None)
            self._progress.pop(iq_id, None)

    def send_progress(self, to: str, iq_id: str, payload: str) -> None:
        caller = self.network._route(to)
        if caller is not None and self._online:
            asyncio.get_running_loop().call_soon(caller._receive_progress, self.jid, iq_id, payload)

    def _receive_progress(self, sender: str, iq_id: str, payload: str) -> None:
        entry = self._pending.get(iq_id)
        callback = self._progress.get(iq_id)
        if entry is not None and entry[0] == sender and callback is not None:
            callback(payload)

    def _receive_cancel(self, sender: str, iq_id: str) -> None:
        if self._online and self.on_cancel is not None:
            self.on_cancel(sender, iq_id)

    def _receive_request(self, iq_id: str, sender: str, text: str) -> None:
        caller = self.network._route(sender)
        if not self._online or self.on_request is None:
            if caller is not None:
                caller._receive_answer(self.jid, ApiError(iq_id, sender, "unavailable", f"{self.jid} is not online"))
            return
        self.on_request(iq_id, sender, text, "set")

    def send_answer(self, answer: ApiResult | ApiError) -> None:
        caller = self.network._route(answer.to)
        if caller is not None and self._online:
            asyncio.get_running_loop().call_soon(caller._receive_answer, self.jid, answer)

    def _receive_answer(self, sender: str, answer: ApiResult | ApiError) -> None:
        entry = self._pending.get(answer.id)
        if entry is None or entry[0] != sender or entry[1].done():  # late, or not from whom we asked
            return
        future = entry[1]
        if isinstance(answer, ApiResult):
            future.set_result(answer.payload)
        else:
            error = decode_error(answer.condition, answer.payload)
            future.set_exception(RemoteError(error.code, error.message))

    # -- chat ----------------------------------------------------------------------------

    def send_message(self, to: str, body: str) -> None:
        peer = self.network._route(to)
        if peer is not None and self._online:  # no offline storage, as on the private server
            asyncio.get_running_loop().call_soon(peer._receive_message, Message(self.jid, body))

    def _receive_message(self, message: Message) -> None:
        if self._online and self.on_message is not None:
            self.on_message(message)

    # -- rooms ---------------------------------------------------------------------------

    def join(self, room: str, nick: str, payload: str | None = None) -> None:
        self._rooms[room] = (nick, payload)
        self._refused.pop(room, None)
        if self._online:
            try:
                self.network._room_enter(room, nick, self, payload)
            except RemoteError as exc:
                del self._rooms[room]
                self._refused[room] = exc  # for wait_joined, as a server's error presence

    async def wait_joined(self, room: str, timeout: float) -> None:
        await self.wait_online(timeout)
        if room in self._refused:
            raise self._refused[room]
        if room not in self._rooms:
            raise NotConnected(f"{self.jid} is not joining {room}")
        await asyncio.sleep(0)  # the occupants' presences are delivered one loop pass later

    def leave(self, room: str) -> None:
        if self._rooms.pop(room, None) is not None and self._online:
            self.network._room_leave(room, self)

    def send_group(self, room: str, body: str) -> None:
        if self._online:
            self.network._room_send(room, self, body)

    def _occupant(self, room: str, nick: str, jid: str, payload: str | None, present: bool) -> None:
        if self._online and room in self._rooms and self.on_occupant is not None:
            self.on_occupant(room, nick, jid, payload, present)

    # -- leaving -------------------------------------------------------------------------

    async def close(self, timeout: float = 5.0) -> None:
        if not self._online:
            return
        self._online = False
        self.network._leave(self)
        for _to, future in self._pending.values():
            if not future.done():
                future.set_exception(NotConnected(f"{self.jid} closed"))

    def _taken_over(self) -> None:
        self._online = False
        self.fatal = f"another client logged in as {self.jid} and took over this resource"
        if self.on_fatal is not None:
            self.on_fatal(self.fatal)
