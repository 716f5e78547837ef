"""The qe-worker wire protocol as plain objects: no sockets, no slixmpp.

An API call is an IQ ``set`` to the worker's full JID carrying one ``<api xmlns=NS>`` element
whose text is a JSON object ``{"cmd": str, "body": object, "deadline": int?, "app": str?,
"trace": object?}`` (RFC 8259 JSON: no ``NaN``/``Infinity``, nested at most ``MAX_DEPTH``
levels; keys we do not know are ignored). The answer is
an IQ ``result`` whose ``<api>`` text is the JSON result, or an IQ ``error`` with a standard
XMPP condition plus an ``<api>`` element holding ``{"error": {"code": str, "message": str}}``.
``docs/protocol.md`` is the normative description; this module is its reference
implementation, so that the adapter only moves strings in and out.

Why JSON text inside XML: any XMPP library in any language can send it, and JSON keeps the
types (numbers, booleans, nulls) that QE's handlers expect.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "CONDITIONS",
    "DEFAULT_MAX_PAYLOAD",
    "MAX_DEPTH",
    "MAX_TRACEPARENT",
    "MAX_TRACESTATE",
    "NS",
    "ApiError",
    "ApiRequest",
    "ApiResult",
    "Progress",
    "ProtocolError",
    "decode_error",
    "decode_progress",
    "decode_request",
    "decode_result",
    "encode_error",
    "encode_progress",
    "encode_request",
    "encode_result",
    "now_ms",
    "wire_size",
    "xml_safe",
]

NS: Final = "urn:qe:worker:api:1"
"""Namespace of the ``<api/>`` payload element."""

DEFAULT_MAX_PAYLOAD: Final = 240_000
"""Largest ``<api/>`` text we send or accept, in bytes as it appears on the wire (UTF-8,
after XML escaping: see ``wire_size``). Below Prosody's default ``c2s_stanza_size_limit`` of
256 KiB with room for the IQ envelope: a larger stanza makes Prosody close the sender's whole
stream."""

_MAX_MS: Final = 2**53  # JSON-safe integer range; also rejects 400-digit numbers

MAX_DEPTH: Final = 64
"""Deepest JSON nesting accepted in a request (guards the decoder and the handler). The
top-level object is depth 1 and each object or array inside another adds one; scalars
(strings, numbers, true/false/null) do not count, so ``{"a": {}}`` and ``{"a": {"b": 1}}``
both have depth 2."""

# Error codes (our JSON ``code``) and the XMPP condition each travels with.
CONDITIONS: Final[dict[str, str]] = {
    "bad-request": "bad-request",
    "unknown-command": "item-not-found",
    "not-found": "item-not-found",
    "forbidden": "forbidden",
    "handler-error": "internal-server-error",
    "bad-result": "internal-server-error",
    "too-large": "not-acceptable",
    "expired": "remote-server-timeout",
    "unavailable": "service-unavailable",
    "interrupted": "recipient-unavailable",
    "busy": "resource-constraint",
}


def now_ms() -> int:
    """Wall-clock milliseconds since the Unix epoch (deadlines cross machines)."""
    return time.time_ns() // 1_000_000


class ProtocolError(Exception):
    """A request that cannot be served; ``code`` is one of ``CONDITIONS``."""

    def __init__(self, code: str, message: str) -> None:
        if code not in CONDITIONS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(code, message)
        self.code = code
        self.message = message

    @property
    def condition(self) -> str:
        return CONDITIONS[self.code]

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """A decoded, validated API call. ``body`` is always a dict (QE handlers index it)."""

    id: str
    sender: str
    cmd: str
    body: dict[str, Any] = field(default_factory=dict)
    deadline_ms: int | None = None
    app: str | None = None
    trace: dict[str, str] | None = None
    """W3C trace context (``traceparent``, maybe ``tracestate``) for tracing only; None when
    the caller sent none or one that is not well formed."""

    def expired(self, at_ms: int | None = None) -> bool:
        return self.deadline_ms is not None and (now_ms() if at_ms is None else at_ms) >= self.deadline_ms

    def remaining_s(self, at_ms: int | None = None) -> float | None:
        """Seconds left before the deadline, or None when the caller set none."""
        if self.deadline_ms is None:
            return None
        return (self.deadline_ms - (now_ms() if at_ms is None else at_ms)) / 1000.0


@dataclass(frozen=True, slots=True)
class ApiResult:
    """A successful answer: ``payload`` is the encoded ``<api/>`` text."""

    id: str
    to: str
    payload: str


@dataclass(frozen=True, slots=True)
class ApiError:
    """A failed answer, ready to send as an IQ error."""

    id: str
    to: str
    code: str
    message: str

    @property
    def condition(self) -> str:
        return CONDITIONS[self.code]

    @property
    def payload(self) -> str:
        return encode_error(self.code, self.message)


_ESCAPES: Final = ((b"&", 4), (b"<", 3), (b">", 3), (b'"', 5), (b"'", 5))


def wire_size(text: str) -> int:
    """Bytes ``text`` takes inside an XML element once escaped, as slixmpp escapes it: its
    UTF-8 length, with ``&`` counted as 5 bytes (``&amp;``), ``<`` and ``>`` as 4, ``"`` and
    ``'`` as 6 (JSON is full of quotes, so this matters). A lone surrogate, which our encoder
    never sends raw, counts 3 bytes instead of failing."""
    raw = text.encode("utf-8", "surrogatepass")
    return len(raw) + sum(raw.count(ch) * extra for ch, extra in _ESCAPES)


# UTF-8 on the wire (ensure_ascii=False): a "\u20ac" escape is 6 bytes where the character is
# 3, and the size limit counts bytes. What JSON may hold but XML 1.0 may not carry is escaped:
# the encoder already escapes U+0000-U+001F; lone surrogates and U+FFFE/U+FFFF are left, and
# raw they would make the server close our whole stream.
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_NOT_IN_XML: Final = re.compile("[\ud800-\udfff\ufffe\uffff]")


def _u_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _dumps(value: Any) -> str:
    """Compact JSON that is valid XML 1.0 text. The characters ``_NOT_IN_XML`` matches can
    only stand inside JSON strings (everything else the encoder writes is ASCII), where
    ``\\uXXXX`` is the same string to any JSON decoder."""
    text = _ENCODER.encode(value)  # json.dumps with options builds a new encoder per call
    return text if text.isascii() else _NOT_IN_XML.sub(_u_escape, text)


def _check_size(text: str, max_payload: int, what: str) -> str:
    if len(text) * 6 <= max_payload:  # no character takes more than 6 bytes escaped
        return text
    size = wire_size(text)
    if size > max_payload:
        raise ProtocolError("too-large", f"{what} is {size} bytes on the wire, the limit is {max_payload}")
    return text


def encode_request(
    cmd: str,
    body: dict[str, Any] | None = None,
    *,
    deadline_ms: int | None = None,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    app: str | None = None,
    trace: dict[str, str] | None = None,
) -> str:
    """The ``<api/>`` text of a call (``app``: the caller's service, for the worker's
    ``specs.app``; ``trace``: W3C trace context, ``{"traceparent": ..., "tracestate": ...}``).
    Raises ``ValueError`` for a bad cmd/body and ``ProtocolError('too-large')`` before
    anything is sent."""
    if not isinstance(cmd, str) or not cmd:
        raise ValueError(f"cmd must be a non-empty string, not {cmd!r}")
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ValueError(f"body must be a dict (JSON object), not {type(body).__name__}")
    doc: dict[str, Any] = {"cmd": cmd, "body": body}
    if deadline_ms is not None:
        doc["deadline"] = int(deadline_ms)
    if app is not None:
        doc["app"] = app
    if trace:
        doc["trace"] = trace
    try:
        text = _dumps(doc)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"body is not JSON-serialisable: {exc}") from None
    return _check_size(text, max_payload, "request")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a decoded JSON value as ``MAX_DEPTH`` defines it (objects and arrays
    only), iteratively (no recursion on hostile input); stops counting above ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, d = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if d > deepest:
            deepest = d
            if deepest > limit:
                return deepest
        stack.extend((v, d + 1) for v in children if isinstance(v, (dict, list)))
    return deepest


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _finite(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise ValueError(f"the number {literal[:40]} is beyond the range of a double")
    return value


# Python's json accepts NaN/Infinity/-Infinity and turns 1e400 into inf; neither is JSON a
# peer in another language can read back, and inf in a body would fail only later, as the
# handler's bad-result.
_DECODER: Final = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)


def _loads(text: str, what: str, max_depth: int | None = None) -> Any:
    """Strict JSON. ``max_depth`` only words the error for nesting deep enough to trip the
    decoder's own recursion guard (far beyond it): the limit itself is the caller's check."""
    try:
        return _DECODER.decode(text)
    except RecursionError:
        too_deep = "too deeply" if max_depth is None else f"deeper than {max_depth} levels"
        raise ProtocolError("bad-request", f"{what} is nested {too_deep}") from None
    except ValueError as exc:
        raise ProtocolError("bad-request", f"{what} is not valid JSON: {exc.args[0][:120]}") from None


def decode_request(
    iq_id: str,
    sender: str,
    text: str | None,
    *,
    iq_type: str = "set",
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> ApiRequest:
    """Validate an incoming ``<api/>`` text that came in an IQ of type ``iq_type``. Raises
    ``ProtocolError`` with the code to answer.

    Why an IQ ``get`` is refused, not run: a command may change state, and XMPP says a
    ``get`` only asks; accepting both would leave clients two ways to call and no rule."""
    if not iq_id:
        raise ProtocolError("bad-request", "the IQ has no id")
    if iq_type != "set":
        raise ProtocolError("bad-request", f"requests are IQ of type 'set', not {iq_type!r}")
    if not text:
        raise ProtocolError("bad-request", "empty <api/> element: expected a JSON object")
    _check_size(text, max_payload, "request")
    doc = _loads(text, "request", MAX_DEPTH)
    if not isinstance(doc, dict):
        raise ProtocolError("bad-request", "request must be a JSON object")
    # The bracket count is only a shortcut: brackets inside strings can raise it, never lower
    # it below the real depth, so the verdict is _depth's alone.
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(doc, MAX_DEPTH) > MAX_DEPTH:
        raise ProtocolError("bad-request", f"request is nested deeper than {MAX_DEPTH} levels")
    cmd = doc.get("cmd")
    if not isinstance(cmd, str) or not cmd or len(cmd) > 200:
        raise ProtocolError("bad-request", "'cmd' must be a non-empty string of at most 200 characters")
    body = doc.get("body", {})
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ProtocolError("bad-request", "'body' must be a JSON object")
    deadline = doc.get("deadline")
    if isinstance(deadline, float) and deadline.is_integer():  # 1.7e12: an integer written as a float
        deadline = int(deadline)
    if deadline is not None and (
        isinstance(deadline, bool) or not isinstance(deadline, int) or not -_MAX_MS <= deadline <= _MAX_MS
    ):
        raise ProtocolError("bad-request", "'deadline' must be an integer: milliseconds since the Unix epoch")
    app = doc.get("app")
    if app is not None and not isinstance(app, str):
        raise ProtocolError("bad-request", "'app' must be a string: the caller's service")
    trace = doc.get("trace")
    return ApiRequest(id=iq_id, sender=sender, cmd=cmd, body=body, deadline_ms=deadline, app=app,
                      trace=None if trace is None else _trace_context(trace))


MAX_TRACEPARENT: Final = 128
"""Longest ``traceparent`` kept (version 00 is 55 characters; later versions may add fields)."""
MAX_TRACESTATE: Final = 512
"""Longest ``tracestate`` kept (W3C's advice for what a vendor must propagate)."""


def _trace_context(value: Any) -> dict[str, str] | None:
    """The ``trace`` key as the carrier a W3C propagator reads, or None. Never an error: the
    key is optional and only for tracing, so a malformed one is dropped, not refused (the
    propagator checks the format itself and ignores what does not parse)."""
    if not isinstance(value, dict):
        return None
    parent = value.get("traceparent")
    if not isinstance(parent, str) or not 0 < len(parent) <= MAX_TRACEPARENT:
        return None
    state = value.get("tracestate")
    if isinstance(state, str) and 0 < len(state) <= MAX_TRACESTATE:
        return {"traceparent": parent, "tracestate": state}
    return {"traceparent": parent}


def encode_result(request: ApiRequest, result: Any, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> ApiResult | ApiError:
    """Encode a handler's return value; a value that cannot travel becomes an ``ApiError``
    so the caller learns why instead of waiting for a timeout."""
    if not isinstance(result, dict):
        return ApiError(request.id, request.sender, "bad-result",
                        f"handler for {request.cmd!r} returned {type(result).__name__}, expected a dict")
    try:
        text = _dumps(result)
    except (TypeError, ValueError) as exc:
        return ApiError(request.id, request.sender, "bad-result",
                        f"result of {request.cmd!r} is not JSON-serialisable: {exc}")
    try:
        _check_size(text, max_payload, "result")
    except ProtocolError as exc:
        return ApiError(request.id, request.sender, exc.code, exc.message)
    return ApiResult(request.id, request.sender, text)


_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids (control characters, U+FFFE/U+FFFF,
    lone surrogates), which would make the server close our whole stream."""
    return _XML_INVALID.sub("\ufffd", text)


def encode_error(code: str, message: str) -> str:
    return _dumps({"error": {"code": code, "message": message[:1000]}})


def decode_result(text: str | None) -> dict[str, Any]:
    """The dict a worker answered. An empty ``<api/>`` is ``{}``."""
    if not text:
        return {}
    try:
        doc = _loads(text, "result")
    except ProtocolError as exc:
        raise ProtocolError("bad-result", exc.message) from None
    if not isinstance(doc, dict):
        raise ProtocolError("bad-result", "result is not a JSON object")
    return doc


def decode_error(condition: str, text: str | None) -> ProtocolError:
    """Turn an IQ error into a ``ProtocolError``; errors from the server itself (no
    ``<api/>`` payload) are mapped from their XMPP condition."""
    if text:
        try:
            err = json.loads(text).get("error", {})
            code, message = str(err.get("code", "")), str(err.get("message", ""))
            if code in CONDITIONS:
                return ProtocolError(code, message)
        except (ValueError, AttributeError, RecursionError):
            pass
    by_condition = {
        "service-unavailable": ("unavailable", "the worker is not online"),
        "item-not-found": ("unavailable", "no such worker"),
        # Prosody bounces what a session did not acknowledge when it ends: it may have arrived
        "recipient-unavailable": ("interrupted", "the worker went away; it may have received the request"),
        "forbidden": ("forbidden", "not allowed"),
        "not-authorized": ("forbidden", "not allowed"),
        "remote-server-timeout": ("expired", "the request's deadline passed"),
        "resource-constraint": ("busy", "the worker is busy"),
        "bad-request": ("bad-request", "the worker rejected the request"),
        "feature-not-implemented": ("unknown-command", "the peer is not a qe-worker"),
    }
    code, message = by_condition.get(condition, ("handler-error", f"XMPP error: {condition}"))
    return ProtocolError(code, message)


# -- progress (worker -> caller, while a request runs) ----------------------------------------

MAX_PROGRESS_TEXT: Final = 1000
"""Longest progress text sent (longer ones are cut): a progress line, not a payload."""


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a running request is: ``fraction`` in [0, 1] (None when unknown) and a line
    of ``text``. Sent by ``await specs.progress(...)``; seen by ``Client.call(on_progress=)``."""

    fraction: float | None
    text: str = ""


def encode_progress(fraction: float | None, text: str = "") -> str:
    """The JSON of a ``<progress/>`` element. ``ValueError`` for a fraction outside [0, 1]
    or not a number; the text is cut to ``MAX_PROGRESS_TEXT`` characters."""
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be a number from 0 to 1 (or None), not {fraction!r}")
        fraction = float(fraction)
    return _dumps({"fraction": fraction, "text": str(text)[:MAX_PROGRESS_TEXT]})


def decode_progress(text: str | None) -> Progress | None:
    """The ``Progress`` a ``<progress/>`` element carries, or None when it carries nothing
    usable (a peer's bad progress is ignored, never an error of the call)."""
    if not text or len(text) > 4 * MAX_PROGRESS_TEXT + 100:
        return None
    try:
        doc = _loads(text, "progress")
    except ProtocolError:
        return None
    if not isinstance(doc, dict):
        return None
    fraction, line = doc.get("fraction"), doc.get("text", "")
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                 or not 0.0 <= fraction <= 1.0):
        return None
    if not isinstance(line, str):
        return None
    return Progress(None if fraction is None else float(fraction), line[:MAX_PROGRESS_TEXT])
