"""Group chat (XEP-0045) rooms as plain state: parsed stanzas in, actions out.

Why hand-rolled and not slixmpp's ``xep_0045`` plugin: on Prosody a refused join hangs the
plugin's ``join_muc_wait`` until its timeout (Prosody's error presence lacks the MUC ``<x/>``
the plugin waits for); the plugin rejoins nothing after a new session and keeps a stale room
list; and what a worker needs is a handful of stanza shapes. Here they are read and written
with ElementTree, and the rules (when to send a join, an update or nothing; when we are in;
what a refusal means; whom a message is from) are one pure object per transport, tested
without a server (tests/unit/test_xmpp_rooms.py). The adapter (``XmppTransport``) takes
presences and messages from the rooms we are in before slixmpp routes them (so occupants do
not pile up in slixmpp's roster) and carries out the actions, like ``_session.py``'s.

A room's phase::

    PENDING ──online──> JOINING ──self-presence──> JOINED
                           │ └──self-presence 201──> CONFIGURING ──form answered──> JOINED
                           └──error presence──> FAILED (not rejoined until join() again)

``JOINED`` goes back to ``JOINING`` (a rejoin, with the same nick and the latest payload)
after every new session, and when the room shows it no longer has us: our own unavailable
presence that we did not ask for, or an ``item-not-found``/``not-acceptable`` error from
the room's bare JID (an ejabberd node that crashed took the room with it).

A room can also vanish without a word: an ejabberd node killed with its rooms tells no
occupant on the other nodes, and a worker that only listens would never send anything that
bounces. So a room we have not heard from for a while is asked with a self-ping (XEP-0410:
an IQ ping to our own occupant JID, ``due_pings``); ``item-not-found`` or ``not-acceptable``
means we are not in and we rejoin; any other answer (a result, or ``service-unavailable`` /
``feature-not-implemented`` relayed from ourselves) means we are; no answer proves nothing. A rejoin keeps
the occupants it knew until the room has listed them again, then reports only those that
are gone, so a reconnect does not flap every occupant. A resumed session (XEP-0198) keeps
its rooms: nothing is sent then, except what was asked for while offline.

A refusal is final (``FAILED``) only for a join the owner asked for (the first one, or a
nick change): ``wait_joined`` tells the owner. A refused rejoin goes back to ``PENDING``
and is tried again with the next session: a server that shuts down puts every occupant out
(Prosody: status 333) while we are still connected, and refuses the rejoin that follows,
which must not end a room the owner still wants.

Occupant payloads are announced in our presence as ``<service xmlns=SERVICE_NS>`` text;
updates are coalesced to at most one presence per ``UPDATE_INTERVAL`` s per room, the last
one always carrying the latest payload.
"""

from __future__ import annotations

import enum
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from ..protocol import xml_safe
from ..transport import Message
from ._delay import stored

__all__ = [
    "CLIENT_NS",
    "MUC_NS",
    "MUC_OWNER_NS",
    "MUC_USER_NS",
    "SERVICE_NS",
    "UPDATE_INTERVAL",
    "Action",
    "Configure",
    "Deliver",
    "FlushAt",
    "Joined",
    "Note",
    "Occupant",
    "Phase",
    "Refused",
    "Room",
    "RoomMessage",
    "RoomPresence",
    "Rooms",
    "SendJoin",
    "SendLeave",
    "SendPing",
    "SendUpdate",
    "instant_config",
    "join_children",
    "parse_message",
    "parse_presence",
    "room_error",
    "update_children",
]

CLIENT_NS: Final = "jabber:client"
MUC_NS: Final = "http://jabber.org/protocol/muc"
MUC_USER_NS: Final = "http://jabber.org/protocol/muc#user"
MUC_OWNER_NS: Final = "http://jabber.org/protocol/muc#owner"
SERVICE_NS: Final = "urn:qe:worker:service:1"
"""Namespace of the ``<service/>`` element that carries an occupant's payload."""
_DATA_NS: Final = "jabber:x:data"
_STANZAS_NS: Final = "urn:ietf:params:xml:ns:xmpp-stanzas"
_SERVICE_TAG: Final = f"{{{SERVICE_NS}}}service"
_MUC_USER_X: Final = f"{{{MUC_USER_NS}}}x"

UPDATE_INTERVAL: Final = 0.2
"""Seconds between two presences we send to one room (payload updates are coalesced)."""

_VANISHED: Final = frozenset({"item-not-found", "not-acceptable"})
"""Error conditions from a room we are in that mean it no longer has us (or no longer exists)."""

_ROOM_ERRORS: Final = {
    "conflict": ("conflict", "the nick is taken in the room"),
    "forbidden": ("forbidden", "we are banned from the room"),
    "not-authorized": ("forbidden", "the room needs a password"),
    "registration-required": ("registration-required", "the room is members-only"),
    "not-allowed": ("not-allowed", "the room may not be created by us"),
    "item-not-found": ("not-found", "the room does not exist or is locked"),
    "remote-server-not-found": ("not-found", "no such group-chat service"),
    "service-unavailable": ("unavailable", "the room is full or the service does not answer"),
    "remote-server-timeout": ("unavailable", "the group-chat service does not answer"),
    "recipient-unavailable": ("unavailable", "the group-chat service does not answer"),
    "jid-malformed": ("bad-request", "the nick or the room's address is not valid"),
    "not-acceptable": ("not-acceptable", "the room does not accept the nick"),
}


def room_error(condition: str | None, text: str | None) -> tuple[str, str]:
    """``(code, message)`` for an error a room answered a join with: the code from the
    stanza error condition (an unknown condition is its own code), the message from the
    error's text when it has one."""
    code, message = _ROOM_ERRORS.get(condition or "", (condition or "error", f"the room refused us ({condition})"))
    return code, text or message


# -- stanzas in -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoomPresence:
    """A presence from a room (``from`` = ``room`` or ``room/nick``), as far as rooms care."""

    room: str  # bare JID, lower-cased
    nick: str  # "" when from the room's bare JID
    kind: str  # "available", "unavailable" or "error"
    real_jid: str | None = None  # <item jid=.../> (non-anonymous rooms)
    payload: str | None = None  # our <service/> text
    codes: frozenset[str] = frozenset()  # <status code=.../>
    condition: str | None = None  # of an error
    text: str | None = None  # of an error


@dataclass(frozen=True, slots=True)
class RoomMessage:
    """A ``groupchat`` or ``error`` message from a room."""

    room: str
    nick: str
    kind: str  # "groupchat" or "error"
    body: str | None = None
    delayed: bool = False
    condition: str | None = None
    text: str | None = None


def _split(xml: ET.Element) -> tuple[str, str]:
    room, _, nick = xml.get("from", "").partition("/")
    return room.lower(), nick


def _error(xml: ET.Element, ns: str) -> tuple[str | None, str | None]:
    error = xml.find(f"{{{ns}}}error")
    if error is None:
        return None, None
    condition = text = None
    for child in error:
        ns_, _, local = child.tag[1:].partition("}")
        if ns_ != _STANZAS_NS:
            continue
        if local == "text":
            text = child.text or None
        elif condition is None:
            condition = local
    return condition, text


def parse_presence(xml: ET.Element, ns: str = CLIENT_NS) -> RoomPresence | None:
    """The room presence in ``xml`` (a ``<presence/>`` element); None for a presence that is
    not about occupancy (subscriptions, probes)."""
    kind = xml.get("type") or "available"
    if kind not in ("available", "unavailable", "error"):
        return None
    room, nick = _split(xml)
    if kind == "error":
        condition, text = _error(xml, ns)
        return RoomPresence(room, nick, kind, condition=condition, text=text)
    real_jid = None
    codes: set[str] = set()
    x = xml.find(_MUC_USER_X)
    if x is not None:
        for child in x:
            if child.tag == f"{{{MUC_USER_NS}}}status" and child.get("code"):
                codes.add(child.get("code", ""))
            elif child.tag == f"{{{MUC_USER_NS}}}item" and child.get("jid"):
                real_jid = child.get("jid")
    service = xml.find(_SERVICE_TAG)
    payload = None if service is None else (service.text or "")
    return RoomPresence(room, nick, kind, real_jid=real_jid, payload=payload, codes=frozenset(codes))


def parse_message(xml: ET.Element, ns: str = CLIENT_NS, own_jid: str = "",
                  session_since: float | None = None) -> RoomMessage | None:
    """The room message in ``xml``; None for other types (a ``chat`` message through a room
    is a private message, delivered as chat). ``own_jid`` and ``session_since`` tell a
    stored message from one resent on resumption (``_delay.stored``)."""
    kind = xml.get("type")
    room, nick = _split(xml)
    if kind == "error":
        condition, text = _error(xml, ns)
        return RoomMessage(room, nick, kind, condition=condition, text=text)
    if kind != "groupchat":
        return None
    body = xml.find(f"{{{ns}}}body")
    return RoomMessage(room, nick, kind, body=None if body is None else (body.text or ""),
                       delayed=stored(xml, own_jid, session_since))


# -- stanzas out ----------------------------------------------------------------------------


def _service(payload: str | None) -> list[ET.Element]:
    if payload is None:
        return []
    element = ET.Element(_SERVICE_TAG)
    element.text = xml_safe(payload)
    return [element]


def join_children(payload: str | None) -> list[ET.Element]:
    """What a join presence to ``room/nick`` carries: the MUC ``<x/>`` asking for no history,
    and our payload."""
    x = ET.Element(f"{{{MUC_NS}}}x")
    ET.SubElement(x, f"{{{MUC_NS}}}history", {"maxstanzas": "0"})
    return [x, *_service(payload)]


def update_children(payload: str | None) -> list[ET.Element]:
    """What a presence update to a room we are in carries: the payload only (with the MUC
    ``<x/>`` Prosody would take it for a rejoin and list every occupant again)."""
    return _service(payload)


def instant_config() -> ET.Element:
    """The ``muc#owner`` query of an IQ ``set`` that accepts a new room's configuration
    (XEP-0045 §10.1.2, which unlocks it) and makes it non-anonymous (§10.2): every occupant
    sees real JIDs. Fields not in the form keep the server's defaults."""
    query = ET.Element(f"{{{MUC_OWNER_NS}}}query")
    form = ET.SubElement(query, f"{{{_DATA_NS}}}x", {"type": "submit"})
    for var, value in (("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"), ("muc#roomconfig_whois", "anyone")):
        item = ET.SubElement(form, f"{{{_DATA_NS}}}field", {"var": var})
        ET.SubElement(item, f"{{{_DATA_NS}}}value").text = value
    return query


# -- actions: what the adapter must do ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendJoin:
    """Presence to ``room/nick`` with ``join_children(payload)``."""

    room: str
    nick: str
    payload: str | None


@dataclass(frozen=True, slots=True)
class SendUpdate:
    """Presence to ``room/nick`` with ``update_children(payload)``."""

    room: str
    nick: str
    payload: str | None


@dataclass(frozen=True, slots=True)
class SendLeave:
    """Unavailable presence to ``room/nick``."""

    room: str
    nick: str


@dataclass(frozen=True, slots=True)
class FlushAt:
    """Call ``Rooms.flush(room)`` at loop time ``when`` (a coalesced payload update is due)."""

    room: str
    when: float


@dataclass(frozen=True, slots=True)
class Configure:
    """We created ``room``: send it ``instant_config()``, then call ``Rooms.configured(room)``
    whatever the answer (or none in time)."""

    room: str


@dataclass(frozen=True, slots=True)
class Occupant:
    """Report an occupant to ``on_occupant``."""

    room: str
    nick: str
    real_jid: str | None
    payload: str | None
    present: bool


@dataclass(frozen=True, slots=True)
class Joined:
    """We are in ``room`` and know its occupants: wake ``wait_joined``."""

    room: str


@dataclass(frozen=True, slots=True)
class Refused:
    """``room`` refused us (``code``, ``message``): ``wait_joined`` raises ``RemoteError``."""

    room: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Deliver:
    """Give ``message`` to ``on_message``."""

    message: Message


@dataclass(frozen=True, slots=True)
class Note:
    """A line for the log."""

    level: int
    text: str


@dataclass(frozen=True, slots=True)
class SendPing:
    """An IQ ping to ``room/nick`` (XEP-0410); call ``Rooms.ping_answer`` with the result."""

    room: str
    nick: str


Action = (SendJoin | SendUpdate | SendLeave | SendPing | FlushAt | Configure | Occupant | Joined | Refused | Deliver
          | Note)

_INFO, _WARNING = 20, 30  # logging levels, without importing logging into a pure module


class Phase(enum.Enum):
    PENDING = "pending"  # wanted; the join goes out with the next session (at once if asked while online)
    JOINING = "joining"  # join sent; waiting for our own presence from the room
    CONFIGURING = "configuring"  # we created it; waiting for the answer to the configuration form
    JOINED = "joined"
    FAILED = "failed"  # the room refused us; not rejoined until join() is called again


@dataclass
class Room:
    """One room we want to be in (or were refused by)."""

    jid: str
    nick: str
    payload: str | None
    phase: Phase = Phase.PENDING
    occupants: dict[str, str | None] = field(default_factory=dict)  # nick -> real JID (None: hidden)
    error: tuple[str, str] | None = None  # (code, message) of a refusal
    entered: bool = False  # a join went out in this session: the room may have us
    _in_as: str | None = None  # the nick the room knows us by, once it took us in this session
    _asked: bool = True  # the owner asked for this join (not a rejoin): a refusal is final
    _stale: set[str] = field(default_factory=set)  # occupants from before a rejoin not listed again yet
    _sent_payload: str | None = None  # what our last presence to the room carried
    _sent_at: float = -math.inf  # loop time of that presence
    _flush_at: float | None = None  # a coalesced update is scheduled for then
    _heard_at: float = -math.inf  # loop time of the last stanza from the room (or proof we are in)
    _pinging: bool = False  # a self-ping is out


class Rooms:
    """The rooms of one transport: what we want, where we are, who else is there.

    Every method takes ``now`` (loop time, seconds) where timing matters and returns the
    actions to carry out, in order; nothing here does I/O. Rooms are keyed by bare JID as
    the caller normalised it (the adapter: slixmpp's ``JID(room).bare``).
    """

    def __init__(self, update_interval: float = UPDATE_INTERVAL) -> None:
        self.update_interval = update_interval
        self.online = False
        self._rooms: dict[str, Room] = {}
        self._leaving: dict[str, str] = {}  # left while offline: room -> nick, told on resumption

    def __contains__(self, room: object) -> bool:
        return room in self._rooms

    def __len__(self) -> int:
        return len(self._rooms)

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    def get(self, room: str) -> Room | None:
        return self._rooms.get(room)

    # -- what the owner asks -----------------------------------------------------------------

    def join(self, room: str, nick: str, payload: str | None, now: float) -> list[Action]:
        """Be in ``room`` as ``nick`` announcing ``payload``; again with another payload is an
        update, with another nick a nick change. A refused room is tried afresh."""
        self._leaving.pop(room, None)
        r = self._rooms.get(room)
        if r is None or r.phase is Phase.FAILED:
            r = self._rooms[room] = Room(room, nick, payload)
            return self._send_join(r, now) if self.online else []
        r.payload = payload
        if nick != r.nick:  # a join presence to the new nick: the room takes it as a nick change
            r.nick = nick
            r._asked = True
            if self.online:
                return self._send_join(r, now)
            r.phase = Phase.PENDING
            return []
        # joining: the payload goes out once joined; pending: with the next session's join
        return self._update(r, now)

    def leave(self, room: str) -> list[Action]:
        """Stop wanting ``room``; tell it when it may have us (on resumption if offline now)."""
        r = self._rooms.pop(room, None)
        if r is None or not r.entered:
            return []
        if self.online:
            return [SendLeave(room, r.nick)]
        self._leaving[room] = r.nick
        return []

    def flush(self, room: str, now: float) -> list[Action]:
        """The ``FlushAt`` time of ``room`` came: send its latest payload if still due."""
        r = self._rooms.get(room)
        if r is None or r._flush_at is None:
            return []
        r._flush_at = None
        return self._update(r, now)

    def configured(self, room: str, now: float) -> list[Action]:
        """The room we created answered our configuration form (or did not in time)."""
        r = self._rooms.get(room)
        if r is None or r.phase is not Phase.CONFIGURING:
            return []
        return self._joined(r, now)

    # -- what the session does ---------------------------------------------------------------

    def went_online(self, resumed: bool, now: float) -> list[Action]:
        """A session is up. A new one has lost every room server-side: join them all again.
        A resumed one has kept them: send only what was asked for while offline."""
        self.online = True
        actions: list[Action] = []
        if resumed:
            actions += [SendLeave(room, nick) for room, nick in self._leaving.items()]
            self._leaving.clear()
            for r in self:
                if r.phase is Phase.PENDING:
                    actions += self._send_join(r, now)
                elif r.phase is Phase.JOINED:
                    actions += self._update(r, now)
            return actions
        self._leaving.clear()
        for r in self:
            r.entered, r._in_as = False, None
            if r.phase is not Phase.FAILED:
                actions += self._send_join(r, now)
        return actions

    def went_offline(self) -> None:
        self.online = False
        for r in self:
            r._pinging = False  # an answer that comes now proves nothing about the next session

    def due_pings(self, now: float, idle: float) -> list[Action]:
        """Self-pings for the rooms we are in and have not heard from for ``idle`` s."""
        if not self.online:
            return []
        actions: list[Action] = []
        for r in self:
            if r.phase is Phase.JOINED and not r._pinging and now - r._heard_at >= idle:
                r._pinging = True
                actions.append(SendPing(r.jid, r.nick))
        return actions

    def ping_answer(self, room: str, condition: str | None, now: float, *, answered: bool = True) -> list[Action]:
        """What the self-ping to ``room`` got: a result (``condition`` None) or an error
        condition; ``answered`` False if nothing came in time."""
        r = self._rooms.get(room)
        if r is None or not r._pinging:
            return []
        r._pinging = False
        if r.phase is not Phase.JOINED:
            return []
        if not answered:
            return [Note(_INFO, f"{r.jid} did not answer our self-ping; asking again later")]
        if condition in _VANISHED:
            return self._lost(r, now, f"it answered our self-ping with {condition}")
        r._heard_at = now
        return []

    # -- what the rooms say ------------------------------------------------------------------

    def presence(self, p: RoomPresence, now: float) -> list[Action]:
        r = self._rooms.get(p.room)
        if r is None:
            return []
        r._heard_at = now
        if p.kind == "error":
            return self._presence_error(r, p, now)
        if r.phase is Phase.FAILED:
            return []
        if "110" in p.codes or (p.nick and p.nick == r.nick):
            return self._self_presence(r, p, now)
        if not p.nick:
            return []
        r._stale.discard(p.nick)
        if p.kind == "unavailable":
            known = r.occupants.pop(p.nick, None)
            return [Occupant(r.jid, p.nick, p.real_jid or known, None, False)]
        r.occupants[p.nick] = p.real_jid
        return [Occupant(r.jid, p.nick, p.real_jid, p.payload, True)]

    def message(self, m: RoomMessage, now: float) -> list[Action]:
        r = self._rooms.get(m.room)
        if r is None or r.phase is Phase.FAILED:
            return []
        if m.kind != "error":
            r._heard_at = now
        if m.kind == "error":
            if not m.nick and m.condition in _VANISHED and r.phase is Phase.JOINED:
                return self._lost(r, now, f"it answered a message with {m.condition}")
            return [Note(_INFO, f"{r.jid} answered a message with an error ({m.condition}: {m.text or '-'})")]
        if not m.nick or not m.body or m.nick == r.nick:
            return []  # the room's own (subject, status codes), no body, or our echo
        sender = r.occupants.get(m.nick) or f"{r.jid}/{m.nick}"
        return [Deliver(Message(sender, m.body, room=r.jid, delayed=m.delayed))]

    # -- rules -------------------------------------------------------------------------------

    def _send_join(self, r: Room, now: float) -> list[Action]:
        r.phase = Phase.JOINING
        r.entered = True
        r._stale = set(r.occupants)
        r._sent_payload, r._sent_at = r.payload, now
        return [SendJoin(r.jid, r.nick, r.payload)]

    def _update(self, r: Room, now: float) -> list[Action]:
        if not self.online or r.phase is not Phase.JOINED or r.payload == r._sent_payload or r._flush_at is not None:
            return []
        due = r._sent_at + self.update_interval
        if now < due:
            r._flush_at = due
            return [FlushAt(r.jid, due)]
        r._sent_payload, r._sent_at = r.payload, now
        return [SendUpdate(r.jid, r.nick, r.payload)]

    def _self_presence(self, r: Room, p: RoomPresence, now: float) -> list[Action]:
        if p.kind == "unavailable":
            if "303" in p.codes or r.phase is not Phase.JOINED:
                return []  # a nick change (the new nick's presence follows), or an earlier stay ending
            r.entered, r._in_as = False, None
            if "301" in p.codes:
                return self._fail(r, "forbidden", "we were banned from the room")
            if "321" in p.codes or "322" in p.codes:
                return self._fail(r, "registration-required", "the room became members-only")
            return self._lost(r, now, f"it removed us (status {','.join(sorted(p.codes)) or '-'})")
        if p.nick:
            r.nick = p.nick  # the room may have changed it (status 210)
        if r.phase is not Phase.JOINING:
            return []  # the echo of an update
        if "201" in p.codes:
            r.phase = Phase.CONFIGURING
            return [Configure(r.jid)]
        return self._joined(r, now)

    def _joined(self, r: Room, now: float) -> list[Action]:
        r.phase = Phase.JOINED
        r.error = None
        r._in_as = r.nick
        r._asked = False
        actions: list[Action] = [Occupant(r.jid, nick, r.occupants.pop(nick, None), None, False)
                                 for nick in sorted(r._stale)]
        r._stale = set()
        actions.append(Joined(r.jid))
        return actions + self._update(r, now)

    def _presence_error(self, r: Room, p: RoomPresence, now: float) -> list[Action]:
        if p.nick and p.nick != r.nick:
            return []  # about another nick: not an answer to our presence
        if r.phase in (Phase.JOINING, Phase.CONFIGURING):
            code, message = room_error(p.condition, p.text)
            if r._asked:
                return self._fail(r, code, message)
            return self._refused_rejoin(r, code, message)
        if r.phase is Phase.JOINED and p.condition in _VANISHED:
            return self._lost(r, now, f"it answered our presence with {p.condition}")
        return [Note(_WARNING, f"{r.jid} answered our presence with an error ({p.condition}: {p.text or '-'})")]

    def _fail(self, r: Room, code: str, message: str) -> list[Action]:
        """The room refused us. A refused nick change leaves us in under the old nick:
        leave it, so that a refused room never has us."""
        actions: list[Action] = []
        if r._in_as is not None and self.online:
            actions.append(SendLeave(r.jid, r._in_as))
        r.phase = Phase.FAILED
        r.error = (code, message)
        r.entered, r._in_as = False, None
        actions += [Occupant(r.jid, nick, jid, None, False) for nick, jid in r.occupants.items()]
        r.occupants.clear()
        r._stale = set()
        return [*actions, Refused(r.jid, code, message)]

    def _refused_rejoin(self, r: Room, code: str, message: str) -> list[Action]:
        """A rejoin was refused: we are out (the occupants are reported gone), and still want
        the room; the next session tries again."""
        r.phase = Phase.PENDING
        r.error = (code, message)
        r.entered, r._in_as = False, None
        actions: list[Action] = [Note(_WARNING, f"{r.jid} refused our rejoin ({code}: {message}); "
                                                "trying again with the next session")]
        actions += [Occupant(r.jid, nick, jid, None, False) for nick, jid in r.occupants.items()]
        r.occupants.clear()
        r._stale = set()
        return [*actions, Refused(r.jid, code, message)]

    def _lost(self, r: Room, now: float, why: str) -> list[Action]:
        """The room no longer has us: join again (once per stay: only a ``JOINED`` room gets
        here, and the rejoin leaves that phase until it succeeds)."""
        note = Note(_INFO, f"{r.jid} no longer has us ({why}); joining it again")
        r._in_as = None
        if self.online:
            return [note, *self._send_join(r, now)]
        r.phase = Phase.PENDING
        return [note]
