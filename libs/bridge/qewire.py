"""QE's chat wire format, as plain functions: no sockets, no slixmpp.

QE clients send an API call as a chat message whose body is JSON, zlib-deflated (RFC 1950:
with the zlib header and Adler-32 trailer, as ``zlib.compress`` and pako's ``deflate`` write
it), then base64-encoded (RFC 4648, standard alphabet, padded, no line breaks)::

    {"mid": "<10 letters/digits>", "api": "<cmd>", ...the body's keys}

and the reply goes back the same way, as ``{...result, "mid": mid}``; an error is QE-style
``{"code": <negative>, "msg": ..., "mid": mid}`` (``QE_CODES``). ``docs/protocol.md``
(section "QE's chat wire format") is the normative description.

Why decoding can say "not QE at all" (``None``) as well as "bad" (``QeWireError``): plain
chat text must reach ``msgreceiver`` untouched, so only a body that is base64 of a complete,
checksum-verified zlib stream is taken for QE's format (or one that inflates beyond
``max_payload``: nothing typed by hand does); what it holds must then be a valid call.

The JSON is checked as strictly as ``protocol.py`` checks requests (RFC 8259: no
``NaN``/``Infinity``, at most ``MAX_DEPTH`` levels), and inflating stops at ``max_payload``
bytes, so that a small message cannot make the worker hold gigabytes (a zlib bomb).
"""

from __future__ import annotations

import base64
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Final

from .protocol import DEFAULT_MAX_PAYLOAD, MAX_DEPTH, ProtocolError, _depth, _dumps, _loads

__all__ = [
    "MAX_API",
    "MAX_MID",
    "QE_CODES",
    "QeCall",
    "QeWireError",
    "decode",
    "decode_doc",
    "encode",
    "encode_error",
    "encode_reply",
]

QE_CODES: Final[dict[str, int]] = {
    "unknown-command": -1000,  # QE's own "no api handler"
    "bad-request": -1001,
    "forbidden": -1002,
    "not-found": -1003,
    "handler-error": -1004,
    "bad-result": -1005,
    "too-large": -1006,
    "expired": -1007,
    "unavailable": -1008,
    "busy": -1009,
    "interrupted": -1010,
}
"""The ``code`` of a QE-style error reply for each of our error codes (the keys of
``protocol.CONDITIONS``, all of them). QE answers an unknown command with -1000 "no api
handler"; the others follow it."""

MAX_MID: Final = 64
"""Longest ``mid`` accepted (QE sends 10 characters; it is echoed back as is)."""

MAX_API: Final = 200
"""Longest ``api`` (command name) accepted, as for ``cmd`` in our own protocol."""

_BASE64: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}")  # and a multiple of 4 long (no group repeats: O(1) memory)
_MIN_ZLIB: Final = 8
"""Bytes of the shortest complete zlib stream (header 2, empty deflate block 2, Adler-32 4)."""
_MSG_CHARS: Final = 1000


class QeWireError(ProtocolError):
    """A message in QE's wire format that is not a valid call. ``mid`` is the call's id when
    it could be read, so that the error can be answered (``encode_error``); else None."""

    def __init__(self, code: str, message: str, mid: str | None = None) -> None:
        super().__init__(code, message)
        self.mid = mid


@dataclass(frozen=True, slots=True)
class QeCall:
    """A decoded call: ``cmd`` is QE's ``api``; ``body`` holds every other key of the
    message (QE puts the arguments next to ``mid`` and ``api``)."""

    mid: str
    cmd: str
    body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _valid_mid(self.mid):
            raise ValueError(f"mid must be a string of 1 to {MAX_MID} characters, not {self.mid!r}")
        if not isinstance(self.cmd, str) or not 0 < len(self.cmd) <= MAX_API:
            raise ValueError(f"cmd must be a string of 1 to {MAX_API} characters, not {self.cmd!r}")
        if not isinstance(self.body, dict) or "mid" in self.body or "api" in self.body:
            raise ValueError("body must be a dict without the keys 'mid' and 'api'")


def _valid_mid(mid: object) -> bool:
    return isinstance(mid, str) and 0 < len(mid) <= MAX_MID


def _inflate(text: str, max_payload: int) -> bytes | None:
    """The bytes a QE message carries, or None when ``text`` is not one: not base64, or not a
    complete zlib stream whose checksum matches. ``QeWireError('too-large')`` past
    ``max_payload`` bytes (checked while inflating, before the checksum can be)."""
    text = text.strip()
    if len(text) < 12 or len(text) % 4 or not _BASE64.fullmatch(text):  # 12: base64 of the shortest zlib stream
        return None
    raw = base64.b64decode(text)
    if len(raw) < _MIN_ZLIB:
        return None
    cmf, flg = raw[0], raw[1]
    if cmf & 0x0F != 8 or cmf >> 4 > 7 or (cmf << 8 | flg) % 31 or flg & 0x20:
        return None  # not a zlib header (deflate, window <= 32 KiB, no preset dictionary)
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(raw, max_payload + 1)
    except zlib.error:
        return None
    if len(data) > max_payload:
        raise QeWireError("too-large", f"the message inflates to more than {max_payload} bytes")
    if not inflater.eof or inflater.unused_data:
        return None  # cut short, or followed by other bytes
    return data


def decode_doc(text: str, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> dict[str, Any] | None:
    """The JSON object a message in QE's wire format carries; None if ``text`` is not in that
    format (e.g. plain chat). ``QeWireError`` for one that is but holds no valid JSON object:
    ``bad-request`` (not UTF-8, not JSON, not an object, nested deeper than ``MAX_DEPTH``),
    ``too-large`` (inflates beyond ``max_payload`` bytes)."""
    data = _inflate(text, max_payload)
    if data is None:
        return None
    try:
        json_text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise QeWireError("bad-request", "the message is not UTF-8 JSON") from None
    try:
        doc = _loads(json_text, "message", MAX_DEPTH)
    except ProtocolError as exc:
        raise QeWireError(exc.code, exc.message) from None
    if not isinstance(doc, dict):
        raise QeWireError("bad-request", "the message must be a JSON object")
    if json_text.count("{") + json_text.count("[") > MAX_DEPTH and _depth(doc, MAX_DEPTH) > MAX_DEPTH:
        raise QeWireError("bad-request", f"the message is nested deeper than {MAX_DEPTH} levels")
    return doc


def decode(text: str, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> QeCall | None:
    """The call a chat message body holds; None if the body is not in QE's wire format at all
    (hand it to ``msgreceiver`` as text). ``QeWireError`` (a ``ProtocolError``) for one that
    is, but is not a valid call: as ``decode_doc``, and ``bad-request`` for a missing or
    invalid ``mid`` (a string of 1 to ``MAX_MID`` characters) or ``api`` (1 to ``MAX_API``);
    the error carries the ``mid`` when it was valid."""
    doc = decode_doc(text, max_payload=max_payload)
    if doc is None:
        return None
    mid = doc.pop("mid", None)
    if not _valid_mid(mid):
        raise QeWireError("bad-request", f"'mid' must be a string of 1 to {MAX_MID} characters")
    cmd = doc.pop("api", None)
    if not isinstance(cmd, str) or not 0 < len(cmd) <= MAX_API:
        raise QeWireError("bad-request", f"'api' must be a string of 1 to {MAX_API} characters", mid)
    return QeCall(mid, cmd, doc)


def encode(doc: dict[str, Any], *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> str:
    """``doc`` as a chat message body in QE's wire format: compact UTF-8 JSON, deflated,
    base64. ``ValueError`` if ``doc`` is not a JSON object (``NaN`` and infinities
    included); ``QeWireError('too-large')`` if its JSON or the encoded text exceeds
    ``max_payload`` bytes (then a peer with the same limit could not read it, or the server
    would refuse the stanza)."""
    if not isinstance(doc, dict):
        raise ValueError(f"a message must be a dict (JSON object), not {type(doc).__name__}")
    try:
        data = _dumps(doc).encode("utf-8")  # lone surrogates are \\u escapes: always encodable
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the message is not JSON-serialisable: {exc}") from None
    if len(data) > max_payload:
        raise QeWireError("too-large", f"the message is {len(data)} bytes of JSON, the limit is {max_payload}")
    text = base64.b64encode(zlib.compress(data)).decode("ascii")
    if len(text) > max_payload:
        raise QeWireError("too-large", f"the message is {len(text)} bytes encoded, the limit is {max_payload}")
    return text


def encode_reply(mid: str, result: dict[str, Any], *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> str:
    """The reply to call ``mid``: ``{...result, "mid": mid}`` (a ``mid`` in ``result`` is
    replaced). ``QeWireError`` with the code to answer instead (``encode_error``):
    ``bad-result`` if ``result`` is not a JSON object, ``too-large`` as for ``encode``."""
    if not _valid_mid(mid):
        raise ValueError(f"mid must be a string of 1 to {MAX_MID} characters, not {mid!r}")
    if not isinstance(result, dict):
        raise QeWireError("bad-result", f"the handler returned {type(result).__name__}, expected a dict", mid)
    try:
        return encode({**result, "mid": mid}, max_payload=max_payload)
    except QeWireError as exc:
        raise QeWireError(exc.code, exc.message, mid) from None
    except ValueError as exc:
        raise QeWireError("bad-result", str(exc), mid) from None


def encode_error(mid: str, code: str, message: str) -> str:
    """A QE-style error reply to call ``mid``: ``{"code": QE_CODES[code], "msg": message,
    "mid": mid}``, ``message`` cut to 1000 characters. ``code`` is one of our error codes
    (``ValueError`` otherwise); the reply always fits the default size limit."""
    if code not in QE_CODES:
        raise ValueError(f"unknown error code {code!r}")
    if not _valid_mid(mid):
        raise ValueError(f"mid must be a string of 1 to {MAX_MID} characters, not {mid!r}")
    return encode({"code": QE_CODES[code], "msg": str(message)[:_MSG_CHARS], "mid": mid})

