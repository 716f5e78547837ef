"""``qe-worker`` without a server: every subcommand's help, ``--version``, JSON_BODY from stdin
or a file, ``--json`` errors, the shell completion scripts, and ``schedule --notify``'s watch
(``libs._watch``) on a ``MemoryNetwork``. tests/integration/test_cli.py runs the commands
against a real server."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import platform
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from libs import cli
from libs._completion import SHELLS, script
from libs._watch import JobWatch
from libs.bridge import App, Client, MemoryNetwork
from libs.scheduling.client import RemoteWorker
from libs.scheduling.remote import JobScheduler
from libs.scheduling.store import JobStore


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str, str]:
    """``main(argv)``: (exit status, stdout, stderr), whether it returned or exited."""
    try:
        status: int | str | None = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


SUBCOMMANDS = sorted(_subcommands())


def test_the_subcommands() -> None:
    assert SUBCOMMANDS == sorted(["call", "ping", "info", "commands", "schedule", "jobs", "cancel", "run",
                                  "server", "demo", "completion", "dashboard"])


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_help_has_a_description_and_its_exit_codes(name, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    status, out, _ = _run([name, "--help"], capsys)
    assert status == 0
    # usage, a blank line, then the description: a paragraph of its own before the arguments
    description = out.split("\n\n")[1]
    assert not description.startswith(("positional arguments:", "options:")) and len(description) > 20, out
    codes = out.split("exit codes:\n")[1].split("\n\n")[0]
    listed = re.findall(r"^  (\d+|n) ", codes, re.MULTILINE)
    assert listed[0] == "0" and len(listed) >= 2, codes


@pytest.mark.parametrize("name", ["call", "ping", "info", "commands", "schedule", "jobs", "cancel", "demo"])
def test_subcommands_that_log_in_take_both_timeouts(name) -> None:
    options = {flag for action in _subcommands()[name]._actions for flag in action.option_strings}
    assert {"--timeout", "--connect-timeout"} <= options
    if name != "demo":
        assert "--json" in options


def test_version(capsys) -> None:
    from importlib import metadata

    from libs.bridge import version

    expected = f"qe-worker {version()} (Python {platform.python_version()}, slixmpp {metadata.version('slixmpp')})\n"
    for flag in ("--version", "-V"):
        assert _run([flag], capsys) == (0, expected, "")


# -- JSON_BODY -----------------------------------------------------------------------------------

def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_json_body_from_the_argument_stdin_or_a_file(tmp_path, monkeypatch) -> None:
    assert cli._json_body(None) == {}
    assert cli._json_body('{"a": 1}') == {"a": 1}
    _stdin(monkeypatch, '{"text": "é"}\n'.encode())
    assert cli._json_body("-") == {"text": "é"}
    body = {"data": "x" * 200_000}
    (tmp_path / "big.json").write_text(json.dumps(body))
    assert cli._json_body(f"@{tmp_path / 'big.json'}") == body
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf{}")  # as some editors save it
    assert cli._json_body(f"@{tmp_path / 'bom.json'}") == {}


@pytest.mark.parametrize("raw, stdin, words", [
    ("{not json", b"", "JSON_BODY is not valid JSON: "),
    ("[1]", b"", "JSON_BODY must be a JSON object, e.g. "),
    ("-", b"", "JSON_BODY from stdin is not valid JSON: "),
    ("-", b'"text"', "JSON_BODY from stdin must be a JSON object"),
    ("-", b"\xff{}", "JSON_BODY from stdin is not UTF-8 text: invalid start byte at byte 0"),
    ("@", b"", "JSON_BODY @: give a file name after @"),
    ("@/no/such/file.json", b"", "cannot read JSON_BODY @/no/such/file.json: No such file or directory"),
])
def test_bad_json_bodies_are_one_line_usage_errors(raw, stdin, words, monkeypatch) -> None:
    _stdin(monkeypatch, stdin)
    with pytest.raises(cli.CliError) as info:
        cli._json_body(raw)
    assert (info.value.status, info.value.code) == (2, "usage")
    assert info.value.text.startswith(words) and "\n" not in info.value.text, info.value.text


def test_a_bad_body_from_a_file_says_which_file(tmp_path) -> None:
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(cli.CliError, match=r"JSON_BODY @\S+list.json must be a JSON object"):
        cli._json_body(f"@{tmp_path / 'list.json'}")


# -- errors, with and without --json ----------------------------------------------------------------

@pytest.fixture
def no_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("QE_")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize("argv, message", [
    (["call", "w@localhost/python", "echo", "[1]"], "JSON_BODY must be a JSON object"),
    (["schedule", "w@localhost/python", "echo", "--every", "5x"], "5x"),
    (["schedule", "w@localhost/python", "echo", "--every", "5s", "--poll", "1"], "--poll goes with --notify"),
    (["call", "w@localhost/python", "echo"], "QE_JID"),  # the configuration: checked before connecting
])
def test_errors_before_connecting(argv, message, capsys, no_config) -> None:
    status, out, err = _run(argv, capsys)
    assert (status, out) == (2, "") and err.startswith("qe-worker: ") and message in err and err.count("\n") == 1
    status, out, err = _run([*argv, "--json"], capsys)
    assert (status, err) == (2, "")
    error = json.loads(out)["error"]
    assert error["code"] in ("usage", "config") and message in error["message"], out


@pytest.mark.parametrize("argv, message", [
    (["call", "w@localhost/python", "ping", "--timeout", "0"], "argument --timeout: must be a positive number"),
    (["ping", "w@localhost/python", "--connect-timeout", "nan"], "argument --connect-timeout: must be a positive"),
    (["info", "w@localhost/python", "--timeout", "soon"], "argument --timeout: 'soon' is not a number of seconds"),
    (["schedule", "w@localhost/python", "echo"], "one of the arguments --every --at --cron is required"),
    (["jobs"], "the following arguments are required: FULL_JID"),
    (["nosuch"], "invalid choice: 'nosuch'"),
])
def test_command_line_errors(argv, message, capsys) -> None:
    status, out, err = _run(argv, capsys)
    assert (status, out) == (2, "") and err.startswith("usage: qe-worker") and ": error: " in err and message in err, err
    status, out, err = _run([*argv, "--json"], capsys)
    assert (status, err) == (2, "")
    assert json.loads(out)["error"]["code"] == "usage" and message in json.loads(out)["error"]["message"]


def test_a_cli_error_as_a_person_and_as_json_sees_it(capsys) -> None:
    error = cli.CliError(4, "forbidden", "not allowed", "forbidden: not allowed")
    assert cli._report(error, as_json=False) == 4
    assert capsys.readouterr() == ("", "qe-worker: forbidden: not allowed\n")
    assert cli._report(error, as_json=True) == 4
    assert capsys.readouterr() == ('{"error": {"code": "forbidden", "message": "not allowed"}}\n', "")


# -- shell completion -------------------------------------------------------------------------------

def _all_options() -> dict[str, set[str]]:
    return {name: {flag for action in sub._actions for flag in action.option_strings}
            for name, sub in _subcommands().items()}


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_scripts_name_every_subcommand_and_option(shell, capsys) -> None:
    status, out, err = _run(["completion", shell], capsys)
    assert (status, err) == (0, "") and out == script(cli._parser(), shell)
    for name, options in _all_options().items():
        section = out.split(f"{name})", 1)[1] if shell in ("bash", "zsh") else "\n".join(
            line for line in out.splitlines() if f"__fish_seen_subcommand_from {name}'" in line)
        assert name in out
        for option in options:
            word = option if shell != "fish" else (f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}")
            assert word in section, (shell, name, option)
    assert "coalesce skip" in out and "bash zsh fish" in out  # fixed choices are offered


def test_the_bash_script_is_valid_and_completes(capsys) -> None:
    bash_script = script(cli._parser(), "bash")
    subprocess.run(["bash", "-n"], input=bash_script, text=True, check=True, timeout=10)

    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        probe = f"{bash_script}\nCOMP_WORDS=(qe-worker {line}); COMP_CWORD={len(words)}; _qe_worker\n" \
                'printf "%s\\n" "${COMPREPLY[@]}"\n'
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True, timeout=10)
        return done.stdout.split()

    assert complete("sch") == ["schedule"]
    assert complete("c") == ["call", "commands", "cancel", "completion"]
    assert complete("-") == ["-h", "--help", "-V", "--version"]
    assert complete("schedule", "w@x/y", "echo", "--misfire", "") == ["coalesce", "skip"]
    assert complete("schedule", "--no") == ["--notify"]
    assert complete("call", "--connect") == ["--connect-timeout"]
    assert complete("completion", "") == ["bash", "zsh", "fish"]
    assert complete("call", "--timeout", "") == []


@pytest.mark.parametrize("shell, check", [("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])])
def test_the_zsh_and_fish_scripts_parse(shell, check, tmp_path) -> None:
    if shutil.which(check[0]) is None:
        pytest.skip(f"{check[0]} is not installed")
    path = tmp_path / f"qe-worker.{shell}"
    path.write_text(script(cli._parser(), shell))
    done = subprocess.run([*check, str(path)], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr


def test_fish_completes(tmp_path) -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed")
    path = tmp_path / "qe-worker.fish"
    path.write_text(script(cli._parser(), "fish"))
    done = subprocess.run(["fish", "-c", f"source {path}; complete -C 'qe-worker schedule x y --misfire '"],
                          capture_output=True, text=True, timeout=10, check=True)
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == ["coalesce", "skip"]


# -- schedule --notify: the watch ----------------------------------------------------------------

@pytest.fixture
async def worker(net: MemoryNetwork, tmp_path: Path) -> AsyncIterator[App]:
    app = App(transport=net.transport("worker@localhost/sched", allow=["client@localhost"]))
    app.scheduler = JobScheduler(app, JobStore(tmp_path / "jobs.sqlite3"))  # type: ignore[attr-defined]

    @app.command("tick")
    async def tick(specs):
        if specs.body.get("fail"):
            raise KeyError("fail")
        return {"n": specs.body.get("n", 0)}

    await app.wait_online(1)
    yield app
    await app.close(2)


async def _watched(client: Client, worker: App, plan: Callable[[RemoteWorker], object], body: dict[str, object],
                   poll: float, as_json: bool = False) -> tuple[str, asyncio.Task[None]]:
    """Schedule with notify as ``qe-worker schedule --notify`` does; the job id and the task
    following it."""
    watch = JobWatch(client, worker.jid, timeout=5, poll=poll)
    handle = await plan(RemoteWorker(client, worker.jid)).call("tick", body, notify=True)  # type: ignore[attr-defined]
    return handle.id, asyncio.get_running_loop().create_task(watch.follow(handle.id, as_json=as_json))


async def test_the_watch_prints_each_run_and_ends_with_the_job(worker, connect, capsys) -> None:
    client = await connect("client@localhost")
    soon = datetime.now(UTC) + timedelta(milliseconds=200)
    job, follow = await _watched(client, worker, lambda w: w.at(soon, soon + timedelta(milliseconds=100)),
                                 {"n": 1}, poll=30)
    await asyncio.wait_for(follow, 5)  # no poll needed: the last run's notification ends it
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(re.fullmatch(r"\S+Z tick ok \{\"n\": 1\}", line) for line in lines[:2]), lines
    assert lines[2] == f"job {job} finished after 2 runs"


async def test_the_watch_sees_a_cancel_by_someone_else_and_prints_failures(worker, connect, capsys) -> None:
    client = await connect("client@localhost")
    job, follow = await _watched(client, worker, lambda w: w.every("100ms"), {"fail": True}, poll=0.05,
                                 as_json=True)
    await worker.scheduler.wait_job(job, lambda j: j.run_count >= 2, 5)  # type: ignore[attr-defined]
    owner = await connect("worker@localhost")
    await RemoteWorker(owner, worker.jid).cancel(job)
    await asyncio.wait_for(follow, 5)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    runs, end = lines[:-1], lines[-1]
    assert len(runs) >= 2 and all(run["job"] == job and run["ok"] is False for run in runs)
    assert "KeyError" in runs[0]["error"]
    assert end["job"] == job and end["status"] == "cancelled" and end["error_count"] >= 2


async def test_the_watch_ignores_other_messages(worker, connect, net, capsys) -> None:
    client = await connect("client@localhost")
    soon = datetime.now(UTC) + timedelta(milliseconds=300)
    job, follow = await _watched(client, worker, lambda w: w.at(soon), {}, poll=30)
    fake = {"job": job, "cmd": "tick", "scheduled_for": "x", "ok": True, "result": {"forged": True}}
    other = await connect("worker@localhost")  # another session of the worker's account: not the worker
    other.transport.send_message(client.transport.jid, json.dumps(fake))
    worker.sendtojid(client.transport.jid, "not json")
    worker.sendtojid(client.transport.jid, {"job": "another-job", "ok": True})
    await asyncio.wait_for(follow, 5)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "forged" not in lines[0] and lines[1] == f"job {job} finished after 1 run"


async def test_the_watch_stops_on_sigint_and_leaves_the_job(worker, connect, capsys) -> None:
    import os
    import signal

    client = await connect("client@localhost")
    job, follow = await _watched(client, worker, lambda w: w.every("100ms"), {}, poll=30)
    await worker.scheduler.wait_job(job, lambda j: j.run_count >= 1, 5)  # type: ignore[attr-defined]
    assert not follow.done()  # it has long installed its handlers: it is waiting for runs
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(follow, 5)
    assert all(" tick ok " in line for line in capsys.readouterr().out.splitlines())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
    assert worker.scheduler.store.get(job).status == "active"  # type: ignore[attr-defined]
