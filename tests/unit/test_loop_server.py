"""LoopServer's shutdown on a real loopback socket: a request that arrives while running ones
drain gets 503 at once (not a reset), the running one finishes, then the port closes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from libs._asgi import LoopServer

pytestmark = pytest.mark.timeout(20)


def held_app(release: asyncio.Event, entered: asyncio.Event) -> Any:
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/hold":
            entered.set()
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    return asgi


async def serving(release: asyncio.Event, entered: asyncio.Event) -> LoopServer:
    server = LoopServer(held_app(release, entered), "127.0.0.1", 0, name="test")
    server.start()
    await asyncio.wait_for(server.started.wait(), 10)
    return server


async def test_close_refuses_new_requests_with_503_until_running_ones_finish():
    release, entered = asyncio.Event(), asyncio.Event()
    server = await serving(release, entered)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http:
        assert (await http.get("/quick")).text == "/quick"
        running = asyncio.create_task(http.get("/hold"))
        await asyncio.wait_for(entered.wait(), 10)
        closing = asyncio.create_task(server.close(10))
        await asyncio.sleep(0)  # close() refuses before its first wait

        # however long the drain lasts, a newcomer is answered, not reset
        for _ in range(3):
            late = await http.get("/quick")
            assert late.status_code == 503
            assert late.json()["error"]["code"] == "unavailable"
            assert late.headers["connection"] == "close"
        assert not closing.done()

        release.set()
        assert (await asyncio.wait_for(running, 10)).text == "/hold"
        await asyncio.wait_for(closing, 10)
        with pytest.raises(httpx.ConnectError):
            await http.get("/quick")


async def test_close_stops_listening_after_its_timeout_even_if_a_request_never_ends():
    release, entered = asyncio.Event(), asyncio.Event()
    server = await serving(release, entered)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http:
        running = asyncio.create_task(http.get("/hold"))
        await asyncio.wait_for(entered.wait(), 10)
        await asyncio.wait_for(server.close(0.3), 5)
        assert server.task is not None and server.task.done()
        stuck = await asyncio.wait_for(running, 5)  # cancelled at the end: uvicorn answers 500
        assert stuck.status_code == 500
        with pytest.raises(httpx.ConnectError):
            await http.get("/quick")
