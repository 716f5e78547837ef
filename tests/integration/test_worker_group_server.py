"""``WorkerGroup`` and ``qe-worker run --workers N`` against a real, private Prosody: many
workers in one process, each its own session and resource, a refused login reported while
the others serve, SIGTERM closing them all."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from typing import Any

from libs.bridge import App, RemoteError, WorkerConfig, WorkerGroup, load_config, wait_answering
from libs.bridge.xmpp import _shared

PONG = {"pong": True, "environment": "python"}


async def test_a_group_of_20_answers_and_one_refused_login_is_reported(prosody, accounts, login) -> None:
    config = load_config(prosody.env("worker", accounts["worker"][1]))
    wrong = dataclasses.replace(config, password="not-the-password")

    def factory(*, resource: str, config: WorkerConfig, **kwargs: Any) -> App:
        return App(resource=resource, config=wrong if resource == "grp-7" else config, **kwargs)

    misses = _shared.SCRAM_CACHE.misses
    async with WorkerGroup(20, resource="grp", factory=factory, logins=8, login_timeout=20, config=config) as group:
        started = await group.start()
        jid = accounts["worker"][0]
        assert started.online == 19, started.failed
        assert started.failed == {f"{jid}/grp-7": f"the server refused the password for {jid} (check QE_JID / "
                                                  "QE_PASSWORD)"}
        # one account, one salt: the salted password was computed for the right password once
        # and for the wrong one once, not 20 times
        assert _shared.SCRAM_CACHE.misses - misses <= 2
        owner = await login("worker")
        answers = await asyncio.gather(*(owner.call(f"{jid}/grp-{i}", "ping", timeout=10)
                                         for i in range(20) if i != 7))
        assert answers == [PONG] * 19
        try:
            await owner.call(f"{jid}/grp-7", "ping", timeout=10)
        except RemoteError as exc:
            assert exc.code == "unavailable"
        else:
            raise AssertionError("the worker whose login was refused answered")


async def test_run_workers_n_serves_then_sigterm_closes_all(prosody, accounts, tmp_path, login) -> None:
    from tests.support.workers import WorkerProcess

    env = {**prosody.env("worker", accounts["worker"][1]), "QE_STATE_DIR": str(tmp_path)}
    jid = accounts["worker"][0]
    owner = await login("worker")
    async with WorkerProcess(["-m", "libs.cli", "run", "--workers", "5", "--resource", "many"], env,
                             tmp_path / "group.log") as process:
        for i in range(5):
            assert await wait_answering(owner, f"{jid}/many-{i}", 30) == PONG
        assert await owner.call(f"{jid}/many-2", "echo", {"x": 1}, timeout=10) == {"x": 1}  # the default worker
        process.signal(signal.SIGTERM)
        assert await process.wait(20) == 0, process.log()
    assert "Traceback" not in process.log(), process.log()
    for i in range(5):
        try:
            await owner.call(f"{jid}/many-{i}", "ping", timeout=10)
        except RemoteError as exc:
            assert exc.code == "unavailable"
        else:
            raise AssertionError(f"many-{i} still answers after SIGTERM")


async def test_without_presence_a_group_worker_still_gets_chat_messages(prosody, accounts) -> None:
    """Group workers send no available presence (N² stanzas otherwise); the server still
    delivers chat messages to their full JIDs, so ``msgreceiver`` and ``App.direct`` work."""
    config = load_config(prosody.env("worker", accounts["worker"][1]))
    got: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    group = WorkerGroup(2, resource="quiet", config=config)

    def receive_on(app: App) -> None:
        async def receive(specs: Any) -> None:
            got.put_nowait((app.jid, specs.body))

        app.xmpp.msgreceiver = receive

    for app in group:
        receive_on(app)
    async with group:
        sender = App(resource="quiet-sender", config=config, join_service=False, exit_on_fatal=False,
                     handle_signals=False)
        try:
            await sender.wait_online(10)
            sender.sendtojid(group.workers[1].jid, "hello")
            assert await asyncio.wait_for(got.get(), 10) == (group.workers[1].jid, "hello")
        finally:
            await sender.close(1)
