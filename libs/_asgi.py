"""uvicorn serving an ASGI application as a task of the running event loop.

Why one helper: ``App.rest`` and ``qe-worker dashboard`` both serve HTTP inside a loop that
already runs XMPP, and both must keep the program's own SIGINT/SIGTERM handling. Stock
``uvicorn.Server.serve()`` installs its own signal handlers and re-raises the signal when it
ends (docs: /work/shared notes, "uvicorn inside an existing loop"); here they are switched off,
and a bind failure (uvicorn's ``SystemExit(3)``) becomes a call to ``on_error``.

Why close() drains before it tells uvicorn to exit: uvicorn's own shutdown closes every
connection that has no request running, including one it has just accepted and not yet
read; a client that came in during the drain got a reset (``ReadError``) instead of an
answer. Here the server keeps listening while running requests finish, and answers each new
one at once with 503 ``unavailable`` and ``Connection: close``, which a client or a load
balancer can act on (retry elsewhere); uvicorn is told to exit once nothing runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["LoopServer"]

log = logging.getLogger(__name__)


class LoopServer:
    """Serve ``asgi`` on ``host:port`` (0: a free port, known once ``started`` is set) from
    ``start()`` until ``close()``. Loop-affine: call both on the loop that serves."""

    def __init__(self, asgi: Any, host: str, port: int, *, name: str = "http",
                 on_error: Callable[[str], None] | None = None) -> None:
        self.asgi = asgi
        self.host = host
        self.port = port
        self.name = name
        self.on_error = on_error
        self.started = asyncio.Event()
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._gate = _Gate(asgi)

    def start(self) -> None:
        """Begin serving (a task of the running loop); ``started`` is set once it listens."""
        import uvicorn

        owner = self

        class _Server(uvicorn.Server):
            # the program owns SIGINT/SIGTERM: uvicorn must neither install nor re-raise them
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                if self.started:
                    owner._listening(self)

        config = uvicorn.Config(self._gate, host=self.host, port=self.port, log_level="warning",
                                lifespan="off", access_log=False, server_header=False)
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(self._serve(), name=f"{self.name} {self.host}:{self.port}")

    def _listening(self, server: Any) -> None:
        with contextlib.suppress(AttributeError, IndexError, OSError):
            if self.port == 0:
                self.port = server.servers[0].sockets[0].getsockname()[1]
        self.started.set()

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit:  # uvicorn's way to say it could not bind
            reason = f"{self.name} cannot listen on {self.host}:{self.port} (in use, or not allowed)"
            log.error("%s", reason)
            if self.on_error is not None:
                self.on_error(reason)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The serving task (done once the server stopped, or failed to start)."""
        return self._task

    async def close(self, timeout: float) -> None:
        """Refuse new requests (503), let running ones finish within ``timeout``, then stop
        listening."""
        if self._server is None or self._task is None:
            return
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        self._gate.refusing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._gate.idle.wait(), max(0.0, timeout))
        grace = max(0.1, end - loop.time())
        self._server.config.timeout_graceful_shutdown = grace
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), grace + 0.5)
        if not self._task.done():
            self._task.cancel()


_REFUSAL = b'{"error":{"code":"unavailable","message":"the server is shutting down"}}'


class _Gate:
    """The ASGI application in front of ``asgi``: counts running HTTP requests (``idle`` is
    set when none runs) and, once ``refusing``, answers new ones 503 without running them."""

    def __init__(self, asgi: Any) -> None:
        self.asgi = asgi
        self.refusing = False
        self.idle = asyncio.Event()
        self.idle.set()
        self._running = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.asgi(scope, receive, send)
            return
        if self.refusing:
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(_REFUSAL)).encode()),
                (b"connection", b"close"), (b"retry-after", b"1")]})
            await send({"type": "http.response.body", "body": _REFUSAL})
            return
        self._running += 1
        self.idle.clear()
        try:
            await self.asgi(scope, receive, send)
        finally:
            self._running -= 1
            if not self._running:
                self.idle.set()
