"""QE Nexus's timer decorators: ``@setInterval``, ``@setTimeout``, ``clearInterval``, ``clearTimeout``.

A decorator starts a timer for the function at once and returns the function itself,
unchanged, with the timer attached as ``fn.timer``; the timer is remembered under a key
(default ``fn.__name__``) for ``clearInterval``/``clearTimeout``. Intervals and timeouts
have separate keys. Thread affinity: any thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from ._callbacks import name_of
from ._timers import ENGINE, SetInterval, SetIntervalSafe, SetTimeout, SetTimeoutSafe, Timer

__all__ = ["clearInterval", "clearTimeout", "setInterval", "setTimeout"]

F = TypeVar("F", bound=Callable[..., Any])


def setInterval(ms: float, key: Hashable | None = None, safe: bool = False) -> Callable[[F], F]:
    """Nexus-style decorator: start an interval for the decorated function at once.

    ``@setInterval(1000)`` returns the function itself, unchanged and still directly
    callable, with the running timer attached as ``fn.timer`` (when the object accepts
    attributes). The key for ``clearInterval`` defaults to ``fn.__name__``; decorating
    again with a key in use stops the older timer (logged). ``safe=True`` runs the callback
    on the event loop (``SetIntervalSafe``), otherwise on a worker thread; an ``async def``
    function always runs as a task on the event loop.
    """

    def decorate(fn: F) -> F:
        cls = SetIntervalSafe if safe else SetInterval
        timer = cls(fn, ms)
        timer._start(("interval", _key_of(fn) if key is None else key))
        _attach(fn, timer)
        return fn

    return decorate


def setTimeout(ms: float, key: Hashable | None = None, safe: bool = False) -> Callable[[F], F]:
    """Nexus-style decorator: call the decorated function once, ``ms`` milliseconds from now.

    Same conventions as ``setInterval`` (returns the function, ``fn.timer``, key defaults
    to ``fn.__name__``, ``safe=True`` runs it on the event loop); cancel with
    ``clearTimeout(key)``.
    """

    def decorate(fn: F) -> F:
        cls = SetTimeoutSafe if safe else SetTimeout
        timer = cls(fn, ms)
        timer._start(("timeout", _key_of(fn) if key is None else key))
        _attach(fn, timer)
        return fn

    return decorate


def clearInterval(key: Hashable) -> bool:
    """Stop the interval started by ``@setInterval`` under ``key``.

    Returns True if one was running, False for an unknown or already stopped key.
    """
    return ENGINE.clear(("interval", key))


def clearTimeout(key: Hashable) -> bool:
    """Cancel the pending ``@setTimeout`` under ``key``; False if unknown or already fired."""
    return ENGINE.clear(("timeout", key))


def _attach(fn: Any, timer: Timer) -> None:
    with contextlib.suppress(AttributeError, TypeError):
        fn.timer = timer


def _key_of(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) else name_of(fn)
