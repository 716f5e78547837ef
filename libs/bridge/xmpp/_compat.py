"""Every use of slixmpp's internals, in one place.

The request path needs things slixmpp has no public API for: writing a stanza in the same
loop pass (its ``send()`` only queues), serialising a large payload without its
character-by-character escape, answering XEP-0198 ack requests on our own schedule, ACKing
each read at the TCP level, ending its send task, and computing SCRAM's salted password
once per process. Each helper says what it reads, and
falls back to slixmpp's public behaviour when the internals are not what it was written
against: a slixmpp that changed is slower here, never wrong.

Verified with the slixmpp versions in ``VERIFIED`` (the fast-path unit tests and the
stock-server latency test passed on each); pyproject.toml pins the same range, and
tests/unit/test_slixmpp_compat.py fails when the installed slixmpp is outside it.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import socket
from collections.abc import Callable
from typing import Any
from xml.etree.ElementTree import Element

import slixmpp
from slixmpp.stanza import Iq
from slixmpp.xmlstream import StanzaBase, tostring
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher.base import MatcherBase

__all__ = [
    "QUICKACK",
    "VERIFIED",
    "FastWriter",
    "ack_each_read",
    "answer_ack_requests",
    "cache_scram",
    "end_send_task",
    "escape",
    "flat_iq_text",
    "received_iq",
    "version_verified",
]

log = logging.getLogger(__name__)

VERIFIED: tuple[str, str] = ("1.17", "1.18")
"""slixmpp versions this module was verified with: ``VERIFIED[0] <= version < VERIFIED[1]``."""

QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
"""``TCP_QUICKACK`` where the kernel has it (Linux), else None."""

_tostring_module = importlib.import_module("slixmpp.xmlstream.tostring")  # the package re-exports a function of that name
_slow_escape: Callable[..., str] = _tostring_module.escape
_SM_REQUEST_ACK = "{urn:xmpp:sm:3}r"


def escape(text: str) -> str:
    """What slixmpp's ``escape`` gives (it maps character by character in a Python generator:
    ~20 ms for a 100 KB JSON payload); ``str.replace`` runs in C."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


class _ChildMatcher(MatcherBase):
    """``MatchXPath("{ns}tag")`` without its cost (a wrapper element and an ElementPath search
    for every stanza)."""

    def __init__(self, tag: str) -> None:
        super().__init__(None)
        self._tag = tag

    def match(self, stanza: Any) -> bool:
        return bool(stanza.xml.tag == self._tag)


def answer_ack_requests(client: slixmpp.ClientXMPP, callback: Callable[[Any], None]) -> None:
    """XEP-0198 ``<r/>`` goes to ``callback`` instead of slixmpp's handler, which answers each
    one at once (reads the plugin's handler name)."""
    client.remove_handler("Stream Management Request Ack")
    client.register_handler(Callback("qe-sm-request-ack", _ChildMatcher(_SM_REQUEST_ACK), callback, instream=True))


def ack_each_read(client: slixmpp.ClientXMPP) -> None:
    """Have the kernel acknowledge every read at once (``TCP_QUICKACK``, Linux; elsewhere
    nothing changes). Wraps the client's ``data_received`` (asyncio looks it up on the
    instance).

    A server with Nagle's algorithm on (Prosody's default: only ``network_settings = { nagle
    = false }`` turns it off) holds a small write while an earlier one is unacknowledged,
    and Linux delays the ACK of data nobody answers by up to 40 ms. So a stanza we do not
    answer (the server's XEP-0198 ``<a/>``, a presence, a chat message) held the next one
    (a request, an answer) for 40 ms: 3-4 % of calls on a stock server (bench_bridge.py).
    When we answer, the ACK rides on our data as before; the flag matters when we do not.
    It is not sticky (the kernel falls back to delayed ACKs), hence after each read.
    """
    if QUICKACK is None:
        return
    receive = client.data_received
    flag = QUICKACK

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


def cache_scram(client: slixmpp.ClientXMPP, salted_password: Callable[[str, bytes, bytes, int], bytes]) -> None:
    """Have this client's SCRAM login take ``Hi(password, salt, iterations)`` from
    ``salted_password(hash_name, password, salt, iterations)`` (``_shared.ScramCache``)
    instead of slixmpp's pure-Python loop, which gives the same bytes ~20 times slower.

    Wraps the instance's ``feature_mechanisms._send_auth`` (where slixmpp picks the mechanism,
    ``plugin.mech``) and sets ``Hi`` on a chosen SCRAM mechanism (reads its ``hash``); any
    other mechanism, or a plugin without these names, is left as it is.
    """
    plugin = client.plugin.get("feature_mechanisms", None)
    send_auth = getattr(plugin, "_send_auth", None)
    if send_auth is None:
        return

    def _send_auth(*args: Any, **kwargs: Any) -> Any:
        result = send_auth(*args, **kwargs)
        mech = getattr(plugin, "mech", None)
        hash_ = getattr(mech, "hash", None)
        if mech is not None and type(mech).__name__ == "SCRAM" and callable(hash_) and callable(getattr(mech, "Hi", None)):
            name = hash_().name

            def hi(text: str | bytes, salt: bytes, iterations: int) -> bytes:
                password = text if isinstance(text, bytes) else text.encode("utf-8")
                return salted_password(name, password, salt, iterations)

            mech.Hi = hi
        return result

    plugin._send_auth = _send_auth  # type: ignore[method-assign]


def received_iq(client: slixmpp.ClientXMPP, xml: Element) -> Iq:
    """An ``Iq`` around ``xml`` as built (``recv=True``: slixmpp neither fills in defaults nor
    re-parses it), for a stanza whose XML we built whole."""
    return Iq(client, xml, recv=True)  # type: ignore[no-untyped-call]  # slixmpp is untyped


def end_send_task(client: slixmpp.ClientXMPP) -> None:
    """Cancel the send-filter task slixmpp keeps per client (``_run_out_filters``), which
    ``disconnect()`` leaves running, so no task outlives the client."""
    task = getattr(client, "_run_out_filters", None)
    if task is not None and not task.done():
        task.cancel()


def flat_iq_text(xml: Element, default_ns: str) -> str | None:
    """What ``tostring(xml, xmlns=default_ns, top_level=True)`` gives for the IQs of our
    protocol (plain attributes, one namespaced child holding only text), built with
    ``escape``; None for any other shape. slixmpp's own escape would cost ~6 us a stanza
    and ~20 ms for a 100 KB payload; replacing it process-wide would change slixmpp for every
    other client too."""
    if xml.tag != f"{{{default_ns}}}iq" or xml.text or len(xml) != 1:
        return None
    child = xml[0]
    if len(child) or child.attrib or child.tail or not child.tag.startswith("{") \
            or child.tag.startswith(f"{{{default_ns}}}"):
        return None
    attrs = []
    for name, value in xml.attrib.items():
        if name.startswith("{"):  # xml:lang and the like: leave them to slixmpp
            return None
        attrs.append(f' {name}="{escape(value)}"')
    ns, _, local = child.tag[1:].partition("}")
    inner = f'<{local} xmlns="{ns}">{escape(child.text)}</{local}>' if child.text else f'<{local} xmlns="{ns}" />'
    return f'<iq{"".join(attrs)}>{inner}</iq>'


class FastWriter:
    """``client.send(stanza)``, written at once when slixmpp's send queue is idle.

    slixmpp's ``send()`` only queues: a task takes the stanza on the next pass of the event
    loop, runs the outgoing filters (XEP-0198 counts it there), serialises it and writes it.
    When that queue is empty and every filter is synchronous, doing the same steps here, in
    the same order, gives the same bytes and the same XEP-0198 accounting one loop pass
    earlier; anything else (stanzas already queued, an async filter, no session or no
    connection yet, internals not found) goes through ``send()``, so order is kept.

    Reads ``_XMLStream__filters``, ``_XMLStream__slow_tasks``, ``waiting_queue`` and
    ``_session_started``.
    """

    def __init__(self, client: slixmpp.ClientXMPP) -> None:
        self._client = client
        self._filters_seen: tuple[tuple[Any, ...], ...] = ()
        self._filters_sync = False

    def write(self, stanza: StanzaBase, trailer: Callable[[], str] | None = None) -> None:
        """Write ``stanza`` now if slixmpp's queue allows, else queue it with ``send()``.
        ``trailer()`` gives text to write right after the stanza in the same write, and is
        called only then."""
        client = self._client
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
            data: Any = stanza
            for mode in ("out", "out_sync", "out_sce"):
                for out_filter in filters[mode]:
                    if isinstance(data, StanzaBase):  # as run_filters: sync filters see stanzas only
                        data = out_filter(data)
                    if data is None:
                        return
            if isinstance(data, StanzaBase):
                text = self._serialise(data)
                if trailer is not None:
                    text += trailer()
                client.send_raw(text)
            elif isinstance(data, (str, bytes)):
                client.send_raw(data)
        except Exception:  # as slixmpp's send queue does: log it, keep the session
            log.error("Exception raised in send queue:", exc_info=True)

    def _serialise(self, stanza: StanzaBase) -> str:
        client = self._client
        return flat_iq_text(stanza.xml, client.default_ns) or str(
            tostring(stanza.xml, xmlns=client.default_ns, stream=client, top_level=True))

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


def version_verified(version: str = slixmpp.__version__) -> bool:
    """Whether ``version`` is in the ``VERIFIED`` range (compared numerically)."""
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(part) for part in v.split(".")[:3] if part.isdigit())
    return key(VERIFIED[0]) <= key(version) < key(VERIFIED[1])
