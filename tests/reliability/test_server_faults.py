"""The XMPP server crashes (SIGKILL) twice while 2,000 calls are in flight.

What a caller and a worker may rely on when their server dies under load:

- every call ends exactly once for its caller, within its own timeout (plus a margin), with
  the worker's result or a clear ``CallError``: ``timeout``, ``not-connected``,
  ``unavailable`` (the server's answer while the worker has not logged in again) or ``busy``
  (calls made while the caller was offline wait for its session and then leave together:
  this burst can exceed ``QE_MAX_PER_CALLER`` for a moment);
- the worker logs in again by itself and answers within a generous bound after each return
  of the server (the measured times are reported, not asserted);
- no request runs twice, none starts after its deadline, and every result the caller got
  comes from exactly one run.

The worker runs in this process (so its handler can record every run); the caller is a
separate ``Client`` connection, as in production.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from libs.bridge import APISpecs, App, Client, load_config
from libs.bridge.protocol import now_ms
from libs.devserver import DevServer
from tests.support.calls import call_once

CALLS = 2_000
LOAD_S = 60.0  # the calls start evenly spread over this time: ~33 calls/s
CALL_TIMEOUT_S = 4.0
HANG_MARGIN_S = 5.0  # a call still running this long after its own timeout hangs
KILL_AT_S = (15.0, 34.0)  # seconds into the load; leaves > RECOVERY_BOUND_S of load after each
# How long the server stays dead (the length of each fault, not a wait for an event): shorter
# than a call's timeout (calls made meanwhile wait for the session and go through), then longer
# (they end with not-connected).
OUTAGE_S = (1.5, 5.0)
RECOVERY_BOUND_S = 20.0  # generous functional bound on "answers again" (measured: a few seconds)
# Calls made while the server is up and both sides are online, and that end before the next
# crash, must get their result: at least this share of them (measured: all of them; the
# margin is for a loaded machine). Without it, a run where most calls time out would pass.
MIN_UNDISTURBED_RESULTS = 0.95
SETTLE_S = 1.0  # after a restart's first result, the burst of calls queued during the outage drains
HOLD_S = (0.0, 0.05, 0.1, 0.15, 0.2)  # handler run times, so that crashes catch calls mid-run

CLEAR_ERRORS = frozenset({"timeout", "not-connected", "unavailable", "busy"})


@dataclass(frozen=True)
class Execution:
    """One run of the worker's handler, as the handler saw it."""

    request_id: str
    n: int
    deadline_ms: int | None
    started_ms: int


@dataclass
class Runs:
    """What the worker's handler saw: every run, and the most runs at once."""

    executions: list[Execution] = field(default_factory=list)
    running: int = 0
    peak: int = 0


@dataclass(frozen=True)
class Outcome:
    """How call ``n`` ended for its caller: ``kind`` is ``result`` or an error code."""

    n: int
    kind: str
    started: float  # loop time
    ended: float  # loop time


@dataclass
class Fault:
    """One crash of the server: loop times of the kill, of the server accepting logins again,
    and of the worker's new session (None if it did not come within the bound)."""

    killed: float
    restarted: float
    worker_back: float | None = None
    first_result: float | None = None


async def _call(client: Client, jid: str, n: int) -> Outcome:
    started = asyncio.get_running_loop().time()
    ended = await call_once(client, jid, "work", {"n": n, "hold_s": HOLD_S[n % len(HOLD_S)]},
                            timeout=CALL_TIMEOUT_S, margin=HANG_MARGIN_S)
    kind = ended.kind if ended.kind != "result" or ended.answer == {"n": n} else f"wrong result {ended.answer!r}"
    return Outcome(n, kind, started, ended.at)


async def _load(client: Client, jid: str, start: float) -> list[Outcome]:
    """Start CALLS calls evenly over LOAD_S seconds from ``start`` (loop time), each on its
    own; return their outcomes once all have ended."""
    loop = asyncio.get_running_loop()
    interval = LOAD_S / CALLS
    calls: list[asyncio.Task[Outcome]] = []
    for n in range(CALLS):
        await asyncio.sleep(max(0.0, start + n * interval - loop.time()))  # the pace of the load
        calls.append(asyncio.create_task(_call(client, jid, n)))
    return list(await asyncio.gather(*calls))


async def _crash_twice(server: DevServer, app: App, start: float) -> list[Fault]:
    """SIGKILL the server at each of KILL_AT_S, start it again after the matching OUTAGE_S,
    and note when the worker has a new session."""
    loop = asyncio.get_running_loop()
    assert app.transport is not None
    faults = []
    for at, outage in zip(KILL_AT_S, OUTAGE_S):
        await asyncio.sleep(max(0.0, start + at - loop.time()))
        sessions = app.transport.sessions
        await asyncio.to_thread(server.kill)
        killed = loop.time()
        await asyncio.sleep(outage)
        await asyncio.to_thread(server.start)
        fault = Fault(killed, loop.time())
        faults.append(fault)
        try:
            await app.transport.wait_sessions(sessions + 1, RECOVERY_BOUND_S)
            fault.worker_back = loop.time()
        except TimeoutError:
            pass  # reported and failed on by the test
    return faults


def _recording_worker(server: DevServer, runs: Runs) -> App:
    """A worker allowing ``client`` (with the default QE_MAX_PER_CALLER) whose ``work``
    command records each run in ``runs``, holds for ``hold_s`` and returns ``{"n": n}``."""
    config = load_config({**server.env("worker", "wpw"), "QE_ALLOW": f"client@{server.domain}"})
    app = App(resource="faults", config=config, exit_on_fatal=False, keepalive=0)

    @app.command("work")
    async def work(specs: APISpecs) -> dict[str, Any]:
        runs.executions.append(Execution(specs.id, specs.body["n"], specs.deadline_ms, now_ms()))
        runs.running += 1
        runs.peak = max(runs.peak, runs.running)
        try:
            await asyncio.sleep(specs.body["hold_s"])
        finally:
            runs.running -= 1
        return {"n": specs.body["n"]}

    return app


def _note_first_results(faults: list[Fault], outcomes: list[Outcome]) -> None:
    """For each fault: when the first call after the server's return got its result."""
    ended = sorted(o.ended for o in outcomes if o.kind == "result")
    for fault in faults:
        fault.first_result = next((t for t in ended if t > fault.restarted), None)


def _undisturbed(outcomes: list[Outcome], faults: list[Fault]) -> list[Outcome]:
    """The calls no crash could touch: started at least SETTLE_S after the first result that
    followed each earlier restart (both sides are back), and whose whole timeout ends before
    the next crash. A crash that did not recover (no first result) leaves none after it."""
    def calm(t: float) -> bool:
        for fault in faults:  # in time order
            if t + CALL_TIMEOUT_S < fault.killed:
                return True
            if fault.first_result is None or t < fault.first_result + SETTLE_S:
                return False
        return True  # after the last recovery

    return [o for o in outcomes if calm(o.started)]


def _check_executions(executions: list[Execution], outcomes: list[Outcome]) -> list[str]:
    """Problems with the runs: a request run twice, one started after its deadline, one
    without a deadline, or a result the caller got without exactly one run behind it."""
    problems = []
    ids = Counter(e.request_id for e in executions)
    problems += [f"request {rid} ran {count} times" for rid, count in ids.items() if count > 1]
    runs = Counter(e.n for e in executions)
    problems += [f"call {n} ran {count} times" for n, count in runs.items() if count > 1]
    problems += [f"call {e.n} has no deadline" for e in executions if e.deadline_ms is None]
    # ms clock on both sides: the dispatcher refuses at now >= deadline, so a run may start
    # in the deadline's own millisecond at the latest
    problems += [f"call {e.n} started {e.started_ms - e.deadline_ms} ms after its deadline"
                 for e in executions if e.deadline_ms is not None and e.started_ms > e.deadline_ms]
    problems += [f"call {o.n} got a result but ran {runs[o.n]} times"
                 for o in outcomes if o.kind == "result" and runs[o.n] != 1]
    return problems


def _report_run(report: Callable[[str], None], kinds: Counter[str], runs: Runs, faults: list[Fault],
                undisturbed: Counter[str]) -> None:
    report(f"{CALLS} calls over {LOAD_S:.0f} s, timeout {CALL_TIMEOUT_S:g} s, server SIGKILLed "
           f"{len(faults)} times, down for {' s, '.join(f'{s:g}' for s in OUTAGE_S)} s")
    report("outcomes: " + ", ".join(f"{kind} {count}" for kind, count in kinds.most_common()))
    report(f"calls no crash could touch: {sum(undisturbed.values())}; outcomes: "
           + ", ".join(f"{kind} {count}" for kind, count in undisturbed.most_common()))
    report(f"executions: {len(runs.executions)} ({len(runs.executions) - kinds['result']} ran but their answer "
           f"was lost in a crash or came after the caller's timeout); at most {runs.peak} ran at once")
    for i, fault in enumerate(faults, 1):
        back = "not within bound" if fault.worker_back is None else f"{fault.worker_back - fault.restarted:.2f} s"
        first = "none" if fault.first_result is None else f"{fault.first_result - fault.restarted:.2f} s"
        report(f"restart {i} (after {OUTAGE_S[i - 1]:g} s down): worker logged in again after {back}; "
               f"first result after {first}")


@pytest.mark.timeout(180)
async def test_calls_end_once_and_run_at_most_once_while_the_server_crashes_twice(fresh_prosody, report):
    fresh_prosody.register("worker", "wpw")
    fresh_prosody.register("client", "cpw")
    runs = Runs()
    app = _recording_worker(fresh_prosody, runs)
    loop = asyncio.get_running_loop()
    try:
        await app.wait_online(10)
        async with Client(load_config(fresh_prosody.env("client", "cpw")), connect_timeout=10) as client:
            start = loop.time()
            async with asyncio.TaskGroup() as group:
                load = group.create_task(_load(client, app.jid, start))
                crashes = group.create_task(_crash_twice(fresh_prosody, app, start))
        left_running = app.dispatcher.stats.in_flight  # a leak here would turn into lasting "busy"
    finally:
        await app.close(2)
    outcomes, faults = load.result(), crashes.result()
    _note_first_results(faults, outcomes)
    kinds = Counter(o.kind for o in outcomes)
    undisturbed = Counter(o.kind for o in _undisturbed(outcomes, faults))
    _report_run(report, kinds, runs, faults, undisturbed)

    assert len(outcomes) == CALLS and sorted(o.n for o in outcomes) == list(range(CALLS))
    assert set(kinds) <= CLEAR_ERRORS | {"result"}, kinds
    assert _check_executions(runs.executions, outcomes) == []
    assert left_running == 0 and runs.running == 0
    assert sum(undisturbed.values()) >= CALLS / 4, f"too few calls away from the crashes to judge: {undisturbed}"
    assert undisturbed["result"] >= MIN_UNDISTURBED_RESULTS * sum(undisturbed.values()), \
        f"calls made while the server was up and both sides online did not get their result: {undisturbed}"
    for i, fault in enumerate(faults, 1):
        assert fault.worker_back is not None, f"the worker did not log in within {RECOVERY_BOUND_S} s of restart {i}"
        assert fault.first_result is not None and fault.first_result - fault.restarted < RECOVERY_BOUND_S, \
            f"no result within {RECOVERY_BOUND_S} s of restart {i}"
