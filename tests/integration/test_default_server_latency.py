"""Calls on a Prosody with its own network settings, as users run it.

Our own tuning (``network_settings = { nagle = false }``) hid two stalls that every user of a
stock server paid: a XEP-0198 ack answered 20 ms late made every sequential call take
~22 ms, and a server segment nobody answered (its ``<a/>`` to our ``<r/>``) held the next one
until Linux's 40 ms delayed ACK, in 3-4 % of calls. The bounds below are coarse on purpose:
far from what machine noise does to a 0.5 ms call, and far below what either stall does.
bench/bench_bridge.py has the real figures.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from libs.bridge import App, Client, load_config
from libs.devserver import DevServer

CALLS = 400


@pytest.fixture(scope="module")
def stock_prosody() -> Iterator[DevServer]:
    server = DevServer(nagle=True)  # explicit: a change of DevServer's default must not tune this away
    assert "network_settings" not in server.config_text()
    with server:
        server.register("worker", "wpw")
        server.register("caller", "cpw")
        yield server


async def test_sequential_calls_do_not_stall_on_a_stock_server(stock_prosody: DevServer) -> None:
    app = App(resource="latency", public=True, config=load_config(stock_prosody.env("worker", "wpw")),
              keepalive=0, exit_on_fatal=False)  # XEP-0198 on: the default
    try:
        await app.wait_online(10)
        async with Client(load_config(stock_prosody.env("caller", "cpw")), connect_timeout=10) as client:
            for _ in range(20):  # warm-up: login traffic, first ack round trips
                await client.call(app.jid, "ping", timeout=5)
            assert client.transport.resumable and app.transport is not None and app.transport.resumable  # XEP-0198
            took = []
            for _ in range(CALLS):
                started = time.perf_counter()
                assert await client.call(app.jid, "ping", timeout=5) == {"pong": True, "environment": "python"}
                took.append((time.perf_counter() - started) * 1000)
    finally:
        await app.close(2)
    took.sort()
    p50 = took[len(took) // 2]
    assert p50 < 5, f"p50 {p50:.1f} ms over {CALLS} sequential calls (a 20 ms ack delay gives ~22 ms)"
    if hasattr(socket, "TCP_QUICKACK"):  # the 40 ms tail is fixed where the kernel lets us ACK at once
        stalled = sum(ms >= 30 for ms in took)
        assert stalled <= 3, f"{stalled} of {CALLS} calls took 30 ms or more (the delayed-ACK stall is 40 ms)"
