"""``WorkerGroup``: many workers in one process, so that a worker costs a session, not an
interpreter.

Each worker is an ``App`` with its own XMPP session and resource (``{resource}-{i}``); they
share what one process has once: the main loop, the timer thread, the executor, one TLS
context and SCRAM's salted password (``xmpp._shared``), and one loop-blocked detector. The
group logs them in concurrently, at most ``logins`` at a time (a server takes a burst of
logins better in waves, and so does our one loop), and reports each login that failed without
stopping the others. It closes them all at once (within one ``QE_SHUTDOWN_TIMEOUT``), on
``close()``, on leaving ``async with``, or on SIGINT/SIGTERM when it owns the signals.

Workers of a group belong to no service by default: a service room tells every occupant about
every other one, so N workers in one room cost N² presence stanzas to join it (and each load
change N more). ``service=`` makes them all workers of that service anyway (for a few dozen).
For the same reason they send no available presence by default (``presence=``): the server
sends each available session of an account the presence of all the others.

Thread affinity: create the group anywhere (before the loop runs, as a script does, or inside
it); ``start()`` and ``close()`` run on the main loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any, Final

from .. import _runtime
from ._blocked import BlockedWatch
from .access import check_resource
from .app import App, _load_config
from .config import WorkerConfig

__all__ = ["DEFAULT_LOGINS", "GroupStarted", "WorkerGroup"]

log = logging.getLogger(__name__)

DEFAULT_LOGINS: Final = 50
"""Logins in progress at once (each holds its slot until it is online or has failed)."""

_FAILURES_LOGGED: Final = 20  # one line each; the rest are counted


@dataclasses.dataclass(frozen=True, slots=True)
class GroupStarted:
    """What ``WorkerGroup.start()`` found: workers online, and why the others are not
    (full JID -> reason). A worker refused by the server was closed; one that only did not
    get online within ``login_timeout`` keeps trying."""

    online: int
    failed: dict[str, str]
    seconds: float


class WorkerGroup:
    """``count`` workers in this process, as ``QE_JID/{resource}-{i}`` for i in 0..count-1.

    ``factory(resource=..., config=..., **kwargs)`` makes each worker (default ``App``; the
    default worker's ``build`` fits too) and may register its handlers; the group adds
    ``managed=True`` (it runs their life cycle) and, without ``service``,
    ``join_service=False``. ``app_kwargs`` go to every call (``public=True``, ...).
    ``config`` defaults to what ``startup()`` loaded, else the ``QE_*`` environment; its
    ``RESOURCE`` names the group (``{RESOURCE}-{i}``) rather than every worker.
    ``handle_signals`` (default: only when created before the loop runs): SIGINT/SIGTERM
    close the group, then stop the loop. ``presence`` (default False): whether each worker
    sends available presence; the server sends every available session of an account the
    presence of every other one, so N workers of one account that do cost N² stanzas (calls
    to a worker's full JID arrive either way).

    Iterate over the group (or ``group.workers``) to register handlers on each ``App``.
    """

    def __init__(
        self,
        count: int,
        *,
        resource: str = "python",
        factory: Callable[..., App] = App,
        service: str | None = None,
        logins: int = DEFAULT_LOGINS,
        login_timeout: float = 30.0,
        config: WorkerConfig | None = None,
        handle_signals: bool | None = None,
        presence: bool = False,
        **app_kwargs: Any,
    ) -> None:
        if type(count) is not int or count < 1:
            raise ValueError(f"a WorkerGroup needs a count of at least 1, not {count!r}")
        if type(logins) is not int or logins < 1:
            raise ValueError(f"logins must be at least 1, not {logins!r}")
        config = config or _load_config()
        self.resource = check_resource(config.resource or resource)
        self.config = dataclasses.replace(config, resource=None)  # one resource per worker, from the group
        self.logins = logins
        self.login_timeout = login_timeout
        self.service = service
        self.loop = _runtime.main_loop()
        self._handle_signals = not self.loop.is_running() if handle_signals is None else handle_signals
        kwargs: dict[str, Any] = {**app_kwargs, "managed": True, "presence": presence}
        if service is None:
            kwargs["join_service"] = False
        else:
            kwargs["app"] = service
        self.workers: list[App] = [
            factory(resource=f"{self.resource}-{i}", config=self.config, **kwargs) for i in range(count)
        ]
        self.failed: dict[str, str] = {}
        self._started: set[App] = set()
        self._closing = False
        self._starting: asyncio.Task[GroupStarted] | None = None
        self._closed: asyncio.Task[None] | None = None
        self._blocked: BlockedWatch | None = None

    def __iter__(self) -> Iterator[App]:
        return iter(self.workers)

    def __len__(self) -> int:
        return len(self.workers)

    @property
    def online(self) -> int:
        """Workers logged in now."""
        return sum(1 for app in self.workers if app.online)

    async def start(self) -> GroupStarted:
        """Log every worker in, ``logins`` at a time; return once each is online or has
        failed (refused: closed; not online within ``login_timeout``: still trying). Never
        raises for a worker's failure: they are in the result, in ``failed``, and logged."""
        if self._starting is not None:
            return await asyncio.shield(self._starting)
        self._starting = asyncio.get_running_loop().create_task(self._start())
        return await asyncio.shield(self._starting)

    async def _start(self) -> GroupStarted:
        loop = asyncio.get_running_loop()
        began = loop.time()
        _runtime.add_shutdown_hook(self.close)
        if self._handle_signals:
            _runtime.install_signal_handlers(loop, lambda: self.config.shutdown_timeout)
        slots = asyncio.Semaphore(self.logins)
        await asyncio.gather(*(self._login(app, slots) for app in self.workers))
        if self.config.blocked_ms:  # after the logins: hundreds of them keep the loop busy, not blocked
            self._blocked = BlockedWatch(loop, self.config.blocked_ms)
            self._blocked.start()
        started = GroupStarted(online=self.online, failed=dict(self.failed), seconds=loop.time() - began)
        self._report(started)
        return started

    async def _login(self, app: App, slots: asyncio.Semaphore) -> None:
        async with slots:
            if self._closing:
                return
            self._started.add(app)
            app.start()
            try:
                await app.wait_online(self.login_timeout)
            except Exception as exc:  # noqa: BLE001 - a worker's failure is reported, not raised
                fatal = getattr(app.transport, "fatal", None)
                if fatal:
                    self.failed[app.jid] = str(fatal)
                    await app.close(1.0)  # refused: retrying cannot help
                else:
                    self.failed[app.jid] = f"{exc} (still trying)"

    def _report(self, started: GroupStarted) -> None:
        total = len(self.workers)
        if not started.failed:
            log.info("group %s: %d of %d workers online in %.1f s", self.resource, started.online, total,
                     started.seconds)
            return
        log.error("group %s: %d of %d workers online in %.1f s; %d failed", self.resource, started.online,
                  total, started.seconds, len(started.failed))
        for jid, reason in list(started.failed.items())[:_FAILURES_LOGGED]:
            log.error("group %s: %s: %s", self.resource, jid, reason)
        if len(started.failed) > _FAILURES_LOGGED:
            log.error("group %s: ... and %d more failed", self.resource, len(started.failed) - _FAILURES_LOGGED)

    async def close(self, timeout: float | None = None) -> None:
        """Close every worker at once, within ``timeout`` s (default ``QE_SHUTDOWN_TIMEOUT``):
        each stops taking requests, lets running ones finish, and leaves the server."""
        await asyncio.shield(self._begin_close(timeout))

    def _begin_close(self, timeout: float | None = None) -> asyncio.Task[None]:
        if self._closed is None:
            self._closed = self.loop.create_task(self._close(timeout))
        return self._closed

    async def _close(self, timeout: float | None) -> None:
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        self._closing = True
        _runtime.remove_shutdown_hook(self.close)
        if self._blocked is not None:
            self._blocked.stop()
        starting = self._starting
        if starting is not None and not starting.done():
            starting.cancel()
            await asyncio.wait([starting])
        started = list(self._started)
        results = await asyncio.gather(*(app.close(timeout) for app in started), return_exceptions=True)
        for app, result in zip(started, results, strict=True):
            if isinstance(result, BaseException):
                log.error("group %s: %s did not close cleanly: %r", self.resource, app.jid, result)
        log.info("group %s: %d workers closed", self.resource, len(started))

    def stop(self) -> None:
        """Stop the group from code, as SIGTERM would (the loop stops when it owns the signals;
        else only the group closes). Returns at once, from any thread."""
        def begin() -> None:
            if not _runtime.request_stop(self.loop, self.config.shutdown_timeout, f"group {self.resource}: stop()"):
                self._begin_close()

        self.loop.call_soon_threadsafe(begin)

    async def __aenter__(self) -> WorkerGroup:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
