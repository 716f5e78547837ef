"""SIGTERM while 100 calls run on a worker process.

What callers and operators may rely on: the process exits 0 within ``QE_SHUTDOWN_TIMEOUT``
(plus a margin), and every call running at the signal ends once for its caller -- with its
result when it can finish within the shutdown time, otherwise with ``unavailable`` as soon as
the worker gives up on it (not by hanging until the caller's own timeout).
"""

from __future__ import annotations

import asyncio
import signal
import textwrap
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from libs.bridge import wait_answering
from tests.support.calls import Ended, call_once
from tests.support.workers import WorkerProcess

CALLS = 100
CALLER_TIMEOUT_S = 60.0  # far beyond the shutdown: a call ending by timeout would show as "hung"
EXIT_MARGIN_S = 10.0  # generous: for a loaded machine; the measured times are reported

# Each call runs ``slow``: it prints "started N", waits until all CALLS have started (so that
# all of them run at once when the test sends SIGTERM), then sleeps ``s`` seconds.
WORKER = textwrap.dedent(
    """
    from libs.startup import startup
    startup()
    import asyncio
    from libs.bridge import App as app

    App = app(resource="shutdown")
    all_started = asyncio.Event()
    started = 0

    @App.command("slow")
    async def slow(specs):
        global started
        n = specs.body["n"]
        started += 1
        print(f"started {n}", flush=True)
        if started == specs.body["of"]:
            all_started.set()
        try:
            await all_started.wait()
            await asyncio.sleep(specs.body["s"])
        except asyncio.CancelledError:
            print(f"cancelled {n}", flush=True)
            raise
        return {"n": n}

    asyncio.get_event_loop().run_forever()
    print("loop ended", flush=True)
    """
)


@dataclass(frozen=True)
class Case:
    """``shutdown_s``: QE_SHUTDOWN_TIMEOUT; ``hold_s(n)``: how long call ``n`` runs;
    ``outcome``: how every call must end (``result`` or an error code)."""

    shutdown_s: float
    hold_s: Callable[[int], float]
    outcome: str


# 0.3-2 s each: all finish within the shutdown time and get their results
FINISH = Case(shutdown_s=10, hold_s=lambda n: 0.3 + (n % 18) * 0.1, outcome="result")
# 60 s each, 2 s to shut down: all are cancelled, and their callers told so
CANCEL = Case(shutdown_s=2, hold_s=lambda n: 60.0, outcome="interrupted")


def _lines_starting(prefix: str, lines: list[str]) -> int:
    return sum(line.startswith(prefix) for line in lines)


async def _outcomes(calls: list[asyncio.Task[Ended]], timeout: float) -> Counter[str]:
    """How the calls ended, waiting at most ``timeout`` s; those still waiting then count as
    ``still waiting`` (and are cancelled): their callers would hang until their own timeout."""
    done, waiting = await asyncio.wait(calls, timeout=timeout)
    for call in waiting:
        call.cancel()
    kinds = Counter(call.result().kind for call in done)
    if waiting:
        kinds["still waiting"] = len(waiting)
    return kinds


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", [FINISH, CANCEL], ids=["finish-within-timeout", "cancelled-at-timeout"])
async def test_sigterm_with_100_calls_running_ends_each_call_once_and_exits_0(case, prosody, accounts, login,
                                                                               tmp_path, report):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**prosody.env("worker", accounts["worker"][1]), "RESOURCE": f"shutdown-{case.outcome}",
           "QE_ALLOW": accounts["client"][0], "QE_SHUTDOWN_TIMEOUT": f"{case.shutdown_s:g}",
           "QE_MAX_PER_CALLER": "0"}  # 100 from one caller at once is the point here
    jid = f"{accounts['worker'][0]}/{env['RESOURCE']}"
    client = await login("client")
    owner = await login("worker")  # wakes at the worker's presence (wait_answering)
    loop = asyncio.get_running_loop()
    calls: list[asyncio.Task[Ended]] = []
    async with WorkerProcess([str(script)], env, tmp_path / "worker.log") as worker:
        try:
            await wait_answering(owner, jid, 20)
            calls += [asyncio.create_task(call_once(client, jid, "slow", {"n": n, "of": CALLS, "s": case.hold_s(n)},
                                                    timeout=CALLER_TIMEOUT_S, margin=EXIT_MARGIN_S))
                      for n in range(CALLS)]
            await worker.wait_lines(lambda lines: _lines_starting("started ", lines) == CALLS, 30)
            worker.signal(signal.SIGTERM)
            signalled = loop.time()
            code = await worker.wait(case.shutdown_s + EXIT_MARGIN_S)
            exited = loop.time()
            # the worker sent every answer before it left: a margin for them to arrive, no more
            kinds = await _outcomes(calls, EXIT_MARGIN_S)
        finally:
            for call in calls:
                call.cancel()
    last = max((call.result().at for call in calls if not call.cancelled()), default=exited)
    report(f"QE_SHUTDOWN_TIMEOUT={case.shutdown_s:g}: exit code {code} {exited - signalled:.2f} s after SIGTERM; "
           "calls: " + ", ".join(f"{kind} {count}" for kind, count in kinds.most_common())
           + f", the last {last - signalled:.2f} s after SIGTERM; "
           f"{_lines_starting('cancelled ', worker.lines)} handlers cancelled")
    assert code == 0, worker.log()
    assert "loop ended" in worker.lines
    assert kinds == Counter({case.outcome: CALLS}), worker.log()
    if case.outcome == "result":
        assert sorted((call.result().answer or {})["n"] for call in calls) == list(range(CALLS))
    else:
        assert _lines_starting("cancelled ", worker.lines) == CALLS
