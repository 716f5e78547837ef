"""Group-chat rooms (XEP-0045) through ``XmppTransport`` on a real Prosody: joining,
occupants with real JIDs and payloads, payload updates, group messages, leaving, refusals,
and rejoining after a new session (but not after a resumption).

The rules themselves are tested without a server (tests/unit/test_xmpp_rooms.py); this
checks that the adapter carries them out against what Prosody really sends. Every room has
a name of its own test, so tests share the session's server without meeting.
"""

from __future__ import annotations

import asyncio
import secrets
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from libs.bridge import NotConnected, RemoteError, load_config
from libs.bridge.transport import Message
from libs.bridge.xmpp import XmppTransport
from libs.devserver import DevServer
from tests.support.accounts import Account, account_env, new_account
from tests.support.proxy import FaultyProxy

STEP = 10.0  # s: bound of each wait for something the server does
RECOVER = 20.0  # s: bound of a reconnect (backoff, login, rejoin)

OccupantEvent = tuple[str, str, "str | None", "str | None", bool]


@dataclass
class Peer:
    """A started ``XmppTransport`` and what it reported, in order."""

    transport: XmppTransport
    occupants: list[OccupantEvent] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def jid(self) -> str:
        return self.transport.jid

    def _on_occupant(self, room: str, nick: str, jid: str | None, payload: str | None, present: bool) -> None:
        self.occupants.append((room, nick, jid, payload, present))
        self._changed.set()

    def _on_message(self, message: Message) -> None:
        self.messages.append(message)
        self._changed.set()

    async def until(self, predicate: Callable[[Peer], Any], timeout: float = STEP) -> None:
        """Wait until ``predicate(self)`` holds, re-checked after each report."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    def saw(self, room: str, nick: str, present: bool = True, payload: str | None = None) -> bool:
        return any(e[0] == room and e[1] == nick and e[4] == present and (payload is None or e[3] == payload)
                   for e in self.occupants)

    def got(self, text: str) -> Message | None:
        return next((m for m in self.messages if m.text == text), None)


StartPeer = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def start_peer(prosody: DevServer) -> AsyncIterator[StartPeer]:
    """``await start_peer(server=..., account=..., port=..., join=(room, nick, payload), **QE_env)``:
    an online transport on an account of its own (or ``account``), reaching the server
    directly or through ``port`` (a proxy); ``join`` is asked for before it starts.
    Closed at the end of the test."""
    peers: list[Peer] = []

    async def _start(*, server: DevServer = prosody, account: Account | None = None, port: int | None = None,
                     join: tuple[str, str, str | None] | None = None, **env: str) -> Peer:
        account = account or new_account(server, "room")
        config = load_config({**account_env(server, account, **env),
                              **({"QE_PORT": str(port)} if port is not None else {})})
        peer = Peer(XmppTransport(config, f"r{secrets.token_hex(3)}", keepalive=0))
        peer.transport.on_occupant = peer._on_occupant
        peer.transport.on_message = peer._on_message
        peers.append(peer)
        if join is not None:
            peer.transport.join(*join)
        peer.transport.start()
        await peer.transport.wait_online(STEP)
        return peer

    yield _start
    for peer in peers:
        await peer.transport.close(2)


def new_room(server: DevServer) -> str:
    return f"room-{secrets.token_hex(4)}@conference.{server.domain}"


async def test_occupants_payloads_messages_and_leaving(start_peer: StartPeer, prosody: DevServer) -> None:
    room = new_room(prosody)
    a = await start_peer(join=(room, "alpha", "load=0"))  # asked for before the session: sent once online
    await a.transport.wait_joined(room, STEP)  # created the room (201 + configuration form)
    b, c = await start_peer(), await start_peer()
    b.transport.join(room, "beta", "load=1")
    await b.transport.wait_joined(room, STEP)
    c.transport.join(room, "gamma", None)
    await c.transport.wait_joined(room, STEP)

    # who was there is known when wait_joined returns (listed in no set order), with real JIDs
    # and payloads; never ourselves
    assert sorted(c.occupants) == [(room, "alpha", a.jid, "load=0", True), (room, "beta", b.jid, "load=1", True)]
    state = c.transport.rooms.get(room)
    assert state is not None and state.occupants == {"alpha": a.jid, "beta": b.jid}
    await a.until(lambda p: p.saw(room, "gamma"))
    await b.until(lambda p: p.saw(room, "gamma"))
    assert a.occupants == [(room, "beta", b.jid, "load=1", True), (room, "gamma", c.jid, None, True)]
    assert all(e[1] != "beta" for e in b.occupants)

    # a payload update reaches the others
    b.transport.join(room, "beta", "load=7")
    await a.until(lambda p: p.saw(room, "beta", payload="load=7"))
    await c.until(lambda p: p.saw(room, "beta", payload="load=7"))

    # group chat: to the others, from the sender's real JID, live; no echo to the sender
    a.transport.send_group(room, "hello")
    await b.until(lambda p: p.got("hello"))
    await c.until(lambda p: p.got("hello"))
    assert b.got("hello") == Message(a.jid, "hello", room=room, delayed=False)
    b.transport.send_group(room, "reply")  # a's echo of "hello" would reach a before this
    await a.until(lambda p: p.got("reply"))
    assert [m.text for m in a.messages] == ["reply"]
    assert a.messages[0] == Message(b.jid, "reply", room=room, delayed=False)

    # leaving is reported to the others; the leaver stops waiting on the room
    c.transport.leave(room)
    await a.until(lambda p: p.saw(room, "gamma", present=False))
    await b.until(lambda p: p.saw(room, "gamma", present=False))
    assert (room, "gamma", c.jid, None, False) in a.occupants
    with pytest.raises(NotConnected):
        await c.transport.wait_joined(room, STEP)
    c.transport.leave(room)  # no-op
    a.transport.send_group(room, "after c left")
    await b.until(lambda p: p.got("after c left"))
    assert c.got("after c left") is None


async def test_frequent_payload_updates_are_coalesced_and_the_latest_arrives(start_peer: StartPeer,
                                                                             prosody: DevServer) -> None:
    room = new_room(prosody)
    a, b = await start_peer(join=(room, "alpha", "p0")), await start_peer()
    await a.transport.wait_joined(room, STEP)
    b.transport.join(room, "beta", None)
    await b.transport.wait_joined(room, STEP)
    for n in range(1, 51):
        a.transport.join(room, "alpha", f"p{n}")
    await b.until(lambda p: p.saw(room, "alpha", payload="p50"))
    seen = [e[3] for e in b.occupants if e[1] == "alpha"]
    assert seen[-1] == "p50" and len(seen) <= 3, seen  # the first listing, at most one update at once, the last


async def test_a_taken_nick_is_refused_at_once(start_peer: StartPeer, prosody: DevServer) -> None:
    room = new_room(prosody)
    a = await start_peer(join=(room, "same", None))
    await a.transport.wait_joined(room, STEP)
    b = await start_peer()
    b.transport.join(room, "same", None)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RemoteError) as refused:
        await b.transport.wait_joined(room, STEP)
    assert refused.value.code == "conflict"
    assert loop.time() - started < STEP / 2  # the refusal, not the timeout
    with pytest.raises(RemoteError):  # it stays refused until joined again
        await b.transport.wait_joined(room, 0.1)
    assert not a.saw(room, "same")
    b.transport.join(room, "other", None)  # another nick is taken in
    await b.transport.wait_joined(room, STEP)
    await a.until(lambda p: p.saw(room, "other"))


async def test_a_room_on_a_missing_service_is_refused_at_once(start_peer: StartPeer) -> None:
    a = await start_peer()
    room = f"room@nosuch-muc.{a.transport.config.domain}"
    a.transport.join(room, "alpha", None)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RemoteError) as refused:
        await a.transport.wait_joined(room, STEP)
    assert refused.value.code in ("not-allowed", "not-found", "unavailable")  # Prosody: not-allowed (no s2s)
    assert loop.time() - started < STEP / 2


async def test_wait_joined_on_a_room_not_asked_for(start_peer: StartPeer, prosody: DevServer) -> None:
    a = await start_peer()
    with pytest.raises(NotConnected):
        await a.transport.wait_joined(new_room(prosody), STEP)
    for room, nick in (("conference.localhost", "x"), ("r@conference.localhost/x", "x"),
                       (new_room(prosody), ""), (new_room(prosody), "\ufb01")):  # a ligature resourceprep changes
        with pytest.raises(ValueError):
            a.transport.join(room, nick, None)
    assert len(a.transport.rooms) == 0


async def test_a_new_session_joins_again_and_group_chat_flows(start_peer: StartPeer, prosody: DevServer) -> None:
    """No XEP-0198: a dropped link costs the session and, server-side, the room."""
    room = new_room(prosody)
    proxy = await FaultyProxy(prosody.host, prosody.port).start()
    try:
        a = await start_peer(port=proxy.port, join=(room, "alpha", "pa"), QE_STREAM_MANAGEMENT="off")
        b = await start_peer(join=(room, "beta", "pb"))
        await a.transport.wait_joined(room, STEP)
        await b.transport.wait_joined(room, STEP)
        await a.until(lambda p: p.saw(room, "beta"))
        await b.until(lambda p: p.saw(room, "alpha"))

        proxy.cut()
        await b.until(lambda p: p.saw(room, "alpha", present=False))  # the server ended a's session
        await a.transport.wait_sessions(2, RECOVER)
        await a.transport.wait_joined(room, STEP)
        assert a.transport.resumptions == 0
        await b.until(lambda p: p.occupants[-1] == (room, "alpha", a.jid, "pa", True))

        b.transport.send_group(room, "after the rejoin")
        await a.until(lambda p: p.got("after the rejoin"))
        a.transport.send_group(room, "back")
        await b.until(lambda p: p.got("back"))
        assert not any(e[1] == "beta" and not e[4] for e in a.occupants)  # b never left
    finally:
        await proxy.close()


async def test_a_resumed_session_keeps_its_rooms(start_peer: StartPeer, prosody: DevServer) -> None:
    """XEP-0198: the server keeps the session and its rooms; nothing is sent again and the
    others see no one leave."""
    room = new_room(prosody)
    proxy = await FaultyProxy(prosody.host, prosody.port).start()
    try:
        a = await start_peer(port=proxy.port, join=(room, "alpha", None))
        b = await start_peer(join=(room, "beta", None))
        await a.transport.wait_joined(room, STEP)
        await b.transport.wait_joined(room, STEP)
        await a.transport.wait_state(lambda t: t.resumable, STEP)
        await b.until(lambda p: p.saw(room, "alpha"))

        proxy.cut()
        b.transport.send_group(room, "during the gap")
        await a.transport.wait_state(lambda t: t.resumptions == 1 and t.online, RECOVER)
        await a.transport.wait_joined(room, 0.1)  # still joined: no new join to wait for
        await a.until(lambda p: p.got("during the gap"))  # kept for the resumed session
        a.transport.send_group(room, "resumed")
        await b.until(lambda p: p.got("resumed"))
        assert a.transport.sessions == 1
        assert [e for e in b.occupants if e[1] == "alpha"] == [(room, "alpha", a.jid, None, True)]
    finally:
        await proxy.close()


async def test_rooms_come_back_after_a_server_restart(start_peer: StartPeer, fresh_prosody: DevServer) -> None:
    """The restarted server has neither the sessions (resumption fails) nor the rooms: both
    occupants log in anew and join again; the first one back creates the room again."""
    server = fresh_prosody
    room = new_room(server)
    a = await start_peer(server=server, join=(room, "alpha", "pa"))
    b = await start_peer(server=server, join=(room, "beta", "pb"))
    await a.transport.wait_joined(room, STEP)
    await b.transport.wait_joined(room, STEP)
    await a.until(lambda p: p.saw(room, "beta"))

    await asyncio.to_thread(server.restart)
    await a.transport.wait_sessions(2, RECOVER)
    await b.transport.wait_sessions(2, RECOVER)
    await a.transport.wait_joined(room, STEP)
    await b.transport.wait_joined(room, STEP)
    await a.until(lambda p: p.occupants[-1][1:] == ("beta", b.jid, "pb", True))
    await b.until(lambda p: p.occupants[-1][1:] == ("alpha", a.jid, "pa", True))

    a.transport.send_group(room, "after the restart")
    await b.until(lambda p: p.got("after the restart"))
    assert b.got("after the restart") == Message(a.jid, "after the restart", room=room, delayed=False)


async def test_an_occupant_the_room_put_out_joins_again(start_peer: StartPeer, prosody: DevServer) -> None:
    """A kick (status 307 with 110) is not a leave: the kicked transport still wants the room
    and joins again at once (a ban, 301, would be final: tests/unit/test_xmpp_rooms.py)."""
    room = new_room(prosody)
    a = await start_peer(join=(room, "alpha", None))  # the creator: owner, may kick
    await a.transport.wait_joined(room, STEP)
    b = await start_peer(join=(room, "beta", "pb"))
    await b.transport.wait_joined(room, STEP)
    await a.until(lambda p: p.saw(room, "beta"))

    client = a.transport._client
    assert client is not None
    kick = client.make_iq_set(ito=room)
    query = ET.SubElement(kick.xml, "{http://jabber.org/protocol/muc#admin}query")
    ET.SubElement(query, "{http://jabber.org/protocol/muc#admin}item", {"nick": "beta", "role": "none"})
    await kick.send(timeout=STEP)

    await a.until(lambda p: p.saw(room, "beta", present=False))
    await a.until(lambda p: p.occupants[-1] == (room, "beta", b.jid, "pb", True))  # back
    await b.transport.wait_joined(room, STEP)
    a.transport.send_group(room, "welcome back")
    await b.until(lambda p: p.got("welcome back"))


async def test_a_room_we_are_in_answers_our_self_ping_as_joined(prosody: DevServer) -> None:
    """XEP-0410 on a real Prosody: a quiet room is self-pinged at the keepalive interval, and
    what Prosody answers means "still in" (no rejoin). (A room that vanished, the case the
    ping is for, needs an ejabberd node to die: the rules are in tests/unit/test_xmpp_rooms.py.)"""
    room = new_room(prosody)
    account = new_account(prosody, "room")
    transport = XmppTransport(load_config(account_env(prosody, account)), f"r{secrets.token_hex(3)}",
                              keepalive=0.2, keepalive_timeout=STEP)
    answers: list[tuple[str | None, bool]] = []
    answered = asyncio.Event()
    ping_answer = transport.rooms.ping_answer

    def spy(room_: str, condition: str | None, now: float, **kw: Any) -> Any:
        answers.append((condition, kw.get("answered", True)))
        answered.set()
        return ping_answer(room_, condition, now, **kw)

    transport.rooms.ping_answer = spy  # type: ignore[method-assign]
    transport.join(room, "quiet", None)
    transport.start()
    try:
        await transport.wait_joined(room, STEP)
        await asyncio.wait_for(answered.wait(), STEP)
        state = transport.rooms.get(room)
        assert state is not None and state.phase.value == "joined"
        assert answers[0][1] is True, answers  # answered, not timed out
        assert answers[0][0] is None, answers  # Prosody 0.12 answers the self-ping itself, with a result
    finally:
        await transport.close(2)
