"""Tests that call ``startup()`` or run a script change process-wide state: the current loop,
signal handlers, the root logger, ``libs._runtime``. ``restored_process()`` puts it all back."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from libs import _runtime


@contextmanager
def restored_process() -> Iterator[None]:
    rt = _runtime._RT
    saved = (rt.loop, rt.config, rt.signals_installed_on, rt.shutting_down, rt.stop_pending, rt.from_startup,
             list(rt.hooks))
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    saved_slixmpp = logging.getLogger("slixmpp").level
    try:
        yield
    finally:
        loop = rt.loop
        if loop is not None and loop is not saved[0] and not loop.is_closed():
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
            loop.close()
        asyncio.set_event_loop(None)
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        for h in list(root.handlers):
            if h not in saved_root[1]:
                root.removeHandler(h)
        root.setLevel(saved_root[0])
        logging.getLogger("slixmpp").setLevel(saved_slixmpp)
        (rt.loop, rt.config, rt.signals_installed_on, rt.shutting_down, rt.stop_pending,
         rt.from_startup) = saved[:6]
        rt.hooks[:] = saved[6]
