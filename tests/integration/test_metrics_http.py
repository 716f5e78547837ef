"""Prometheus metrics over a real socket, the worker on a real Prosody: ``GET /metrics`` on
``App.rest`` (no redirect to ``/metrics/``) and on ``QE_METRICS_PORT``; the counters match
the calls made over XMPP."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from libs.bridge import APISpecs, App, load_config

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def calls(text: str, cmd: str, outcome: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "qe_calls_total" and s.labels == {"cmd": cmd, "outcome": outcome}:
                return s.value
    return 0.0


def worker(prosody: Any, accounts: Any, **env: str) -> App:
    config = load_config({**prosody.env("worker", accounts["worker"][1]), **env})
    rest = int(env.pop("REST", "0") or 0) if "REST" in env else 0
    app = App(resource="metrics", rest=rest or False, config=config, exit_on_fatal=False, keepalive=0)

    @app.command("add")
    async def add(specs: APISpecs) -> dict[str, Any]:
        return {"sum": specs.body["x"] + specs.body["y"]}

    return app


async def scrape_after_calls(app: App, login: Any, url: str) -> None:
    await app.wait_online(10)
    client = await login("worker")
    for i in range(3):
        assert await client.call(app.jid, "add", {"x": i, "y": 1}, timeout=10) == {"sum": i + 1}
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(50):  # the server starts with the worker
            try:
                answer = await http.get(url)
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.1)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    assert calls(answer.text, "add", "ok") == 3
    assert "qe_xmpp_sessions_total 1.0" in answer.text


async def test_metrics_on_app_rest(prosody: Any, accounts: Any, login: Any) -> None:
    port = free_port()
    app = worker(prosody, accounts, REST=str(port))
    try:
        await scrape_after_calls(app, login, f"http://127.0.0.1:{port}/metrics")
    finally:
        await app.close(2)


async def test_metrics_on_their_own_port(prosody: Any, accounts: Any, login: Any) -> None:
    port = free_port()
    app = worker(prosody, accounts, QE_METRICS_PORT=str(port))
    try:
        await scrape_after_calls(app, login, f"http://127.0.0.1:{port}/metrics")
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"http://127.0.0.1:{port}/other")).status_code == 404
    finally:
        await app.close(2)
