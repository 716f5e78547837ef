"""The slixmpp adapter: the only package that knows slixmpp (and ``_compat`` the only module
in it that reads slixmpp's internals).

It turns stanzas into ``(id, sender, text)`` for the dispatcher and answers back, and it keeps
the session alive, which slixmpp alone does not do:

- reconnect with capped exponential backoff + jitter after any disconnect or failed attempt
  (slixmpp's own retry loop is cancelled: it backs off up to 300 s and has no jitter);
- XEP-0198 stream management when the server offers it (fast resumption after a drop);
- XEP-0199 keepalive pings to the server; a missed pong aborts the link so it is rebuilt;
- answers to our own calls are matched by id in one dict (slixmpp's per-IQ handlers make
  every incoming stanza scan every call in flight);
- the request path is short: API requests and answers to our calls are taken by an incoming
  filter before slixmpp matches them against all its handlers, and what we send is written
  at once when slixmpp's send queue is idle (instead of one event-loop pass later);
- no stall on servers with Nagle's algorithm on (their default): each read is ACKed at once
  and XEP-0198 acks never wait on a timer the server would wait on;
- presence subscriptions: only the owner's account and the allowlist are accepted;
- XEP-0030 disco at our full JID, answered from ``describe`` (``_disco``: who may see which
  commands), taken by the same incoming filter; without ``describe``, slixmpp answers as before;
- XEP-0050 ad-hoc commands (``_adhoc``: forms, sessions), taken by the same filter and run
  through ``run_command``, so that any XMPP client can run a command through a data form;
- group-chat rooms (XEP-0045) without slixmpp's plugin: the rules are ``_rooms.Rooms``
  (joined again after every new session, not after a resumption), the stanzas from rooms
  we are in are taken by the same incoming filter as API requests;
- TLS per ``QE_TLS``: ``required`` refuses a session that is not encrypted; one TLS context
  and one SCRAM salted password per process, shared by all its sessions (``_shared``);
- several servers (``QE_HOST`` as a list, or DNS SRV when it is not set): tried in turn per
  the session table (``_session``), one per slixmpp ``connect()``; the TLS certificate is
  checked against the account's domain whichever server we reach (slixmpp's STARTTLS uses
  ``default_domain``), as a cluster's nodes all present the domain's certificate.

Requests sent while offline are not queued: ``request()`` waits for the session (within the
caller's timeout) and then sends, so a call is never replayed after its caller gave up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import slixmpp
from slixmpp.jid import JID

from .._log_limit import LogLimit, suppressed_note
from ..access import AccessPolicy, bare_jid
from ..config import WorkerConfig, is_loopback
from ..errors import CallTimeout, NotConnected, RemoteError
from ..protocol import NS, ApiError, ApiResult, Progress, decode_error, decode_progress, xml_safe
from ..transport import (
    Backoff,
    Describe,
    Message,
    OnFatal,
    OnMessage,
    OnOccupant,
    OnProgress,
    OnRequest,
    Takeover,
    Transport,
)
from . import _adhoc, _compat, _delay, _disco, _rooms, _shared, _srv
from ._session import Abort, Action, Connect, Event, Fail, Log, Offline, Online, Resolve, Retry, Session

__all__ = ["ATTEMPT_TIMEOUT", "XmppTransport", "conflict_means_takeover"]

log = logging.getLogger(__name__)
_slixmpp_log = logging.getLogger("slixmpp.xmlstream.xmlstream")

_API_TAG = f"{{{NS}}}api"
_PING_TAG = "{urn:xmpp:ping}ping"
_PROGRESS_TAG = f"{{{NS}}}progress"
_CANCEL_TAG = f"{{{NS}}}cancel"
_TAKEOVER_TAG = f"{{{NS}}}takeover"  # the session we replaced says where it ran (Takeover)
_CONTROL_TAGS = frozenset({_PROGRESS_TAG, _CANCEL_TAG, _TAKEOVER_TAG})
_FAREWELL_TIMEOUT = 3.0  # s for the session that lost its resource to tell the newcomer
_FEATURES_TAG = "{http://etherx.jabber.org/streams}features"
_CAPS_TAG = "{http://jabber.org/protocol/caps}c"
_TAKEOVER_ONLY_SERVERS = frozenset({"http://prosody.im"})
"""Caps nodes (in their stream features) of servers whose ``<conflict/>`` stream error means
only "another login took this resource": Prosody has no session limit that closes sessions."""


def conflict_means_takeover(caps_node: str | None) -> bool:
    """Whether a ``<conflict/>`` from the server with this caps node can only be a takeover of
    our resource (then the loser tells the newcomer; see ``XmppTransport._tell_newcomer``)."""
    return caps_node in _TAKEOVER_ONLY_SERVERS
_NO_STORE_TAG = "{urn:xmpp:hints}no-store"  # XEP-0334: not for offline storage or archives
# How long an XEP-0198 ack may wait, to cover every <r/> of that time with one <a/>. Only
# where each read is ACKed at once by the kernel (_compat.ack_each_read); elsewhere at the end
# of the loop pass (see XmppTransport._enable_stream_management).
_ACK_DELAY = 0.02 if _compat.QUICKACK is not None else 0.0
_CONFIGURE_TIMEOUT = 10.0  # s for a room we created to answer its configuration form
ATTEMPT_TIMEOUT = 15.0
"""Seconds a connection attempt may take until the session is up (TCP, TLS, login, resumption):
a server host that is down without refusing (no RST: a dead machine, a firewall that drops)
would otherwise hold the attempt for the kernel's SYN timeout (~2 min on Linux) before the
next server of the list is tried, and a server that accepts and then says nothing, forever."""
_ERROR_TYPES = {
    "bad-request": "modify",
    "not-acceptable": "modify",
    "forbidden": "auth",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "recipient-unavailable": "wait",
}


def _room_jid(room: str) -> str:
    """A room's bare JID as the server spells it (lower-case node and domain): the key of
    ``XmppTransport.rooms``. ``ValueError`` for anything else than a bare ``room@service``."""
    jid = JID(room)
    if not jid.user or jid.resource:
        raise ValueError(f"{room!r} is not a room's bare JID (room@conference.example.org)")
    return str(jid.bare)


def _plain_scram(tls: str, host: str) -> bool:
    """SCRAM without TLS only where no one can listen, decided per server (a list may mix
    them): to a remote host, "optional" means TLS when offered and no login when not (not a
    downgrade to plain text)."""
    return tls == "off" or (tls == "optional" and is_loopback(host))


def _api_text(stanza: Any) -> str | None:
    element = stanza.xml.find(_API_TAG)
    return None if element is None else (element.text or "")


def _with_api(stanza: Any, text: str) -> Any:
    element = ET.Element(_API_TAG)
    element.text = text
    stanza.xml.append(element)
    return stanza


def _ack_xml(handled: int) -> str:
    """XEP-0198 ``<a/>`` as slixmpp's plugin writes it (``h`` counts every stanza handled)."""
    return f'<a xmlns="urn:xmpp:sm:3" h="{handled}" />'


def _acked(client: slixmpp.ClientXMPP) -> int | None:
    """How many of our stanzas the server has acknowledged (XEP-0198 ``h``, mod 2**32);
    None without stream management on this stream."""
    sm = client.plugin.get("xep_0198", None)
    if sm is None or not sm.enabled_out:
        return None
    return int(sm.last_ack)


_ADHOC_WAIT = 2.0
"""Seconds an ad-hoc command may run before its answer is ``executing`` with its progress
(the requester asks again for more, or the result)."""


class _AdhocRun:
    """An ad-hoc command run: its task, and its latest progress report."""

    def __init__(self, run: _adhoc.Run) -> None:
        self.run = run
        self.task: asyncio.Future[ApiResult | ApiError] = None  # type: ignore[assignment]  # set at once
        self.latest: Progress | None = None

    def report(self, payload: str) -> None:
        progress = decode_progress(payload)
        if progress is not None:
            self.latest = progress


class XmppTransport(Transport):
    """One logged-in resource. Create and ``start()`` it on the running loop.

    ``keepalive`` is the seconds between pings to the server (0 disables); a ping not
    answered within ``keepalive_timeout`` means the link is dead. ``presence=False``: send
    no available presence (calls to the full JID still arrive; the account's other sessions
    and subscribers do not see this one come online). The server sends each available
    resource of an account the presence of every other one, so N available sessions of one
    account cost N² presence stanzas (a ``WorkerGroup``).
    """

    def __init__(
        self,
        config: WorkerConfig,
        resource: str,
        *,
        policy: AccessPolicy | None = None,
        on_request: OnRequest | None = None,
        on_message: OnMessage | None = None,
        on_fatal: OnFatal | None = None,
        on_occupant: OnOccupant | None = None,
        describe: Describe | None = None,
        keepalive: float = 30.0,
        keepalive_timeout: float = 10.0,
        backoff: Backoff | None = None,
        fail_fast: bool = False,
        srv_lookup: _srv.Lookup | None = None,
        attempt_timeout: float = ATTEMPT_TIMEOUT,
        presence: bool = True,
    ) -> None:
        self.config = config
        self.presence = presence
        self.jid = f"{config.jid}/{resource}"
        self.policy = policy or AccessPolicy.create(config.jid, public=False, allow=config.allow)
        self.on_request = on_request
        self.on_message = on_message
        self.on_fatal = on_fatal
        self.on_occupant = on_occupant
        self.on_cancel = None
        self._progress: dict[str, OnProgress] = {}  # our request id -> its progress callback
        self.describe = describe
        self.adhoc = _adhoc.Adhoc()  # XEP-0050 sessions (used once run_command is set)
        self._adhoc_running: dict[tuple[str, str], _AdhocRun] = {}  # (requester, sessionid) -> a run past _ADHOC_WAIT
        self.keepalive = keepalive
        self.keepalive_timeout = keepalive_timeout
        # the reconnect / resume / give-up rules: a pure table (_session.py); we report
        # slixmpp's events to it and carry out what it answers (_apply)
        self.session = Session(
            server=config.server_names, account=config.jid, servers=config.addresses, srv=config.srv,
            require_tls=config.tls == "required", fail_fast=fail_fast, auth_grace=config.auth_grace,
            backoff=backoff or Backoff())
        # DNS SRV (config.srv): injectable for tests; else aiodns, at QE_DNS_SERVER if set
        self._srv_lookup = srv_lookup or _srv.aiodns_lookup(config.dns_server)
        self.attempt_timeout = attempt_timeout
        self._attempt_timer: asyncio.TimerHandle | None = None
        self.resumable = False  # XEP-0198 enabled with resumption on the current stream
        self._session_since: float | None = None  # wall-clock start of the current session
        self.pings_answered = 0  # keepalive pings the server answered (each proves the link alive)
        self.pings_late = 0  # pings not answered in time while the server acknowledged our stanzas
        self._client: slixmpp.ClientXMPP | None = None
        self._online = asyncio.Event()
        self._session_changed = asyncio.Condition()
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False  # close() ran (the session may have failed before)
        self._farewell: asyncio.Task[None] | None = None  # _tell_newcomer, after a conflict
        self._server_caps: str | None = None  # the caps node in the server's stream features
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: dict[str, tuple[str, asyncio.Future[Any]]] = {}
        self._log_limit = LogLimit()  # lines that other people's traffic causes
        self._ack_due = False
        self._ack_delay = _ACK_DELAY
        # group chat: the rules (_rooms.py, pure); here the waiters and timers they ask for
        self.rooms = _rooms.Rooms()
        self._room_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._room_timers: dict[str, asyncio.TimerHandle] = {}

    # -- life cycle ---------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self._online.is_set()

    @property
    def sessions(self) -> int:
        """Sessions started (1 + reconnects that needed a new session)."""
        return self.session.sessions

    @property
    def resumptions(self) -> int:
        return self.session.resumptions

    @property
    def fatal(self) -> str | None:
        """Why we gave up (retrying cannot help), or None."""
        return self.session.fatal

    @property
    def backoff(self) -> Backoff:
        return self.session.backoff

    def start(self) -> None:
        if self._client is not None:
            raise RuntimeError("transport already started")
        self._client = self._make_client()
        self._apply(Event.START)
        if self.keepalive > 0:
            self._spawn(self._keepalive_loop())

    def _new_client(self, jid: str) -> slixmpp.ClientXMPP:
        """A slixmpp client for ``jid`` that connects and logs in as our configuration says
        (TLS, SCRAM without TLS only to loopback, CA file), with none of our handlers."""
        cfg = self.config
        # one TLS context per process and CA file (not one CA-bundle load per client), and
        # SCRAM's salted password computed once per process (_shared)
        try:
            context: ssl.SSLContext | None = _shared.tls_context(cfg.ca_file or None)
        except (OSError, ssl.SSLError):  # an unreadable CA file: slixmpp's own path reports it at TLS time
            context = None
        client = slixmpp.ClientXMPP(jid, cfg.password, ssl_context=context)
        if context is None and cfg.ca_file:
            client.ca_certs = Path(cfg.ca_file)
        _compat.cache_scram(client, _shared.SCRAM_CACHE.salted_password)
        client.auto_authorize = None  # we decide, in _on_subscribe
        client.auto_subscribe = False
        client.enable_direct_tls = False
        client.enable_starttls = cfg.tls != "off"
        client.enable_plaintext = True  # TCP first; STARTTLS upgrades it unless tls=off
        client.plugin["feature_mechanisms"].unencrypted_scram = _plain_scram(cfg.tls, cfg.host)  # set again per server
        return client

    def _make_client(self) -> slixmpp.ClientXMPP:
        client = self._new_client(self.jid)
        if self.config.stream_management:
            self._enable_stream_management(client)
        client.add_event_handler("session_start", self._on_session_start)
        client.add_event_handler("session_resumed", self._on_session_resumed)
        client.add_event_handler("disconnected", self._on_disconnected)
        client.add_event_handler("connection_failed", self._on_connection_failed)
        client.add_event_handler("failed_auth", self._on_mechanism_refused)
        client.add_event_handler("failed_all_auth", self._on_failed_auth)
        client.add_event_handler("stream_error", self._on_stream_error)
        client.add_event_handler("ssl_invalid_chain", self._on_untrusted_certificate)
        client.add_event_handler("message", self._on_message)
        client.add_event_handler("presence_subscribe", self._on_subscribe)
        client.add_event_handler("presence_available", self._on_presence)
        client.add_event_handler("presence_unavailable", self._on_presence)
        # Last of the incoming filters (after XEP-0198 has counted the stanza): API requests
        # and answers to our own calls are taken here, before slixmpp tests the stanza
        # against every handler it has.
        self._iq_tag = f"{{{client.default_ns}}}iq"
        self._presence_tag = f"{{{client.default_ns}}}presence"
        self._message_tag = f"{{{client.default_ns}}}message"
        client.add_filter("in", self._take_ours)
        _compat.ack_each_read(client)
        self._writer = _compat.FastWriter(client)
        return client

    def _enable_stream_management(self, client: slixmpp.ClientXMPP) -> None:
        """XEP-0198, with acks coalesced where that costs no latency.

        Prosody asks for an ack whenever it has unacknowledged stanzas and no request out
        (smacks_max_unacked_stanzas = 0), and asks no more until it is answered. Answering
        every ``<r/>`` at once costs the server an ``<a/>`` in and an ``<r/>`` out per call
        (~0.1 ms p50 a call, bench_bridge.py). Answering once per ``_ACK_DELAY`` covers all
        stanzas received meanwhile, but with Nagle on the server (its default) a lone
        ``<r/>`` that we do not ACK at the TCP level holds the server's next write to us: a
        20 ms ack delay made every sequential call take 22 ms on a stock Prosody
        (bench/RESULTS.md, 2026-12-03). So the delay is used only where the kernel ACKs each
        read at once (``_compat.ack_each_read``, Linux); elsewhere the ack goes at the end of the
        loop pass, in the same write as an answer sent in that pass (``_send_now``).
        """
        client.register_plugin("xep_0198", {"window": 20})
        client.add_event_handler("sm_enabled", lambda _e: self._set_resumable(True))
        client.add_event_handler("sm_disabled", lambda _e: self._set_resumable(False))
        _compat.answer_ack_requests(client, self._on_ack_request)

    def _apply(self, event: Event, **details: Any) -> None:
        """Report ``event`` to the session table and carry out its actions, in order."""
        for action in self.session.handle(event, now=asyncio.get_running_loop().time(), **details):
            self._carry_out(action)

    def _carry_out(self, action: Action) -> None:
        client = self._client
        if isinstance(action, Connect):
            # not from inside slixmpp's connect loop, which reports a failed attempt to us and
            # would take a new attempt started there for its own to reschedule
            asyncio.get_running_loop().call_soon(self._connect, action.host, action.port)
        elif isinstance(action, Resolve):
            self._spawn(self._resolve())
        elif isinstance(action, Retry):
            log.log(action.level, "%s: %s; reconnecting in %.1f s", self.jid, action.why, action.delay)
            self._retry = asyncio.get_running_loop().call_later(action.delay, self._retry_due)
        elif isinstance(action, Online):
            self._end_attempt_timer()
            if not action.resumed:
                self._session_since = time.time()  # what was stamped before is stored news
                if client is not None and self.presence:
                    client.send_presence()
            # a new session has lost every room server-side; a resumed one kept them
            self._do_rooms(self.rooms.went_online(action.resumed, asyncio.get_running_loop().time()))
            self._online.set()
            self._spawn(self._notify_session())
            if action.resumed:
                log.info("%s resumed its session (XEP-0198)", self.jid)
            else:
                log.info("%s online (session %d)", self.jid, self.sessions)
        elif isinstance(action, Offline):
            self._online.clear()
            self.rooms.went_offline()
        elif isinstance(action, Abort):
            if client is not None:
                client.abort()
        elif isinstance(action, Log):
            log.log(action.level, "%s: %s", self.jid, action.message)
        elif isinstance(action, Fail):
            log.error("%s: %s", self.jid, action.reason)
            self._online.set()  # wake waiters so they see `fatal`
            self._online.clear()
            if client is not None:
                client.cancel_connection_attempt()
                client.abort()
            if self.on_fatal is not None:
                self.on_fatal(action.reason)

    def _connect(self, host: str, port: int) -> None:
        client = self._client
        if client is None or self._closed or self.session.current != (host, port):
            return  # closed, or superseded meanwhile
        client.plugin["feature_mechanisms"].unencrypted_scram = _plain_scram(self.config.tls, host)
        log.debug("connecting %s to %s:%s", self.jid, host, port)
        self._end_attempt_timer()
        if self.attempt_timeout > 0:
            self._attempt_timer = asyncio.get_running_loop().call_later(
                self.attempt_timeout, self._attempt_timed_out, host, port)
        client.connect(host, port)

    def _end_attempt_timer(self) -> None:
        if self._attempt_timer is not None:
            self._attempt_timer.cancel()
            self._attempt_timer = None

    def _attempt_timed_out(self, host: str, port: int) -> None:
        """No session within ``attempt_timeout``: the server counts as unreachable (no TCP
        yet) or as having dropped us (connected, but the login did not finish), and the
        session table moves on to the next server."""
        self._attempt_timer = None
        client = self._client
        if client is None or self.session.current != (host, port) or self.online or self._closed or self.fatal:
            return
        why = f"no session within {self.attempt_timeout:g} s"
        if client.transport is None:
            client.cancel_connection_attempt()
            self._apply(Event.CONNECT_FAILED, detail=why)
        else:
            client.disconnect_reason = why
            client.abort()  # a DISCONNECTED event follows

    async def _resolve(self) -> None:
        """The servers of our domain from DNS SRV, reported to the session table."""
        servers = await _srv.servers_for(self.config.domain, self._srv_lookup)
        if servers:
            log.debug("%s: DNS SRV gives %s", self.jid, ", ".join(f"{h}:{p}" for h, p in servers))
        self._apply(Event.RESOLVED, servers=servers)

    def _retry_due(self) -> None:
        self._retry = None
        self._apply(Event.RETRY_DUE)

    async def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._apply(Event.CLOSE)
        self._end_attempt_timer()
        if self._retry is not None:
            self._retry.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._farewell is not None:
            await asyncio.wait({self._farewell}, timeout=_FAREWELL_TIMEOUT)
            self._farewell.cancel()
        self.rooms.went_offline()
        for timer in self._room_timers.values():
            timer.cancel()
        self._room_timers.clear()
        for room in list(self._room_waiters):
            self._wake_room_waiters(room, lambda: NotConnected(f"{self.jid} closed"))
        client = self._client
        if client is None:
            return
        client.cancel_connection_attempt()
        if client.transport is not None:
            # XEP-0198: acknowledge what we received before we end the stream. The server
            # takes a stanza we did not acknowledge as undelivered and bounces it to its
            # sender when the session ends (Prosody: recipient-unavailable): the answer to
            # our last call, back at the worker that sent it.
            sm = client.plugin.get("xep_0198", None)
            if sm is not None and sm.enabled_in:
                client.send_raw(self._take_ack())
            try:
                await asyncio.wait_for(client.disconnect(wait=min(2.0, timeout)), timeout)
            except (TimeoutError, asyncio.CancelledError):
                client.abort()
        self._online.clear()
        _compat.end_send_task(client)
        log.info("%s disconnected", self.jid)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- session events -----------------------------------------------------------------

    def _encrypted(self) -> bool:
        transport = self._client.transport if self._client else None
        return transport is not None and transport.get_extra_info("ssl_object") is not None

    def _on_session_start(self, _event: Any) -> None:
        self._apply(Event.SESSION_STARTED, encrypted=self._encrypted())

    def _set_resumable(self, value: bool) -> None:
        self.resumable = value
        if value:
            self._spawn(self._notify_session())

    async def _notify_session(self) -> None:
        async with self._session_changed:
            self._session_changed.notify_all()

    async def wait_state(self, predicate: Callable[[XmppTransport], bool], timeout: float) -> None:
        """Wait until ``predicate(self)`` holds, re-checked whenever a session starts, is
        resumed or becomes resumable, and after each keepalive ping that proved the link alive
        (for monitoring and tests); ``TimeoutError`` after ``timeout`` s."""
        async with asyncio.timeout(timeout), self._session_changed:
            await self._session_changed.wait_for(lambda: predicate(self))

    async def wait_sessions(self, count: int, timeout: float) -> None:
        """Wait until ``count`` sessions have started and we are online (1 = first login;
        2 = one reconnect that needed a new session, not a XEP-0198 resumption)."""
        await self.wait_state(lambda t: t.sessions >= count and t.online, timeout)

    def _on_session_resumed(self, _event: Any) -> None:
        self._apply(Event.SESSION_RESUMED)

    def _on_disconnected(self, reason: Any) -> None:
        self._apply(Event.DISCONNECTED, detail=str(reason or ""))

    def _on_connection_failed(self, error: Any) -> None:
        if self._client is not None:  # stop slixmpp's own retry loop: the session table decides
            self._client.cancel_connection_attempt()
        self._apply(Event.CONNECT_FAILED, detail=str(error))

    def _on_mechanism_refused(self, _event: Any) -> None:
        self._apply(Event.MECHANISM_REFUSED)

    def _on_failed_auth(self, _event: Any) -> None:
        self._apply(Event.AUTH_FAILED)

    def _on_untrusted_certificate(self, error: Any) -> None:
        self._apply(Event.CERT_UNTRUSTED, detail=str(error))

    def _on_stream_error(self, error: Any) -> None:
        condition = error["condition"]
        if condition == "conflict":
            if not conflict_means_takeover(self._server_caps):
                # ejabberd closes the account's oldest session with the same error when the
                # account goes over max_user_sessions: a login of ours to tell "the newcomer"
                # would be one more session, and push out the next one (a cascade through the
                # account's workers). So the newcomer is told only where a conflict can mean
                # nothing but a taken resource.
                log.warning("%s: the server ended our session with a conflict: another login took this "
                            "resource, or the account went over the server's session limit (ejabberd: "
                            "max_user_sessions)", self.jid)
            elif self._farewell is None and not self._closed:
                self._farewell = asyncio.get_running_loop().create_task(self._tell_newcomer())
            self._apply(Event.CONFLICT, detail=self.jid)
        else:
            log.warning("%s: stream error %s %s", self.jid, condition, error["text"])

    async def _tell_newcomer(self) -> None:
        """Log in once more under a resource of our own and tell the session that replaced
        ours where we ran (``Takeover``): the server tells only us. Best effort, bounded, on
        the way out; ``close`` waits for it."""
        jid = JID(self.jid)
        client = self._new_client(f"{jid.bare}/{jid.resource or 'qe'}.takeover-{secrets.token_hex(3)}")
        told = asyncio.Event()
        here = Takeover.here()

        def _started(_event: Any) -> None:
            msg = client.make_message(mto=jid, mtype="headline")
            msg.xml.append(ET.Element(_TAKEOVER_TAG, {"host": here.host, "pid": str(here.pid)}))
            msg.xml.append(ET.Element(_NO_STORE_TAG))
            msg.send()
            told.set()

        client.add_event_handler("session_start", _started)
        host, port = self.session.home or self.config.addresses[0]  # where the newcomer took our place
        client.plugin["feature_mechanisms"].unencrypted_scram = _plain_scram(self.config.tls, host)
        client.connect(host, port)
        try:
            await asyncio.wait_for(told.wait(), _FAREWELL_TIMEOUT)
            await asyncio.wait_for(client.disconnect(wait=1.0), _FAREWELL_TIMEOUT)
        except TimeoutError:
            log.info("%s: could not tell the session that took over our resource where we ran", self.jid)
        finally:
            client.cancel_connection_attempt()
            client.abort()
            _compat.end_send_task(client)

    async def wait_online(self, timeout: float) -> None:
        if self.fatal:
            raise self.session.fatal_kind(self.fatal)
        if self._online.is_set():
            return
        try:
            await asyncio.wait_for(self._online.wait(), timeout)
        except TimeoutError:
            raise NotConnected(f"not connected to {self.config.server_names} within {timeout:g} s") from None
        if self.fatal:
            raise self.session.fatal_kind(self.fatal)

    async def _keepalive_loop(self) -> None:
        """XEP-0199 ping to our server; any answer (even an error) proves the link.

        A ping not answered within ``keepalive_timeout`` means a dead link, unless the server
        acknowledged more of our stanzas (XEP-0198) while we waited: then both directions
        work and the ping is only stuck behind a backlog. Dropping a congested link would
        resend the whole backlog on the next connection and congest it again: bench/soak.py
        on a loaded machine saw that turn into a reconnect every 40 s for minutes. Without
        XEP-0198 there is no such proof, and a late ping still drops the link.
        """
        while True:
            await asyncio.sleep(self.keepalive)
            client = self._client
            if client is None or not self.online:
                continue
            # rooms we have not heard from for as long: are we still in? (_rooms: self-ping)
            self._do_rooms(self.rooms.due_pings(asyncio.get_running_loop().time(), self.keepalive))
            iq = client.make_iq_get(ito=self.config.domain)
            iq.xml.append(ET.Element(_PING_TAG))
            acked = _acked(client)
            try:
                await self._send_iq(iq, self.config.domain, self.keepalive_timeout)
            except TimeoutError:
                if acked is not None and _acked(client) != acked:
                    self.pings_late += 1
                    log.info("%s: the server did not answer a ping in %.1f s but acknowledged our stanzas "
                             "meanwhile: the link is congested, not dead", self.jid, self.keepalive_timeout)
                else:
                    log.warning("%s: server did not answer a ping in %.1f s; reconnecting",
                                self.jid, self.keepalive_timeout)
                    client.abort()
                    continue
            else:
                self.pings_answered += 1
            await self._notify_session()  # wait_state() callers may be waiting for a proof of life

    # -- incoming -----------------------------------------------------------------------

    def _take_ours(self, stanza: Any) -> Any:
        """Incoming filter: an IQ get/set carrying ``<api/>`` goes to ``on_request``, and the
        answer to one of our own IQs (matched by id in one dict) to its caller; neither goes
        further. Only our own handlers would match them, and slixmpp's matching of each
        stanza against all its handlers (message, presence, roster, SASL, stream errors,
        XEP-0198...) costs more than the rest of receiving it. Anything else passes on.

        (slixmpp's ``Iq.send()`` would also add a handler per call: with 100 calls in
        flight, 100 more matcher calls per incoming stanza.)"""
        xml = stanza.xml
        if xml.tag != self._iq_tag:
            # progress and cancel have no body: slixmpp's "message" event (bodies only) never sees them
            if xml.tag == self._message_tag and any(child.tag in _CONTROL_TAGS for child in xml):
                self._control(xml)
                return None
            if xml.tag == _FEATURES_TAG:  # a few per session: which server this is (caps node)
                caps = xml.find(_CAPS_TAG)
                if caps is not None:
                    self._server_caps = caps.get("node")
                return stanza
            return self._take_room_stanza(stanza) if self.rooms else stanza
        kind = xml.get("type")
        api = None
        if kind == "set" or kind == "get":
            api = xml.find(_API_TAG)
            if api is None:
                if self.describe is None:
                    return stanza
                return self._take_disco(stanza) if kind == "get" else self._take_adhoc(stanza)
        elif (kind != "result" and kind != "error") or xml.get("id") not in self._pending:
            return stanza
        if _slixmpp_log.isEnabledFor(logging.DEBUG):
            _slixmpp_log.debug("RECV: %s", stanza)  # what slixmpp logs for the stanzas it routes
        try:
            if api is None:
                self._on_answer(stanza)
            elif self.on_request is not None:
                # str(JID(...)): the sender as slixmpp normalises it (what iq["from"] gives)
                self.on_request(xml.get("id", ""), str(JID(xml.get("from", ""))), api.text or "", kind)
        except Exception as exc:  # as slixmpp does for a handler that raises: an error reply
            stanza.exception(exc)
        return None

    def _take_disco(self, stanza: Any) -> Any:
        """Incoming filter, for IQ ``get``: a disco#info/items query is answered here from
        ``describe`` (see ``_disco`` for who gets what); anything else passes on."""
        xml = stanza.xml
        query = _disco.parse_query(xml)
        client = self._client
        if query is None or client is None:
            return stanza
        if _slixmpp_log.isEnabledFor(logging.DEBUG):
            _slixmpp_log.debug("RECV: %s", stanza)
        sender = str(JID(xml.get("from", "")))
        try:
            assert self.describe is not None
            answer = _disco.answer(query, self.jid, self.describe(sender), adhoc=self.run_command is not None)
        except Exception as exc:  # as for a request: an error reply, the stream goes on
            stanza.exception(exc)
            return None
        iq_id = xml.get("id", "")
        if isinstance(answer, _disco.Refused):
            self._send_now(self._error_iq(iq_id, sender, answer.condition, answer.type))
            return None
        reply = ET.Element(f"{{{client.default_ns}}}iq", {"id": iq_id, "to": sender, "type": "result"})
        reply.append(answer)
        self._send_now(_compat.received_iq(client, reply))
        return None

    def _take_adhoc(self, stanza: Any) -> Any:
        """Incoming filter, for IQ ``set``: a XEP-0050 ``<command/>`` is answered here (the
        rules are ``_adhoc``'s; a command runs through ``run_command`` on a task of ours and is
        answered when it ends); anything else passes on."""
        xml = stanza.xml
        client = self._client
        request = _adhoc.parse_command(xml)
        if request is None or client is None or self.run_command is None or self.describe is None:
            return stanza
        if _slixmpp_log.isEnabledFor(logging.DEBUG):
            _slixmpp_log.debug("RECV: %s", stanza)
        sender = str(JID(xml.get("from", "")))
        iq_id = xml.get("id", "")
        running = self._adhoc_running.get((sender, request.sessionid)) if request.sessionid else None
        if running is not None and running.run.node == request.node:
            self._adhoc_again(iq_id, sender, request, running)
            return None
        try:
            step = self.adhoc.receive(sender, request, self.describe(sender), asyncio.get_running_loop().time())
        except Exception as exc:  # as for a request: an error reply, the stream goes on
            stanza.exception(exc)
            return None
        if isinstance(step, _adhoc.Run):
            self._spawn(self._run_adhoc(iq_id, sender, step))
        else:
            self._send_adhoc(iq_id, sender, step)
        return None

    async def _run_adhoc(self, iq_id: str, sender: str, run: _adhoc.Run) -> None:
        """Run the command; answer with its result if it ends within ``_ADHOC_WAIT`` s, else
        with ``executing`` and its latest progress, and keep it for the requester's next
        ``execute`` (or ``cancel``) on the same session."""
        assert self.run_command is not None
        running = _AdhocRun(run)
        loop = asyncio.get_running_loop()
        running.task = asyncio.ensure_future(self.run_command(sender, run.node, run.body, running.report))
        self._tasks.add(running.task)
        running.task.add_done_callback(self._tasks.discard)
        await asyncio.wait({running.task}, timeout=_ADHOC_WAIT)
        if running.task.done():
            self._adhoc_finished(iq_id, sender, running)
            return
        key = (sender, run.sessionid)
        self._adhoc_running[key] = running
        # forgotten if nobody asks again: a while after it ended
        running.task.add_done_callback(lambda _t: loop.call_later(_adhoc.SESSION_TTL, self._adhoc_running.pop, key, None))
        self._send_adhoc(iq_id, sender, _adhoc.Answer(_adhoc.running_element(run.node, run.sessionid, running.latest)))

    def _adhoc_again(self, iq_id: str, sender: str, request: _adhoc.Request, running: _AdhocRun) -> None:
        """The requester asks about a command still kept running (or ended) for it."""
        key = (sender, running.run.sessionid)
        if request.action == "cancel":
            del self._adhoc_running[key]
            running.task.cancel()
            self._send_adhoc(iq_id, sender, _adhoc.Answer(_adhoc.command_element(request.node, running.run.sessionid,
                                                                                 "canceled")))
        elif running.task.done():
            del self._adhoc_running[key]
            self._adhoc_finished(iq_id, sender, running)
        else:
            self._send_adhoc(iq_id, sender, _adhoc.Answer(_adhoc.running_element(
                request.node, running.run.sessionid, running.latest)))

    def _adhoc_finished(self, iq_id: str, sender: str, running: _AdhocRun) -> None:
        assert self.describe is not None
        if running.task.cancelled():  # the worker shut down meanwhile
            answer: ApiResult | ApiError = ApiError("", sender, "interrupted", "the worker shut down")
        else:
            answer = running.task.result()
        self._send_adhoc(iq_id, sender, self.adhoc.ran(sender, running.run, answer, self.describe(sender),
                                                       asyncio.get_running_loop().time()))

    def _send_adhoc(self, iq_id: str, sender: str, step: _adhoc.Answer | _adhoc.Refused) -> None:
        client = self._client
        if client is None:
            return
        if isinstance(step, _adhoc.Refused):
            iq = self._error_iq(iq_id, sender, step.condition, step.type)
            if step.specific is not None:
                iq["error"].xml.append(ET.Element(f"{{{_adhoc.COMMANDS_NS}}}{step.specific}"))
            if step.text:
                iq["error"]["text"] = xml_safe(step.text)
            self._send_now(iq)
            return
        reply = ET.Element(f"{{{client.default_ns}}}iq", {"id": iq_id, "to": sender, "type": "result"})
        reply.append(step.command)
        self._send_now(_compat.received_iq(client, reply))

    def _on_ack_request(self, _request: Any) -> None:
        if not self._ack_due:
            self._ack_due = True
            loop = asyncio.get_running_loop()
            if self._ack_delay:
                loop.call_later(self._ack_delay, self._send_ack)
            else:
                loop.call_soon(self._send_ack)

    def _send_ack(self) -> None:
        """The ack the server asked for, unless an answer written meanwhile carried it."""
        client = self._client
        if self._ack_due and client is not None and client.transport is not None:
            client.send_raw(self._take_ack())

    def _on_answer(self, iq: Any) -> None:
        xml = iq.xml
        entry = self._pending.get(xml.get("id"))
        if entry is None:
            return
        to, future = entry
        sender = xml.get("from") or self.config.domain
        if sender != to and JID(sender) != JID(to):
            if (dropped := self._log_limit.allow("answer")) is not None:
                log.warning("ignored an answer to %s from %s (sent to %s)%s", xml.get("id"), sender, to,
                            suppressed_note(dropped))
            return
        del self._pending[xml.get("id")]
        if not future.done():
            future.set_result(iq)

    def _on_message(self, msg: Any) -> None:
        if msg["type"] not in ("chat", "normal") or self.on_message is None:
            return
        body = msg["body"]
        if body:
            delayed = _delay.stored(msg.xml, self.jid, self._session_since)
            self.on_message(Message(str(msg["from"]), body, delayed=delayed))

    def _control(self, xml: ET.Element) -> bool:
        """A progress report on one of our requests, or a caller cancelling its request here:
        handled, True. Progress counts only from the worker we asked; a cancel is passed on
        with its sender, whom the owner checks against the request's caller."""
        progress = xml.find(_PROGRESS_TAG)
        if progress is not None:
            iq_id = progress.get("id", "")
            entry = self._pending.get(iq_id)
            callback = self._progress.get(iq_id)
            if entry is not None and callback is not None and JID(xml.get("from", "")) == JID(entry[0]):
                callback(progress.text or "")
            return True
        takeover = xml.find(_TAKEOVER_TAG)
        if takeover is not None:
            # only our own account can have held our resource; anyone else's claim is noise
            if JID(xml.get("from", "")).bare == JID(self.jid).bare:
                with contextlib.suppress(ValueError):
                    Takeover(takeover.get("host", "?"), int(takeover.get("pid", ""))).report(self.jid)
            return True
        cancel = xml.find(_CANCEL_TAG)
        if cancel is not None:
            if self.on_cancel is not None:
                self.on_cancel(str(JID(xml.get("from", ""))), cancel.get("id", ""))
            return True
        return False

    def _send_control(self, to: str, element: ET.Element) -> None:
        client = self._client
        if client is None:
            return
        msg = client.make_message(mto=JID(to), mtype="normal")
        msg.xml.append(element)
        msg.xml.append(ET.Element(_NO_STORE_TAG))
        self._send_now(msg)

    def send_progress(self, to: str, iq_id: str, payload: str) -> None:
        element = ET.Element(_PROGRESS_TAG, {"id": iq_id})
        element.text = payload
        self._send_control(to, element)

    def _on_presence(self, presence: Any) -> None:
        """``on_presence`` for the other sessions of our own account (rooms' presences never
        get here: the incoming filter takes them)."""
        if self.on_presence is None:
            return
        sender = str(presence["from"])
        if "/" in sender and sender != self.jid and bare_jid(sender) == bare_jid(self.jid):
            self.on_presence(sender, presence["type"] != "unavailable")

    def _on_subscribe(self, presence: Any) -> None:
        assert self._client is not None
        sender = bare_jid(str(presence["from"]))
        if self.policy.may_subscribe(sender):
            self._client.send_presence(pto=sender, ptype="subscribed")
        else:
            if (dropped := self._log_limit.allow("subscription")) is not None:
                log.warning("refused a presence subscription from %s%s", sender, suppressed_note(dropped))
            self._client.send_presence(pto=sender, ptype="unsubscribed")

    # -- outgoing -----------------------------------------------------------------------

    def send_answer(self, answer: ApiResult | ApiError) -> None:
        client = self._client
        if client is None:
            return
        if isinstance(answer, ApiResult):
            # The stanza built straight from its XML (what client.Iq() and item assignment
            # would build, attribute order included, for a fifth of the cost).
            xml = ET.Element(f"{{{client.default_ns}}}iq", {"id": answer.id, "to": answer.to, "type": "result"})
            ET.SubElement(xml, _API_TAG).text = answer.payload
            self._send_now(_compat.received_iq(client, xml))
            return
        iq = self._error_iq(answer.id, answer.to, answer.condition, _ERROR_TYPES.get(answer.condition, "cancel"))
        iq["error"]["text"] = xml_safe(answer.message)
        self._send_now(_with_api(iq, answer.payload))

    def _error_iq(self, iq_id: str, to: str, condition: str, error_type: str) -> Any:
        assert self._client is not None
        iq = self._client.Iq()
        iq["id"] = iq_id
        iq["to"] = to
        iq["type"] = "error"
        iq["error"]["condition"] = condition
        iq["error"]["type"] = error_type
        return iq

    def _send_now(self, stanza: Any) -> None:
        """``client.send(stanza)``, written in this loop pass when slixmpp allows
        (``_compat.FastWriter``); a due XEP-0198 ack rides in the same write when acks are
        not coalesced."""
        self._writer.write(stanza, self._take_ack if self._ack_due and not self._ack_delay else None)

    def _take_ack(self) -> str:
        """The XEP-0198 ``<a/>`` for every stanza handled so far; no ack is due after it."""
        self._ack_due = False
        assert self._client is not None
        return _ack_xml(self._client.plugin["xep_0198"].handled)

    async def _send_iq(self, iq: Any, to: str, timeout: float) -> Any:
        """Send ``iq`` and return the answer stanza (result or error); ``TimeoutError``."""
        assert self._client is not None
        iq_id = iq["id"]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[iq_id] = (to, future)
        try:
            self._send_now(iq)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(iq_id, None)

    async def request(self, to: str, text: str, timeout: float, on_progress: OnProgress | None = None) -> str | None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        await self.wait_online(timeout)
        assert self._client is not None
        iq = self._client.make_iq_set(ito=to)
        _with_api(iq, text)
        iq_id = iq["id"]
        if on_progress is not None:
            self._progress[iq_id] = on_progress
        try:
            answer = await self._send_iq(iq, to, max(0.001, end - loop.time()))
        except TimeoutError:
            raise CallTimeout(f"no answer from {to} within {timeout:g} s") from None
        except asyncio.CancelledError:
            self._send_control(to, ET.Element(_CANCEL_TAG, {"id": iq_id}))  # the worker stops the handler
            raise
        finally:
            if on_progress is not None:
                del self._progress[iq_id]
        if answer.xml.get("type") == "error":
            err = decode_error(answer["error"]["condition"], _api_text(answer))
            raise RemoteError(err.code, err.message)
        return _api_text(answer)

    def send_message(self, to: str, body: str) -> None:
        if self._client is not None:
            self._client.send_message(mto=JID(to), mbody=body, mtype="chat")

    # -- rooms (XEP-0045) ------------------------------------------------------------------

    def join(self, room: str, nick: str, payload: str | None = None) -> None:
        """See ``Transport.join``. Returns at once: the join presence goes out now when
        online, else when the session comes up. Calling it often to change ``payload`` is
        fine: updates are coalesced (``_rooms.UPDATE_INTERVAL``). ``ValueError`` for a room
        address that is not a bare JID or a nick that cannot be a JID's resource. Call on
        the loop."""
        room = _room_jid(room)
        if not nick or JID(f"{room}/{nick}").resource != nick:
            raise ValueError(f"{nick!r} cannot be a nick (empty, or changed by XMPP's resourceprep)")
        self._do_rooms(self.rooms.join(room, nick, payload, asyncio.get_running_loop().time()))

    async def wait_joined(self, room: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        room = _room_jid(room)
        if self._closed:
            raise NotConnected(f"{self.jid} is closed")
        await self.wait_online(timeout)
        state = self.rooms.get(room)
        if state is None:
            raise NotConnected(f"{self.jid} is not joining {room}")
        if state.phase is _rooms.Phase.FAILED or (state.phase is _rooms.Phase.PENDING and state.error is not None):
            assert state.error is not None  # refused; for good, or until the next session
            raise RemoteError(*state.error)
        if state.phase is _rooms.Phase.JOINED:
            return
        waiter: asyncio.Future[None] = loop.create_future()
        waiters = self._room_waiters.setdefault(room, [])
        waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, max(0.001, end - loop.time()))
        except TimeoutError:
            raise CallTimeout(f"{room} did not take us in within {timeout:g} s") from None
        finally:
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._room_waiters.pop(room, None)

    def leave(self, room: str) -> None:
        room = _room_jid(room)
        self._do_rooms(self.rooms.leave(room))
        timer = self._room_timers.pop(room, None)
        if timer is not None:
            timer.cancel()
        self._wake_room_waiters(room, lambda: NotConnected(f"{self.jid} left {room}"))

    def send_group(self, room: str, body: str) -> None:
        """A group-chat message to ``room``; like ``send_message``, slixmpp queues it while
        offline and sends it after the next connect."""
        if self._client is not None:
            self._client.send_message(mto=JID(room), mbody=xml_safe(body), mtype="groupchat")

    def _take_room_stanza(self, stanza: Any) -> Any:
        """Incoming filter, for presences and messages: those from a room we want (its
        occupants, its errors, its group chat) go to the room rules and no further; anything
        else (a private message through a room included) passes on."""
        xml = stanza.xml
        room = xml.get("from", "").partition("/")[0].lower()
        if room not in self.rooms:
            return stanza
        ns = self._client.default_ns if self._client is not None else _rooms.CLIENT_NS
        now = asyncio.get_running_loop().time()
        if xml.tag == self._presence_tag:
            presence = _rooms.parse_presence(xml, ns)
            if presence is None:
                return stanza
            actions = self.rooms.presence(presence, now)
        elif xml.tag == self._message_tag:
            message = _rooms.parse_message(xml, ns, self.jid, self._session_since)
            if message is None:
                return stanza
            actions = self.rooms.message(message, now)
        else:
            return stanza
        if _slixmpp_log.isEnabledFor(logging.DEBUG):
            _slixmpp_log.debug("RECV: %s", stanza)
        self._do_rooms(actions)
        return None

    def _do_rooms(self, actions: list[_rooms.Action]) -> None:
        """Carry out what the room rules asked for, in order. A callback that raises is
        logged and the rest still happens (the rules have moved on already)."""
        for action in actions:
            try:
                self._do_room(action)
            except Exception:
                log.exception("%s: %s failed", self.jid, type(action).__name__)

    def _do_room(self, action: _rooms.Action) -> None:
        client = self._client
        if isinstance(action, _rooms.Occupant):
            if self.on_occupant is not None:
                self.on_occupant(action.room, action.nick, action.real_jid, action.payload, action.present)
        elif isinstance(action, _rooms.Deliver):
            if self.on_message is not None:
                self.on_message(action.message)
        elif isinstance(action, _rooms.SendJoin | _rooms.SendUpdate | _rooms.SendLeave):
            if client is None:
                return
            to = f"{action.room}/{action.nick}"
            if isinstance(action, _rooms.SendLeave):
                self._send_now(client.make_presence(pto=to, ptype="unavailable"))
                return
            presence = client.make_presence(pto=to)
            join = isinstance(action, _rooms.SendJoin)
            presence.xml.extend((_rooms.join_children if join else _rooms.update_children)(action.payload))
            self._send_now(presence)
        elif isinstance(action, _rooms.FlushAt):
            previous = self._room_timers.pop(action.room, None)
            if previous is not None:
                previous.cancel()
            self._room_timers[action.room] = asyncio.get_running_loop().call_at(
                action.when, self._room_flush_due, action.room)
        elif isinstance(action, _rooms.Configure):
            self._spawn(self._configure_room(action.room))
        elif isinstance(action, _rooms.SendPing):
            self._spawn(self._self_ping(action.room, action.nick))
        elif isinstance(action, _rooms.Joined):
            log.info("%s joined %s", self.jid, action.room)
            self._wake_room_waiters(action.room, None)
        elif isinstance(action, _rooms.Refused):
            log.warning("%s: %s refused us: %s (%s)", self.jid, action.room, action.message, action.code)
            self._wake_room_waiters(action.room, lambda: RemoteError(action.code, action.message))
        elif isinstance(action, _rooms.Note):
            log.log(action.level, "%s: %s", self.jid, action.text)

    def _room_flush_due(self, room: str) -> None:
        self._room_timers.pop(room, None)
        self._do_rooms(self.rooms.flush(room, asyncio.get_running_loop().time()))

    async def _configure_room(self, room: str) -> None:
        """We created ``room``: accept its configuration with real JIDs shown to everyone
        (a locked room opens then), and count it joined whatever the answer."""
        assert self._client is not None
        iq = self._client.make_iq_set(ito=room)
        iq.xml.append(_rooms.instant_config())
        try:
            answer = await self._send_iq(iq, room, _CONFIGURE_TIMEOUT)
        except TimeoutError:
            log.warning("%s: %s did not answer its configuration form in %g s", self.jid, room, _CONFIGURE_TIMEOUT)
        else:
            if answer.xml.get("type") == "error":
                log.warning("%s: %s refused its configuration form (%s); occupants may not see real JIDs",
                            self.jid, room, answer["error"]["condition"])
        self._do_rooms(self.rooms.configured(room, asyncio.get_running_loop().time()))

    async def _self_ping(self, room: str, nick: str) -> None:
        """XEP-0410: ping our own occupant JID; the room answers for us, or relays it to us."""
        assert self._client is not None
        occupant = f"{room}/{nick}"
        iq = self._client.make_iq_get(ito=occupant)
        iq.xml.append(ET.Element(_PING_TAG))
        try:
            answer = await self._send_iq(iq, occupant, self.keepalive_timeout)
        except TimeoutError:
            actions = self.rooms.ping_answer(room, None, asyncio.get_running_loop().time(), answered=False)
        else:
            condition = answer["error"]["condition"] if answer.xml.get("type") == "error" else None
            actions = self.rooms.ping_answer(room, condition, asyncio.get_running_loop().time())
        self._do_rooms(actions)

    def _wake_room_waiters(self, room: str, error: Callable[[], Exception] | None) -> None:
        """End every ``wait_joined`` on ``room``: returned (``error`` None) or raising a fresh
        ``error()`` each."""
        for waiter in self._room_waiters.pop(room, []):
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error())

    def stats(self) -> dict[str, int]:
        return {"sessions": self.sessions, "resumptions": self.resumptions,
                "pings_answered": self.pings_answered, "pings_late": self.pings_late}

    def watch_available(self, jid: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` (on the loop) whenever available presence from full JID ``jid``
        arrives, until the returned function is called.

        The server sends a session's available presence when it logs in, to the other
        sessions of its own account and to accounts subscribed to its presence; other callers
        never get it.
        """
        client = self._client
        if client is None:
            raise RuntimeError("transport not started")
        wanted = JID(jid)

        def on_available(presence: Any) -> None:
            if presence["from"] == wanted:
                callback()

        client.add_event_handler("presence_available", on_available)
        return lambda: client.del_event_handler("presence_available", on_available)
