"""What a handler receives: ``APISpecs`` for API calls, ``MessageSpecs`` for chat messages.

Field names are QE python-worker's, so existing handlers keep working. Both are frozen: a
handler cannot change what other handlers (or our logging) see.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["APISpecs", "MessageSpecs"]


@dataclass(frozen=True, slots=True)
class APISpecs:
    """One API call. ``body`` is the dict of arguments; ``role`` is QE's ``owner`` (the
    worker's own account), ``partner`` (in ``QE_ALLOW``) or ``user`` (anyone else, on a
    public worker; see ``libs.bridge.access.Role``); ``jid`` is the caller's full JID and
    ``id`` the request id; ``uid`` is the caller's bare JID and ``resource`` its resource.
    ``app`` is the caller's service when it said so in the request. ``servid`` and
    ``servsecret`` are fields of QE's hosted platform and always None here."""

    cmd: str
    body: dict[str, Any]
    role: str
    jid: str
    id: str
    uid: str
    resource: str
    deadline_ms: int | None = None
    app: str | None = None
    servid: str | None = None
    servsecret: str | None = field(default=None, repr=False)
    _progress: Callable[[float | None, str], Awaitable[None]] | None = field(default=None, repr=False, compare=False)

    async def progress(self, fraction: float | None = None, text: str = "") -> None:
        """Tell the caller how far this request is (``fraction`` from 0 to 1, or None, and a
        line of text). Callers that ignore progress lose nothing; reports are coalesced to
        a few per second. A no-op for requests that cannot carry progress (e.g. scheduled)."""
        if self._progress is not None:
            await self._progress(fraction, text)


@dataclass(frozen=True, slots=True)
class MessageSpecs:
    """One chat message. ``body`` is a dict or list when the text is a JSON object or array,
    else the text. ``channel`` is the channel's name as subscribed, None for direct messages; ``itsme`` means the sender is this very worker
    (same full JID), ``itsbro`` the same account (any resource). ``reply(body)`` answers the
    sender with a chat message (a dict is sent as JSON)."""

    fromjid: str
    body: str | dict[str, Any] | list[Any]
    role: str
    uid: str
    resource: str
    itsme: bool
    itsbro: bool
    channel: str | None = None
    app: str | None = None
    _reply: Callable[[str, str | dict[str, Any]], None] | None = field(default=None, repr=False, compare=False)

    def reply(self, body: str | dict[str, Any]) -> None:
        """Send ``body`` back to the sender (non-blocking; safe on the worker's loop only)."""
        if self._reply is None:
            raise RuntimeError("this message cannot be replied to")
        self._reply(self.fromjid, body)
