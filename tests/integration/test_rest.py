"""App.rest over a real socket, with the worker on a real Prosody: QE's ``@App.rest.get``,
the built-in ``POST /api/{cmd}`` through the same dispatch as XMPP, tokens, statuses,
OpenAPI, and a graceful shutdown that lets a running HTTP request finish."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
import pytest

from libs.bridge import APISpecs, App, load_config

OWNER_TOKEN = secrets.token_urlsafe(24)
USER_TOKEN = secrets.token_urlsafe(24)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def started(app: App) -> None:
    await app.wait_online(10)
    assert app._rest is not None
    await asyncio.wait_for(app._rest.started.wait(), 10)


@pytest.fixture
async def served(prosody, accounts) -> AsyncIterator[tuple[App, httpx.AsyncClient, asyncio.Event]]:
    port = free_port()
    env = {**prosody.env("worker", accounts["worker"][1]),
           "QE_REST_TOKEN": f"{OWNER_TOKEN},{USER_TOKEN}:user"}
    app = App(resource="rest", rest=port, config=load_config(env), exit_on_fatal=False, keepalive=0)
    release = asyncio.Event()

    @app.command("add")
    async def add(specs: APISpecs) -> dict[str, Any]:
        return {"sum": specs.body["x"] + specs.body["y"], "role": specs.role}

    @app.command("hold")
    async def hold(specs: APISpecs) -> dict[str, Any]:
        await release.wait()
        return {"held": True}

    @app.command("boom")
    async def boom(specs: APISpecs) -> dict[str, Any]:
        raise ValueError("inside")

    @app.command("paint", description="Paint a wall")
    async def paint(width: int, colour: Literal["red", "blue"] = "red") -> dict[str, Any]:
        return {"painted": width, "colour": colour}

    @app.rest.get("/hello")  # QE's way: App.rest is a FastAPI application
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    await started(app)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        yield app, http, release
    release.set()
    await app.close(2)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_routes_tokens_and_statuses(served, login):
    app, http, _release = served
    assert (await http.get("/hello")).json() == {"hello": "world"}
    health = (await http.get("/health")).json()
    assert (health["status"], health["online"], health["jid"]) == ("ok", True, app.jid)

    # the same dispatch as XMPP: a command answers, the caller's role comes from its token
    answer = await http.post("/api/add", json={"x": 2, "y": 3}, headers=bearer(OWNER_TOKEN))
    assert (answer.status_code, answer.json()) == (200, {"sum": 5, "role": "owner"})
    answer = await http.post("/api/add", json={"x": 1, "y": 1}, headers=bearer(USER_TOKEN))
    assert answer.json()["role"] == "user"
    assert (await http.post("/api/ping", headers=bearer(USER_TOKEN))).json() == {"pong": True, "environment": "python"}

    # no token, or a wrong one: 401, nothing runs
    for headers in ({}, bearer("x" * 32), {"Authorization": OWNER_TOKEN}):
        refused = await http.post("/api/add", json={"x": 1, "y": 1}, headers=headers)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "forbidden"
    assert (await http.get("/commands")).status_code == 401

    # errors: the protocol's codes, as HTTP statuses
    cases = {("/api/nosuch", b"{}"): (404, "unknown-command"), ("/api/boom", b"{}"): (500, "handler-error"),
             ("/api/add", b"[1]"): (400, "bad-request"), ("/api/add", b"{not json"): (400, "bad-request"),
             ("/api/add", b'{"x": NaN}'): (400, "bad-request"),
             ("/api/add", b'{"x": "' + b"a" * 300_000 + b'"}'): (413, "too-large")}
    for (path, body), (status, code) in cases.items():
        answer = await http.post(path, content=body, headers=bearer(OWNER_TOKEN))
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), (path, body[:20])
    assert "inside" in (await http.post("/api/boom", headers=bearer(OWNER_TOKEN))).json()["error"]["message"]
    # a deadline already passed: not run
    answer = await http.post("/api/hold", params={"timeout": "0.2"}, headers=bearer(OWNER_TOKEN))
    assert (answer.status_code, answer.json()["error"]["code"]) == (504, "expired")

    # XMPP callers are unaffected
    client = await login("worker")
    assert await client.call(app.jid, "add", {"x": 4, "y": 5}, timeout=5) == {"sum": 9, "role": "owner"}

    # no CORS unless QE_REST_CORS lists origins: a browser on another site gets no allowance
    preflight = await http.options("/api/add", headers={"Origin": "https://elsewhere.example",
                                                        "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers

    # typed commands: our validation and errors, over HTTP as over XMPP
    answer = await http.post("/api/paint", json={"width": 3, "colour": "blue"}, headers=bearer(OWNER_TOKEN))
    assert answer.json() == {"painted": 3, "colour": "blue"}
    answer = await http.post("/api/paint", json={"colour": "green"}, headers=bearer(OWNER_TOKEN))
    assert answer.status_code == 400 and "width" in answer.json()["error"]["message"]
    listed = (await http.get("/commands", headers=bearer(USER_TOKEN))).json()["commands"]
    assert {"paint", "add", "ping"} <= {c["name"] for c in listed}

    # the OpenAPI document lists the built-in routes, the script's own, and each command with
    # its parameters' schema (references inlined, so the page can show them)
    doc = (await http.get("/openapi.json")).json()
    assert {"/api/{cmd}", "/health", "/commands", "/hello", "/api/paint", "/api/add"} <= set(doc["paths"])
    paint_body = doc["paths"]["/api/paint"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert paint_body["required"] == ["width"] and "$ref" not in json.dumps(paint_body)
    assert set(json.dumps(paint_body["properties"]["colour"]).split('"')) >= {"red", "blue"}
    assert doc["paths"]["/api/paint"]["post"]["summary"] == "Paint a wall"
    assert "parameters" not in doc["paths"]["/api/paint"]["post"] or all(
        p["name"] == "timeout" for p in doc["paths"]["/api/paint"]["post"]["parameters"])


async def test_shutdown_lets_a_running_http_request_finish_and_refuses_new_ones(served):
    app, http, release = served
    running = asyncio.create_task(http.post("/api/hold", headers=bearer(OWNER_TOKEN)))
    while app.dispatcher.stats.in_flight == 0:  # the request reached the handler
        await asyncio.sleep(0.01)
    closing = asyncio.create_task(app.close(5))
    await asyncio.sleep(0)  # close() stops taking requests before its first wait
    late = await http.post("/api/add", json={"x": 1, "y": 1}, headers=bearer(OWNER_TOKEN))
    assert (late.status_code, late.json()["error"]["code"]) == (503, "unavailable")
    release.set()
    answer = await asyncio.wait_for(running, 10)
    assert (answer.status_code, answer.json()) == (200, {"held": True})
    await asyncio.wait_for(closing, 10)
    with pytest.raises(httpx.ConnectError):  # and then the port is closed
        await http.get("/health")


async def test_cors_only_for_the_origins_configured(prosody, accounts):
    port = free_port()
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_REST_CORS": "https://ui.example"}
    app = App(resource="cors", rest=port, config=load_config(env), exit_on_fatal=False, keepalive=0)
    try:
        await started(app)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for origin, allowed in (("https://ui.example", True), ("https://elsewhere.example", False)):
                answer = await http.options("/api/ping", headers={"Origin": origin,
                                                                  "Access-Control-Request-Method": "POST"})
                assert (answer.headers.get("access-control-allow-origin") == origin) is allowed, origin
    finally:
        await app.close(2)


async def test_exposed_without_a_token_is_refused_at_start(prosody, accounts, capsys):
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_REST_HOST": "0.0.0.0"}
    with pytest.raises(SystemExit) as exit_:
        App(resource="exposed", rest=free_port(), config=load_config(env), exit_on_fatal=False)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("qe-worker: QE_REST_TOKEN: required when QE_REST_HOST is not a loopback") and err.count("\n") == 1
