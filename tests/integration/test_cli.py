"""The ``qe-worker`` command as a user runs it: output, exit codes, one-line errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from libs.bridge import App, load_config

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def qe(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "libs.cli", *args, env={**os.environ, **(env or {})}, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def worker(prosody, accounts):
    jid, password = accounts["worker"]
    app = App(resource="cli", public=False, config=load_config(prosody.env("worker", password)),
              exit_on_fatal=False, keepalive=0)

    async def onapi(specs):
        if specs.cmd == "echo":
            return specs.body
        if specs.cmd == "slow":
            await asyncio.sleep(30)
            return {}
        return None

    app.xmpp.onapi = onapi
    await app.wait_online(10)
    yield app
    await app.close(2)


@pytest.fixture
def owner_env(prosody, accounts):
    return prosody.env("worker", accounts["worker"][1])


async def test_ping_and_call_print_json(worker, owner_env):
    assert await qe("ping", worker.jid, env=owner_env) == (0, '{"pong": true}\n', "")
    code, out, _ = await qe("call", worker.jid, "echo", '{"a": [1, "é"]}', env=owner_env)
    assert code == 0 and json.loads(out) == {"a": [1, "é"]}


async def test_exit_codes(worker, owner_env, prosody, accounts):
    code, _, err = await qe("call", worker.jid, "echo", "{not json", env=owner_env)
    assert code == 2 and "JSON_BODY" in err
    code, _, err = await qe("call", worker.jid, "echo", "[1]", env=owner_env)
    assert code == 2 and "JSON object" in err
    code, _, err = await qe("call", worker.jid, "slow", "--timeout", "0.5", env=owner_env)
    assert code == 3 and err.startswith("qe-worker: timeout")
    code, _, err = await qe("call", worker.jid, "nope", env=owner_env)
    assert code == 4 and "unknown-command" in err
    stranger_env = prosody.env("stranger", accounts["stranger"][1])
    code, _, err = await qe("ping", worker.jid, env=stranger_env)
    assert code == 4 and "forbidden" in err
    code, _, err = await qe("ping", worker.jid, env={**owner_env, "QE_PASSWORD": "wrong"})
    assert code == 5 and "QE_PASSWORD" in err and err.count("\n") == 1
    code, _, err = await qe("ping", worker.jid, "--timeout", "2", env={**owner_env, "QE_PORT": str(_closed_port())})
    assert code == 5 and "cannot reach" in err and err.count("\n") == 1


async def test_a_call_leaves_nothing_bounced_on_the_worker(worker, owner_env, login):
    """A call ends cleanly for the worker too. Every ``qe-worker call`` used to send the worker
    an error back: the CLI closed its stream before it had acknowledged (XEP-0198) the
    worker's answer, so when its session ended Prosody (mod_smacks) bounced that
    "unacknowledged" answer to the worker as ``recipient-unavailable``."""
    seen_errors: list[str] = []

    def spy(stanza):
        if stanza.xml.get("type") == "error":
            seen_errors.append(str(stanza))
        return stanza

    worker.transport._client.add_filter("in", spy)
    code, out, err = await qe("call", worker.jid, "echo", '{"a": 1}', env=owner_env)
    assert (code, json.loads(out)) == (0, {"a": 1}), err
    # Prosody sends such a bounce while it ends the CLI's session, in the same step as its
    # own end of stream, which the CLI waits for before it exits. A call made after that
    # reaches the worker behind the bounce on the same connection: once it is answered, a
    # bounce would have been seen.
    other = await login("worker")
    assert await other.call(worker.jid, "ping", timeout=10) == {"pong": True}
    assert seen_errors == []


async def test_config_errors_are_one_line(worker, owner_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QE_")}
    code, out, err = await qe("ping", worker.jid, env={**env, "QE_JID": ""})
    assert code == 2 and err.count("\n") == 1 and "QE_JID" in err and "Traceback" not in err
    code, _, err = await qe("ping", worker.jid, env={**owner_env, "QE_TLS": "off", "QE_HOST": "example.org"})
    assert code == 2 and "QE_TLS" in err and err.count("\n") == 1


async def test_help_explains():
    code, out, _ = await qe("--help")
    assert code == 0
    for word in ("call", "ping", "run", "server", "demo", "QE_JID", "exit codes"):
        assert word in out


async def test_schedule_jobs_cancel_against_the_default_worker(prosody, accounts, tmp_path):
    from libs.scheduling import JobStore
    from workers.python.worker import build

    password = accounts["worker"][1]
    env = prosody.env("worker", password)
    app = build(resource="clisched", config=load_config(env), store=JobStore(tmp_path / "j.sqlite3"),
                maintenance=True, exit_on_fatal=False, keepalive=0)
    try:
        await app.wait_online(10)
        code, out, err = await qe("schedule", app.jid, "echo", '{"a": 1}', "--every", "1h", env=env)
        assert code == 0, err
        job = json.loads(out)["job"]
        code, out, _ = await qe("jobs", app.jid, env=env)
        listed = json.loads(out)["jobs"]
        assert [(j["job"], j["cmd"], j["status"]) for j in listed] == [(job, "echo", "active")]
        assert (await qe("cancel", app.jid, job, env=env))[0] == 0
        code, out, _ = await qe("jobs", app.jid, env=env)
        assert json.loads(out)["jobs"][0]["status"] == "cancelled"
        code, _, err = await qe("schedule", app.jid, "echo", "--every", "5x", env=env)
        assert code == 2 and "5x" in err  # refused locally, nothing sent
        code, _, err = await qe("schedule", app.jid, "echo", "--cron", "* * *", env=env)
        assert code == 2 and err.count("\n") == 1
        code, out, _ = await qe("call", app.jid, "health", env=env)
        assert json.loads(out)["status"] in ("ok", "warning")
        code, out, _ = await qe("call", app.jid, "stats", env=env)
        stats = json.loads(out)
        assert stats["requests"]["received"] >= 1
        names = {t["name"] for t in stats["periodic"]}
        assert {"system_health_check", "cleanup_history", "log_statistics"} <= names
        assert all(t["is_running"] for t in stats["periodic"])
    finally:
        await app.close(2)


async def test_more_bad_input_is_one_line(worker, owner_env):
    for args, words in ((("call", worker.jid, "ping", "--timeout", "inf"), "--timeout"),
                        (("call", worker.jid, "ping", "--timeout", "nan"), "--timeout"),
                        (("call", "not a jid", "ping"), "not a JID"),
                        (("schedule", worker.jid, "echo", "--every", "5s", "--tz", "Europe/Berlin"), "--tz"),
                        (("run", "--resource", ""), "resource")):
        code, _, err = await qe(*args, env=owner_env)
        assert code == 2 and words in err and "Traceback" not in err, (args, err)


async def test_demo_stops_worker_and_server_on_sigterm(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "libs.cli", "demo", cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    lines = []
    try:
        while not any("Press Ctrl+C" in line for line in lines):
            lines.append((await asyncio.wait_for(proc.stdout.readline(), 30)).decode())
            assert lines[-1], "demo ended early: " + "".join(lines)
        assert any('{"pong": true}' in line for line in lines)
        workdir = next(line.split("data in ")[1].rstrip(")\n") for line in lines if "data in " in line)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) in (0, 130)
        assert not Path(workdir).exists()  # the server's folder, and with it the demo's jobs, is gone
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
