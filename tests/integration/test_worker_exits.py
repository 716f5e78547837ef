"""How a worker *process* ends when retrying cannot help, as a supervisor sees it: the exit
status README.md documents and one clear line, for a bad password at first login, a password
that changes while it runs, a second login that takes its resource, and how it keeps trying
while the server is unreachable.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import pytest

from libs.bridge import Client, load_config, wait_answering
from libs.devserver import DevServer, EjabberdCluster
from tests.support.workers import WorkerProcess

EXIT_FATAL = 1  # README: "1 when the server refuses its login or another client takes over its resource"


def _worker(server: DevServer, password: str, tmp_path: Path, **env: str) -> WorkerProcess:
    environ = {**server.env("worker", password), "QE_STATE_DIR": str(tmp_path / "state"), "QE_KEEPALIVE": "0", **env}
    return WorkerProcess(["-m", "workers.python"], environ, tmp_path / "worker.log")


def _lines(worker: WorkerProcess, text: str) -> list[str]:
    return [line for line in worker.log_path.read_text(errors="replace").splitlines() if text in line]


async def test_a_bad_password_at_first_login_exits_1_with_one_line(fresh_prosody, tmp_path):
    fresh_prosody.register("worker", "right")
    async with _worker(fresh_prosody, "wrong", tmp_path) as worker:
        assert await worker.wait(20) == EXIT_FATAL
    refused = _lines(worker, "refused the password for worker@localhost")
    assert len(refused) == 2, worker.log()  # the log line, and the same reason as the process's last words
    assert refused[-1].startswith("qe-worker: ")
    assert "Traceback" not in worker.log(tail=1000)


async def test_a_password_changed_while_running_ends_the_worker_after_the_grace(fresh_prosody, tmp_path):
    """The server restarts with the worker's password changed: the worker retries for
    QE_AUTH_GRACE seconds (a restarting server may refuse briefly), then exits as for a bad
    password at first login, instead of logging an error at every backoff step forever."""
    fresh_prosody.register("worker", "old")
    fresh_prosody.register("client", "cpw")
    async with _worker(fresh_prosody, "old", tmp_path, QE_AUTH_GRACE="1",
                       QE_ALLOW="client@localhost") as worker:
        async with Client(load_config(fresh_prosody.env("client", "cpw")), connect_timeout=10) as client:
            await wait_answering(client, "worker@localhost/python", 20)
        fresh_prosody.register("worker", "new")
        await asyncio.to_thread(fresh_prosody.restart)
        assert await worker.wait(40) == EXIT_FATAL
    assert len(_lines(worker, "refused our login on reconnect")) == 1, worker.log()
    last_words = _lines(worker, "qe-worker: the server refused the password for worker@localhost")
    assert len(last_words) == 1 and "refused at every reconnect" in last_words[0], worker.log()
    assert "Traceback" not in worker.log(tail=1000)


@pytest.mark.core  # on ejabberd too: there the newcomer is not told (see below)
async def test_a_second_login_on_the_same_resource_ends_the_first_worker(fresh_prosody, tmp_path):
    """The first worker exits 1 with one line. On Prosody it tells the newcomer where it ran
    (a login of its own on the way out), and the newcomer logs a WARNING. On ejabberd a
    conflict may also mean "over max_user_sessions", where that extra login would push out
    another session of the account: the first says both possibilities and tells no one."""
    on_prosody = not isinstance(fresh_prosody, EjabberdCluster)
    fresh_prosody.register("worker", "wpw")
    fresh_prosody.register("client", "cpw")
    first = _worker(fresh_prosody, "wpw", tmp_path / "1", QE_ALLOW="client@localhost")
    second = _worker(fresh_prosody, "wpw", tmp_path / "2", QE_ALLOW="client@localhost")
    for worker in (first, second):
        worker.log_path.parent.mkdir()
    async with first, Client(load_config(fresh_prosody.env("client", "cpw")), connect_timeout=10) as client:
        await wait_answering(client, "worker@localhost/python", 20)
        first_pid = first.proc.pid if first.proc else 0
        async with second:
            assert await first.wait(20) == EXIT_FATAL
            assert second.running
            assert await client.call("worker@localhost/python", "ping", timeout=5) == {"pong": True, "environment": "python"}  # the newcomer
            # the newcomer reports it too: the server told only the first, which told it on the way out
            told = f"took over this resource from another session (host {socket.gethostname()[:64]}, pid {first_pid})"
            if on_prosody:
                async with asyncio.timeout(10):
                    while not _lines(second, told):
                        await asyncio.sleep(0.05)  # reading another process's log: nothing to await
    took_over = _lines(first, "qe-worker: another client logged in as worker@localhost/python")
    assert len(took_over) == 1, first.log()
    if on_prosody:
        assert len(_lines(second, told)) == 1 and "WARNING" in _lines(second, told)[0], second.log()
    else:
        assert len(_lines(first, "or the account went over the server's session limit")) == 1, first.log()
        assert not _lines(second, "took over this resource"), second.log()  # the first's exit came after its last word


async def test_an_unreachable_server_is_retried_with_backoff_until_sigterm_which_exits_0(fresh_prosody, tmp_path):
    """Unreachable is not fatal for a worker (the server may come back): it keeps trying with
    the default backoff (0.1-0.2 s, doubling, up to 30 s), one line per attempt, and stops
    cleanly when told to. No hot loop: over 4 s, at most 6 attempts (even the shortest
    delays, 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s, leave room for 6)."""
    fresh_prosody.register("worker", "wpw")
    await asyncio.to_thread(fresh_prosody.stop)
    unreachable = f"cannot reach 127.0.0.1:{fresh_prosody.port}"
    async with _worker(fresh_prosody, "wpw", tmp_path) as worker:
        async with asyncio.timeout(20):
            while not _lines(worker, unreachable):
                await asyncio.sleep(0.05)  # reading another process's log: nothing to await
        await asyncio.sleep(4)  # the window attempts are counted over
        attempts = len(_lines(worker, unreachable))
        worker.signal(signal.SIGTERM)
        assert await worker.wait(15) == 0
    assert 3 <= attempts <= 6, worker.log()
    assert "Traceback" not in worker.log(tail=1000)


async def test_only_our_own_account_can_claim_to_have_held_our_resource(prosody, accounts, caplog):
    """The takeover notice makes the newcomer log a WARNING; another account's notice is
    ignored (it cannot have held our resource), our own account's is reported."""
    import logging
    import xml.etree.ElementTree as ET

    from libs.bridge import App
    from libs.bridge.protocol import NS
    from tests.support.plain import PlainClient

    seen = asyncio.Event()

    class _Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "took over this resource" in record.getMessage():
                seen.set()

    handler = _Seen()
    logging.getLogger("libs.bridge.transport").addHandler(handler)
    app = App(resource="held", config=load_config(prosody.env("worker", accounts["worker"][1])),
              exit_on_fatal=False, keepalive=0)
    try:
        await app.wait_online(10)

        async def claim(name: str, resource: str, pid: str) -> None:
            jid, password = accounts[name]
            async with PlainClient(jid, password, prosody.host, prosody.port, resource=resource) as plain:
                msg = plain.xmpp.make_message(mto=app.jid, mtype="headline")
                msg.xml.append(ET.Element(f"{{{NS}}}takeover", {"host": "elsewhere", "pid": pid}))
                msg.send()

        await claim("stranger", "x", "111")
        await claim("worker", "held.takeover-abc", "222")  # after the stranger's, on the same server
        await asyncio.wait_for(seen.wait(), 10)
        told = [r.getMessage() for r in caplog.records if "took over this resource" in r.getMessage()]
        assert told == [f"{app.jid} took over this resource from another session (host elsewhere, pid 222), "
                        "which has stopped: two processes were started with the same account and resource"]
    finally:
        logging.getLogger("libs.bridge.transport").removeHandler(handler)
        await app.close()
