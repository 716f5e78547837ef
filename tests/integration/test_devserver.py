"""The private Prosody of ``libs.devserver``: lifecycle, accounts, faults and the CLI.

Every wait is bounded (asyncio.wait_for / timeouts); nothing syncs by sleeping.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import slixmpp

from libs.devserver import DevServer, ProsodyNotInstalled, serve

LOGIN_TIMEOUT = 10.0
REPO_ROOT = Path(__file__).resolve().parents[2]


async def login(host: str, port: int, jid: str, password: str, timeout: float = LOGIN_TIMEOUT) -> str:
    """Try to log in over plain TCP; return "session_start" or "failed_auth".

    The client is created inside the running loop (slixmpp binds the loop at construction).
    """
    client = slixmpp.ClientXMPP(jid, password)
    client.enable_plaintext = True
    client.enable_starttls = False
    client.enable_direct_tls = False
    client.plugin["feature_mechanisms"].unencrypted_scram = True  # loopback only
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def settle(name: str):
        def handler(_event: object) -> None:
            if not outcome.done():
                outcome.set_result(name)
        return handler

    client.add_event_handler("session_start", settle("session_start"))
    client.add_event_handler("failed_auth", settle("failed_auth"))
    client.add_event_handler("connection_failed", settle("connection_failed"))
    client.connect(host, port)
    try:
        return await asyncio.wait_for(outcome, timeout)
    finally:
        try:
            await asyncio.wait_for(client.disconnect(wait=1.0), 3.0)
        except (asyncio.TimeoutError, ConnectionError):
            client.abort()


def refuses(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True


# -- shared server ---------------------------------------------------------------------------

def test_started_server_accepts_connections(prosody: DevServer) -> None:
    assert prosody.running
    assert prosody.host == "127.0.0.1"
    with socket.create_connection((prosody.host, prosody.port), timeout=2.0):
        pass
    for name in ("prosody.cfg.lua", "data", "prosody.pid", "prosody.log"):
        assert (prosody.workdir / name).exists(), name
    config = (prosody.workdir / "prosody.cfg.lua").read_text()
    assert f"c2s_ports = {{ {prosody.port} }}" in config
    assert '"limits"' not in config and "s2s_ports = { }" in config


async def test_registered_account_logs_in(prosody: DevServer, accounts: dict[str, tuple[str, str]]) -> None:
    for name in ("worker", "client", "stranger"):
        jid, password = accounts[name]
        assert jid == f"{name}@{prosody.domain}"
        assert await login(prosody.host, prosody.port, jid, password) == "session_start"


async def test_wrong_password_fails(prosody: DevServer, accounts: dict[str, tuple[str, str]]) -> None:
    jid, _ = accounts["worker"]
    assert await login(prosody.host, prosody.port, jid, "not-the-password") == "failed_auth"


async def test_register_while_running_logs_in(prosody: DevServer) -> None:
    name = "late" + secrets.token_hex(4)
    password = secrets.token_urlsafe(12)
    jid = prosody.register(name, password)
    assert await login(prosody.host, prosody.port, jid, password) == "session_start"
    # Registering again resets the password (prosodyctl register is an upsert).
    prosody.register(name, "second-" + password)
    assert await login(prosody.host, prosody.port, jid, password) == "failed_auth"
    assert await login(prosody.host, prosody.port, jid, "second-" + password) == "session_start"


def test_no_starttls_offered(prosody: DevServer) -> None:
    """Without certificates Prosody would offer STARTTLS and then fail the handshake."""
    with socket.create_connection((prosody.host, prosody.port), timeout=2.0) as sock:
        sock.sendall(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0' to='"
            + prosody.domain.encode() + b"'>"
        )
        data = b""
        while b"</stream:features>" not in data:
            chunk = sock.recv(65536)
            assert chunk, "server closed the stream"
            data += chunk
        sock.sendall(b"</stream:stream>")
    assert b"starttls" not in data
    assert b"<mechanism>SCRAM-SHA-1</mechanism>" in data


def test_group_chat_rooms_are_unlocked_non_anonymous_and_temporary(tmp_path: Path) -> None:
    """The MUC component's options (what tests/integration/test_rooms_transport.py relies on:
    rooms open at once, real JIDs shown, nothing kept or replayed); none without ``muc``."""
    config = DevServer(workdir=tmp_path / "a").config_text()
    component = config.split('Component "conference.localhost" "muc"', 1)[1].split()
    options = [" ".join(component[i:i + 3]) for i in range(0, len(component), 3)]
    assert options == [
        "muc_room_locking = false",
        "muc_room_default_public_jids = true",
        "muc_room_default_persistent = false",
        "muc_room_default_history_length = 0",
        'restrict_room_creation = "local"',
    ]
    assert "Component" not in DevServer(workdir=tmp_path / "b", muc=False).config_text()


def test_env(prosody: DevServer, accounts: dict[str, tuple[str, str]]) -> None:
    jid, password = accounts["client"]
    assert prosody.env("client", password) == {
        "QE_JID": jid,
        "QE_PASSWORD": password,
        "QE_HOST": "127.0.0.1",
        "QE_PORT": str(prosody.port),
        "QE_TLS": "off",
    }


def test_register_rejects_bad_input(prosody: DevServer) -> None:
    with pytest.raises(ValueError):
        prosody.register("bad name", "pw")
    with pytest.raises(ValueError):
        prosody.register("someone", "")


# -- own servers -----------------------------------------------------------------------------

async def test_kill_and_restart_on_same_port(fresh_prosody: DevServer) -> None:
    server = fresh_prosody
    jid = server.register("survivor", "pw-1")
    port, workdir = server.port, server.workdir
    assert await login(server.host, port, jid, "pw-1") == "session_start"

    server.kill()
    assert not server.running
    assert refuses(server.host, port)
    server.kill()  # idempotent

    server.restart()
    assert server.running and server.port == port and server.workdir == workdir
    # Same data dir: the account made before the crash still works.
    assert await login(server.host, port, jid, "pw-1") == "session_start"


async def test_stop_is_idempotent_and_restart_works(fresh_prosody: DevServer) -> None:
    server = fresh_prosody
    server.stop()
    server.stop()
    assert not server.running
    assert refuses(server.host, server.port)
    jid = server.register("offline", "pw-2")  # register while stopped
    server.restart()
    assert await login(server.host, server.port, jid, "pw-2") == "session_start"
    server.restart()  # restart of a running server: stop + start
    assert server.running


async def test_register_before_first_start(tmp_path: Path) -> None:
    server = DevServer(workdir=tmp_path / "srv", domain="example.test", muc=False)
    try:
        jid = server.register("early", "pw-3")
        assert jid == "early@example.test"
        assert not server.running
        server.start()
        assert await login(server.host, server.port, jid, "pw-3") == "session_start"
    finally:
        server.cleanup()
    # A workdir given by the caller is kept, our data with it.
    assert (tmp_path / "srv" / "data").is_dir()
    assert not server.running


def test_cleanup_removes_owned_workdir() -> None:
    with DevServer() as server:
        workdir = server.workdir
        assert server.running and workdir.is_dir()
        assert workdir.name.startswith("qe-prosody-")
    assert not server.running
    assert not workdir.exists()
    server.cleanup()  # idempotent


def test_start_fails_clearly_when_port_taken() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        server = DevServer(port=blocker.getsockname()[1])
        try:
            with pytest.raises(RuntimeError, match="could not listen"):
                server.start(timeout=5.0)
            assert not server.running
        finally:
            server.cleanup()


def test_missing_prosody_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ProsodyNotInstalled, match=r"apt-get install -y prosody"):
        DevServer()
    assert serve([]) == 3
    err = capsys.readouterr().err
    assert "prosody not found" in err and len(err.strip().splitlines()) == 1


# -- CLI -------------------------------------------------------------------------------------

@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_serve_cli_prints_exports_and_stops_on_signal(tmp_path: Path, stop_signal: int) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "libs.devserver", "--user", "alice:pa ss'word", "--user", "bob:pw",
        "--dir", str(tmp_path / "cli"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path, env=env,
    )
    try:
        exports: dict[str, dict[str, str]] = {}
        assert proc.stdout is not None
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 15.0)).decode()
            assert line, "CLI exited early: " + (await proc.stderr.read()).decode()  # type: ignore[union-attr]
            if line.startswith("export "):
                variables = dict(word.split("=", 1) for word in shlex.split(line)[1:])
                exports[variables["QE_JID"]] = variables
            if line.startswith("# Ctrl+C"):
                break
        assert set(exports) == {"alice@localhost", "bob@localhost"}
        alice = exports["alice@localhost"]
        assert alice["QE_PASSWORD"] == "pa ss'word" and alice["QE_TLS"] == "off"
        assert await login(alice["QE_HOST"], int(alice["QE_PORT"]), "alice@localhost",
                           alice["QE_PASSWORD"]) == "session_start"
        proc.send_signal(stop_signal)
        assert await asyncio.wait_for(proc.wait(), 10.0) == 0
        assert refuses("127.0.0.1", int(alice["QE_PORT"]))
        assert (tmp_path / "cli" / "data").is_dir()  # --dir is kept
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_cli_survives_a_burst_of_signals(tmp_path: Path) -> None:
    """Ctrl+C to a job, then SIGTERM from a script's clean-up: signals that land while the
    first one is being handled. A handler that took a lock (threading.Event.set) deadlocked
    the process in its own handler about one time in five, leaving the server running."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "libs.devserver", "--dir", str(tmp_path / "cli"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path, env=env,
    )
    try:
        assert proc.stdout is not None
        port = None
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 15.0)).decode()
            assert line, "CLI exited early: " + (await proc.stderr.read()).decode()  # type: ignore[union-attr]
            if line.startswith("export "):
                port = int(dict(word.split("=", 1) for word in shlex.split(line)[1:])["QE_PORT"])
            if line.startswith("# Ctrl+C"):
                break
        assert port is not None

        def burst() -> None:  # signals for 0.2 s, as fast as they go (stopping takes longer)
            end = time.monotonic() + 0.2
            i = 0
            while time.monotonic() < end:
                try:
                    os.kill(proc.pid, signal.SIGINT if i % 2 else signal.SIGTERM)
                except ProcessLookupError:
                    return
                i += 1

        await asyncio.to_thread(burst)
        assert await asyncio.wait_for(proc.wait(), 20.0) == 0
        assert refuses("127.0.0.1", port)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
