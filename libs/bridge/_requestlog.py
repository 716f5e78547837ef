"""One INFO line per finished request, for operators: command, caller, outcome, duration.

Why here and not in the handlers: every request ends in ``Dispatcher._count`` whichever way
it came (XMPP, HTTP, a scheduled job), so one call there sees them all. The line names the
caller by bare JID only (no resource, no body, no message text: nothing a caller sent can
leak a secret into it) and carries the same fields as ``record.request`` for JSON logs.

Cost: the dispatcher reads the clock once per request for this log and the metrics together
(``elapsed_ns``); with ``rate == 0`` (``QE_REQUEST_LOG=off``) and no metrics observer, not at all.
Refusals that strangers cause (``forbidden``, ``bad-request``) go through a ``LogLimit``.

Thread affinity: none; used from the event loop.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from ._log_limit import LogLimit, suppressed_note
from .access import bare_jid

__all__ = ["RequestLog"]

log = logging.getLogger("libs.bridge.requests")

_STRANGERS = frozenset({"forbidden", "bad-request"})  # outcomes anyone can cause at will


class RequestLog:
    """``finished(cmd, sender, outcome, elapsed_ns)`` after each request; ``rate``: the share
    of requests logged (1: all, 0: none, 0.1: one in ten on average)."""

    __slots__ = ("_limit", "_random", "rate")

    def __init__(self, rate: float = 1.0, *, sample: Callable[[], float] = random.random,
                 limit: LogLimit | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        self.rate = rate
        self._random = sample
        self._limit = limit or LogLimit()

    def finished(self, cmd: str, sender: str, outcome: str, elapsed_ns: int) -> None:
        if not self.rate or (self.rate < 1.0 and self._random() >= self.rate):
            return
        ms = elapsed_ns / 1e6
        note = ""
        if outcome in _STRANGERS:
            dropped = self._limit.allow(outcome)
            if dropped is None:
                return
            note = suppressed_note(dropped)
        caller = bare_jid(sender)
        fields = {"cmd": cmd, "caller": caller, "outcome": outcome, "ms": round(ms, 3)}
        log.info("request %s from %s: %s in %.1f ms%s", cmd or "-", caller, outcome, ms, note,
                 extra={"request": fields})
