"""The life of an XMPP session as a table: (state, event) -> next state + actions.

Why a table (h11's ``_state.py``): connecting, reconnecting with backoff, resuming and giving
up were eight flags and ten slixmpp handlers that each read and wrote some of them; a rule
such as "a refused password is fatal at the first login but gets a grace on a reconnect" was
spread over three places. Here it is one pure function of the current state and one event,
with no sockets, no clock and no slixmpp, so every pair is tested without a server
(tests/unit/test_xmpp_session.py); the adapter only reports events and carries out actions.

States: ``IDLE`` (not started), ``CONNECTING`` (an attempt under way), ``ONLINE``,
``WAITING`` (a retry is scheduled), ``CLOSED`` (closed by its owner) and ``FAILED`` (a
condition retrying cannot fix: stays so).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..errors import AuthenticationFailed, CallError, NotConnected
from ..transport import Backoff

__all__ = ["Abort", "Action", "Connect", "Event", "Fail", "Log", "Online", "Offline", "Retry", "Session", "State"]


class State(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    ONLINE = "online"
    WAITING = "waiting"
    CLOSED = "closed"
    FAILED = "failed"


class Event(enum.Enum):
    START = "start"
    SESSION_STARTED = "session-started"      # logged in and bound; ``encrypted`` says whether TLS is on
    SESSION_RESUMED = "session-resumed"      # XEP-0198 resumption after a drop
    DISCONNECTED = "disconnected"            # the link went away (``detail``: why)
    CONNECT_FAILED = "connect-failed"        # no TCP/TLS link could be made (``detail``: why)
    MECHANISM_REFUSED = "mechanism-refused"  # the server refused a SASL attempt (the password)
    AUTH_FAILED = "auth-failed"              # no SASL mechanism left
    CERT_UNTRUSTED = "cert-untrusted"        # the server's certificate did not verify (``detail``)
    CONFLICT = "conflict"                    # another login took our resource (stream error)
    RETRY_DUE = "retry-due"                  # the timer of a ``Retry`` action fired
    CLOSE = "close"                          # the owner closes the transport


# -- actions: what the adapter must do ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    """Start a connection attempt (and stop slixmpp's own retry loop first)."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Call back with ``RETRY_DUE`` after ``delay`` s; ``why`` is for the log line, logged at
    ``level`` (INFO for a few failed attempts, then WARNING: see ``Session.quiet_attempts``)."""

    delay: float
    why: str
    level: int = 20


@dataclass(frozen=True, slots=True)
class Online:
    """We are online: wake waiters. ``resumed``: the old session goes on (no new presence)."""

    resumed: bool


@dataclass(frozen=True, slots=True)
class Offline:
    """We are offline until further notice."""


@dataclass(frozen=True, slots=True)
class Abort:
    """Drop the link now (a ``DISCONNECTED`` event follows)."""


@dataclass(frozen=True, slots=True)
class Log:
    level: int
    message: str


@dataclass(frozen=True, slots=True)
class Fail:
    """Give up: stop connecting, drop the link, tell the owner once. ``kind`` is what
    ``wait_online`` raises from now on."""

    reason: str
    kind: type[CallError]


Action = Connect | Retry | Online | Offline | Abort | Log | Fail

_INFO, _WARNING, _ERROR = 20, 30, 40  # logging levels, without importing logging into a pure module


@dataclass
class Session:
    """The state and counters of one transport's session, and the rules that change them.

    ``require_tls``: a session without TLS is fatal (``QE_TLS=required``). ``fail_fast``: an
    unreachable server before the first session is fatal (a client, not a worker).
    ``auth_grace``: seconds a refused login on a *reconnect* is retried before it is fatal.
    ``server`` and ``account`` only word the messages. ``quiet_attempts``: how many failed
    connection attempts in a row are logged at INFO (a restart of the server, a short network
    blip) before each further one is a WARNING that says how many and for how long.
    """

    server: str
    account: str
    require_tls: bool = False
    fail_fast: bool = False
    auth_grace: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)
    state: State = State.IDLE
    sessions: int = 0      # sessions started: 1 + reconnects that needed a new session
    resumptions: int = 0
    fatal: str | None = None
    fatal_kind: type[CallError] = AuthenticationFailed
    _password_refused: bool = False
    _refused_since: float | None = None
    quiet_attempts: int = 3
    unreachable: int = 0   # failed connection attempts in a row
    _unreachable_since: float | None = None

    def handle(self, event: Event, *, now: float = 0.0, detail: str = "", encrypted: bool = False) -> list[Action]:
        """Apply ``event`` (at monotonic time ``now``) and return what to do, in order."""
        if self.state in (State.CLOSED, State.FAILED):
            return []  # nothing moves a closed or failed session
        if event is Event.CLOSE:
            self.state = State.CLOSED
            return [Offline()]
        if event is Event.START:
            if self.state is not State.IDLE:
                return []
            self.state = State.CONNECTING
            return [Connect()]
        if event is Event.RETRY_DUE:
            if self.state is not State.WAITING:
                return []
            self.state = State.CONNECTING
            return [Connect()]
        if event is Event.SESSION_STARTED:
            if self.require_tls and not encrypted:
                return self._fail("the server did not offer TLS and QE_TLS=required (use QE_TLS=optional to allow it)")
            return self._online(resumed=False)
        if event is Event.SESSION_RESUMED:
            return self._online(resumed=True)
        if event is Event.DISCONNECTED:
            return self._retry(f"disconnected ({detail or 'connection lost'})")
        if event is Event.CONNECT_FAILED:
            why = f"cannot reach {self.server} ({detail})"
            if self.fail_fast and self.sessions == 0:
                return self._fail(why, NotConnected)
            if self.state is State.WAITING:
                return []  # one retry at a time
            self.unreachable += 1
            if self._unreachable_since is None:
                self._unreachable_since = now
            if self.unreachable <= self.quiet_attempts:
                return self._retry(why)
            return self._retry(f"{why}; attempt {self.unreachable} failed, unreachable for "
                               f"{now - self._unreachable_since:.0f} s", _WARNING)
        if event is Event.MECHANISM_REFUSED:
            self._password_refused = True
            return []
        if event is Event.AUTH_FAILED:
            return self._auth_failed(now)
        if event is Event.CERT_UNTRUSTED:
            reason = (f"the TLS certificate of {self.account.partition('@')[2]} is not trusted ({detail}); "
                      "if the server uses a private CA, set QE_CA_FILE to its certificate")
            if self.sessions == 0:
                return self._fail(reason, NotConnected)
            # it was trusted before: maybe a rotation under way; keep trying, loudly
            return [Log(_ERROR, reason), Abort()]
        if event is Event.CONFLICT:
            return self._fail(f"another client logged in as {detail} and took over this resource")
        raise ValueError(f"unknown event {event!r}")  # pragma: no cover - Event is closed

    def _online(self, *, resumed: bool) -> list[Action]:
        if resumed:
            self.resumptions += 1
        else:
            self.sessions += 1
        self.state = State.ONLINE
        self.backoff.reset()
        self._refused_since = None
        self.unreachable = 0
        self._unreachable_since = None
        return [Online(resumed=resumed)]

    def _retry(self, why: str, level: int = _INFO) -> list[Action]:
        if self.state is State.WAITING:
            return []  # one retry at a time
        self.state = State.WAITING
        return [Offline(), Retry(self.backoff.next_delay(), why, level)]

    def _auth_failed(self, now: float) -> list[Action]:
        if self._password_refused:
            reason = f"the server refused the password for {self.account} (check QE_JID / QE_PASSWORD)"
        else:
            reason = ("the server offered no login method we accept (without STARTTLS, QE_TLS=required never "
                      "logs in, and QE_TLS=optional only to a loopback host)")
        self._password_refused = False  # decided again at the next attempt
        if self.sessions == 0:
            return self._fail(reason)
        if self._refused_since is None:
            self._refused_since = now
            return [Log(_WARNING, f"the server refused our login on reconnect; retrying for {self.auth_grace:g} s "
                                  "in case it is still starting (QE_AUTH_GRACE)"), Abort()]
        if now - self._refused_since >= self.auth_grace:
            return self._fail(f"{reason}; refused at every reconnect for {now - self._refused_since:.0f} s "
                              "(password changed or account deleted?)")
        return [Abort()]

    def _fail(self, reason: str, kind: type[CallError] = AuthenticationFailed) -> list[Action]:
        self.state = State.FAILED
        self.fatal = reason
        self.fatal_kind = kind
        return [Offline(), Fail(reason, kind)]
