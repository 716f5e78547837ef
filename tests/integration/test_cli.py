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


async def qe(*args: str, env: dict[str, str] | None = None, timeout: float = 30,
             stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "libs.cli", *args, env={**os.environ, **(env or {})}, cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
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
        if specs.cmd == "qe":  # QE handlers answer errors as a normal reply with a negative code
            return {"code": specs.body.get("code", 0), "msg": "no api handler"}
        return None

    app.xmpp.onapi = onapi
    await app.wait_online(10)
    yield app
    await app.close(2)


@pytest.fixture
def owner_env(prosody, accounts):
    return prosody.env("worker", accounts["worker"][1])


async def test_call_app_calls_a_worker_of_the_service(worker, owner_env):
    """``call --app NAME CMD``: the worker's service is its resource unless it says otherwise."""
    code, out, err = await qe("call", "--app", "cli", "echo", '{"a": 1}', env=owner_env)
    assert (code, json.loads(out), err) == (0, {"a": 1}, "")
    code, out, err = await qe("call", "--app", "nosuchservice", "ping", env=owner_env)
    assert (code, out) == (4, "") and err.startswith("qe-worker: no worker found: "), err
    code, _out, err = await qe("call", "--app", "cli", "echo", "{}", "extra", env=owner_env)
    assert code == 2 and "--app" in err
    code, _out, err = await qe("call", worker.jid, env=owner_env)  # no CMD
    assert code == 2 and "CMD" in err


async def test_ping_and_call_print_json(worker, owner_env):
    assert await qe("ping", worker.jid, env=owner_env) == (0, '{"pong": true, "environment": "python"}\n', "")
    code, out, _ = await qe("call", worker.jid, "echo", '{"a": [1, "é"]}', env=owner_env)
    assert code == 0 and json.loads(out) == {"a": [1, "é"]}


async def test_exit_codes(worker, owner_env, prosody, accounts):
    code, _, err = await qe("call", worker.jid, "echo", "{not json", env=owner_env)
    assert code == 2 and "JSON_BODY" in err
    code, _, err = await qe("call", worker.jid, "echo", "[1]", env=owner_env)
    assert code == 2 and "JSON object" in err
    code, _, err = await qe("call", worker.jid, "slow", "--timeout", "0.5", env=owner_env)
    assert code == 3 and err.startswith("qe-worker: timeout")
    # the worker's onapi took "nope" and returned nothing: QE's {} (exit 4 comes from the worker's refusal below)
    assert await qe("call", worker.jid, "nope", env=owner_env) == (0, "{}\n", "")
    stranger_env = prosody.env("stranger", accounts["stranger"][1])
    code, _, err = await qe("ping", worker.jid, env=stranger_env)
    assert code == 4 and "forbidden" in err
    code, _, err = await qe("ping", worker.jid, env={**owner_env, "QE_PASSWORD": "wrong"})
    assert code == 5 and "QE_PASSWORD" in err and err.count("\n") == 1
    code, _, err = await qe("ping", worker.jid, "--connect-timeout", "2",
                            env={**owner_env, "QE_PORT": str(_closed_port())})
    assert code == 5 and "cannot reach" in err and err.count("\n") == 1


async def test_a_negative_code_in_an_answer_is_printed_unchanged_and_exit_6(worker, owner_env):
    """QE's error convention (``{"code": -1000, "msg": "no api handler"}`` is a normal answer):
    shell scripts tell it apart by the exit status; the answer is printed as any other."""
    assert await qe("call", worker.jid, "qe", '{"code": -1000}', env=owner_env) == \
        (6, '{"code": -1000, "msg": "no api handler"}\n', "")
    assert await qe("call", worker.jid, "qe", '{"code": 0}', env=owner_env) == \
        (0, '{"code": 0, "msg": "no api handler"}\n', "")
    for code, status in (("-1.5", 6), ("1", 0), ("true", 0), ('"-1"', 0), ("null", 0)):
        assert (await qe("call", worker.jid, "qe", f'{{"code": {code}}}', env=owner_env))[0] == status, code


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
    assert await other.call(worker.jid, "ping", timeout=10) == {"pong": True, "environment": "python"}
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


async def test_cancel_and_jobs_exit_4_when_the_worker_says_no(worker, prosody, accounts, tmp_path):
    from libs.scheduling.store import JobStore
    from workers.python.worker import build

    owner_env = prosody.env("worker", accounts["worker"][1])
    client_env = prosody.env("client", accounts["client"][1])
    stranger_env = prosody.env("stranger", accounts["stranger"][1])
    app = build(resource="clino", config=load_config({**owner_env, "QE_ALLOW": accounts["client"][0]}),
                store=JobStore(tmp_path / "j.sqlite3"), exit_on_fatal=False, keepalive=0)
    try:
        await app.wait_online(10)
        assert await qe("cancel", app.jid, "no-such-job", env=client_env) == \
            (4, "", "qe-worker: not-found: no such job\n")
        code, out, _ = await qe("schedule", app.jid, "echo", "--every", "1h", env=owner_env)
        assert code == 0
        owners_job = json.loads(out)["job"]  # another caller's job is an unknown job too
        assert await qe("cancel", app.jid, owners_job, env=client_env) == (4, "", "qe-worker: not-found: no such job\n")
        code, out, err = await qe("jobs", app.jid, env=stranger_env)
        assert (code, out) == (4, "") and err.startswith("qe-worker: forbidden: ")
        plain = App(resource="clinojobs", config=load_config(owner_env), exit_on_fatal=False, keepalive=0)
        try:  # a worker without a job scheduler (and no onapi to take every command)
            await plain.wait_online(10)
            code, out, err = await qe("jobs", plain.jid, env=owner_env)
            assert (code, out) == (4, "") and err.startswith("qe-worker: unknown-command: ")
        finally:
            await plain.close(2)
        assert (await qe("cancel", app.jid, owners_job, env=owner_env))[0] == 0  # its owner may
    finally:
        await app.close(2)


def _run_default_worker(prosody, accounts, tmp_path, resource: str, *flags: str):
    """``qe-worker run --resource RESOURCE FLAGS`` as the worker account, in its own process."""
    from tests.support.workers import WorkerProcess

    env = {**prosody.env("worker", accounts["worker"][1]), "QE_STATE_DIR": str(tmp_path)}
    process = WorkerProcess(["-m", "libs.cli", "run", "--resource", resource, *flags], env,
                            tmp_path / f"{resource}.log")
    return process, f"{accounts['worker'][0]}/{resource}"


async def test_run_public_and_run_maintenance_as_processes(prosody, accounts, tmp_path, login):
    from libs.bridge import RemoteError, wait_answering

    owner, stranger = await login("worker"), await login("stranger")
    process, jid = _run_default_worker(prosody, accounts, tmp_path, "clipublic", "--public")
    async with process:
        await wait_answering(owner, jid, 20)
        assert await stranger.call(jid, "ping", timeout=5) == {"pong": True, "environment": "python"}  # anyone may call it
        assert (await owner.call(jid, "stats", timeout=5))["periodic"] == []  # no maintenance tasks
        process.signal(signal.SIGTERM)
        assert await process.wait(15) == 0, process.log()

    process, jid = _run_default_worker(prosody, accounts, tmp_path, "climaint", "--maintenance")
    async with process:
        await wait_answering(owner, jid, 20)
        periodic = (await owner.call(jid, "stats", timeout=5))["periodic"]
        assert {t["name"] for t in periodic} == {"system_health_check", "cleanup_history", "log_statistics"}
        assert all(t["is_running"] for t in periodic)
        with pytest.raises(RemoteError) as info:  # not public
            await stranger.call(jid, "ping", timeout=5)
        assert info.value.code == "forbidden"
        process.signal(signal.SIGTERM)
        assert await process.wait(15) == 0, process.log()


async def _demo(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "libs.cli", "demo", *args, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)


async def _read_until(proc: asyncio.subprocess.Process, words: str, lines: list[str]) -> None:
    """Read the demo's stdout into ``lines`` until a line holds ``words``."""
    while not any(words in line for line in lines):
        lines.append((await asyncio.wait_for(proc.stdout.readline(), 30)).decode())
        assert lines[-1], "demo ended early: " + "".join(lines)


def _gone(lines: list[str]) -> None:
    """The demo's server folder and worker process (if it got that far) no longer exist."""
    import psutil

    workdir = next(line.split("data in ")[1].rstrip(")\n") for line in lines if "data in " in line)
    assert not Path(workdir).exists()  # the server's folder, and with it the demo's jobs, is gone
    for line in lines:
        if "(pid " in line:
            pid = int(line.split("(pid ")[1].split(")")[0])
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_demo_once_pings_and_cleans_up():
    proc = await _demo("--once")
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = out.decode().splitlines(keepends=True)
    assert proc.returncode == 0, lines
    assert any('{"pong": true, "environment": "python"}' in line for line in lines)
    assert not any("Press Ctrl+C" in line for line in lines)
    _gone(lines)


@pytest.mark.parametrize("when", ["serving", "starting"])
async def test_demo_stops_worker_and_server_on_sigterm_and_exits_0(when: str):
    """README: Ctrl+C or SIGTERM, at any point, stops the worker and the server, and the demo
    exits 0. ``starting``: the signal comes as soon as the server is up, which is while the
    demo starts the worker process (a signal there used to leave the worker running)."""
    proc = await _demo()
    lines: list[str] = []
    try:
        await _read_until(proc, "Press Ctrl+C" if when == "serving" else "data in ", lines)
        if when == "serving":
            assert any('{"pong": true, "environment": "python"}' in line for line in lines)
        proc.send_signal(signal.SIGTERM)
        try:  # the end of its output: the demo and every process it started (they share it) ended
            rest, _ = await asyncio.wait_for(proc.communicate(), 20)
        except TimeoutError:
            raise AssertionError("the demo, or a worker or server it started, still runs 20 s after SIGTERM; "
                                 "output: " + "".join(lines)) from None
        assert proc.returncode == 0
        lines += rest.decode().splitlines(keepends=True)
        _gone(lines)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


_SCRIPT = """\
import asyncio
import sys
from libs.bridge import App as AppClass

App = AppClass(public=False, rest=False)     # QE's docs: no startup(), no resource (RESOURCE sets it)
res = await App.api(jid=App.jid, cmd="ping", timeout=10)
print("self-ping", res, sys.argv[1:], flush=True)
loop = asyncio.get_event_loop()
loop.run_forever()
print("run_forever returned", flush=True)
"""


async def test_run_a_script_with_top_level_await_then_sigterm(prosody, accounts, tmp_path, login):
    """``qe-worker run SCRIPT ARGS``: a QE-docs-style script awaits at top level (the worker
    calls itself, so the loop ran and the worker was online), then runs the loop itself; it
    answers callers, and SIGTERM shuts it down with exit 0."""
    from tests.support.workers import WorkerProcess

    script = tmp_path / "worker.py"
    script.write_text(_SCRIPT)
    env = {**prosody.env("worker", accounts["worker"][1]), "RESOURCE": "cliscript", "QE_STATE_DIR": str(tmp_path)}
    jid = f"{accounts['worker'][0]}/cliscript"
    owner = await login("worker")
    async with WorkerProcess(["-m", "libs.cli", "run", str(script), "one", "--two"], env,
                             tmp_path / "script.log") as process:
        await process.wait_lines(lambda lines: bool(lines), 20)
        assert process.lines == ["self-ping {'pong': True, 'environment': 'python'} ['one', '--two']"], process.log()
        assert await owner.call(jid, "ping", timeout=5) == {"pong": True, "environment": "python"}
        process.signal(signal.SIGTERM)
        assert await process.wait(15) == 0, process.log()
    assert process.lines[-1] == "run_forever returned"
    assert "Traceback" not in process.log() and " ERROR " not in process.log()


async def test_run_a_script_with_a_syntax_error_or_a_bug(tmp_path, owner_env):
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nawait asyncio.sleep(0)\ndef f(:\n")
    assert await qe("run", str(bad), env=owner_env) == (2, "", f"qe-worker: {bad}:3: SyntaxError: invalid syntax\n")
    buggy = tmp_path / "buggy.py"
    buggy.write_text("import asyncio\nawait asyncio.sleep(0)\n{}['missing']\n")
    code, out, err = await qe("run", str(buggy), env=owner_env)
    assert code == 1 and out == ""
    assert err.startswith(f'Traceback (most recent call last):\n  File "{buggy}", line 3, in <module>\n'), err
    assert err.endswith("KeyError: 'missing'\n")
    assert await qe("run", str(tmp_path / "nope.py"), env=owner_env) == \
        (2, "", f"qe-worker: cannot run {str(tmp_path / 'nope.py')!r}: No such file or directory\n")


# -- issue #14 point 7: --json, --connect-timeout, JSON_BODY from stdin or a file, info,
# -- commands, schedule --notify -------------------------------------------------------------

async def test_json_prints_answers_and_errors_on_stdout_only(worker, owner_env, prosody, accounts):
    assert await qe("ping", worker.jid, "--json", env=owner_env) == (0, '{"pong": true, "environment": "python"}\n', "")
    assert await qe("call", worker.jid, "qe", '{"code": -1000}', "--json", env=owner_env) == \
        (6, '{"code": -1000, "msg": "no api handler"}\n', "")  # an answer, not an error: printed as it came

    async def error(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
        code, out, err = await qe(*args, "--json", env=env)
        assert err == "", err
        (found,) = json.loads(out).values()
        assert set(found) == {"code", "message"} and out.count("\n") == 1, out
        return code, found["code"], found["message"]

    stranger_env = prosody.env("stranger", accounts["stranger"][1])
    assert (await error("ping", worker.jid, env=stranger_env))[:2] == (4, "forbidden")
    assert (await error("call", worker.jid, "slow", "--timeout", "0.5", env=owner_env))[:2] == (3, "timeout")
    assert (await error("call", "--app", "nosuchservice", "ping", env=owner_env))[:2] == (4, "no-worker")
    assert (await error("ping", worker.jid, env={**owner_env, "QE_PASSWORD": "wrong"}))[:2] == (5, "auth-failed")
    code, kind, message = await error("ping", worker.jid, env={**owner_env, "QE_PORT": str(_closed_port())})
    assert (code, kind) == (5, "not-connected") and "cannot reach" in message
    assert (await error("ping", worker.jid, env={**owner_env, "QE_TLS": "sometimes"}))[:2] == (2, "config")
    assert (await error("call", worker.jid, "echo", "[1]", env=owner_env))[:2] == (2, "usage")


async def test_connect_timeout_bounds_the_login_and_timeout_the_answer(worker, owner_env):
    """A server that accepts the connection and then says nothing: the login gives up after
    --connect-timeout, however long --timeout is."""
    loop = asyncio.get_running_loop()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the handshake; nobody ever answers
        t0 = loop.time()
        code, out, err = await qe("ping", worker.jid, "--connect-timeout", "1", "--timeout", "60",
                                  env={**owner_env, "QE_PORT": str(silent.getsockname()[1])})
        took = loop.time() - t0
    assert (code, out) == (5, "") and err.startswith("qe-worker: ") and err.count("\n") == 1, err
    assert took < 10, took  # 1 s plus starting Python, not the 60 s of --timeout or the 10 s default
    code, _, err = await qe("call", worker.jid, "slow", "--timeout", "0.5", "--connect-timeout", "30", env=owner_env)
    assert code == 3 and err.startswith("qe-worker: timeout")


async def test_json_body_from_stdin_or_a_file_up_to_the_payload_limit(worker, owner_env, tmp_path):
    code, out, err = await qe("call", worker.jid, "echo", "-", env=owner_env, stdin='{"a": "é"}\n'.encode())
    assert (code, json.loads(out), err) == (0, {"a": "é"}, "")
    big = {"data": "x" * 200_000}  # about 200 kB on the wire, under QE_MAX_PAYLOAD (240,000 bytes)
    (tmp_path / "big.json").write_text(json.dumps(big))
    code, out, err = await qe("call", worker.jid, "echo", f"@{tmp_path / 'big.json'}", env=owner_env)
    assert (code, err) == (0, "") and json.loads(out) == big
    (tmp_path / "huge.json").write_text(json.dumps({"data": "x" * 250_000}))
    code, out, err = await qe("call", worker.jid, "echo", f"@{tmp_path / 'huge.json'}", env=owner_env)
    assert (code, out) == (2, "") and err.count("\n") == 1, err  # refused before sending, in one line
    assert err.startswith("qe-worker: request is ") and "bytes on the wire, the limit is 240000" in err, err
    # a client allowed more than the worker: the worker refuses it, with its own limit in the message
    code, out, err = await qe("call", worker.jid, "echo", f"@{tmp_path / 'huge.json'}",
                              env={**owner_env, "QE_MAX_PAYLOAD": "400000"})
    assert (code, out) == (4, "") and err.startswith("qe-worker: too-large: ") and "240000" in err, err
    code, out, err = await qe("call", worker.jid, "echo", f"@{tmp_path / 'missing.json'}", env=owner_env)
    assert (code, out) == (2, "") and err == f"qe-worker: cannot read JSON_BODY @{tmp_path / 'missing.json'}: " \
                                             "No such file or directory\n"
    code, out, err = await qe("call", worker.jid, "echo", "-", env=owner_env, stdin=b"[]")
    assert (code, out) == (2, "") and "JSON_BODY from stdin must be a JSON object" in err


async def test_info(worker, owner_env):
    code, out, err = await qe("info", worker.jid, env=owner_env)
    info = json.loads(out)
    assert (code, err) == (0, "") and info["jid"] == worker.jid and {"version", "uptime_s", "requests"} <= set(info)
    code, out, err = await qe("info", worker.jid, "--json", env=owner_env)
    assert (code, err) == (0, "") and json.loads(out)["jid"] == worker.jid


async def test_commands_until_workers_list_them_is_a_clear_error(worker, owner_env):
    """``qe-worker commands`` calls the built-in ``commands`` (being added to the library in
    parallel). Until a worker has it, the answer is ``unknown-command`` (no ``onapi``) or, for a
    QE-style worker whose ``onapi`` takes every command, an answer that is not a command list:
    both exit 4 with one line. Once it exists, the table lists the built-ins. The table's
    layout is tested on canned answers in tests/unit/test_cli_output.py."""
    plain = App(resource="clicommands", config=load_config(owner_env), exit_on_fatal=False, keepalive=0)
    try:
        await plain.wait_online(10)
        code, out, err = await qe("commands", plain.jid, env=owner_env)
        if code == 0:  # the built-in exists
            names = {line.split()[0] for line in out.splitlines() if not line.startswith(" ")}
            assert {"info", "ping", "commands"} <= names and err == "", out
            code, out, err = await qe("commands", plain.jid, "--json", env=owner_env)
            assert code == 0 and {"info", "ping"} <= {c["name"] for c in json.loads(out)["commands"]}
        else:
            assert (code, out) == (4, "") and err.count("\n") == 1, err
            assert err.startswith("qe-worker: unknown-command: ") and "does not list its commands" in err, err
            code, out, err = await qe("commands", plain.jid, "--json", env=owner_env)
            assert (code, err) == (4, "") and json.loads(out)["error"]["code"] == "unknown-command"
    finally:
        await plain.close(2)
    code, out, err = await qe("commands", worker.jid, env=owner_env)  # its onapi answers {} to what it does not know
    if code != 0:
        assert (code, out) == (4, "") and err.startswith("qe-worker: bad-result: the answer is not a command list"), err


async def _default_worker(prosody, accounts, tmp_path, resource: str) -> tuple[App, dict[str, str], dict[str, str]]:
    """The default worker, allowing ``client``; (app, owner env, client env)."""
    from libs.scheduling import JobStore
    from workers.python.worker import build

    owner_env = prosody.env("worker", accounts["worker"][1])
    app = build(resource=resource, config=load_config({**owner_env, "QE_ALLOW": accounts["client"][0]}),
                store=JobStore(tmp_path / f"{resource}.sqlite3"), exit_on_fatal=False, keepalive=0)
    await app.wait_online(10)
    return app, owner_env, prosody.env("client", accounts["client"][1])


class _Streaming:
    """A ``qe-worker`` process whose output is read line by line while it runs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *args: str, env: dict[str, str]) -> _Streaming:
        return cls(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "libs.cli", *args, env={**os.environ, **env}, cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE))

    async def line(self, timeout: float = 20) -> str:
        line = (await asyncio.wait_for(self.proc.stdout.readline(), timeout)).decode()
        assert line, "the command ended: " + (await self.proc.stderr.read()).decode()
        return line.rstrip("\n")

    async def end(self, timeout: float = 20) -> tuple[int, str, str]:
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        return self.proc.returncode, out.decode(), err.decode()

    async def __aenter__(self) -> _Streaming:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def test_schedule_notify_prints_each_run_until_the_job_ends(prosody, accounts, tmp_path):
    from datetime import UTC, datetime, timedelta

    app, _owner_env, client_env = await _default_worker(prosody, accounts, tmp_path, "clinotify")
    try:
        at = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()  # time for the CLI to start and log in
        code, out, err = await qe("schedule", app.jid, "echo", '{"a": 1}', "--at", at, "--notify", env=client_env)
        assert (code, err) == (0, ""), err
        first, run, end = out.splitlines()
        job = json.loads(first)["job"]
        assert run.endswith(' echo ok {"a": 1}') and run.split()[0].endswith("Z"), run
        assert end == f"job {job} finished after 1 run"
    finally:
        await app.close(2)


async def test_schedule_notify_json_ends_when_the_job_is_cancelled_elsewhere(prosody, accounts, tmp_path):
    app, owner_env, client_env = await _default_worker(prosody, accounts, tmp_path, "clinotifyjson")
    try:
        async with await _Streaming.start("schedule", app.jid, "echo", '{"n": 2}', "--every", "200ms", "--notify",
                                          "--poll", "0.2", "--json", env=client_env) as cli:
            job = json.loads(await cli.line())["job"]
            for _ in range(2):
                run = json.loads(await cli.line())
                assert (run["job"], run["cmd"], run["ok"], run["result"]) == (job, "echo", True, {"n": 2})
            assert (await qe("cancel", app.jid, job, env=owner_env))[0] == 0  # the worker's owner cancels it
            code, out, err = await cli.end()
        assert (code, err) == (0, "")
        *runs, end = [json.loads(line) for line in out.splitlines()]  # runs that came meanwhile, then the end
        assert all(run["job"] == job for run in runs)
        assert (end["job"], end["status"]) == (job, "cancelled") and end["last_error"].startswith("cancelled by ")
    finally:
        await app.close(2)


async def test_schedule_notify_stops_watching_on_sigint_and_the_job_goes_on(prosody, accounts, tmp_path):
    app, _owner_env, client_env = await _default_worker(prosody, accounts, tmp_path, "clinotifyint")
    try:
        async with await _Streaming.start("schedule", app.jid, "echo", "--every", "200ms", "--notify",
                                          env=client_env) as cli:
            job = json.loads(await cli.line())["job"]
            assert " echo ok {}" in await cli.line()
            cli.proc.send_signal(signal.SIGINT)
            code, out, err = await cli.end()
        assert (code, err) == (0, "")
        assert all(" echo ok {}" in line for line in out.splitlines())
        code, out, _ = await qe("jobs", app.jid, env=client_env)
        assert [j["status"] for j in json.loads(out)["jobs"] if j["job"] == job] == ["active"]
        assert (await qe("cancel", app.jid, job, env=client_env))[0] == 0
    finally:
        await app.close(2)
