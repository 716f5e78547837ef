"""``qe-worker dashboard``: a live web page of the workers one account can see.

It learns everything through XMPP, so it works against any server and any number of
workers: the own account's other sessions (presence), the workers of the services named
with ``--app`` (their rooms), and full JIDs named with ``--jid``; each is asked
``metrics {"format": "json"}`` every ``interval`` seconds. The page (``static/``, shipped in
the package: no CDN) is served on 127.0.0.1 by default and updated by server-sent events.

Layers: ``_model.Dashboard`` (state and arithmetic, no I/O), ``_poller.Poller`` (XMPP, on one
``Client``), ``_web`` (FastAPI on ``libs._asgi.LoopServer``), and ``serve()`` to tie them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..bridge.client import Client, random_resource
from ..bridge.config import WorkerConfig, is_loopback
from ..bridge.xmpp import XmppTransport
from ._model import Dashboard, Point, WorkerState, quantile
from ._poller import Poller
from ._web import Changes, make_app

__all__ = ["DEFAULT_PORT", "Dashboard", "DashboardError", "DashboardOptions", "Point", "Poller", "WorkerState",
           "dashboard_url", "page_token", "quantile", "serve"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 8790


class DashboardError(Exception):
    """The dashboard cannot serve (its port is taken, a bad option)."""


@dataclass(frozen=True, slots=True)
class DashboardOptions:
    """``host``/``port``: where the page is served (port 0: a free one). ``token``: required
    from the browser (None: none on loopback; off loopback ``serve`` makes one up).
    ``interval``: seconds between two polls of a worker; ``timeout``: how long one poll may
    take; ``apps``: services whose workers to show; ``jids``: full JIDs to show whatever
    presence says; ``history``: points kept per command and worker."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    interval: float = 2.0
    timeout: float = 5.0
    apps: tuple[str, ...] = ()
    jids: tuple[str, ...] = ()
    history: int = 150
    connect_timeout: float = 10.0


def page_token(options: DashboardOptions) -> str | None:
    """The token the page will need: the one given, else none on loopback, else a random one
    (never serve data off loopback without one)."""
    if options.token is None and not is_loopback(options.host):
        return secrets.token_urlsafe(18)
    return options.token


def dashboard_url(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


async def serve(config: WorkerConfig, options: DashboardOptions, stop: asyncio.Event,
                on_ready: Callable[[str], None] = lambda url: None) -> None:
    """Log in with ``config`` (under a random resource), serve the page until ``stop`` is
    set (set before the page is up, it ends the wait for the login too), then leave. ``on_ready(url)`` once the page can be opened. Raises the client's
    ``CallError`` when it cannot log in, ``DashboardError`` when it cannot serve."""
    from .._asgi import LoopServer

    token = page_token(options)
    loop = asyncio.get_running_loop()
    # a long-lived session, unlike a one-off call: keepalive pings find a dead link (reconnects
    # then rejoin the rooms and bring the account's presence again)
    transport = XmppTransport(config, random_resource("dashboard"), keepalive=config.keepalive, fail_fast=True)
    client = Client(config, transport=transport, connect_timeout=options.connect_timeout)
    model = Dashboard(own_jid=client.transport.jid, history=options.history,
                      stale_after=max(3 * options.interval, options.interval + options.timeout))
    changes = Changes()
    # before logging in: the server tells a new session about the account's others at once
    poller = Poller(client, model, interval=options.interval, timeout=options.timeout, apps=options.apps,
                    jids=options.jids, on_change=changes.notify)
    login = loop.create_task(client.__aenter__())
    interrupted = loop.create_task(stop.wait())
    try:
        await asyncio.wait({login, interrupted}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        login.cancel()
        raise
    finally:
        interrupted.cancel()
    if not login.done():  # stopped while logging in
        login.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await login
        return
    login.result()  # the login's error, if it failed
    try:
        failed: asyncio.Future[Any] = loop.create_future()

        def on_error(reason: str) -> None:
            if not failed.done():
                failed.set_result(reason)

        web = make_app(model, changes, loop.time, host=options.host, token=token, refresh=options.interval)
        server = LoopServer(web, options.host, options.port, name="the dashboard", on_error=on_error)
        poller.start()
        server.start()
        started: asyncio.Future[Any] = loop.create_task(server.started.wait())
        try:
            await asyncio.wait({started, failed}, return_when=asyncio.FIRST_COMPLETED)
            if failed.done():
                raise DashboardError(failed.result())
            url = dashboard_url(options.host, server.port, token)
            log.info("dashboard serving on %s", url)
            on_ready(url)
            stopping: asyncio.Future[Any] = loop.create_task(stop.wait())
            await asyncio.wait({stopping, failed}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if failed.done() and not stop.is_set():
                raise DashboardError(failed.result())
        finally:
            started.cancel()
            changes.close()
            await server.close(1.0)
            await poller.close()
            with contextlib.suppress(asyncio.CancelledError):
                await started
    finally:
        await client.__aexit__(None, None, None)
