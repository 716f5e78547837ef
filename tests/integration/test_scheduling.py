"""Remote scheduling over XMPP against a real Prosody: schedule, observe, cancel, restart."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime, timedelta

import pytest

from libs.bridge import App, RemoteError, load_config, wait_answering
from libs.scheduling import JobScheduler, JobStore, RemoteWorker
from tests.support.workers import chat_messages, default_worker


@pytest.fixture
async def worker(prosody, accounts, tmp_path):
    """A non-public worker allowing `client`, with a job scheduler and a `tick` command that
    reports each run on a queue."""
    _jid, password = accounts["worker"]
    env = {**prosody.env("worker", password), "QE_ALLOW": accounts["client"][0]}
    app = App(resource="sched", config=load_config(env), exit_on_fatal=False, keepalive=0)
    scheduler = JobScheduler(app, JobStore(tmp_path / "jobs.sqlite3"))
    app.runs = asyncio.Queue()

    @app.command("tick")
    async def tick(specs):
        await app.runs.put((specs.uid, specs.body))
        return {"tick": specs.body.get("n", 0)}

    await app.wait_online(10)
    app.scheduler = scheduler
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


async def test_access_rules_for_scheduling(worker, login, accounts):
    stranger = await login("stranger")
    with pytest.raises(RemoteError) as info:
        await RemoteWorker(stranger, worker.jid).every("1s").call("tick")
    assert info.value.code == "forbidden"

    client = await login("client")
    handle = await RemoteWorker(client, worker.jid).every("10s").call("tick")
    owner = await login("worker")
    # the owner sees every job; the client only its own
    assert handle.id in [j["job"] for j in await RemoteWorker(owner, worker.jid).jobs()]
    mine = await RemoteWorker(owner, worker.jid).every("10s").call("tick")
    assert mine.id not in [j["job"] for j in await RemoteWorker(client, worker.jid).jobs()]
    with pytest.raises(RemoteError) as info:  # another caller's job looks like no job at all
        await RemoteWorker(client, worker.jid).cancel(mine.id)
    assert info.value.code == "not-found"
    with pytest.raises(RemoteError) as info:
        await RemoteWorker(client, worker.jid).cancel("no-such-job")
    assert info.value.code == "not-found"
    await RemoteWorker(owner, worker.jid).cancel(handle.id)  # the owner may cancel anyone's
    await mine.cancel()


async def test_bad_schedules_are_refused_with_reasons(worker, login):
    client = await login("client")
    bad = [
        ({"cmd": "tick", "trigger": {"every": "5x"}}, "5x"),
        ({"cmd": "tick", "trigger": {"every": "10ms"}}, "below"),
        ({"cmd": "tick", "trigger": {"cron": "61 * * * *"}}, "61"),
        ({"cmd": "tick", "trigger": {"at": ["2001-01-01T00:00:00+00:00"]}}, "never fires"),
        ({"cmd": "schedule", "trigger": {"every": "1s"}}, "cannot be scheduled"),
        ({"cmd": "tick", "trigger": {"every": "1s"}, "misfire": "burst"}, "misfire"),
        ({"trigger": {"every": "1s"}}, "cmd"),
        ({"cmd": "nosuch", "trigger": {"every": "1s"}}, "no command 'nosuch'"),
    ]
    for body, words in bad:
        with pytest.raises(RemoteError) as info:
            await client.call(worker.jid, "schedule", body, timeout=5)
        assert info.value.code == "bad-request" and words in info.value.remote_message, body


async def test_job_survives_sigkill_and_restart(prosody, accounts, login, tmp_path):
    """The default worker in its own process: schedule, SIGKILL it, start it again.
    (tests/reliability/test_crash_safety.py does the same with 50 jobs of every kind.)"""
    worker, jid = default_worker(prosody, accounts, "durable", tmp_path)
    client = await login("client")
    messages = chat_messages(client)
    async with worker:
        await wait_answering(client, jid, 20)
        handle = await RemoteWorker(client, jid).every("300ms").call("echo", {"hi": 1}, notify=True)
        assert json.loads(await asyncio.wait_for(messages.get(), 5))["result"] == {"hi": 1}
        await worker.kill()
        await worker.start()
        await wait_answering(client, jid, 20)
        jobs = await RemoteWorker(client, jid).jobs()
        assert [(j["job"], j["status"]) for j in jobs] == [(handle.id, "active")]
        while not messages.empty():
            messages.get_nowait()
        note = json.loads(await asyncio.wait_for(messages.get(), 5))  # runs again after restart
        assert note["job"] == handle.id and note["ok"]
        await handle.cancel()
        worker.signal(signal.SIGTERM)
        assert await worker.wait(15) == 0
