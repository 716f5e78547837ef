"""``PERIOD`` (seed 002, daffi's ``exec_modifier``): the value itself, then ``Client.call``,
``App.call`` and ``App.api`` with it on a ``MemoryNetwork`` worker that has a JobScheduler.
tests/integration/test_daffi_period.py does the same over a real Prosody, with the seed's examples."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from libs.bridge import PERIOD as BridgePERIOD
from libs.bridge import APISpecs, App, Client, MemoryNetwork, RemoteError
from libs.bridge import ScheduledTask as BridgeScheduledTask
from libs.scheduling import PERIOD, JobHandle, JobScheduler, JobStore, RemoteWorker, ScheduledTask, trigger_from_spec

WAIT = 5.0  # s: upper bound for any run or answer a test waits for


# -- the value ---------------------------------------------------------------------------


def test_it_is_importable_as_the_seed_imports_it() -> None:
    assert BridgePERIOD is PERIOD and BridgeScheduledTask is ScheduledTask is JobHandle


@pytest.mark.parametrize(("interval", "seconds", "spec"), [
    ("5s", 5, "5s"),
    (5, 5, "5s"),  # daffi's PERIOD(interval=5)
    (0.5, 0.5, "500ms"),
    ("500ms", 0.5, "500ms"),
    ("1m24s", 84, "1m24s"),  # the seed's examples
    ("1.2 minutes", 72, "1m12s"),
    ("1h30m", 5400, "1h30m"),
    (timedelta(minutes=2), 120, "2m"),
])
def test_interval_forms(interval: Any, seconds: float, spec: str) -> None:
    period = PERIOD(interval=interval)
    assert period.interval == timedelta(seconds=seconds) and period.at_time is None
    assert period.to_spec() == {"every": spec, "v": 1}
    assert repr(period) == f"PERIOD(interval={spec!r})"


def test_at_time_forms_one_or_many_sorted_without_duplicates() -> None:
    t = datetime(2030, 5, 1, 12, tzinfo=UTC)
    assert PERIOD(at_time=t.timestamp()).at_time == (t,)  # one UTC timestamp
    period = PERIOD(at_time=[
        t.timestamp() + 60,                                                # UNIX timestamps (daffi's form)
        t.astimezone(timezone(timedelta(hours=2))),                        # an aware datetime, any zone
        "2030-05-01T12:00:10Z",                                            # ISO text with an offset
        t.timestamp(),                                                     # the same instant twice: one run
    ])
    assert period.at_time == (t, t + timedelta(seconds=10), t + timedelta(seconds=60))
    assert period.to_spec() == {"at": ["2030-05-01T12:00:00Z", "2030-05-01T12:00:10Z", "2030-05-01T12:01:00Z"],
                                "v": 1}
    assert trigger_from_spec(period.to_spec()).next_fire(t) == t + timedelta(seconds=10)  # the worker reads it
    assert PERIOD(at_time=(t,)) == PERIOD(at_time=t) == PERIOD(at_time=[t.isoformat()])
    assert len({PERIOD(at_time=t), PERIOD(at_time=[t, t]), PERIOD(interval=1)}) == 2


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "exactly one of at_time= .* and interval="),
    ({"interval": "5s", "at_time": 1e10}, "exactly one"),
    ({"interval": "5x"}, r"PERIOD\(interval=...\): bad interval '5x'"),
    ({"interval": 0}, "greater than zero"),
    ({"interval": True}, "bad interval"),
    ({"at_time": []}, "at least one time"),
    ({"at_time": datetime(2030, 1, 1)}, "naive datetime .* ambiguous"),  # naive: the point
    ({"at_time": [1e10, "2030-01-01T12:00:00"]}, "no UTC offset, so it is ambiguous"),
    ({"at_time": "tomorrow"}, r"PERIOD\(at_time=...\): bad time 'tomorrow'"),
    ({"at_time": float("nan")}, "not a finite timestamp"),
])
def test_bad_periods_are_refused_at_once(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PERIOD(**kwargs)


# -- on a worker (MemoryNetwork) -------------------------------------------------------------


@pytest.fixture
async def worker(net: MemoryNetwork, tmp_path: Path) -> AsyncIterator[App]:
    """Seed 002's scheduler: a worker with a JobScheduler and a command reporting its runs
    on ``app.runs``; it allows ``client@localhost`` and the other workers of its account."""
    app = App(transport=net.transport("worker@localhost/sched", allow=["client@localhost"]), app="sched",
              exit_on_fatal=False)
    app.scheduler = JobScheduler(app, JobStore(tmp_path / "jobs.sqlite3"))  # type: ignore[attr-defined]
    app.runs = asyncio.Queue()  # type: ignore[attr-defined]

    @app.command("long_running_task1")
    async def task(specs: APISpecs) -> dict[str, Any]:
        await app.runs.put(specs.body)  # type: ignore[attr-defined]
        return {"done": specs.body.get("n")}

    await app.wait_online(1)
    yield app
    await app.close(2)


@pytest.fixture
def client(connect: Callable[[str], Awaitable[Client]]) -> Callable[[], Awaitable[Client]]:
    return lambda: connect("client@localhost")


async def next_run(app: App) -> Any:
    return await asyncio.wait_for(app.runs.get(), WAIT)  # type: ignore[attr-defined]


async def test_client_call_with_an_interval_runs_until_cancelled(worker: App, client: Any) -> None:
    caller = await client()
    task = await caller.call(worker.jid, "long_running_task1", {"n": 1}, exec_modifier=PERIOD(interval="100ms"))
    assert isinstance(task, ScheduledTask) and task.trigger.startswith("every 100ms")
    assert (await next_run(worker), await next_run(worker)) == ({"n": 1}, {"n": 1})
    info = await task.info()
    assert info["cmd"] == "long_running_task1" and info["status"] == "active" and info["owner"] == "client@localhost"
    await task.cancel()
    info = await task.info()
    assert info["status"] == "cancelled" and info["next_run"] is None
    assert task.id not in worker.scheduler.tasks  # type: ignore[attr-defined]  # nothing left to run it


async def test_the_seeds_cancel_without_await_cancels_too(worker: App, client: Any) -> None:
    caller = await client()
    task_ident = await caller.call(worker.jid, "long_running_task1", exec_modifier=PERIOD(interval="100ms"))
    await next_run(worker)
    task_ident.cancel()  # as seed 002 writes it: a statement, nothing awaits it
    job = await worker.scheduler.wait_job(task_ident.id, lambda job: job.status != "active", WAIT)  # type: ignore[attr-defined]
    assert job.status == "cancelled" and task_ident.id not in worker.scheduler.tasks  # type: ignore[attr-defined]


async def test_cancel_from_another_thread_goes_to_the_handles_loop(worker: App, client: Any) -> None:
    """E.g. from a plain SetInterval callback, which runs on a pool thread."""
    caller = await client()
    task = await caller.call(worker.jid, "long_running_task1", exec_modifier=PERIOD(interval="1h"))
    pending = await asyncio.to_thread(task.cancel)
    await pending  # awaitable here too, though it runs on the handle's loop
    assert (await task.info())["status"] == "cancelled"


async def test_a_failed_cancel_raises_when_awaited_and_is_logged_when_not(
        worker: App, client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caller = await client()
    gone = JobHandle(RemoteWorker(caller, worker.jid), "no-such-job", "", "")
    with pytest.raises(RemoteError) as info:
        await gone.cancel()
    assert info.value.code == "not-found" and "cancel failed" not in caplog.text
    pending = gone.cancel()
    async with asyncio.timeout(WAIT):
        while not pending.done():
            await asyncio.sleep(0)
    for _ in range(3):  # the done callback runs in the loop pass after the task ends
        await asyncio.sleep(0)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "job no-such-job: cancel failed: not-found: no such job (await the cancel() to handle it)"]


async def test_at_time_runs_once_at_each_time_then_the_job_is_finished(worker: App, client: Any) -> None:
    caller = await client()
    now = time.time()
    task = await caller.call(worker.jid, "long_running_task1", {"n": 2},
                             exec_modifier=PERIOD(at_time=[now + 0.1, now + 0.2]))
    assert task.trigger.startswith("at 2 times from")
    assert (await next_run(worker), await next_run(worker)) == ({"n": 2}, {"n": 2})
    job = await worker.scheduler.wait_job(task.id, lambda job: job.status == "finished", WAIT)  # type: ignore[attr-defined]
    assert job.run_count == 2


async def test_cancel_after_the_first_of_three_times_cancels_the_two_left(worker: App, client: Any) -> None:
    """The seed: at_time = [now + 2, now + 10, now + 60], cancel after 3 s -> only the first ran."""
    caller = await client()
    now = time.time()
    task = await caller.call(worker.jid, "long_running_task1",
                             exec_modifier=PERIOD(at_time=[now + 0.05, now + 10, now + 60]))
    await next_run(worker)
    await task.cancel()
    info = await task.info()
    assert (info["status"], info["run_count"], info["next_run"]) == ("cancelled", 1, None)


async def test_a_time_that_has_passed_is_refused_before_anything_is_sent(worker: App, client: Any) -> None:
    caller = await client()
    with pytest.raises(ValueError, match="is not in the future"):
        await caller.call(worker.jid, "long_running_task1", exec_modifier=PERIOD(at_time=[time.time() - 1, 1e10]))
    assert await RemoteWorker(caller, worker.jid).jobs() == []


async def test_app_api_returns_the_handle_and_app_call_too(worker: App, net: MemoryNetwork) -> None:
    caller = App(transport=net.transport("worker@localhost/caller"), exit_on_fatal=False)
    try:
        task = await caller.api(jid=worker.jid, cmd="long_running_task1", body={"n": 3},
                                exec_modifier=PERIOD(interval="100ms"))
        assert isinstance(task, ScheduledTask)
        assert await next_run(worker) == {"n": 3}
        await task.cancel()
        assert (await task.info())["status"] == "cancelled"
        task = await caller.call(worker.jid, "long_running_task1", exec_modifier=PERIOD(interval="1h"))
        assert isinstance(task, ScheduledTask)
        task.cancel()
        await worker.scheduler.wait_job(task.id, lambda job: job.status == "cancelled", WAIT)  # type: ignore[attr-defined]
        # a sibling by resource, and the least loaded worker of a service: the same handle
        for kwargs in ({"resource": "sched"}, {"app": "sched"}):
            task = await caller.api(cmd="long_running_task1", exec_modifier=PERIOD(interval="1h"), **kwargs)
            assert isinstance(task, ScheduledTask), task
            assert task.worker.jid == worker.jid
            await task.cancel()
    finally:
        await caller.close(1)


async def test_app_api_answers_failures_as_error_dicts(worker: App, net: MemoryNetwork) -> None:
    caller = App(transport=net.transport("worker@localhost/caller"), exit_on_fatal=False)
    try:
        assert await caller.api(jid=worker.jid, cmd="long_running_task1",
                                exec_modifier=PERIOD(interval="10ms")) == {
            "error": "bad-request", "message": "intervals below 100 ms are not accepted"}
        assert await caller.api(jid=worker.jid, cmd="nosuch", exec_modifier=PERIOD(interval="1s")) == {
            "error": "bad-request", "message": "this worker has no command 'nosuch' (it has: cancel, commands, info, "
                                               "jobs, long_running_task1, metrics, ping, schedule)"}
        passed = await caller.api(jid=worker.jid, cmd="long_running_task1", exec_modifier=PERIOD(at_time=1.0))
        assert passed["error"] == "bad-request" and "is not in the future" in passed["message"]
        assert await caller.api(jid=worker.jid, cmd="long_running_task1", body={"n": 4}) == {"done": 4}  # no modifier
        assert worker.runs.get_nowait() == {"n": 4}  # type: ignore[attr-defined]
    finally:
        await caller.close(1)


async def test_a_worker_without_a_job_scheduler_is_a_clear_error(net: MemoryNetwork, client: Any) -> None:
    plain = App(transport=net.transport("worker@localhost/plain", allow=["client@localhost"]), exit_on_fatal=False)
    qe_style = App(transport=net.transport("worker@localhost/qe", allow=["client@localhost"]), exit_on_fatal=False)

    async def api(specs: APISpecs) -> None:  # QE: a command it ignores is answered {}
        return None

    qe_style.xmpp.onapi = api
    caller = App(transport=net.transport("worker@localhost/caller"), exit_on_fatal=False)
    try:
        await asyncio.gather(plain.wait_online(1), qe_style.wait_online(1))
        for target, answered in ((plain, ""), (qe_style, "; it answered 'schedule' with {}")):
            expected = (f"{target.jid} has no job scheduler, so it cannot run 'report' on a schedule (a worker "
                        f"schedules jobs once it has JobScheduler(App), as the default worker does){answered}")
            assert await caller.api(jid=target.jid, cmd="report", exec_modifier=PERIOD(interval="5s")) == {
                "error": "unknown-command", "message": expected}
            with pytest.raises(RemoteError) as info:
                await (await client()).call(target.jid, "report", exec_modifier=PERIOD(interval="5s"))
            assert (info.value.code, info.value.remote_message) == ("unknown-command", expected)
    finally:
        for app in (caller, plain, qe_style):
            await app.close(1)
