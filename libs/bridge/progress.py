"""A running request's progress reports, coalesced on their way to the caller.

Why coalesce: a handler may report in a tight loop (``for i in range(10_000): await
specs.progress(i / 10_000)``); every report is a stanza to the caller. At most one goes out
per ``MIN_INTERVAL`` seconds, and the last one reported is never lost: it goes out when the
interval ends. A report of 1.0 (done) goes at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from .protocol import encode_progress

__all__ = ["MIN_INTERVAL", "ProgressReporter", "RequestProgress"]

MIN_INTERVAL: Final = 0.1


class ProgressReporter:
    """``report(fraction, text)`` for one request; ``send(payload_json)`` puts it on the wire."""

    def __init__(self, send: Callable[[str], None], loop: asyncio.AbstractEventLoop,
                 min_interval: float = MIN_INTERVAL) -> None:
        self._send = send
        self._loop = loop
        self._min_interval = min_interval
        self._last_sent = float("-inf")
        self._pending: str | None = None
        self._flush: asyncio.TimerHandle | None = None

    async def report(self, fraction: float | None = None, text: str = "") -> None:
        """What ``specs.progress`` does; ``ValueError`` for a fraction outside [0, 1]. A
        coroutine so that handlers ``await`` it: it also lets the loop send meanwhile."""
        payload = encode_progress(fraction, text)
        now = self._loop.time()
        if fraction == 1.0 or now - self._last_sent >= self._min_interval:
            self._cancel_flush()
            self._emit(payload)
        else:
            self._pending = payload
            if self._flush is None:
                self._flush = self._loop.call_later(self._last_sent + self._min_interval - now, self._flush_due)
        await asyncio.sleep(0)

    def close(self) -> None:
        """The request ended: a coalesced report still waiting is dropped (its answer says more)."""
        self._cancel_flush()

    def _emit(self, payload: str) -> None:
        self._pending = None
        self._last_sent = self._loop.time()
        self._send(payload)

    def _flush_due(self) -> None:
        self._flush = None
        if self._pending is not None:
            self._emit(self._pending)

    def _cancel_flush(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._pending = None


class RequestProgress:
    """``specs.progress`` of one request: the reporter is made on the first report only, so a
    request that reports nothing costs one small object."""

    __slots__ = ("_id", "_reporter", "_sink", "_to")

    def __init__(self, sink: Callable[[str, str, str], None], to: str, request_id: str) -> None:
        self._sink = sink
        self._to = to
        self._id = request_id
        self._reporter: ProgressReporter | None = None

    async def __call__(self, fraction: float | None, text: str) -> None:
        if self._reporter is None:
            self._reporter = ProgressReporter(lambda payload: self._sink(self._to, self._id, payload),
                                              asyncio.get_running_loop())
        await self._reporter.report(fraction, text)

    def close(self) -> None:
        if self._reporter is not None:
            self._reporter.close()
