"""Services: workers that do the same job, found through XMPP group chat itself.

Why a room per service (XEP-0045), and not a registry or PubSub: every worker of service
``resize`` is an occupant of the room ``qe-service.resize@conference.<domain>`` and puts its
load in its presence there. The server does the bookkeeping we would otherwise have to build:
it tells every occupant at once when a worker joins, changes its load, or leaves — including
when its session dies, which a PubSub item or a registry entry would outlive. Callers join the
room as occupants without a load and keep a live table, so choosing a worker costs no round
trip after the first. Nothing of ours runs beside the server, so it works unchanged on a
cluster (ejabberd routes rooms across nodes; a room lives on one node — see docs/scaling.md).

``ServiceDirectory`` is the table (no I/O, tested without a server); ``ServiceFinder`` joins
the rooms through a ``Transport`` and retries another worker only when a call provably never
started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from .errors import CallError, CallTimeout, RemoteError
from .transport import Transport

__all__ = [
    "RETRY_ELSEWHERE",
    "SERVICE_ROOM_PREFIX",
    "Announcement",
    "ServiceDirectory",
    "ServiceFinder",
    "channel_room",
    "check_service",
    "service_room",
]

log = logging.getLogger(__name__)

SERVICE_ROOM_PREFIX: Final = "qe-service."

_REFILL_GRACE: Final = 5.0
"""Seconds after a service room lost its last worker during which a call waits (within its
own timeout) for one to come back instead of failing with "no worker found" at once. Why:
a room loses every worker at once in failover -- our own session is new and the room,
rejoined, is listed before the workers have rejoined it (an ejabberd node died with it), or
the only worker restarts -- and they are back within a second or two. A service that never
had a worker, or lost them long ago, still fails at once."""

RETRY_ELSEWHERE: Final = frozenset({"unavailable", "busy"})
"""Error codes that prove a request never started (docs/protocol.md): the server found the
worker offline, or the worker refused it before running it. Only these are sent to another
worker; ``interrupted`` and timeouts may have run, and are never repeated."""

_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,62}")


def check_service(app: str) -> str:
    """``app`` if it can name a service (it becomes part of a room's JID), else ``ValueError``."""
    if not isinstance(app, str) or not _NAME.fullmatch(app):
        raise ValueError(f"{app!r} is not a service name: 1-63 letters, digits and _ . + = -, not starting with . + = -")
    return app


def service_room(app: str, muc_domain: str) -> str:
    return f"{SERVICE_ROOM_PREFIX}{check_service(app).lower()}@{muc_domain}"


def channel_room(channel: str, muc_domain: str) -> str:
    """The room of channel ``channel``: ``channel@<muc domain>``, or ``channel`` itself when it
    is already a room JID (``name@conference.example.org``). Service rooms are refused in
    both spellings: an occupant that joins one without announcing replaces its own
    announcement there (its worker drops out of the service), and chat in it is noise."""
    if not isinstance(channel, str) or not channel or "/" in channel or any(c.isspace() for c in channel):
        raise ValueError(f"{channel!r} is not a channel name (no spaces or '/')")
    name, at, domain = channel.lower().partition("@")
    if at and (not name or not domain or "@" in domain):
        raise ValueError(f"{channel!r} is not a channel name (a room JID is name@domain)")
    if name.startswith(SERVICE_ROOM_PREFIX):
        raise ValueError(f"channel names starting with {SERVICE_ROOM_PREFIX!r} are reserved for services")
    return f"{name}@{domain if at else muc_domain}"


@dataclass(frozen=True, slots=True)
class Announcement:
    """What a worker says in its service room's presence: its service and how many requests
    it is running now."""

    app: str
    load: int

    def encode(self) -> str:
        return json.dumps({"app": self.app, "load": self.load}, separators=(",", ":"))

    @classmethod
    def decode(cls, payload: str | None) -> Announcement | None:
        """None for an occupant that announces nothing (a caller) or something else."""
        if not payload:
            return None
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            return None
        if not isinstance(doc, dict):
            return None
        app, load = doc.get("app"), doc.get("load")
        if not isinstance(app, str) or type(load) is not int or load < 0:
            return None
        return cls(app, load)


class ServiceDirectory:
    """Live workers per service room, from the occupants' presence; least loaded first.

    A worker's load is what it last announced plus the calls this process has sent it and
    that are still running: the announcement lags (it is coalesced), and without the second
    part every caller would send its whole burst to the one worker that was idle.

    A worker that let one of our calls time out, or that the server found offline
    (``unavailable``), goes to the back of the list until it answers again or announces
    itself again in the room (a new presence: its session is alive). Why: a worker killed
    without warning stays an occupant while the server keeps its session for resumption
    (XEP-0198 hibernation, minutes on a stock Prosody), and one whose ejabberd node was
    killed stays an occupant of rooms on the other nodes for good (nobody tells them); without
    this every caller would keep choosing the dead one first, idle as it looks, and pay a
    round trip (or a timeout) per call for it.
    """

    def __init__(self, rand: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rooms: dict[str, dict[str, tuple[str, int]]] = {}  # room -> nick -> (full JID, load)
        self._sent: dict[str, int] = {}  # full JID -> our calls running there
        self._suspect: set[str] = set()  # full JIDs that let a call of ours time out
        self._emptied: dict[str, float] = {}  # room -> when its last worker went (clock)
        self._rand = rand
        self._clock = clock

    def occupant(self, room: str, nick: str, jid: str | None, payload: str | None, present: bool) -> None:
        workers = self._rooms.setdefault(room, {})
        announcement = Announcement.decode(payload) if present else None
        if announcement is None or jid is None or "/" not in jid:
            gone = workers.pop(nick, None)  # left, or a caller, or a room that hides real JIDs
            if gone is not None and not present:
                self._suspect.discard(gone[0])
            if gone is not None and not workers:
                self._emptied[room] = self._clock()
        else:
            workers[nick] = (jid, announcement.load)
            self._suspect.discard(jid)  # it speaks: its session is alive (a rejoin after a crash)
            self._emptied.pop(room, None)

    def forget(self, room: str) -> None:
        self._rooms.pop(room, None)
        self._emptied.pop(room, None)

    def emptied_since(self, room: str) -> float | None:
        """Seconds since ``room`` lost its last worker; None while it has workers or if it
        never had one."""
        at = self._emptied.get(room)
        return None if at is None else self._clock() - at

    def workers(self, room: str, exclude: frozenset[str] | set[str] = frozenset()) -> list[str]:
        """Full JIDs of the room's workers, least loaded first (ties in random order, so that
        callers do not all pick the same one)."""
        found = [(jid in self._suspect, load + self._sent.get(jid, 0), self._rand(), jid)
                 for jid, load in self._rooms.get(room, {}).values() if jid not in exclude]
        return [jid for _suspect, _load, _tie, jid in sorted(found)]

    def answered(self, jid: str, in_time: bool) -> None:
        """Record whether ``jid`` answered a call of ours before its timeout."""
        if in_time:
            self._suspect.discard(jid)
        else:
            self._suspect.add(jid)

    def sending(self, jid: str) -> Callable[[], None]:
        """Count one call to ``jid`` as running until the returned function is called."""
        self._sent[jid] = self._sent.get(jid, 0) + 1

        def done() -> None:
            left = self._sent[jid] - 1
            if left:
                self._sent[jid] = left
            else:
                del self._sent[jid]

        return done


Call = Callable[[str, float], Awaitable[dict[str, Any]]]
"""``call(full_jid, timeout_s)``: one call to one worker."""


class ServiceFinder:
    """Finds workers of a service and calls one, over a ``Transport``.

    The first ``find`` of a service joins its room (as an occupant without a load: it is not
    counted as a worker) and stays, so the table stays live and later choices are free.
    """

    def __init__(self, transport: Transport, muc_domain: str, nick: str) -> None:
        self.transport = transport
        self.muc_domain = muc_domain
        self.nick = nick
        self.directory = ServiceDirectory()
        self._watching: set[str] = set()
        self._arrivals: dict[str, asyncio.Event] = {}  # room -> set when a worker is there again

    def occupant(self, room: str, nick: str, jid: str | None, payload: str | None, present: bool) -> None:
        """Feed from ``Transport.on_occupant`` (the owner forwards it)."""
        self.directory.occupant(room, nick, jid, payload, present)
        event = self._arrivals.get(room)
        if event is not None and self.directory.workers(room):
            del self._arrivals[room]
            event.set()

    async def _worker_arrives(self, room: str, timeout: float) -> None:
        """Return when ``room`` has a worker again, or after ``timeout`` s."""
        event = self._arrivals.setdefault(room, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def watch(self, app: str, timeout: float) -> str:
        """Join ``app``'s room unless we are in it; return the room once its occupants are known."""
        room = service_room(app, self.muc_domain)
        if room not in self._watching:
            self.transport.join(room, self.nick)
            self._watching.add(room)
        await self.transport.wait_joined(room, timeout)
        return room

    def announce(self, app: str, load: int) -> None:
        """Be a worker of ``app`` (joining its room, or changing our announced load)."""
        room = service_room(app, self.muc_domain)
        self._watching.add(room)
        payload = Announcement(app, load).encode()
        self.transport.join(room, self.nick, payload)
        # rooms do not report us to ourselves; we are a worker of the service all the same
        self.directory.occupant(room, self.nick, self.transport.jid, payload, True)

    def withdraw(self, app: str) -> None:
        room = service_room(app, self.muc_domain)
        self._watching.discard(room)
        self.directory.forget(room)
        self.transport.leave(room)

    async def find(self, app: str, timeout: float) -> list[str]:
        return self.directory.workers(await self.watch(app, timeout))

    async def call(self, app: str, call: Call, timeout: float, resource: str | None = None) -> dict[str, Any]:
        """``call(jid, time_left)`` on the least loaded worker of ``app`` (with ``resource`` if
        given); on an error that proves the request never started (``RETRY_ELSEWHERE``) the
        next one, until none is left; all within ``timeout``. Raises the last ``CallError``;
        ``LookupError`` when the service has no worker at all (after waiting for one to come
        back, within ``timeout``, if the last one went less than ``_REFILL_GRACE`` s ago)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        room = await self.watch(app, timeout)
        tried: set[str] = set()
        last: CallError | None = None
        waited = False
        while True:
            candidates = [j for j in self.directory.workers(room, tried)
                          if resource is None or j.partition("/")[2] == resource]
            if not candidates:
                if last is not None:
                    raise last
                since = self.directory.emptied_since(room)
                left = end - loop.time()
                if not waited and since is not None and since < _REFILL_GRACE and left > 0:
                    waited = True  # once: a worker that came and went meanwhile is not waited for again
                    await self._worker_arrives(room, min(left, _REFILL_GRACE - since))
                    continue
                raise LookupError(f"no worker of service {app!r} is online")
            jid = candidates[0]
            done = self.directory.sending(jid)
            try:
                result = await call(jid, max(0.001, end - loop.time()))
                self.directory.answered(jid, True)
                return result
            except CallTimeout:
                self.directory.answered(jid, False)
                raise
            except RemoteError as exc:
                # "unavailable": the server found no session there (a ghost occupant)
                self.directory.answered(jid, exc.code != "unavailable")
                if exc.code not in RETRY_ELSEWHERE:
                    raise
                log.info("%s refused a call of service %r before running it (%s); trying another worker",
                         jid, app, exc.code)
                tried.add(jid)
                last = exc
            finally:
                done()
