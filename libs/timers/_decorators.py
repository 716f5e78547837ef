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
from ._timers import SetInterval, SetIntervalSafe, SetTimeout, SetTimeoutSafe, Timer, current_engine

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
    return _decorator("interval", SetIntervalSafe if safe else SetInterval, ms, key)


def setTimeout(ms: float, key: Hashable | None = None, safe: bool = False) -> Callable[[F], F]:
    """Nexus-style decorator: call the decorated function once, ``ms`` milliseconds from now.

    Same conventions as ``setInterval`` (returns the function, ``fn.timer``, key defaults
    to ``fn.__name__``, ``safe=True`` runs it on the event loop); cancel with
    ``clearTimeout(key)``.
    """
    return _decorator("timeout", SetTimeoutSafe if safe else SetTimeout, ms, key)


def clearInterval(key: Hashable) -> bool:
    """Stop the interval started by ``@setInterval`` under ``key``.

    Returns True if one was running, False for an unknown or already stopped key.
    """
    return current_engine().clear(("interval", key))


def clearTimeout(key: Hashable) -> bool:
    """Cancel the pending ``@setTimeout`` under ``key``; False if unknown or already fired."""
    return current_engine().clear(("timeout", key))


def _decorator(
    kind: str, cls: Callable[[Callable[..., Any], float], Timer], ms: float, key: Hashable | None
) -> Callable[[F], F]:
    """Start ``cls(fn, ms)`` under ``(kind, key)`` for the decorated ``fn``; return ``fn``."""

    def decorate(fn: F) -> F:
        timer = cls(fn, ms)
        timer._start((kind, _key_of(fn) if key is None else key))
        with contextlib.suppress(AttributeError, TypeError):  # objects that take no attributes
            fn.timer = timer  # type: ignore[attr-defined]
        return fn

    return decorate


def _key_of(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) else name_of(fn)
