"""The slixmpp adapter: the only module that knows slixmpp.

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
- presence subscriptions: only the owner's account and the allowlist are accepted;
- TLS per ``QE_TLS``: ``required`` refuses a session that is not encrypted.

Requests sent while offline are not queued: ``request()`` waits for the session (within the
caller's timeout) and then sends, so a call is never replayed after its caller gave up.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import socket
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import slixmpp
from slixmpp.jid import JID
from slixmpp.stanza import Iq
from slixmpp.xmlstream import StanzaBase, tostring
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher.base import MatcherBase

from ._log_limit import LogLimit, suppressed_note
from .access import AccessPolicy, bare_jid
from .config import WorkerConfig
from .errors import AuthenticationFailed, CallError, CallTimeout, NotConnected, RemoteError
from .protocol import NS, ApiError, ApiResult, decode_error, xml_safe
from .transport import Backoff, OnFatal, OnMessage, OnRequest, Transport

__all__ = ["XmppTransport"]

log = logging.getLogger(__name__)
_slixmpp_log = logging.getLogger("slixmpp.xmlstream.xmlstream")

_API_TAG = f"{{{NS}}}api"
_PING_TAG = "{urn:xmpp:ping}ping"
_SM_REQUEST_ACK = "{urn:xmpp:sm:3}r"
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only
_ERROR_TYPES = {
    "bad-request": "modify",
    "not-acceptable": "modify",
    "forbidden": "auth",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
}


_tostring = importlib.import_module("slixmpp.xmlstream.tostring")  # the package re-exports a function of that name
_slow_escape = _tostring.escape


def _escape(text: str, use_cdata: bool = False) -> str:
    """Same output as slixmpp's ``escape`` (which maps character by character in a Python
    generator: ~20 ms for a 100 KB JSON payload); ``str.replace`` runs in C."""
    if use_cdata:
        return _slow_escape(text, use_cdata)
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


# Every outgoing stanza's text goes through tostring.escape; ours is a drop-in replacement
# (tests/unit/test_xmpp_escape.py checks that both give the same output).
_tostring.escape = _escape  # type: ignore[attr-defined]


class _ChildMatcher(MatcherBase):
    """``MatchXPath("{ns}tag")`` or ``MatchXPath("{ns}tag/{ns}child")`` without its cost:
    slixmpp's builds a wrapper element and runs an ElementPath search for every stanza
    (~2 us for a two-step path); a tag comparison and one ``find`` give the same answer."""

    def __init__(self, tag: str, child: str | None = None) -> None:
        super().__init__(None)
        self._tag = tag
        self._child = child

    def match(self, stanza: Any) -> bool:
        xml = stanza.xml
        return xml.tag == self._tag and (self._child is None or xml.find(self._child) is not None)


def _api_text(stanza: Any) -> str | None:
    element = stanza.xml.find(_API_TAG)
    return None if element is None else (element.text or "")


def _with_api(stanza: Any, text: str) -> Any:
    element = ET.Element(_API_TAG)
    element.text = text
    stanza.xml.append(element)
    return stanza


def _ack_each_read(client: slixmpp.ClientXMPP) -> None:
    """Have the kernel acknowledge every read at once (``TCP_QUICKACK``, Linux).

    A server with Nagle's algorithm on (Prosody's default: only ``network_settings = { nagle
    = false }`` turns it off) holds a small write while an earlier one is unacknowledged,
    and Linux delays the ACK of data nobody answers by up to 40 ms. So a stanza we do not
    answer (the server's XEP-0198 ``<a/>``, a presence, a chat message) held the next one
    (a request, an answer) for 40 ms: 1-5 % of calls on a stock server (bench_bridge.py). When
    we answer, the ACK rides on our data as before; the flag only matters when we do not.
    It is not sticky (the kernel falls back to delayed ACKs), hence after each read.
    """
    if _TCP_QUICKACK is None:
        return
    receive = client.data_received
    flag = _TCP_QUICKACK

    def data_received(data: bytes | str) -> None:
        try:
            receive(data)
        finally:
            transport = client.transport
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, flag, 1)
                except OSError:  # closed meanwhile
                    pass

    client.data_received = data_received  # type: ignore[method-assign]


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


class XmppTransport(Transport):
    """One logged-in resource. Create and ``start()`` it on the running loop.

    ``keepalive`` is the seconds between pings to the server (0 disables); a ping not
    answered within ``keepalive_timeout`` means the link is dead.
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
        keepalive: float = 30.0,
        keepalive_timeout: float = 10.0,
        backoff: Backoff | None = None,
        fail_fast: bool = False,
    ) -> None:
        self.config = config
        self.jid = f"{config.jid}/{resource}"
        self.policy = policy or AccessPolicy.create(config.jid, public=False, allow=config.allow)
        self.on_request = on_request
        self.on_message = on_message
        self.on_fatal = on_fatal
        self.keepalive = keepalive
        self.keepalive_timeout = keepalive_timeout
        self.backoff = backoff or Backoff()
        self.fatal: str | None = None
        self.fail_fast = fail_fast  # a client: an unreachable server at first is an answer
        self._fatal_type: type[CallError] = AuthenticationFailed
        self._password_refused = False
        self.sessions = 0  # sessions started (1 + reconnects that needed a new session)
        self.resumptions = 0
        self.resumable = False  # XEP-0198 enabled with resumption on the current stream
        self.pings_answered = 0  # keepalive pings the server answered (each proves the link alive)
        self.pings_late = 0  # pings not answered in time while the server acknowledged our stanzas
        self._client: slixmpp.ClientXMPP | None = None
        self._online = asyncio.Event()
        self._session_changed = asyncio.Condition()
        self._closing = False
        self._retry: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: dict[str, tuple[str, asyncio.Future[Any]]] = {}
        self._log_limit = LogLimit()  # lines that other people's traffic causes
        self._ack_due = False
        self._filters_seen: tuple[tuple[Any, ...], ...] = ()
        self._filters_sync = False

    # -- life cycle ---------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self._online.is_set()

    def start(self) -> None:
        if self._client is not None:
            raise RuntimeError("transport already started")
        self._client = self._make_client()
        self._connect()
        if self.keepalive > 0:
            self._spawn(self._keepalive_loop())

    def _make_client(self) -> slixmpp.ClientXMPP:
        cfg = self.config
        client = slixmpp.ClientXMPP(self.jid, cfg.password)
        if cfg.stream_management:
            self._enable_stream_management(client)
        client.auto_authorize = None  # we decide, in _on_subscribe
        client.auto_subscribe = False
        client.enable_direct_tls = False
        client.enable_starttls = cfg.tls != "off"
        client.enable_plaintext = True  # TCP first; STARTTLS upgrades it unless tls=off
        if cfg.tls != "required":
            client.plugin["feature_mechanisms"].unencrypted_scram = True
        if cfg.ca_file:
            client.ca_certs = Path(cfg.ca_file)
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
        # Last of the incoming filters (after XEP-0198 has counted the stanza): API requests
        # and answers to our own calls are taken here, before slixmpp tests the stanza
        # against every handler it has.
        self._iq_tag = f"{{{client.default_ns}}}iq"
        client.add_filter("in", self._take_ours)
        _ack_each_read(client)
        return client

    def _enable_stream_management(self, client: slixmpp.ClientXMPP) -> None:
        """XEP-0198, with acks answered at the end of the event-loop pass.

        Prosody asks for an ack whenever it has unacknowledged stanzas and no request out
        (smacks_max_unacked_stanzas = 0). One answer per loop pass covers every ``<r/>`` read
        in it, and rides in the same write as an answer we send in that pass
        (``_send_now``), so acks cost no extra stanza under load. They must not wait longer:
        with Nagle on the server (its default), a lone ``<r/>`` left unanswered holds the
        server's next write to us until we send something; a 20 ms ack delay made every
        sequential call take 22 ms on a stock Prosody (bench/RESULTS.md, 2026-12-03).
        """
        client.register_plugin("xep_0198", {"window": 20})
        client.add_event_handler("sm_enabled", lambda _e: self._set_resumable(True))
        client.add_event_handler("sm_disabled", lambda _e: self._set_resumable(False))
        client.remove_handler("Stream Management Request Ack")
        client.register_handler(
            Callback("qe-sm-request-ack", _ChildMatcher(_SM_REQUEST_ACK), self._on_ack_request, instream=True)
        )

    def _connect(self) -> None:
        self._retry = None
        if self._closing or self.fatal or self._client is None:
            return
        log.debug("connecting %s to %s:%s", self.jid, self.config.host, self.config.port)
        self._client.connect(self.config.host, self.config.port)

    def _schedule_reconnect(self, why: str) -> None:
        if self._closing or self.fatal or self._retry is not None:
            return
        delay = self.backoff.next_delay()
        log.info("%s: %s; reconnecting in %.1f s", self.jid, why, delay)
        self._retry = asyncio.get_running_loop().call_later(delay, self._connect)

    async def close(self, timeout: float = 5.0) -> None:
        if self._closing:
            return
        self._closing = True
        if self._retry is not None:
            self._retry.cancel()
        for task in list(self._tasks):
            task.cancel()
        client = self._client
        if client is None:
            return
        client.cancel_connection_attempt()
        if client.transport is not None:
            try:
                await asyncio.wait_for(client.disconnect(wait=min(2.0, timeout)), timeout)
            except (TimeoutError, asyncio.CancelledError):
                client.abort()
        self._online.clear()
        # slixmpp keeps a send-filter task per client; end it so no task outlives us
        run_filters = getattr(client, "_run_out_filters", None)
        if run_filters is not None and not run_filters.done():
            run_filters.cancel()
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
        assert self._client is not None
        if self.config.tls == "required" and not self._encrypted():
            self._fail("the server did not offer TLS and QE_TLS=required (use QE_TLS=optional to allow it)")
            return
        self.sessions += 1
        self.backoff.reset()
        self._client.send_presence()
        self._online.set()
        self._spawn(self._notify_session())
        log.info("%s online (session %d)", self.jid, self.sessions)

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
        self.resumptions += 1
        self.backoff.reset()
        self._online.set()
        self._spawn(self._notify_session())
        log.info("%s resumed its session (XEP-0198)", self.jid)

    def _on_disconnected(self, reason: Any) -> None:
        self._online.clear()
        self._schedule_reconnect(f"disconnected ({reason or 'connection lost'})")

    def _on_connection_failed(self, error: Any) -> None:
        # stop slixmpp's own retry loop: we retry with our backoff instead
        if self._client is not None:
            self._client.cancel_connection_attempt()
        if self.fail_fast and self.sessions == 0:
            self._fail(f"cannot reach {self.config.host}:{self.config.port} ({error})", NotConnected)
            return
        self._schedule_reconnect(f"cannot reach {self.config.host}:{self.config.port} ({error})")

    def _on_mechanism_refused(self, _event: Any) -> None:
        self._password_refused = True

    def _on_failed_auth(self, _event: Any) -> None:
        if self.sessions == 0:
            if self._password_refused:
                self._fail(f"the server refused the password for {self.config.jid} (check QE_JID / QE_PASSWORD)")
            else:
                self._fail("the server offered no login method we accept (with QE_TLS=required it must offer "
                           "STARTTLS; QE_TLS=off/optional allows SCRAM without TLS)")
        else:
            log.error("%s: authentication failed on reconnect; will retry", self.jid)
            if self._client is not None:
                self._client.abort()

    def _on_untrusted_certificate(self, error: Any) -> None:
        reason = (f"the TLS certificate of {self.config.domain} is not trusted ({error}); "
                  "if the server uses a private CA, set QE_CA_FILE to its certificate")
        if self.sessions == 0:
            self._fail(reason, NotConnected)
        else:  # it was trusted before: maybe a rotation in progress; keep trying, loudly
            log.error("%s: %s", self.jid, reason)
            if self._client is not None:
                self._client.abort()

    def _on_stream_error(self, error: Any) -> None:
        condition = error["condition"]
        if condition == "conflict":
            self._fail(f"another client logged in as {self.jid} and took over this resource")
        else:
            log.warning("%s: stream error %s %s", self.jid, condition, error["text"])

    def _fail(self, reason: str, kind: type[CallError] = AuthenticationFailed) -> None:
        """A condition retrying cannot fix: stop reconnecting and tell the owner."""
        if self.fatal:
            return
        self.fatal = reason
        self._fatal_type = kind
        log.error("%s: %s", self.jid, reason)
        self._online.set()  # wake waiters so they see `fatal`
        self._online.clear()
        if self._client is not None:
            self._client.cancel_connection_attempt()
            self._client.abort()
        if self.on_fatal is not None:
            self.on_fatal(reason)

    async def wait_online(self, timeout: float) -> None:
        if self.fatal:
            raise self._fatal_type(self.fatal)
        if self._online.is_set():
            return
        try:
            await asyncio.wait_for(self._online.wait(), timeout)
        except TimeoutError:
            raise NotConnected(
                f"not connected to {self.config.host}:{self.config.port} within {timeout:g} s"
            ) from None
        if self.fatal:
            raise self._fatal_type(self.fatal)

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
            return stanza
        kind = xml.get("type")
        api = None
        if kind == "set" or kind == "get":
            api = xml.find(_API_TAG)
            if api is None:
                return stanza
        elif (kind != "result" and kind != "error") or xml.get("id") not in self._pending:
            return stanza
        if _slixmpp_log.isEnabledFor(logging.DEBUG):
            _slixmpp_log.debug("RECV: %s", stanza)  # what slixmpp logs for the stanzas it routes
        try:
            if api is None:
                self._on_answer(stanza)
            elif self.on_request is not None:
                # str(JID(...)): the sender as slixmpp normalises it (what iq["from"] gives)
                self.on_request(xml.get("id", ""), str(JID(xml.get("from", ""))), api.text or "")
        except Exception as exc:  # as slixmpp does for a handler that raises: an error reply
            stanza.exception(exc)
        return None

    def _on_ack_request(self, _request: Any) -> None:
        if not self._ack_due:
            self._ack_due = True
            asyncio.get_running_loop().call_soon(self._send_ack)

    def _send_ack(self) -> None:
        """The ack the server asked for, unless an answer written meanwhile carried it."""
        client = self._client
        if self._ack_due and client is not None and client.transport is not None:
            self._ack_due = False
            client.send_raw(_ack_xml(client.plugin["xep_0198"].handled))  # every stanza handled so far

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
            self.on_message(str(msg["from"]), body)

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
            self._send_now(Iq(client, xml, recv=True))
            return
        iq = client.Iq()
        iq["id"] = answer.id
        iq["to"] = answer.to
        iq["type"] = "error"
        iq["error"]["condition"] = answer.condition
        iq["error"]["type"] = _ERROR_TYPES.get(answer.condition, "cancel")
        iq["error"]["text"] = xml_safe(answer.message)
        self._send_now(_with_api(iq, answer.payload))

    def _send_now(self, stanza: Any) -> None:
        """``client.send(stanza)``, written at once when slixmpp's send queue is idle.

        slixmpp's ``send()`` only queues: a task takes the stanza on the next pass of the
        event loop, runs the outgoing filters (XEP-0198 counts it there), serialises it and
        writes it. When that queue is empty and every filter is synchronous, doing the same
        steps here, in the same order, gives the same bytes and the same XEP-0198 accounting
        one loop pass earlier; anything else (stanzas already queued, an async filter, no
        session or no connection yet) goes through ``send()`` as before, so order is kept.
        The slixmpp internals read here are looked up defensively: a slixmpp without them
        gets ``send()``.
        """
        client = self._client
        assert client is not None
        filters = getattr(client, "_XMLStream__filters", None)
        queue = getattr(client, "waiting_queue", None)
        if (
            filters is None
            or queue is None
            or not getattr(client, "_session_started", False)
            or client.transport is None
            or not queue.empty()
            or getattr(client, "_XMLStream__slow_tasks", True)
            or not self._sync_filters(filters)
        ):
            client.send(stanza)
            return
        try:
            data = stanza
            for mode in ("out", "out_sync", "out_sce"):
                for out_filter in filters[mode]:
                    if isinstance(data, StanzaBase):  # as run_filters: sync filters see stanzas only
                        data = out_filter(data)
                    if data is None:
                        return
            if isinstance(data, StanzaBase):
                text = tostring(data.xml, xmlns=client.default_ns, stream=client, top_level=True)
                if self._ack_due:  # the XEP-0198 answer rides in the same write
                    self._ack_due = False
                    text += _ack_xml(client.plugin["xep_0198"].handled)
                client.send_raw(text)
            elif isinstance(data, (str, bytes)):
                client.send_raw(data)
        except Exception:  # as slixmpp's send queue does: log it, keep the session
            log.error("Exception raised in send queue:", exc_info=True)

    def _sync_filters(self, filters: dict[str, list[Any]]) -> bool:
        """True when no outgoing filter is a coroutine function (checked again only when the
        filter lists change)."""
        try:
            key = (tuple(filters["out"]), tuple(filters["out_sync"]), tuple(filters["out_sce"]))
        except (KeyError, TypeError):  # not the filter lists this was written for
            return False
        if key != self._filters_seen:
            self._filters_seen = key
            self._filters_sync = not any(
                inspect.iscoroutinefunction(f) for f in (*key[0], *key[2])  # out_sync: always sync
            )
        return self._filters_sync

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

    async def request(self, to: str, text: str, timeout: float) -> str | None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        await self.wait_online(timeout)
        assert self._client is not None
        iq = self._client.make_iq_set(ito=to)
        _with_api(iq, text)
        try:
            answer = await self._send_iq(iq, to, max(0.001, end - loop.time()))
        except TimeoutError:
            raise CallTimeout(f"no answer from {to} within {timeout:g} s") from None
        if answer.xml.get("type") == "error":
            err = decode_error(answer["error"]["condition"], _api_text(answer))
            raise RemoteError(err.code, err.message)
        return _api_text(answer)

    def send_message(self, to: str, body: str) -> None:
        if self._client is not None:
            self._client.send_message(mto=JID(to), mbody=body, mtype="chat")

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
