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

Several servers (``QE_HOST=host1:5222,host2:5222``, or DNS SRV): one *round* tries each of
them once, in order, starting with the one of the last session (a blip then resumes there,
and a node that died refuses at once so the next is tried at once); a failed server is
followed by the next one without delay, and the backoff applies between rounds. Why not a
delay per server: the point of a second server is to take over while the first is down, and
a round is bounded by the list, so a fleet still makes at most one attempt per server per
backoff delay. With SRV the list is looked up at the start of each round (``Resolve``), so a
DNS change is seen without a restart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..errors import AuthenticationFailed, CallError, NotConnected
from ..transport import Backoff

__all__ = [
    "Abort", "Action", "Address", "Connect", "Event", "Fail", "Log", "Online", "Offline", "Resolve", "Retry", "Session",
    "State",
]

Address = tuple[str, int]


class State(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    ONLINE = "online"
    WAITING = "waiting"
    CLOSED = "closed"
    FAILED = "failed"


class Event(enum.Enum):
    START = "start"
    RESOLVED = "resolved"                    # the answer to ``Resolve`` (``servers``: None = no SRV record)
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
    """Start a connection attempt to ``host``:``port`` (and stop slixmpp's own retry loop
    first). The TLS name checked is the account's domain whatever the host."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Resolve:
    """Look up the servers (DNS SRV) and report ``RESOLVED`` with them."""


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


Action = Connect | Resolve | Retry | Online | Offline | Abort | Log | Fail


def _name(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

_INFO, _WARNING, _ERROR = 20, 30, 40  # logging levels, without importing logging into a pure module


@dataclass
class Session:
    """The state and counters of one transport's session, and the rules that change them.

    ``require_tls``: a session without TLS is fatal (``QE_TLS=required``). ``fail_fast``: an
    unreachable server before the first session is fatal (a client, not a worker).
    ``auth_grace``: seconds a refused login on a *reconnect* is retried before it is fatal.
    ``server`` and ``account`` only word the messages. ``quiet_attempts``: how many failed
    connection attempts in a row are logged at INFO (a restart of the server, a short network
    blip) before each further one is a WARNING that says how many and for how long; with
    several servers an attempt is a round over all of them, and the message names each.
    ``servers``: where to connect, in order; with ``srv`` they are looked up at each round
    and ``servers`` is the fallback when DNS has no SRV record.
    """

    server: str
    account: str
    servers: tuple[Address, ...] = ()
    srv: bool = False
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
    unreachable: int = 0   # failed connection attempts (rounds) in a row
    _unreachable_since: float | None = None
    current: Address | None = None          # the server of the attempt or session under way
    home: Address | None = None             # the server of the last session: rounds start there
    _round: list[Address] = field(default_factory=list)  # servers still to try in this round
    _failures: list[str] = field(default_factory=list)   # "host:port (why)" of this round
    _resolving: bool = False

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("a session needs at least one server (the fallback, with srv)")

    def handle(self, event: Event, *, now: float = 0.0, detail: str = "", encrypted: bool = False,
               servers: list[Address] | None = None) -> list[Action]:
        """Apply ``event`` (at monotonic time ``now``) and return what to do, in order.
        ``servers``: with ``RESOLVED``, the looked-up servers in order (None: no SRV record)."""
        if event is Event.RESOLVED:
            if self.state is not State.CONNECTING or not self._resolving:
                return []
            self._resolving = False
            if servers == []:
                self._failures.append(f"{self.account.partition('@')[2]} (its DNS SRV record says it has "
                                      "no XMPP service)")
                return self._round_failed("", now)
            return self._start_round(tuple(servers) if servers else self.servers)
        return self._handle(event, now=now, detail=detail, encrypted=encrypted)

    def _begin_round(self) -> list[Action]:
        self.state = State.CONNECTING
        self._failures = []
        if self.srv:
            self._resolving = True
            return [Resolve()]
        return self._start_round(self.servers)

    def _start_round(self, servers: tuple[Address, ...]) -> list[Action]:
        order = list(servers)
        if self.home in order:  # where the last session was first: a blip resumes there
            at = order.index(self.home)
            order = order[at:] + order[:at]
        self._round = order
        return self._next_server()

    def _next_server(self) -> list[Action]:
        self.current = self._round.pop(0)
        return [Connect(*self.current)]

    def _handle(self, event: Event, *, now: float, detail: str, encrypted: bool) -> list[Action]:
        if self.state in (State.CLOSED, State.FAILED):
            return []  # nothing moves a closed or failed session
        if event is Event.CLOSE:
            self.state = State.CLOSED
            return [Offline()]
        if event is Event.START:
            if self.state is not State.IDLE:
                return []
            return self._begin_round()
        if event is Event.RETRY_DUE:
            if self.state is not State.WAITING:
                return []
            return self._begin_round()
        if event is Event.SESSION_STARTED:
            if self.require_tls and not encrypted:
                return self._fail("the server did not offer TLS and QE_TLS=required (use QE_TLS=optional to allow it)")
            return self._online(resumed=False)
        if event is Event.SESSION_RESUMED:
            return self._online(resumed=True)
        if event is Event.DISCONNECTED:
            why = f"disconnected ({detail or 'connection lost'})"
            if self.state is State.CONNECTING and self._round and not self._resolving:
                # the server took the connection but ended it before a session: the next one
                assert self.current is not None
                return [Log(_INFO, f"{_name(self.current)} {why}; trying {_name(self._round[0])}"),
                        *self._next_server()]
            return self._retry(why)
        if event is Event.CONNECT_FAILED:
            if self.state is State.WAITING:
                return []  # one retry at a time
            where = _name(self.current) if self.current is not None else self.server
            if self.state is State.CONNECTING and self._round:
                self._failures.append(f"{where} ({detail})")
                return [Log(_INFO, f"cannot reach {where} ({detail}); trying {_name(self._round[0])}"),
                        *self._next_server()]
            self._failures.append(f"{where} ({detail})")
            return self._round_failed(detail, now)
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

    def _round_failed(self, detail: str, now: float) -> list[Action]:
        """No server of this round could be reached: fatal for a client's first session
        (``fail_fast``), else a retry after the backoff, louder after ``quiet_attempts``."""
        why = "cannot reach " + ", ".join(self._failures or [f"{self.server} ({detail})"])
        self._failures = []
        self._round = []
        if self.fail_fast and self.sessions == 0:
            return self._fail(why, NotConnected)
        self.unreachable += 1
        if self._unreachable_since is None:
            self._unreachable_since = now
        if self.unreachable <= self.quiet_attempts:
            return self._retry(why)
        return self._retry(f"{why}; attempt {self.unreachable} failed, unreachable for "
                           f"{now - self._unreachable_since:.0f} s", _WARNING)

    def _online(self, *, resumed: bool) -> list[Action]:
        if resumed:
            self.resumptions += 1
        else:
            self.sessions += 1
        self.state = State.ONLINE
        self.home = self.current
        self.backoff.reset()
        self._refused_since = None
        self.unreachable = 0
        self._unreachable_since = None
        self._round = []
        self._failures = []
        return [Online(resumed=resumed)]

    def _retry(self, why: str, level: int = _INFO) -> list[Action]:
        if self.state is State.WAITING:
            return []  # one retry at a time
        self.state = State.WAITING
        self._round = []
        self._resolving = False
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
