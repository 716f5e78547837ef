"""The dashboard's HTTP side: the page, its state as JSON, and live updates (server-sent events).

Why SSE and not websockets: the page only listens, SSE is plain HTTP that the browser
reconnects by itself (``EventSource``), and it needs nothing beyond FastAPI's streaming
response. Each connection first gets the whole state, then only the points it has not seen
(``Dashboard.view(since=...)``), at most every ``_MIN_GAP`` seconds.

Access: on a loopback address anyone on this machine may look (as they could read the
account's configuration); the ``Host`` header must then name a loopback host, so that a web
page elsewhere cannot read the dashboard through DNS rebinding. Anywhere else a token is
mandatory (``Authorization: Bearer`` or ``?token=``; ``EventSource`` cannot send headers), and
the static files, which hold no data, are the only thing served without it.
"""

# No ``from __future__ import annotations``: FastAPI reads the route functions' annotations at
# run time, and fastapi is imported inside ``make_app`` only (as in libs/bridge/rest.py).
import asyncio
import contextlib
import hmac
import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any, Final

from ..bridge.config import is_loopback
from ._model import Dashboard

__all__ = ["Changes", "make_app"]

log = logging.getLogger(__name__)

_MIN_GAP: Final = 0.2  # s between two updates on one connection: a burst of answers is one update
_HEARTBEAT: Final = 15.0  # s: a comment line keeps proxies from closing an idle stream
_STATIC: Final = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Changes:
    """A change counter the SSE streams wait on (``notify`` from the poller's callbacks)."""

    def __init__(self) -> None:
        self.version = 0
        self.closed = False
        self._event = asyncio.Event()

    def notify(self) -> None:
        self.version += 1
        self._event.set()
        self._event = asyncio.Event()

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        self.closed = True
        self.notify()

    async def wait(self, seen: int, timeout: float) -> None:
        """Return once ``version`` is past ``seen``, or after ``timeout`` s."""
        if self.version != seen:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


def _static_files() -> dict[str, bytes]:
    """The page's files, read once from the package (they ship in it: no CDN, no network)."""
    folder = resources.files("libs.dashboard").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in _STATIC}


def make_app(model: Dashboard, changes: Changes, clock: Callable[[], float], *, host: str,
             token: str | None, refresh: float) -> Any:
    """The FastAPI application serving ``model``. ``token``: required from every client when
    not None (``ValueError`` when ``host`` is not loopback and there is none). ``refresh``:
    seconds between updates even when nothing changed (ages and statuses move on)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    if token is None and not is_loopback(host):
        raise ValueError(f"a token is required when serving on {host!r} (not a loopback address)")
    files = _static_files()
    # no spans for the page's requests (FastAPI 0.165+ would emit them once a tracer provider is set)
    options: dict[str, Any] = {"telemetry": {"tracing": False}} \
        if "telemetry" in inspect.signature(FastAPI).parameters else {}
    api = FastAPI(title="qe-worker dashboard", docs_url=None, redoc_url=None, openapi_url=None, **options)
    wanted = token.encode() if token is not None else None

    def allowed(request: Request) -> bool:
        if wanted is None:
            return is_loopback(_host_name(request.headers.get("host", "")))
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        raw = given.strip() if scheme.lower() == "bearer" else request.query_params.get("token", "")
        return bool(raw) and hmac.compare_digest(wanted, raw.encode())

    def refused() -> Response:
        return JSONResponse({"error": {"code": "forbidden", "message": "open the URL the dashboard printed "
                                                                       "(with its ?token=...)"}},
                            status_code=401, headers={**_HEADERS, "WWW-Authenticate": "Bearer"})

    @api.get("/")
    async def page(request: Request) -> Response:
        if not allowed(request):
            return refused()
        return Response(files["index.html"], media_type="text/html; charset=utf-8", headers=_HEADERS)

    @api.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in _STATIC or name == "index.html":
            return JSONResponse({"error": {"code": "not-found", "message": name}}, status_code=404)
        return Response(files[name], media_type=f"{_STATIC[name]}; charset=utf-8", headers=_HEADERS)

    @api.get("/api/state")
    async def state(request: Request) -> Response:
        """The whole state, as the first event of ``/events`` carries it."""
        if not allowed(request):
            return refused()
        return JSONResponse(model.view(clock()), headers=_HEADERS)

    @api.get("/events")
    async def events(request: Request) -> Response:
        if not allowed(request):
            return refused()
        return StreamingResponse(_stream(model, changes, clock, refresh), media_type="text/event-stream",
                                 headers={**_HEADERS, "X-Accel-Buffering": "no"})

    return api


def _host_name(header: str) -> str:
    """The host of a ``Host`` header: ``[::1]:80`` -> ``::1``, ``localhost:80`` -> ``localhost``."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.partition(":")[0]


async def _stream(model: Dashboard, changes: Changes, clock: Callable[[], float],
                  refresh: float) -> AsyncIterator[str]:
    since = 0
    seen = -1
    loop = asyncio.get_running_loop()
    last_sent = 0.0
    while not changes.closed:
        seen = changes.version
        view = model.view(clock(), since)
        since = view["seq"]
        yield f"event: state\ndata: {json.dumps(view, separators=(',', ':'))}\n\n"
        last_sent = loop.time()
        waited = 0.0
        while not changes.closed and changes.version == seen and waited < refresh:
            step = min(refresh - waited, _HEARTBEAT)
            await changes.wait(seen, step)
            waited = loop.time() - last_sent
            if changes.version == seen and waited >= _HEARTBEAT:
                yield ": ping\n\n"
        gap = _MIN_GAP - (loop.time() - last_sent)
        if gap > 0 and not changes.closed:
            await asyncio.sleep(gap)  # coalesce a burst of answers into one update
