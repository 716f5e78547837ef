"""The one interface between a worker's logic and the network.

Why an interface: ``App`` and the client only need "tell me about requests and messages,
send answers, make calls". The slixmpp adapter (``libs.bridge.xmpp``) is the real one; the
in-memory one (``libs.bridge.memory``) runs workers and callers in one process without a
server, for fast tests. ``App(transport=...)`` and ``Client(transport=...)`` take either.
Callbacks run on the worker's event loop.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .protocol import ApiError, ApiResult

if TYPE_CHECKING:
    from .config import WorkerConfig

__all__ = ["Backoff", "Describe", "Message", "OnCancel", "OnFatal", "OnMessage", "OnOccupant", "OnPresence",
           "OnProgress", "OnRequest", "RunCommand", "Takeover", "Transport"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    """A chat or group-chat message as the transport received it.

    ``sender`` is who sent it: a full JID for chat; in a room, the occupant's real full JID
    when the room shows it (non-anonymous rooms), else the occupant JID ``room@service/nick``
    (whose bare part is the room, so access rules see a stranger). ``room`` is the room's bare
    JID for group chat, None for chat. ``delayed`` says the message was stored while we were
    offline (offline storage, room history: a ``<delay/>`` stamp from before this session) and
    is not live; one the server resent on a XEP-0198 resumption is live. Our own echoes in a
    room are never delivered.
    """

    sender: str
    text: str
    room: str | None = None
    delayed: bool = False

@dataclass(frozen=True, slots=True)
class Takeover:
    """Where a session that lost its resource to a newer login ran: what the loser tells the
    newcomer, so that both sides report the takeover.

    Why the loser tells: servers tell only the session they replace (a ``<conflict/>`` stream
    error); the newcomer gets a normal login (XMPP-NOTES, measured on Prosody 0.12). Two
    processes configured with one account and resource would otherwise look healthy on the
    side that won. Only the host name and process id travel; they are shown, never trusted.
    """

    host: str
    pid: int

    @classmethod
    def here(cls) -> "Takeover":
        return cls(socket.gethostname(), os.getpid())

    def report(self, jid: str) -> None:
        """The newcomer's line: a WARNING, since one of two misconfigured processes stopped."""
        log.warning("%s took over this resource from another session (host %s, pid %d), which has "
                    "stopped: two processes were started with the same account and resource", jid,
                    self.host[:64], self.pid)


OnRequest = Callable[[str, str, str | None, str], None]
"""``(iq_id, sender_full_jid, api_text, iq_type)``: an ``<api/>`` payload arrived in an IQ
``get`` or ``set``; answer with ``send_answer``. The type is passed on, not checked here, so
that the protocol layer decides what a ``get`` gets and the adapter stays a pipe."""
OnMessage = Callable[[Message], None]
"""A chat or group-chat message arrived."""
OnOccupant = Callable[[str, str, "str | None", "str | None", bool], None]
"""``(room, nick, real_jid, payload, present)``: an occupant of a room we joined came,
changed its presence (``payload`` is the text it announces with, see ``join``) or left
(``present`` False). ``real_jid`` is None when the room does not show it."""
OnPresence = Callable[[str, bool], None]
"""``(full_jid, available)``: another session of our own account came online or left (the
server tells every session of an account about the others; transports that cannot tell never
call it)."""
OnCancel = Callable[[str, str], None]
"""``(sender_full_jid, iq_id)``: the caller of request ``iq_id`` gave up waiting for it."""
OnProgress = Callable[[str], None]
"""``(progress_json)``: the worker reported progress on our request (see ``request``)."""
OnFatal = Callable[[str], None]
"""``(reason)``: the connection cannot be made to work by retrying (bad password, conflict)."""
Describe = Callable[[str], "list[dict[str, Any]] | None"]
"""``(sender_full_jid)``: the commands ``sender`` may run here, as the ``commands`` built-in
lists them (``[{"name", "description", "access", "schema"}]``), or None when ``sender`` may
not call this worker at all. What a transport that can publish commands (XEP-0030 disco)
asks before answering."""
RunCommand = Callable[[str, str, dict[str, Any], OnProgress], Awaitable[ApiResult | ApiError]]
"""``(sender_full_jid, cmd, body, on_progress)``: run a command for ``sender`` through the
worker's dispatch (its role from the access policy) and return the answer; ``on_progress``
gets the JSON of each progress report meanwhile. What a transport that
offers commands in another shape (XEP-0050 ad-hoc commands) calls; the answer's ``id`` is
the owner's, not the transport's."""


class Transport(ABC):
    """A logged-in XMPP session that reconnects by itself until ``close()``."""

    jid: str
    """Our full JID (``user@domain/resource``)."""
    config: WorkerConfig
    """The account and limits this transport logs in with."""
    on_request: OnRequest | None = None
    on_message: OnMessage | None = None
    on_fatal: OnFatal | None = None
    on_occupant: OnOccupant | None = None
    on_presence: OnPresence | None = None
    on_cancel: OnCancel | None = None
    describe: Describe | None = None
    run_command: RunCommand | None = None
    """Set by the owner (``App``) before ``start()``. ``describe`` may stay None: a transport
    then publishes no commands (the XMPP one answers no disco queries, as before it).
    ``run_command`` may stay None: no XEP-0050 ad-hoc commands (it needs ``describe`` too)."""

    @abstractmethod
    def start(self) -> None:
        """Begin connecting; returns at once (must be called on the running loop)."""

    @abstractmethod
    async def wait_online(self, timeout: float) -> None:
        """Return once a session is up; raise ``NotConnected``/``AuthenticationFailed``."""

    @property
    @abstractmethod
    def online(self) -> bool: ...

    @abstractmethod
    def send_answer(self, answer: ApiResult | ApiError) -> None:
        """Send the answer to a request delivered through ``OnRequest``."""

    @abstractmethod
    async def request(self, to: str, text: str, timeout: float, on_progress: OnProgress | None = None) -> str | None:
        """Send an API call and return the result's ``<api/>`` text; raises ``CallError``s.
        ``on_progress`` gets the JSON of each progress report the worker sends meanwhile. If
        the task awaiting this is cancelled, the worker is told (it cancels the handler)."""

    @abstractmethod
    def send_progress(self, to: str, iq_id: str, payload: str) -> None:
        """Report progress (``payload``: the JSON of ``encode_progress``) on request ``iq_id``
        to its caller ``to``; fire and forget."""

    @abstractmethod
    def send_message(self, to: str, body: str) -> None:
        """Send a chat message (queued and sent after reconnect if offline)."""

    # -- rooms (XEP-0045 group chat): channels, and the rooms services announce in ---------

    @abstractmethod
    def join(self, room: str, nick: str, payload: str | None = None) -> None:
        """Be an occupant of ``room`` (bare JID) as ``nick`` from now on: joined as soon as
        we are online, without history, and joined again after every new session (a
        resumed one keeps it) until ``leave(room)``. ``payload`` is announced in our
        presence to the other occupants; calling again with another payload changes it."""

    @abstractmethod
    async def wait_joined(self, room: str, timeout: float) -> None:
        """Return once the room has taken us in and we know every occupant present at the
        time; raise ``NotConnected`` (not online in time, or not joining it), ``CallTimeout``
        or ``RemoteError`` (the room refused us: its code says why)."""

    @abstractmethod
    def leave(self, room: str) -> None:
        """Stop being an occupant of ``room``; no-op when we are not one."""

    @abstractmethod
    def send_group(self, room: str, body: str) -> None:
        """Send a group-chat message to ``room`` (one we joined)."""

    @abstractmethod
    async def close(self, timeout: float) -> None:
        """Leave the server cleanly (unavailable presence, end of stream); idempotent."""

    @abstractmethod
    def stats(self) -> dict[str, int]:
        """Counters for ``info`` and monitoring: at least ``sessions`` (logins, 1 + reconnects
        that needed a new session) and ``resumptions``."""

    @abstractmethod
    def watch_available(self, jid: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` whenever full JID ``jid`` comes online as far as this session
        can tell, until the returned function is called (lets callers wait for a worker
        instead of polling; sessions that cannot tell never call it)."""


class Backoff:
    """Capped exponential backoff with full jitter, for reconnecting.

    Why jitter: after a server restart every worker of a fleet reconnects at once; random
    spreading keeps them from arriving in lock-step. ``rand`` is injectable for tests.
    """

    def __init__(self, base: float = 0.2, cap: float = 30.0, rand: Callable[[], float] | None = None) -> None:
        self.base = base
        self.cap = cap
        self.attempts = 0
        self._rand = rand or random.random

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempts, 30))
        self.attempts += 1
        # half fixed, half random: never 0 (no hot loop), never more than the ceiling
        return ceiling / 2 + self._rand() * ceiling / 2

    def reset(self) -> None:
        self.attempts = 0
