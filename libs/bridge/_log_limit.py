"""A cap on log lines that other people's traffic can cause. Sans-IO.

Why: a worker logs every refused or malformed request, which is what an operator wants to
see, but a stranger sending 10,000 bad stanzas must not be able to write 10,000 lines (the
reliability suite measured 1.3 MB of logs from one such run). Each *kind* of event (not
each sender: a key per sender would itself be memory an attacker controls) may log
``burst`` lines per ``window`` seconds; the rest are counted, and the first line of that
kind in a later window says how many were left out.

Thread affinity: none; used from the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["LogLimit", "suppressed_note"]


class LogLimit:
    """``allow(kind)``: None if this line must be dropped, else how many lines of this kind
    were dropped since the last one that was allowed (usually 0)."""

    __slots__ = ("_burst", "_clock", "_state", "_window")

    def __init__(self, burst: int = 20, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or window <= 0:
            raise ValueError("burst must be >= 1 and window > 0")
        self._burst = burst
        self._window = window
        self._clock = clock
        self._state: dict[str, list[float]] = {}  # kind -> [window start, allowed, dropped]

    def allow(self, kind: str) -> int | None:
        now = self._clock()
        state = self._state.get(kind)
        if state is None or now - state[0] >= self._window:
            dropped = 0 if state is None else int(state[2])
            self._state[kind] = [now, 1, 0]
            return dropped
        if state[1] < self._burst:
            state[1] += 1
            return 0
        state[2] += 1
        return None


def suppressed_note(dropped: int) -> str:
    """The tail to append to an allowed line: empty, or how many similar lines were left out."""
    return f" ({dropped} similar line(s) not logged in the last window)" if dropped else ""
