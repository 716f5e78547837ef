"""uvicorn serving an ASGI application as a task of the running event loop.

Why one helper: ``App.rest`` and ``qe-worker dashboard`` both serve HTTP inside a loop that
already runs XMPP, and both must keep the program's own SIGINT/SIGTERM handling. Stock
``uvicorn.Server.serve()`` installs its own signal handlers and re-raises the signal when it
ends (docs: /work/shared notes, "uvicorn inside an existing loop"); here they are switched off,
and a bind failure (uvicorn's ``SystemExit(3)``) becomes a call to ``on_error``.
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

        config = uvicorn.Config(self.asgi, host=self.host, port=self.port, log_level="warning",
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
        """Stop taking connections and let running requests finish within ``timeout``."""
        if self._server is None or self._task is None:
            return
        self._server.config.timeout_graceful_shutdown = max(0.1, timeout)
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), timeout + 0.5)
        if not self._task.done():
            self._task.cancel()
