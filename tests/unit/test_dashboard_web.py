"""The dashboard's HTTP side without a network: who may read the page and its data (loopback
Host check, token off loopback), the files shipped in the package, the server-sent event
stream (whole state first, then only new points), and the CLI's checks before logging in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from libs import cli
from libs.dashboard import DEFAULT_PORT, Dashboard
from libs.dashboard._web import Changes, _stream, make_app
from tests.support.metrics_docs import ONE, counts, doc


def model_with_a_point() -> Dashboard:
    model = Dashboard()
    model.add(ONE)
    model.sample(ONE, doc(time=10.0, calls={"echo": {"ok": 1}}, hist={"echo": counts(b0=1)}), now=1.0)
    model.sample(ONE, doc(time=11.0, calls={"echo": {"ok": 3}}, hist={"echo": counts(b0=3)}), now=2.0)
    return model


def client(app: Any, host: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}")


async def test_on_loopback_the_page_needs_no_token_but_a_loopback_host_header() -> None:
    app = make_app(model_with_a_point(), Changes(), lambda: 3.0, host="127.0.0.1", token=None, refresh=1.0)
    for host in ("127.0.0.1:8790", "localhost:8790", "[::1]:8790", "localhost"):
        async with client(app, host) as http:
            page = await http.get("/")
            assert page.status_code == 200 and b"static/app.js" in page.content, host
            assert "default-src 'self'" in page.headers["content-security-policy"]
            state = (await http.get("/api/state")).json()
            assert [w["jid"] for w in state["workers"]] == [ONE]
    async with client(app, "rebound.example:8790") as http:  # DNS rebinding: a foreign name for 127.0.0.1
        assert (await http.get("/")).status_code == 401
        assert (await http.get("/api/state")).status_code == 401
        assert (await http.get("/events")).status_code == 401


async def test_off_loopback_every_data_route_needs_the_token() -> None:
    with pytest.raises(ValueError, match="token is required"):
        make_app(Dashboard(), Changes(), lambda: 0.0, host="0.0.0.0", token=None, refresh=1.0)
    app = make_app(model_with_a_point(), Changes(), lambda: 3.0, host="0.0.0.0", token="s3cret", refresh=1.0)
    async with client(app, "dash.example:8790") as http:
        for path in ("/", "/api/state", "/events", "/?token=wrong", "/api/state?token=s3cre"):
            refused = await http.get(path)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "forbidden", path
        assert (await http.get("/?token=s3cret")).status_code == 200
        state = await http.get("/api/state", headers={"Authorization": "Bearer s3cret"})
        assert state.status_code == 200 and state.json()["workers"][0]["jid"] == ONE
        script = await http.get("/static/app.js")  # the files hold no data: served to anyone
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert b"EventSource" in script.content
        assert (await http.get("/static/style.css")).status_code == 200
        assert (await http.get("/static/secrets.txt")).status_code == 404


def test_the_page_uses_nothing_from_outside_the_package() -> None:
    from importlib import resources

    folder = resources.files("libs.dashboard").joinpath("static")
    for name in ("index.html", "app.js", "style.css"):
        text = folder.joinpath(name).read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text, name
        assert "innerHTML" not in text, name  # names and errors come from workers: textContent only


async def next_event(stream: AsyncIterator[str]) -> dict[str, Any]:
    while True:
        chunk = await stream.__anext__()
        if chunk.startswith("event: state\n"):
            data: dict[str, Any] = json.loads(chunk.split("data: ", 1)[1])
            return data


async def test_the_stream_sends_the_whole_state_then_only_new_points_and_ends_on_close() -> None:
    model = model_with_a_point()
    changes = Changes()
    stream = _stream(model, changes, lambda: 3.0, refresh=30.0)
    first = await next_event(stream)
    assert first["since"] == 0 and len(first["workers"][0]["commands"][0]["points"]) == 1
    model.sample(ONE, doc(time=12.0, calls={"echo": {"ok": 6}}, hist={"echo": counts(b0=6)}), now=3.0)
    changes.notify()
    update = await next_event(stream)
    [echo] = update["workers"][0]["commands"]
    assert update["since"] == first["seq"] and [p[0] for p in echo["points"]] == [2] and echo["calls"] == 6
    changes.close()
    with pytest.raises(StopAsyncIteration):
        while True:
            await stream.__anext__()


def test_off_loopback_there_is_always_a_token_and_the_url_carries_it() -> None:
    from libs.dashboard import DashboardOptions, dashboard_url, page_token

    assert page_token(DashboardOptions()) is None
    assert page_token(DashboardOptions(host="::1")) is None
    assert page_token(DashboardOptions(host="0.0.0.0", token="given")) == "given"
    made = page_token(DashboardOptions(host="0.0.0.0"))
    assert made and len(made) >= 20 and made != page_token(DashboardOptions(host="192.0.2.1"))
    assert dashboard_url("0.0.0.0", 8790, made) == f"http://0.0.0.0:8790/?token={made}"
    assert dashboard_url("::1", 80, None) == "http://[::1]:80/"


def test_the_cli_knows_the_default_port_without_importing_the_dashboard() -> None:
    assert cli._DASHBOARD_PORT == DEFAULT_PORT


@pytest.mark.parametrize("argv, message", [
    (["dashboard", "--jid", "worker@localhost"], "is not a full JID"),
    (["dashboard", "--app", ".bad"], "is not a service name"),
    (["dashboard", "--port", "70000"], "a port is 0-65535"),
    (["dashboard", "--interval", "0"], "must be a positive number"),
])
def test_dashboard_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_dashboard_without_configuration_is_a_config_error(capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("QE_")]:
        monkeypatch.delenv(name)
    assert cli.main(["dashboard"]) == 2
    assert "QE_JID" in capsys.readouterr().err
