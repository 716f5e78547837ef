"""Remote scheduling over XMPP against a real Prosody: schedule, observe, cancel, restart."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from libs.bridge import App, RemoteError, load_config, wait_answering
from libs.scheduling import JobScheduler, JobStore, RemoteWorker
from tests.support.workers import chat_messages, default_worker

pytestmark = pytest.mark.core  # runs on every server (./run test-ejabberd: a 2-node ejabberd cluster)


def scheduling_worker(prosody, accounts, store: Path, allow: str) -> App:
    """A non-public worker allowing ``allow`` (comma-separated bare JIDs), with a job
    scheduler on ``store`` and a ``tick`` command that reports each run on ``app.runs``."""
    _jid, password = accounts["worker"]
    env = {**prosody.env("worker", password), "QE_ALLOW": allow}
    app = App(resource="sched", config=load_config(env), exit_on_fatal=False, keepalive=0)
    app.scheduler = JobScheduler(app, JobStore(store))
    app.runs = asyncio.Queue()

    @app.command("tick")
    async def tick(specs):
        await app.runs.put((specs.uid, specs.body))
        return {"tick": specs.body.get("n", 0)}

    return app


@pytest.fixture
async def worker(prosody, accounts, tmp_path):
    """``scheduling_worker`` allowing `client`, online."""
    app = scheduling_worker(prosody, accounts, tmp_path / "jobs.sqlite3", accounts["client"][0])
    await app.wait_online(10)
    yield app
    await app.close(2)


async def test_every_runs_until_cancelled(worker, login):
    client = await login("client")
    remote = RemoteWorker(client, worker.jid)
    handle = await remote.every("300ms").call("tick", {"n": 1})
    for _ in range(3):
        uid, body = await asyncio.wait_for(worker.runs.get(), 5)
        assert uid == client.transport.jid.split("/")[0] and body == {"n": 1}  # runs as the requester
    await handle.cancel()
    info = await handle.info()
    assert info["status"] == "cancelled" and info["run_count"] >= 3
    runs_at_cancel = info["run_count"]
    while not worker.runs.empty():  # a run may have been under way at the cancel
        worker.runs.get_nowait()
    with pytest.raises(TimeoutError):  # nothing more for 3 intervals
        await asyncio.wait_for(worker.runs.get(), 0.9)
    assert (await handle.info())["run_count"] == runs_at_cancel


async def test_at_two_instants_runs_exactly_twice(worker, login):
    client = await login("client")
    now = datetime.now(UTC)
    handle = await RemoteWorker(client, worker.jid).at(now + timedelta(seconds=0.3),
                                                         now + timedelta(seconds=0.6)).call("tick", {"n": 2})
    for _ in range(2):
        await asyncio.wait_for(worker.runs.get(), 5)
    await worker.scheduler.wait_job(handle.id, lambda job: job.status == "finished", 5)
    info = await handle.info()
    assert info["status"] == "finished" and info["run_count"] == 2 and info["next_run"] is None
    assert worker.runs.empty()


async def test_results_come_back_as_messages_when_asked(worker, login):
    client = await login("client")
    messages = chat_messages(client)
    handle = await RemoteWorker(client, worker.jid).every("200ms").call("tick", {"n": 7}, notify=True)
    note = json.loads(await asyncio.wait_for(messages.get(), 5))
    assert note["job"] == handle.id and note["ok"] is True and note["result"] == {"tick": 7}
    await handle.cancel()


async def test_a_caller_removed_from_qe_allow_loses_its_jobs_at_their_next_run(prosody, accounts, login, tmp_path):
    """docs/scheduling.md: the requester's role is checked again at each run. The worker
    restarts without the caller in QE_ALLOW: the job's next run is refused before it runs,
    the job ends (cancelled) and says why, to the requester and in the owner's listing."""
    client = await login("client")
    messages = chat_messages(client)
    store = tmp_path / "jobs.sqlite3"
    app = scheduling_worker(prosody, accounts, store, accounts["client"][0])
    try:
        await app.wait_online(10)
        handle = await RemoteWorker(client, app.jid).every("300ms").call("tick", {"n": 1}, notify=True)
        await asyncio.wait_for(app.runs.get(), 5)  # it runs while the caller is allowed
    finally:
        await app.close(2)
    app = scheduling_worker(prosody, accounts, store, "")  # restarted without the caller
    try:
        await app.wait_online(10)
        try:
            job = await app.scheduler.wait_job(handle.id, lambda job: job.status != "active", 5)
        except TimeoutError:
            raise AssertionError(f"still active after 5 s: {app.scheduler.store.get(handle.id)}") from None
        assert job.status == "cancelled" and "no longer allowed" in (job.last_error or "")
        assert handle.id not in app.scheduler.tasks  # nothing is left to run it again
        assert app.runs.empty()  # refused before the command ran
        async with asyncio.timeout(5):  # the requester is told why (notify: true)
            while (note := json.loads(await messages.get()))["ok"]:
                pass
        assert note["job"] == handle.id and "forbidden" in note["error"] and "no longer allowed" in note["error"]
        owner = await login("worker")
        listed = {j["job"]: j for j in await RemoteWorker(owner, app.jid).jobs()}[handle.id]
        assert listed["status"] == "cancelled" and listed["next_run"] is None
        assert "no longer allowed" in listed["last_error"]
        with pytest.raises(RemoteError) as info:  # and the caller itself may no longer ask
            await RemoteWorker(client, app.jid).jobs()
        assert info.value.code == "forbidden"
    finally:
        await app.close(2)
    app = scheduling_worker(prosody, accounts, store, accounts["client"][0])  # allowed again: it stays ended
    try:
        await app.wait_online(10)
        assert app.scheduler.tasks == {}
        assert [j["status"] for j in await RemoteWorker(client, app.jid).jobs()] == ["cancelled"]
    finally:
        await app.close(2)


async def test_job_survives_sigkill_and_restart(prosody, accounts, login, tmp_path):
    """The default worker in its own process: schedule, SIGKILL it, start it again.
    (tests/reliability/test_crash_safety.py does the same with 50 jobs of every kind.)"""
    worker, jid = default_worker(prosody, accounts, "durable", tmp_path)
    client = await login("client")
    owner = await login("worker")  # wakes at the worker's presence (wait_answering)
    messages = chat_messages(client)
    async with worker:
        await wait_answering(owner, jid, 20)
        handle = await RemoteWorker(client, jid).every("300ms").call("echo", {"hi": 1}, notify=True)
        assert json.loads(await asyncio.wait_for(messages.get(), 5))["result"] == {"hi": 1}
        await worker.kill()
        killed = datetime.now(UTC)
        await worker.start()
        await wait_answering(owner, jid, 20)
        jobs = await RemoteWorker(client, jid).jobs()
        assert [(j["job"], j["status"]) for j in jobs] == [(handle.id, "active")]
        async with asyncio.timeout(5):  # it runs again after the restart: a run planned after the kill
            while datetime.fromisoformat((note := json.loads(await messages.get()))["scheduled_for"]) <= killed:
                pass
        assert note["job"] == handle.id and note["ok"]
        await handle.cancel()
        worker.signal(signal.SIGTERM)
        assert await worker.wait(15) == 0
