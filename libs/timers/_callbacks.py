"""How one timer callback is called: what counts as its failure, and what is logged.

Whatever a callback raises is that run's failure, ``SystemExit`` and ``KeyboardInterrupt``
included: on the loop's thread they would end ``run_forever()`` -- the whole worker,
without its shutdown -- and on a pool thread that thread. ``App.stop()`` is how a callback
stops the worker. Failures are logged on ``log`` with the timer's name and counted by the
caller; the timer keeps running.

Thread affinity: ``call_plain`` runs on the calling thread (a pool worker, or the loop for
``Safe`` timers); ``contained`` is awaited on the timer's loop.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, Final, Protocol

__all__ = ["EXITED", "Callback", "call_plain", "contained", "log", "log_exit", "name_of"]

log: Final = logging.getLogger("libs.bridge.timers")
"""The timers' one logger. Its name is the one docs/timers.md promises: the QE names' public
home (``libs.bridge``), kept when the code moved to ``libs.timers``."""

EXITED: Final = object()
"""What ``contained`` returns for a run that raised ``SystemExit`` or ``KeyboardInterrupt``."""


class Callback(Protocol):
    """What a call reads on a timer (``_timers.Timer`` implements it)."""

    _name: str
    _callback: Callable[..., Any]
    _args: tuple[Any, ...]
    _kwargs: dict[str, Any] | None


def log_exit(t: Callback, exc: BaseException) -> None:
    log.error("timer %s: callback raised %s; the worker keeps running (App.stop() stops it)",
              t._name, type(exc).__name__, exc_info=exc)


def call_plain(t: Callback) -> bool:
    """Call a plain (``def``) callback on this thread; returns True if it failed (logged).

    A plain callback that returns an awaitable is a failure too: the coroutine is closed,
    never awaited (declare the callback ``async def`` to run it on the loop).
    """
    try:
        kwargs = t._kwargs
        result = t._callback(*t._args, **kwargs) if kwargs else t._callback(*t._args)
    except Exception:
        log.exception("timer %s: callback raised", t._name)
        return True
    except BaseException as exc:
        log_exit(t, exc)
        return True
    if result is not None and inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        log.error(
            "timer %s: callback returned an awaitable; define it with `async def` "
            "so that it is scheduled on the event loop",
            t._name,
        )
        return True
    return False


async def contained(t: Callback, coro: Any) -> Any:
    """Await an ``async def`` callback's run so that ``SystemExit``/``KeyboardInterrupt``
    end the run, not the event loop (a Task re-raises them out of ``run_forever()``)."""
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        log_exit(t, exc)
        return EXITED


def name_of(callback: Callable[..., Any]) -> str:
    """A callback's name for logs and statistics: its qualname, else its repr."""
    name = getattr(callback, "__qualname__", None)
    return name if isinstance(name, str) else repr(callback)
