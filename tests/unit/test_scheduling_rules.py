"""Remote scheduling's rules (access, validation, the per-caller limit, cleanup) on a
``MemoryNetwork``: the same App, JobScheduler and RemoteWorker as over XMPP, without a server.
tests/integration/test_scheduling.py keeps what needs one (processes, restarts, SIGKILL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from libs.bridge import App, Client, MemoryNetwork, RemoteError
from libs.scheduling.client import RemoteWorker
from libs.scheduling.remote import JobScheduler
from libs.scheduling.store import JobStore


@pytest.fixture
async def worker(net: MemoryNetwork, tmp_path: Path) -> AsyncIterator[App]:
    """A non-public worker allowing ``client@localhost``, with a job scheduler and a ``tick``
    command that reports each run on ``app.runs``."""
    app = App(transport=net.transport("worker@localhost/sched", allow=["client@localhost"]))
    app.scheduler = JobScheduler(app, JobStore(tmp_path / "jobs.sqlite3"))  # type: ignore[attr-defined]
    app.runs = asyncio.Queue()  # type: ignore[attr-defined]

    @app.command("tick")
    async def tick(specs):
        await app.runs.put((specs.uid, specs.body))  # type: ignore[attr-defined]
        return {"tick": specs.body.get("n", 0)}

    await app.wait_online(1)
    yield app
    await app.close(2)


@pytest.fixture
def login(connect: Callable[[str], Awaitable[Client]]) -> Callable[[str], Awaitable[Client]]:
    """``await login("client")``: a caller of account ``client@localhost``."""
    return lambda name: connect(f"{name}@localhost")


async def test_access_rules_for_scheduling(worker, login):
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
        ({"cmd": "cancel", "body": {"job": "x"}, "trigger": {"every": "1s"}}, "cannot be scheduled"),
        ({"cmd": "jobs", "trigger": {"every": "1s"}}, "cannot be scheduled"),
        ({"cmd": "tick", "trigger": {"every": "1s"}, "misfire": "burst"}, "misfire"),
        ({"trigger": {"every": "1s"}}, "cmd"),
        ({"cmd": "nosuch", "trigger": {"every": "1s"}}, "no command 'nosuch'"),
    ]
    for body, words in bad:
        with pytest.raises(RemoteError) as info:
            await client.call(worker.jid, "schedule", body, timeout=5)
        assert info.value.code == "bad-request" and words in info.value.remote_message, body


async def test_a_caller_may_have_100_active_jobs_and_is_told_busy_beyond(worker, login):
    client = await login("client")
    remote = RemoteWorker(client, worker.jid)
    handles = [await remote.every("1h").call("tick", {"n": n}) for n in range(100)]
    with pytest.raises(RemoteError) as info:
        await remote.every("1h").call("tick")
    assert info.value.code == "busy" and "100 active jobs" in info.value.remote_message
    assert len(await remote.jobs()) == 100  # the refused one was not stored
    owner = await login("worker")  # the limit is per caller: another account is not affected
    await RemoteWorker(owner, worker.jid).every("1h").call("tick")
    await handles[0].cancel()  # ended jobs do not count
    await remote.every("1h").call("tick")
    with pytest.raises(RemoteError) as info:
        await remote.every("1h").call("tick")
    assert info.value.code == "busy"


async def test_cleanup_forgets_ended_jobs_and_the_active_one_keeps_running(worker, login):
    client = await login("client")
    remote = RemoteWorker(client, worker.jid)
    active = await remote.every("200ms").call("tick", {"n": "active"})
    once = await remote.at(datetime.now(UTC) + timedelta(seconds=0.2)).call("tick", {"n": "once"})
    cancelled = await remote.every("1h").call("tick", {"n": "cancelled"})
    await cancelled.cancel()
    await worker.scheduler.wait_job(once.id, lambda job: job.status == "finished", 5)
    assert worker.scheduler.cleanup(cutoff=time.time() + 1) == 2  # as the hourly maintenance task does, a day later
    assert [(j["job"], j["status"]) for j in await remote.jobs()] == [(active.id, "active")]
    runs = worker.scheduler.store.get(active.id).run_count
    await worker.scheduler.wait_job(active.id, lambda job: job.run_count > runs, 5)  # it runs on
    assert (await active.info())["status"] == "active"
