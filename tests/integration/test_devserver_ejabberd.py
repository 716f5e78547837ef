"""The private ejabberd of ``libs.devserver``: ``qe-worker server --engine ejabberd --nodes 2``
end to end, and a node killed and started again.

These start clusters of their own, so they run with the ejabberd suite only
(``./run test-ejabberd``, ``--xmpp-server=ejabberd-cluster``); every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from libs.bridge import App, Client, RemoteError, load_config
from libs.devserver import EjabberdCluster

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.ejabberd_only("starts ejabberd nodes of its own"), pytest.mark.core]


async def _worker(env: dict[str, str], allow: str) -> App:
    app = App(resource="python", config=load_config({**env, "QE_ALLOW": allow}), exit_on_fatal=False, keepalive=0)
    await app.wait_online(10)
    return app


def _alive(processes: list[psutil.Process]) -> list[str]:
    """The processes still running (zombies count as gone: they hold no resources)."""
    out = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{proc.pid} {proc.name()}")
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_server_cli_runs_a_two_node_cluster_and_stops_it_without_leftovers(
        tmp_path: Path, stop_signal: int) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "libs.devserver", "--engine", "ejabberd", "--nodes", "2",
        "--user", "worker:w pw", "--user", "client:c'pw",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path, env=env,
    )
    try:
        exports: dict[str, dict[str, str]] = {}
        banner = ""
        assert proc.stdout is not None
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60.0)).decode()
            assert line, "CLI exited early: " + (await proc.stderr.read()).decode()  # type: ignore[union-attr]
            if line.startswith("# ejabberd"):
                banner = line
            if line.startswith("export "):
                variables = dict(word.split("=", 1) for word in shlex.split(line)[1:])
                exports[variables["QE_JID"]] = variables
            if line.startswith("# Ctrl+C"):
                break
        assert "2 nodes" in banner
        worker, client = exports["worker@localhost"], exports["client@localhost"]
        assert worker["QE_PASSWORD"] == "w pw" and client["QE_PASSWORD"] == "c'pw"
        assert worker["QE_PORT"] != client["QE_PORT"]  # on different nodes
        # Everything the CLI started, while it runs: two nodes (+ their helpers) and epmd.
        started = psutil.Process(proc.pid).children(recursive=True)
        names = [p.name() for p in started]
        assert names.count("beam.smp") == 2 and names.count("epmd") == 1

        app = await _worker(worker, "client@localhost")
        try:
            async with Client(load_config(client), connect_timeout=10) as caller:
                assert (await caller.call(app.jid, "ping", timeout=10))["pong"] is True
        finally:
            await app.close(2)

        proc.send_signal(stop_signal)
        assert await asyncio.wait_for(proc.wait(), 30.0) == 0
        assert _alive(started) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def cluster() -> AsyncIterator[EjabberdCluster]:
    server = EjabberdCluster(nodes=2)
    try:
        await asyncio.to_thread(server.start)
        yield server
    finally:
        await asyncio.to_thread(server.cleanup)


async def test_a_killed_node_comes_back_into_the_cluster(cluster: EjabberdCluster) -> None:
    pw = secrets.token_urlsafe(12)
    cluster.register("worker", pw)
    cluster.register("client", pw)
    assert (cluster.node_of("worker"), cluster.node_of("client")) == (1, 2)
    app = await _worker(cluster.env("worker", pw), "client@localhost")
    try:
        await asyncio.to_thread(cluster.kill_node, 2)
        assert not cluster.node_running(2) and cluster.node_running(1)
        # An account made while node 2 is down is known to it once it is back.
        late = cluster.register("late", pw)
        await asyncio.to_thread(cluster.start_node, 2)
        assert cluster.running
        for name in ("client", "late"):
            async with Client(load_config({**cluster.env(name, pw, node=2), "QE_JID": f"{name}@localhost"}),
                              connect_timeout=10) as caller:
                if name == "client":
                    assert (await caller.call(app.jid, "ping", timeout=10))["pong"] is True
                else:
                    assert late == "late@localhost"
                    with pytest.raises(RemoteError) as refused:
                        await caller.call(app.jid, "ping", timeout=10)
                    assert refused.value.code == "forbidden"  # routed across nodes, refused by the worker
    finally:
        await app.close(2)


async def test_an_account_made_just_before_a_crash_survives_it() -> None:
    """Mnesia logs writes asynchronously: without a sync, ``kill -9`` right after
    ``register`` lost the account (and a password reset), and the login failed after the restart."""
    server = EjabberdCluster(nodes=1)
    try:
        await asyncio.to_thread(server.start)
        server.register("alice", "first")
        server.register("alice", "second")  # an upsert, like Prosody's
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)
        async with Client(load_config(server.env("alice", "second")), connect_timeout=10) as client:
            assert client.transport.online
    finally:
        await asyncio.to_thread(server.cleanup)
