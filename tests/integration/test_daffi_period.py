"""Seed 002 (daffi's ``PERIOD``) on a real Prosody: ``Client.call`` and ``App.api`` with
``exec_modifier=PERIOD(...)`` create a job on the worker, its runs are observed, and
``cancel()`` stops every remaining run; then the seed's own examples (examples/daffi_*.py)
as processes. Every wait is on an event (a run, a printed line, a job's state), bounded."""

from __future__ import annotations

import asyncio
import time

import pytest

from libs.bridge import PERIOD, App, ScheduledTask, load_config, wait_answering
from libs.scheduling import RemoteWorker
from tests.integration.test_scheduling import scheduling_worker
from tests.support.scripts import EXAMPLES, Script, start_script
from tests.support.workers import WorkerProcess

WAIT = 10.0  # s: upper bound for any run, answer or line a test waits for


@pytest.fixture
async def worker(prosody, accounts, tmp_path):
    """A non-public worker allowing `client`, with a job scheduler and a ``tick`` command
    whose runs land on ``app.runs`` as ``(caller, body)``."""
    app = scheduling_worker(prosody, accounts, tmp_path / "jobs.sqlite3", accounts["client"][0])
    await app.wait_online(WAIT)
    yield app
    await app.close(2)


async def next_body(app: App) -> dict:
    _uid, body = await asyncio.wait_for(app.runs.get(), WAIT)
    return body


async def test_client_call_every_interval_until_cancel_stops_every_remaining_run(worker, login):
    client = await login("client")
    task = await client.call(worker.jid, "tick", {"n": 1}, exec_modifier=PERIOD(interval="300ms"))
    assert isinstance(task, ScheduledTask)
    listed = {j["job"]: j for j in await RemoteWorker(client, worker.jid).jobs()}  # the worker's `jobs`
    assert listed[task.id]["status"] == "active" and listed[task.id]["cmd"] == "tick"
    assert [await next_body(worker) for _ in range(3)] == [{"n": 1}] * 3
    await task.cancel()
    info = await task.info()
    assert info["status"] == "cancelled" and info["next_run"] is None and info["run_count"] >= 3
    assert task.id not in worker.scheduler.tasks  # nothing is left that could run it
    # A witness job due three intervals from now: any run of the cancelled job would come first.
    witness = await client.call(worker.jid, "tick", {"n": "witness"},
                                exec_modifier=PERIOD(at_time=time.time() + 0.9))
    seen = []  # runs that came before the cancel and were not taken off the queue yet
    while (body := await next_body(worker)) != {"n": "witness"}:
        seen.append(body)
    assert 3 + len(seen) == info["run_count"] == (await task.info())["run_count"]  # none after it
    assert (await witness.info())["status"] == "finished"


async def test_app_api_at_times_runs_once_at_each_then_finishes(worker, prosody, accounts):
    caller = App(resource="caller", config=load_config(prosody.env("client", accounts["client"][1])),
                 exit_on_fatal=False, keepalive=0)
    try:
        await caller.wait_online(WAIT)
        now = time.time()
        task = await caller.api(jid=worker.jid, cmd="tick", body={"n": 2},
                                exec_modifier=PERIOD(at_time=[now + 0.3, now + 0.6]))
        assert isinstance(task, ScheduledTask), task
        assert [await next_body(worker), await next_body(worker)] == [{"n": 2}, {"n": 2}]
        job = await worker.scheduler.wait_job(task.id, lambda job: job.status == "finished", WAIT)
        assert job.run_count == 2 and worker.runs.empty()
    finally:
        await caller.close(2)


async def test_the_seeds_cancel_after_the_first_of_three_times(worker, login):
    """The seed: at_time = [now + 2, now + 10, now + 60], task.cancel() after 3 s: "only two
    executions that remain in the at_time bunch will be canceled"."""
    client = await login("client")
    now = time.time()
    task = await client.call(worker.jid, "tick", {"n": 3}, exec_modifier=PERIOD(at_time=[now + 0.2, now + 10, now + 60]))
    assert await next_body(worker) == {"n": 3}
    task.cancel()  # as the seed writes it; the worker's `jobs` shows when it took effect
    job = await worker.scheduler.wait_job(task.id, lambda job: job.status != "active", WAIT)
    assert (job.status, job.run_count, job.next_run) == ("cancelled", 1, None)


async def test_a_worker_without_a_job_scheduler(prosody, accounts, login):
    plain = App(resource="plain", config=load_config({**prosody.env("worker", accounts["worker"][1]),
                                                      "QE_ALLOW": accounts["client"][0]}),
                exit_on_fatal=False, keepalive=0)
    caller = App(resource="caller", config=load_config(prosody.env("client", accounts["client"][1])),
                 exit_on_fatal=False, keepalive=0)
    try:
        await asyncio.gather(plain.wait_online(WAIT), caller.wait_online(WAIT))
        answer = await caller.api(jid=plain.jid, cmd="tick", exec_modifier=PERIOD(interval="5s"))
        assert answer == {"error": "unknown-command",
                          "message": f"{plain.jid} has no job scheduler, so it cannot run 'tick' on a schedule (a "
                                     "worker schedules jobs once it has JobScheduler(App), as the default worker does)"}
    finally:
        await asyncio.gather(plain.close(2), caller.close(2))


# -- the seed's examples, as processes ---------------------------------------------------------


@pytest.fixture
async def daffi_worker(prosody, accounts, tmp_path):
    """examples/daffi_scheduler.py (seed 002's scheduler.py) as worker@localhost/python,
    allowing `client`, at a tenth of the seed's timing; answering."""
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_ALLOW": accounts["client"][0],
           "QE_STATE_DIR": str(tmp_path / "state"), "TIME_SCALE": "0.1", "PYTHONUNBUFFERED": "1"}
    process = WorkerProcess([str(EXAMPLES / "daffi_scheduler.py")], env, tmp_path / "worker.log")
    await process.start()
    try:
        yield process, f"{accounts['worker'][0]}/python"
    finally:
        await process.aclose()


async def check_the_seeds_run(process: WorkerProcess, jid: str, owner) -> None:
    """What the seed's client does to the worker: task 1 every 5 s for 30 s, cancelled; then
    task 2 at +10 s and +30 s (all at a tenth of that)."""
    await process.wait_lines(lambda lines: lines.count("Task 2 complete.") == 2, 30)
    lines = process.lines
    first_task2 = lines.index("Start long running task 2")
    starts1 = [i for i, line in enumerate(lines) if line == "Start long running task 1"]
    assert len(starts1) >= 2, lines  # ~6 runs in 30 (seed) seconds
    assert starts1[-1] < first_task2  # none after the cancel (task 2's first run comes 10 s after it)
    assert lines[first_task2:first_task2 + 5] == ["Start long running task 2", "Processing item 100...",
                                                  "Processing item 101...", "Processing item 102...",
                                                  "Task 2 complete."]
    jobs = {j["cmd"]: j for j in await RemoteWorker(owner, jid).jobs()}
    assert (jobs["long_running_task1"]["status"], jobs["long_running_task1"]["run_count"]) == ("cancelled", len(starts1))
    assert (jobs["long_running_task2"]["status"], jobs["long_running_task2"]["run_count"]) == ("finished", 2)


async def test_the_seeds_class_based_client_with_client_call(daffi_worker, prosody, accounts, login):
    process, jid = daffi_worker
    owner = await login("worker")
    await wait_answering(owner, jid, 20)
    client = await start_script([str(EXAMPLES / "daffi_scheduler_client.py"), jid],
                                {**prosody.env("client", accounts["client"][1]), "TIME_SCALE": "0.1"})
    printed, errors = await finished(client)
    assert len(printed) == 2 and ": every 500ms from " in printed[0] and ": at 2 times from " in printed[1], printed
    assert problems(errors) == [], errors
    await check_the_seeds_run(process, jid, owner)


async def test_the_seeds_decorator_based_service_with_app_api(daffi_worker, prosody, accounts, login):
    """The QE-style script (top-level await, run by `qe-worker run`) calls App.api with PERIOD
    and ends with App.stop(), as the seed ends with g.stop()."""
    process, jid = daffi_worker
    owner = await login("worker")
    await wait_answering(owner, jid, 20)
    script = await start_script(["-m", "libs.cli", "run", str(EXAMPLES / "daffi_scheduler_service.py"), jid],
                                {**prosody.env("client", accounts["client"][1]), "TIME_SCALE": "0.1"})
    printed, errors = await finished(script)
    assert len(printed) == 2 and " every 500ms from " in printed[0] and " at 2 times from " in printed[1], printed
    assert problems(errors) == [], errors
    await check_the_seeds_run(process, jid, owner)


async def finished(script: Script) -> tuple[list[str], str]:
    """What a script printed (stdout lines, stderr), once it ended by itself with status 0."""
    try:
        out, err = await asyncio.wait_for(script.proc.communicate(), 30)
    except TimeoutError:
        script.proc.kill()
        await script.proc.wait()
        raise AssertionError("the script did not end within 30 s") from None
    assert script.proc.returncode == 0, err.decode()
    return out.decode().splitlines(), err.decode()


def problems(log: str) -> list[str]:
    """Lines of a script's stderr that say something went wrong though it exited 0 (a
    cancel nobody awaited that failed is a warning)."""
    return [line for line in log.splitlines()
            if "Traceback" in line or "ERROR" in line or "cancel failed" in line]
