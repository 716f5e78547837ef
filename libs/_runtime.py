"""The process's main event loop, shutdown hooks, signal handling and shared thread pool.

Why this exists: QE scripts build ``App`` and start timers at import time, with no loop
running, and only then call ``asyncio.get_event_loop().run_forever()``. Every part that
needs "the worker's loop" from elsewhere (``SetIntervalSafe`` ticks from the timer thread,
``App`` starting its connection, shutdown on SIGTERM) must agree on one loop. This module is
that single agreement. For the same reason it owns the one thread pool for blocking work
(``executor()``, ``to_thread()``): plain periodic-task functions, maintenance probes, the
timers' wait at shutdown. (Plain timer callbacks run on the timers' own callback pool,
``libs/timers/_pool.py``, which hands over ticks without a Future per tick.) Which user
functions run as tasks on the loop rather than on a thread is decided here too
(``is_async``).

It also says when a worker module is *hosted*: loaded into a program that owns the loop,
the logging and the network, such as the test kit (``libs.testing``) running a QE-style script
inside a test. While ``hosting()`` is active (a context variable: this thread, and the tasks
it starts), ``startup()`` sets nothing up and ``App`` takes its transport from the host.

Thread affinity: ``main_loop()`` and ``executor()`` may be called from any thread; hooks run
on the main loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

__all__ = [
    "Host",
    "ShutdownHook",
    "add_shutdown_hook",
    "current_config",
    "executor",
    "fail",
    "has_shutdown_hooks",
    "host",
    "hosted_transport",
    "hosting",
    "install_signal_handlers",
    "is_async",
    "main_loop",
    "remove_shutdown_hook",
    "request_stop",
    "set_config",
    "set_main_loop",
    "shutdown",
    "shutting_down",
    "startup_loop",
    "stop_pending",
    "to_thread",
]

log = logging.getLogger(__name__)

ShutdownHook = Callable[[float], Awaitable[None]]
"""An async callable given the seconds it may take; run once on graceful shutdown."""

EXECUTOR_WORKERS: Final = 8
"""Threads of the shared pool (a bound, not a reservation: threads start as work comes)."""

T = TypeVar("T")


@dataclass
class _Runtime:
    lock: threading.Lock = field(default_factory=threading.Lock)
    loop: asyncio.AbstractEventLoop | None = None
    hooks: list[ShutdownHook] = field(default_factory=list)
    signals_installed_on: asyncio.AbstractEventLoop | None = None
    from_startup: asyncio.AbstractEventLoop | None = None  # the loop startup() made
    shutting_down: bool = False
    stop_pending: bool = False  # a shutdown runs and will stop the loop (or exit) when done
    config: Any = None
    executor: ThreadPoolExecutor | None = None


_RT = _Runtime()


@dataclass(frozen=True)
class Host:
    """A program that loads worker modules into its own running loop (``hosting()``).

    ``config`` is what ``startup()`` returns to the module (a ``WorkerConfig``);
    ``transport(resource)`` makes the transport of an ``App`` the module creates without
    one (a ``Transport``; typed loosely here: this module is below ``libs.bridge``).
    """

    config: Any
    transport: Callable[[str], Any]


_HOST: contextvars.ContextVar[Host | None] = contextvars.ContextVar("qe_worker_host", default=None)


@contextlib.contextmanager
def hosting(host: Host) -> Iterator[Host]:
    """Run worker modules under ``host`` inside the block (see the module doc)."""
    token = _HOST.set(host)
    try:
        yield host
    finally:
        _HOST.reset(token)


def host() -> Host | None:
    """The host worker modules run under here, or None (they run as scripts)."""
    return _HOST.get()


def hosted_transport(resource: str) -> Any:
    """The host's transport for an ``App`` with ``resource`` created without one; None when
    not hosted (the ``App`` then connects over XMPP)."""
    current = _HOST.get()
    return None if current is None else current.transport(resource)


def _after_fork_in_child() -> None:
    """A pool's threads (and a holder of the lock) are not copied by ``fork()``: the child
    makes its own pool on first use."""
    _RT.lock = threading.Lock()
    _RT.executor = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def executor() -> ThreadPoolExecutor:
    """The process's one pool for blocking work off the event loop (threads ``qe-pool_N``,
    at most ``EXECUTOR_WORKERS``), created on first use and never shut down by us."""
    with _RT.lock:
        if _RT.executor is None:
            _RT.executor = ThreadPoolExecutor(max_workers=EXECUTOR_WORKERS, thread_name_prefix="qe-pool")
        return _RT.executor


def is_async(func: Callable[..., Any]) -> bool:
    """True if calling ``func`` makes a coroutine to run on the loop: an ``async def``
    function, or an object with an ``async def __call__``. Timers and periodic tasks run
    such functions as tasks on the loop, others on a thread."""
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - objects with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


async def to_thread(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``await func(*args, **kwargs)`` on the shared pool (``asyncio.to_thread`` uses the
    loop's default executor instead, a second pool)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor(), functools.partial(func, *args, **kwargs))


def set_main_loop(loop: asyncio.AbstractEventLoop, *, from_startup: bool = False) -> None:
    """Make ``loop`` the worker's main loop (``startup()`` calls this, with ``from_startup``)."""
    with _RT.lock:
        _RT.loop = loop
        _RT.from_startup = loop if from_startup else None
        _RT.shutting_down = _RT.stop_pending = False


def startup_loop() -> asyncio.AbstractEventLoop | None:
    """The main loop if an earlier ``startup()`` made it and it can still be set up again (not
    closed, not running); else None. ``startup()`` keeps such a loop rather than making a second
    one: a script run by ``qe-worker run SCRIPT`` (already set up) may call ``startup()`` too."""
    with _RT.lock:
        loop = _RT.from_startup
        if loop is None or loop is not _RT.loop or loop.is_closed() or loop.is_running():
            return None
        return loop


def set_config(config: Any) -> None:
    """Remember the configuration ``startup()`` loaded, for ``App`` created later."""
    with _RT.lock:
        _RT.config = config


def current_config() -> Any:
    return _RT.config


def main_loop() -> asyncio.AbstractEventLoop:
    """Return the loop worker code belongs to.

    Inside a running loop that loop wins (so ``asyncio.run(main())`` programs work). Else the
    loop registered by ``startup()``/``set_main_loop``; else a new loop is created, registered
    and, on the main thread, set as current so a later ``asyncio.get_event_loop()`` in the
    user's script returns it on Python 3.11-3.14 without deprecation warnings.
    """
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    with _RT.lock:
        if _RT.loop is None or _RT.loop.is_closed():
            _RT.loop = asyncio.new_event_loop()
            if threading.current_thread() is threading.main_thread():
                asyncio.set_event_loop(_RT.loop)
        return _RT.loop


def shutting_down() -> bool:
    """True once a graceful shutdown began (a signal, ``request_stop()``, ``fail()``) on the
    current main loop."""
    return _RT.shutting_down


def stop_pending() -> bool:
    """True while a graceful shutdown runs that will end by stopping the main loop (signal,
    ``request_stop()``) or by raising ``SystemExit`` from it (``fail()``): running the loop
    (``run_forever()``) then returns or raises once it is done. False before, after, and
    after a second signal abandoned it."""
    return _RT.stop_pending


def add_shutdown_hook(hook: ShutdownHook) -> None:
    """Run ``hook(timeout)`` on graceful shutdown (in reverse order of registration)."""
    with _RT.lock:
        _RT.hooks.append(hook)


def has_shutdown_hooks() -> bool:
    """True if a hook waits for the shutdown (e.g. an ``App`` that started)."""
    with _RT.lock:
        return bool(_RT.hooks)


def remove_shutdown_hook(hook: ShutdownHook) -> None:
    with _RT.lock:
        try:
            _RT.hooks.remove(hook)
        except ValueError:
            pass


async def shutdown(timeout: float = 10.0) -> None:
    """Run every shutdown hook, newest first, sharing one time budget of ``timeout`` s.

    A hook that raises or overruns is logged and the next one still runs: a worker that
    was asked to stop must stop.
    """
    with _RT.lock:
        hooks = list(reversed(_RT.hooks))
        _RT.hooks.clear()
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    for hook in hooks:
        left = max(0.1, end - loop.time())
        try:
            await asyncio.wait_for(hook(left), left + 0.5)
        except TimeoutError:
            log.warning("shutdown hook %r did not finish in %.1f s", hook, left)
        except Exception:
            log.exception("shutdown hook %r failed", hook)


def install_signal_handlers(
    loop: asyncio.AbstractEventLoop, timeout_getter: Callable[[], float] = lambda: 10.0
) -> bool:
    """On SIGINT/SIGTERM: run the shutdown hooks, then stop ``loop`` so that the script's
    ``run_forever()`` returns and the process exits 0. A second signal stops at once.

    Only possible on the main thread; returns False (and does nothing) elsewhere.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    with _RT.lock:
        if _RT.signals_installed_on is loop:
            return True
        _RT.signals_installed_on = loop

    def _on_signal(signame: str) -> None:
        if _RT.shutting_down:
            log.warning("%s again: stopping now", signame)
            _RT.stop_pending = False
            loop.stop()
            return
        _begin_stop(loop, timeout_getter(), f"{signame} received")

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, _on_signal, sig.name)
        except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - non-Unix
            return False
    return True


def request_stop(loop: asyncio.AbstractEventLoop, timeout: float, why: str) -> bool:
    """Do what SIGTERM does, on request from code (``App.stop()``): run the shutdown hooks
    within ``timeout`` s, then stop ``loop``. Call on ``loop``'s thread; at most once
    happens, a request during a shutdown changes nothing.

    Returns False, doing nothing, if ``loop`` is not one whose signals this module handles:
    then a program around us runs the loop (``asyncio.run``) and stopping it under that
    program would break it; the caller closes what it owns instead.
    """
    with _RT.lock:
        if _RT.signals_installed_on is not loop:
            return False
    if not _RT.shutting_down:
        _begin_stop(loop, timeout, why)
    return True


def _begin_stop(loop: asyncio.AbstractEventLoop, timeout: float, why: str) -> None:
    _RT.shutting_down = _RT.stop_pending = True
    log.info("%s: shutting down", why)
    loop.create_task(_shutdown_then_stop(loop, timeout))


async def _shutdown_then_stop(loop: asyncio.AbstractEventLoop, timeout: float) -> None:
    try:
        await shutdown(timeout)
    finally:
        _RT.stop_pending = False
        loop.stop()


def fail(reason: str, timeout: float = 2.0) -> None:
    """End the process with status 1 after a short graceful shutdown, for conditions that
    retrying cannot fix (bad password, resource conflict). Call on the main loop.

    The ``SystemExit`` is raised from a loop callback, which asyncio lets propagate out of
    ``run_forever()``: the user's script ends there with the reason on stderr.
    """
    loop = asyncio.get_running_loop()

    def _exit() -> None:
        _RT.stop_pending = False
        raise SystemExit(f"qe-worker: {reason}")

    async def _run() -> None:
        try:
            await shutdown(timeout)
        finally:
            loop.call_soon(_exit)

    with _RT.lock:
        if _RT.shutting_down:
            return
        _RT.shutting_down = _RT.stop_pending = True
    loop.create_task(_run())
