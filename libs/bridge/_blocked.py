"""A cheap detector for callbacks or handlers that hold the event loop too long.

Why not asyncio's debug mode: it times every callback and is too heavy for production. Here a
timer callback runs on the loop every ``interval`` s and measures how late it ran; lateness
beyond ``threshold_ms`` means something held the loop. To say *what*, a watchdog thread that
wakes at the same pace looks, while the tick is overdue, at the loop thread's current Python
frame (``sys._current_frames``) and keeps the innermost frame outside the standard library as
the "site" (``qualified.name (file.py:line)``). When the loop is free again the tick logs one
WARNING per site, with the blocked duration; a site is logged once for the life of the worker.

Cost: one timer callback every 50 ms on the loop (a few microseconds each) and a daemon thread
that wakes 20 times a second and otherwise sleeps; no per-callback instrumentation.

Thread affinity: ``start``/``stop`` on the loop; ``_watch`` runs in its own thread and only
writes ``_site``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from types import FrameType

__all__ = ["BlockedWatch", "site_of"]

log = logging.getLogger(__name__)

_STDLIB = os.path.dirname(os.__file__)
_MAX_SITES = 1000  # a bound on the memory of "logged once"


def site_of(frame: FrameType | None) -> str:
    """The innermost frame outside the standard library and this module, as
    ``qualname (file.py:line)``; ``unknown`` without one."""
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(_STDLIB) and name != __file__:
            return f"{frame.f_code.co_qualname} ({os.path.basename(name)}:{frame.f_lineno})"
        frame = frame.f_back
    return "unknown"


class BlockedWatch:
    """Log once per site when the loop was held longer than ``threshold_ms``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold_ms: int = 100, interval: float = 0.05) -> None:
        self.loop = loop
        self.threshold = threshold_ms / 1000
        self.interval = interval
        self.logged: set[str] = set()
        self._due = 0.0
        self._site: str | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread = 0

    def start(self) -> None:
        """Call on the loop's thread."""
        self._loop_thread = threading.get_ident()
        self._due = time.monotonic() + self.interval
        self._handle = self.loop.call_later(self.interval, self._tick)
        self._thread = threading.Thread(target=self._watch, name="qe-blocked-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking and end the thread (waits for it: at most one ``interval``)."""
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.interval * 4)
            self._thread = None

    def _tick(self) -> None:
        now = time.monotonic()
        late = now - self._due
        site, self._site = self._site, None
        if late >= self.threshold and site is not None and site not in self.logged and len(self.logged) < _MAX_SITES:
            self.logged.add(site)
            log.warning("the event loop was blocked for %.0f ms by %s (logged once per site; threshold "
                        "QE_BLOCKED_MS=%.0f)", late * 1000, site, self.threshold * 1000)
        self._due = now + self.interval
        self._handle = self.loop.call_later(self.interval, self._tick)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            if self._site is None and time.monotonic() - self._due >= self.threshold / 2:
                self._site = site_of(sys._current_frames().get(self._loop_thread))
