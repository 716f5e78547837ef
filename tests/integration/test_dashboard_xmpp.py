"""``qe-worker dashboard`` against the private Prosody, without a browser: a worker of
another account found through its service room (``--app``), a ``--jid`` that is not online
shown offline, all read from the live event stream; and a login the server refuses ends the
command with exit status 5."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.bridge import load_config, wait_answering
from libs.dashboard import DashboardOptions, serve
from tests.support.workers import WorkerProcess

_WAIT_S = 20.0


async def _until(url: str, condition: Callable[[dict[str, dict[str, Any]]], bool]) -> dict[str, dict[str, Any]]:
    """Read the page's event stream until ``condition(workers by JID)`` holds; those workers."""
    workers: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(_WAIT_S), httpx.AsyncClient() as http, http.stream("GET", url + "events") as events:
        assert events.status_code == 200 and events.headers["content-type"].startswith("text/event-stream")
        async for line in events.aiter_lines():
            if line.startswith("data: "):
                workers = {w["jid"]: w for w in json.loads(line[6:])["workers"]}
                if condition(workers):
                    return workers
    raise AssertionError(f"the stream ended; last: {workers}")


async def test_service_rooms_and_named_jids(prosody: Any, accounts: dict[str, tuple[str, str]], tmp_path: Path,
                                            login: Any) -> None:
    worker_jid = f"{accounts['worker'][0]}/svc-one"
    absent = f"{accounts['worker'][0]}/not-running"
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_STATE_DIR": str(tmp_path), "RESOURCE": "svc-one",
           "QE_APP": "dash-svc", "QE_ALLOW": accounts["client"][0]}
    async with WorkerProcess(["-m", "workers.python"], env, tmp_path / "worker.log"):
        caller = await login("client")
        await wait_answering(caller, worker_jid, 20)
        stop = asyncio.Event()
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        # the dashboard logs in as "client": the worker is not of its account, only in the room
        config = load_config(prosody.env("client", accounts["client"][1]))
        options = DashboardOptions(port=0, interval=0.3, timeout=2.0, apps=("dash-svc",), jids=(absent,))
        served = asyncio.create_task(serve(config, options, stop, ready.set_result))
        try:
            url = await asyncio.wait_for(asyncio.shield(ready), _WAIT_S)
            await caller.call(worker_jid, "echo", {"x": 1}, timeout=5)
            workers = await _until(url, lambda ws: ws.get(worker_jid, {}).get("status") == "online"
                                   and any(c["cmd"] == "echo" for c in ws[worker_jid]["commands"])
                                   and ws.get(absent, {}).get("status") == "offline")
            found = workers[worker_jid]
            assert (found["service"], found["sources"], found["load"]) == ("dash-svc", ["service"], 0)
            assert found["version"] and found["uptime_s"] > 0 and found["error"] is None
            assert found["jobs"] == {"count": 0, "runs": 0, "failures": 0, "missed": 0}  # a partner: no list
            assert workers[absent]["error"].startswith("unavailable")
            assert workers[absent]["sources"] == ["option"]
        finally:
            stop.set()
            await asyncio.wait_for(served, 10)


async def test_a_refused_login_is_exit_status_5(prosody: Any, accounts: dict[str, tuple[str, str]],
                                                tmp_path: Path) -> None:
    env = prosody.env("worker", "not-the-password")
    async with WorkerProcess(["-m", "libs.cli", "dashboard", "--port", "0", "--connect-timeout", "5"], env,
                             tmp_path / "dashboard.log") as dashboard:
        assert await dashboard.wait(20) == 5
        assert "qe-worker: " in dashboard.log() and not dashboard.lines  # no URL: it never served


async def test_a_port_in_use_is_a_dashboard_error(prosody: Any, accounts: dict[str, tuple[str, str]]) -> None:
    import socket

    from libs.dashboard import DashboardError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        options = DashboardOptions(port=taken.getsockname()[1], interval=1.0)
        config = load_config(prosody.env("client", accounts["client"][1]))
        with pytest.raises(DashboardError, match="cannot listen on 127.0.0.1"):
            await asyncio.wait_for(serve(config, options, asyncio.Event()), 20)


async def test_sigint_while_the_server_does_not_answer_ends_the_wait_for_the_login(tmp_path: Path) -> None:
    import signal
    import socket

    with socket.socket() as silent:  # accepts connections, never speaks XMPP
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.setblocking(False)
        env = {"QE_JID": "worker@localhost", "QE_PASSWORD": "pw", "QE_HOST": "127.0.0.1",
               "QE_PORT": str(silent.getsockname()[1]), "QE_TLS": "off"}
        async with WorkerProcess(["-m", "libs.cli", "dashboard", "--port", "0", "--connect-timeout", "60"], env,
                                 tmp_path / "dashboard.log") as dashboard:
            link, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_accept(silent), _WAIT_S)
            with link:  # it is connecting, and waits for the server
                dashboard.signal(signal.SIGINT)
                assert await dashboard.wait(10) == 0, dashboard.log()
            assert not dashboard.lines  # never served
