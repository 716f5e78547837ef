"""The dashboard's XMPP side: who is there (presence, service rooms) and their numbers.

It rides on one logged-in ``Client`` (the same XMPP stack as every caller): the own account's
other sessions come from the server's presence (``Transport.on_presence``), the workers of a
service from its room's occupants (``Transport.on_occupant``, the announcement of
``libs.bridge.services``), and every worker so found is asked ``metrics {"format": "json"}``
every ``interval`` seconds, each by a task of its own so that a worker that stops answering
(bounded by ``timeout``) delays nobody else. Everything learnt goes into the sans-IO
``Dashboard``; ``on_change`` tells the HTTP side to push an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..bridge.errors import CallError
from ..bridge.services import Announcement, service_room
from ._model import Dashboard

if TYPE_CHECKING:
    from ..bridge.client import Client

__all__ = ["Poller"]

log = logging.getLogger(__name__)

_IDLE_FACTOR = 10  # a session of the own account that never answered is asked this many times less often


class Poller:
    """Feeds ``model`` from ``client`` until ``close()``. ``apps``: services whose rooms to
    watch; ``jids``: full JIDs to poll whatever presence says. Loop-affine.

    Create it before the client logs in: the server sends the presence of the account's
    other sessions right after the login, and the hooks must be in place by then."""

    def __init__(self, client: Client, model: Dashboard, *, interval: float, timeout: float,
                 apps: tuple[str, ...] = (), jids: tuple[str, ...] = (),
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.client = client
        self.model = model
        self.interval = interval
        self.timeout = timeout
        self.apps = apps
        self.on_change = on_change
        self._rooms: dict[str, str] = {}  # room JID -> service name
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        self._started = False
        for jid in jids:
            model.add(jid)
        transport = client.transport
        transport.on_presence = self._presence
        previous = transport.on_occupant  # the client's own service finder keeps its feed

        def occupant(room: str, nick: str, jid: str | None, payload: str | None, present: bool) -> None:
            if previous is not None:
                previous(room, nick, jid, payload, present)
            self._occupant(room, nick, jid, payload, present)

        transport.on_occupant = occupant

    def start(self) -> None:
        """Join the service rooms and start polling (the client must be logged in)."""
        transport = self.client.transport
        for app in self.apps:
            room = service_room(app, self.client.config.rooms_domain)
            self._rooms[room] = app
            transport.join(room, transport.jid)  # an occupant without a load: not counted as a worker
        self._started = True
        self._sync()

    def _presence(self, jid: str, available: bool) -> None:
        self.model.presence(jid, available, asyncio.get_running_loop().time())
        if self._started:
            self._sync()
        self.on_change()

    def _occupant(self, room: str, nick: str, jid: str | None, payload: str | None, present: bool) -> None:
        if room not in self._rooms or jid is None or "/" not in jid:
            return
        announcement = Announcement.decode(payload) if present else None
        if present and announcement is None:
            return  # a caller watching the room (e.g. another dashboard), not a worker
        self.model.occupant(jid, announcement.app if announcement else None,
                            announcement.load if announcement else None, present, asyncio.get_running_loop().time())
        if self._started:
            self._sync()
        self.on_change()

    def _sync(self) -> None:
        """One polling task per worker to poll; none for those gone."""
        if self._closed:
            return
        self.model.prune(asyncio.get_running_loop().time())
        wanted = set(self.model.to_poll())
        for jid in list(self._tasks):
            if jid not in wanted:
                self._tasks.pop(jid).cancel()
        for jid in wanted - set(self._tasks):
            task = asyncio.get_running_loop().create_task(self._poll_forever(jid), name=f"poll {jid}")
            self._tasks[jid] = task
            task.add_done_callback(functools.partial(self._done, jid))

    def _done(self, jid: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(jid) is task:
            del self._tasks[jid]
        if not task.cancelled() and task.exception() is not None:
            log.error("polling %s failed", jid, exc_info=task.exception())

    async def _poll_forever(self, jid: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.poll(jid)
            worker = self.model.workers.get(jid)
            idle = worker is not None and not self.model.shown(worker)
            pause = self.interval * (_IDLE_FACTOR if idle else 1) - (loop.time() - started)
            await asyncio.sleep(max(0.05, pause))

    async def poll(self, jid: str) -> None:
        """Ask ``jid`` once and record the answer (or why there is none)."""
        loop = asyncio.get_running_loop()
        try:
            doc: Any = await self.client.call(jid, "metrics", {"format": "json"}, timeout=self.timeout)
        except CallError as exc:
            self.model.failed(jid, exc.code, getattr(exc, "remote_message", exc.message), loop.time())
            if exc.code == "unavailable":
                self._sync()  # gone: stop asking until presence says it is back
        except ValueError as exc:  # not a full JID: nothing to ask
            self.model.failed(jid, "bad-request", str(exc), loop.time())
        else:
            self.model.sample(jid, doc, loop.time())
        self.on_change()

    async def close(self) -> None:
        self._closed = True
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
