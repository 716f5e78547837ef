"""Scheduled jobs survive a crash of their worker (SIGKILL: nothing runs on the way out).

What a caller may rely on: after the worker process is killed and started again with the
same ``QE_STATE_DIR``, every job it had accepted is listed again with the same id, command,
body, trigger and policies; at/cron jobs keep their next fire time; and the jobs run again
(observed through their effect: the result messages of ``notify`` jobs).

tests/integration/test_scheduling.py checks one job; this checks 50 of every trigger kind, and
that a job is stored *before* ``schedule`` answers: a worker killed the moment its answer
arrives still has the job after a restart.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from libs.bridge import Client, wait_answering
from libs.scheduling import RemoteWorker
from tests.support.workers import chat_messages, default_worker

FAST_EVERY = ("300ms", "350ms", "400ms", "450ms", "500ms")  # with notify: their runs are observed
SLOW_EVERY = ("1m", "5m", "1h", "1h30m", "1d")
# {m}: a minute half an hour away from now, so that no cron job fires during the test and
# changes its next_run (the zones are whole hours off UTC, so their minutes are UTC's)
CRONS = (("{m} * * * *", "UTC"), ("{m} 2 * * *", "Europe/Berlin"), ("{m} 9 * * MON-FRI", "America/New_York"),
         ("{m} 0 * * *", "Asia/Tokyo"), ("{m} 0 1 * *", "UTC"))
JOBS = 50
RUN_AGAIN_BOUND_S = 20.0  # generous: the fast jobs run a few times a second

# what a crash must not change in a job's listing (next_run too for at/cron: a fixed time)
DURABLE = ("job", "cmd", "body", "owner", "status", "trigger", "misfire", "notify", "created_at")


def _plans(now: datetime) -> list[tuple[dict[str, Any], bool]]:
    """JOBS (trigger spec, notify) pairs: the fast ``every`` jobs notify; the rest are slow
    ``every`` (some with jitter), ``at`` one or two instants hours ahead, and ``cron`` in
    several time zones, so that all are still active after the restart."""
    plans: list[tuple[dict[str, Any], bool]] = [({"every": every}, True) for every in FAST_EVERY]
    k = 0
    while len(plans) < JOBS:
        kind = k % 3
        if kind == 0:
            spec: dict[str, Any] = {"every": SLOW_EVERY[k % len(SLOW_EVERY)]}
            if k % 2:
                spec["jitter"] = "1s"
        elif kind == 1:
            first = now + timedelta(hours=1, minutes=k)
            spec = {"at": [first.isoformat()] + ([(first + timedelta(hours=1)).isoformat()] if k % 2 else [])}
        else:
            expression, tz = CRONS[k % len(CRONS)]
            spec = {"cron": expression.format(m=(now.minute + 30) % 60), "tz": tz}
        plans.append((spec, False))
        k += 1
    return plans


async def _schedule_all(remote: RemoteWorker, plans: list[tuple[dict[str, Any], bool]]) -> dict[str, dict[str, Any]]:
    """Schedule ``echo {"k": k}`` for each plan (misfire alternating); return spec by job id."""
    specs = {}
    for k, (spec, notify) in enumerate(plans):
        handle = await remote.plan(spec).call("echo", {"k": k}, misfire=("coalesce", "skip")[k % 2], notify=notify)
        specs[handle.id] = spec
    return specs


def _kind(spec: dict[str, Any]) -> str:
    return next(kind for kind in ("every", "at", "cron") if kind in spec)


def _durable(job: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    keep = DURABLE if "every" in spec else (*DURABLE, "next_run")
    return {key: job[key] for key in keep}


async def _runs_after(messages: asyncio.Queue[str], jobs: set[str], since: datetime, timeout: float) -> None:
    """Wait until each of ``jobs`` sent a successful result for a run scheduled after
    ``since`` (after a restart: a run of the new process)."""
    waiting = set(jobs)
    async with asyncio.timeout(timeout):
        while waiting:
            note = json.loads(await messages.get())
            if note["ok"] and datetime.fromisoformat(note["scheduled_for"]) > since:
                waiting.discard(note["job"])


async def _listed(client: Client, jid: str) -> dict[str, dict[str, Any]]:
    return {job["job"]: job for job in await RemoteWorker(client, jid).jobs()}


@pytest.mark.timeout(90)
async def test_50_jobs_of_every_kind_survive_sigkill_and_run_again(prosody, accounts, login, tmp_path, report):
    worker, jid = default_worker(prosody, accounts, "crash-safety", tmp_path)
    client = await login("client")
    owner = await login("worker")  # wakes at the worker's presence (wait_answering)
    messages = chat_messages(client)
    loop = asyncio.get_running_loop()
    async with worker:
        await wait_answering(owner, jid, 20)
        specs = await _schedule_all(RemoteWorker(client, jid), _plans(datetime.now(UTC)))
        fast = {job for job, spec in specs.items() if spec.get("every") in FAST_EVERY}
        await _runs_after(messages, fast, datetime.min.replace(tzinfo=UTC), RUN_AGAIN_BOUND_S)  # they run
        before = await _listed(client, jid)

        await worker.kill()
        killed = datetime.now(UTC)
        await worker.start()
        started = loop.time()
        await wait_answering(owner, jid, 20)
        answering = loop.time()
        after = await _listed(client, jid)
        await _runs_after(messages, fast, killed, RUN_AGAIN_BOUND_S)
        ran_again = loop.time()
        final = await _listed(client, jid)

        worker.signal(signal.SIGTERM)
        code = await worker.wait(15)
    kinds = Counter(_kind(spec) for spec in specs.values())
    report(f"{len(specs)} jobs ({kinds['every']} every, {kinds['at']} at, {kinds['cron']} cron) listed again "
           f"after SIGKILL; restarted worker answered after {answering - started:.2f} s, all {len(fast)} "
           f"fast every-jobs ran again after {ran_again - started:.2f} s")
    assert len(specs) == JOBS and min(kinds.values()) >= 15
    assert before.keys() == after.keys() == specs.keys()
    assert all(job["status"] == "active" for job in after.values())
    assert {j: _durable(job, specs[j]) for j, job in after.items()} == \
        {j: _durable(job, specs[j]) for j, job in before.items()}
    assert all(final[j]["run_count"] > before[j]["run_count"] for j in fast)  # runs still recorded
    assert code == 0, worker.log()


@pytest.mark.timeout(90)
async def test_a_job_is_stored_before_schedule_answers(prosody, accounts, login, tmp_path, report):
    """The worker is SIGKILLed the moment the answer to ``schedule`` reaches the caller (no
    await in between; the signal leaves tens of microseconds later), once per trigger kind;
    after each restart every job it answered for is listed, active, with its trigger."""
    worker, jid = default_worker(prosody, accounts, "killed-at-the-answer", tmp_path)
    client = await login("client")
    owner = await login("worker")  # wakes at the worker's presence (wait_answering)
    remote = RemoteWorker(client, jid)
    now = datetime.now(UTC)
    plans = ({"every": "1h"}, {"at": [(now + timedelta(hours=1)).isoformat()]},
             {"cron": f"{(now.minute + 30) % 60} * * * *", "tz": "Europe/Berlin"})
    answered: dict[str, str] = {}  # job id -> trigger as the answer described it
    gaps = []
    async with worker:
        for k, spec in enumerate(plans):
            await wait_answering(owner, jid, 20)
            handle = await remote.plan(spec).call("echo", {"k": k})
            answer_at = time.perf_counter()
            worker.signal(signal.SIGKILL)  # right after the answer: nothing awaited in between
            gaps.append(time.perf_counter() - answer_at)
            answered[handle.id] = handle.trigger
            await worker.wait(10)
            await worker.start()
            await wait_answering(owner, jid, 20)
            listed = await _listed(client, jid)
            assert {j: listed[j]["trigger"] for j in answered if j in listed} == answered, \
                f"after a SIGKILL at the answer to job {handle.id} ({_kind(spec)}), listed: {sorted(listed)}"
            assert {listed[j]["status"] for j in answered} == {"active"}
        worker.signal(signal.SIGTERM)
        code = await worker.wait(15)
    report(f"{len(plans)} SIGKILLs, sent {', '.join(f'{gap * 1e6:.0f}' for gap in gaps)} us after the answer to "
           "schedule arrived; every answered job was listed after the restart")
    assert code == 0, worker.log()
