"""Failover under load on a 2-node ejabberd cluster (issue #16 point 3).

Workers of one service run as processes of their own, two with node 1 first in ``QE_HOST``,
two with node 2 first and one (``w1p``) with node 1 only; two callers (one per node, each
with both nodes in its list) send 2,000 calls over about a minute with
``App.api(app=...)``. Node 1 is killed with ``kill -9`` a third of the way in and started
again at two thirds. A channel is created on node 1, so it vanishes with it without a word
to anybody (ejabberd does not replicate rooms): the self-ping (XEP-0410) of the occupants on
node 2 has to notice and rejoin. The service room is on node 2, where ``w1p`` stays as a
ghost occupant, or (a shorter second run) on node 1, where it vanishes like the channel.

What must hold: every call ends exactly once, with an outcome that says either "it ran once"
(ok) or "it may have run, once" (timeout) or "it never ran" (refusals, no worker, not
connected); no request runs twice across all workers, none starts after its deadline; the
last fifth of the calls all succeed; the channel carries messages again on node 2; after
its restart node 1 is back in the cluster and a worker on it serves calls from node 2.

Figures (the gap until the pool serves again, outcome counts, resumed vs fresh sessions,
the channel's rejoin) are printed for docs/reliability.md ("Cluster failover"); nothing
here asserts a duration beyond generous bounds on waits.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from libs.bridge import App, load_config
from libs.devserver import EjabberdCluster, ServerNotInstalled
from tests.support.calls import found_all
from tests.support.workers import WorkerProcess

pytestmark = [pytest.mark.ejabberd_only("kills one node of a 2-node ejabberd cluster"), pytest.mark.timeout(240)]

RATE = 33.0  # calls per second: 2,000 calls over ~60 s
CALL_TIMEOUT = 4.0
HOLD = 0.3  # s per call: ~10 calls in flight at any time, some on the node that dies
KEEPALIVE = "1"  # s: self-pings of quiet rooms and pings of the server come quickly

#: Outcomes a call may legally end with when a node dies under it, and why each is safe:
#: ok -- it ran, once; timeout -- it was in flight to a worker (or a caller) on the dead node
#: and may have run, once (never retried); unavailable / not-connected / no worker found --
#: it provably never ran (every known worker was offline, our own server was down for the
#: whole call, or the pool's room was being rejoined).
LEGAL = {"ok", "timeout", "unavailable", "not-connected", "no worker found"}


@pytest.fixture
def cluster() -> Iterator[EjabberdCluster]:
    """A 2-node cluster of the test's own: it kills a node."""
    try:
        server = EjabberdCluster(nodes=2)
    except ServerNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def _hosts(cluster: EjabberdCluster, *order: int) -> str:
    return ",".join(f"{cluster.host}:{cluster.ports[n - 1]}" for n in order)


def _docs(worker: WorkerProcess, key: str) -> list[dict[str, Any]]:
    docs = []
    for line in worker.lines:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and key in doc:
            docs.append(doc)
    return docs


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[dict[str, WorkerProcess]]:
    started: dict[str, WorkerProcess] = {}
    yield started
    await asyncio.gather(*(w.aclose() for w in started.values()))


@pytest.mark.parametrize(("pool_room_on", "total"), [(2, 2000), (1, 900)],
                         ids=["pool-room-survives", "pool-room-vanishes"])
async def test_a_node_dies_under_load_and_comes_back(cluster, workers, tmp_path, caplog, pool_room_on, total):
    """``pool-room-survives``: the service room is on node 2 and keeps the workers of node 1
    as ghosts. ``pool-room-vanishes`` (shorter): it is on node 1 and vanishes, so workers and
    callers alike must notice and rejoin it on node 2."""
    caplog.set_level(logging.INFO, logger="libs.bridge.services")
    password = secrets.token_urlsafe(12)
    account = cluster.register(f"pool-{secrets.token_hex(3)}", password)
    service, channel = f"fo{secrets.token_hex(3)}", f"foch{secrets.token_hex(3)}"
    port1, port2 = cluster.ports
    base = {**cluster.env(account, password, node=1), "QE_KEEPALIVE": KEEPALIVE, "QE_LOG_LEVEL": "INFO"}

    def caller(resource: str, *order: int) -> App:
        env = {**base, "QE_HOST": _hosts(cluster, *order)}
        return App(resource=resource, config=load_config(env), exit_on_fatal=False, keepalive=float(KEEPALIVE))

    # Node 1 hosts the channel (its caller is the first occupant): it vanishes with node 1.
    # The service room is on node ``pool_room_on``: on node 2 it survives, with the occupants
    # of node 1 in it as ghosts (ejabberd tells the room nothing when a node dies).
    kill_at, restart_at = total // 3, 2 * total // 3
    c1, c2 = caller("caller1", 1, 2), caller("caller2", 2, 1)
    callers = (c1, c2)
    try:
        await asyncio.gather(c1.wait_online(15), c2.wait_online(15))
        first = callers[pool_room_on - 1]
        assert (await first.find(app=service, timeout=15)) == {"code": 0, "jids": []}  # the room exists, empty
        c1.subscribe(channel)
        assert c1.transport is not None
        await c1.transport.wait_joined(f"{channel}@{c1.config.rooms_domain}", 15)
        c2.subscribe(channel)
        assert c2.transport is not None
        await c2.transport.wait_joined(f"{channel}@{c2.config.rooms_domain}", 15)

        def worker(name: str, *order: int) -> WorkerProcess:
            env = {**base, "QE_HOST": _hosts(cluster, *order), "QE_APP": service, "RESOURCE": name,
                   "CHANNEL": channel}
            process = WorkerProcess(["-m", "tests.support.pool_worker"], env, tmp_path / f"{name}.log")
            workers[name] = process
            return process

        async def ready(process: WorkerProcess, port: int, timeout: float = 30) -> None:
            await process.wait_lines(lambda _lines: any(d["ready"] == port for d in _docs(process, "ready")), timeout)

        layout = {"w1a": (1, 2), "w1b": (1, 2), "w2a": (2, 1), "w2b": (2, 1), "w1p": (1,)}  # w1p: node 1 only
        await asyncio.gather(*(worker(name, *order).start() for name, order in layout.items()))
        await asyncio.gather(*(ready(workers[n], cluster.ports[o[0] - 1]) for n, o in layout.items()))
        # Each worker said "ready" once its own join came back; caller 2 may hear of it later.
        expected = sorted(f"{account}/{n}" for n in layout)
        assert await found_all(c2, service, expected) == expected

        # -- the load: `total` calls at RATE per second, alternating callers ---------------------
        loop = asyncio.get_running_loop()
        results: dict[int, tuple[str, float, dict[str, Any]]] = {}
        t_kill = t_restarted = 0.0
        restarted_ms: list[int] = []
        killed_wall: list[float] = []
        channel_back: dict[str, float] = {}

        async def one(i: int) -> None:
            app = callers[i % 2]
            answer = await app.api(app=service, cmd="work", body={"x": i, "hold": HOLD}, timeout=CALL_TIMEOUT)
            assert i not in results, f"call {i} ended twice"
            results[i] = ("ok" if answer.get("code") == 0 else str(answer.get("error")), loop.time(), answer)

        async def channel_after_kill() -> None:
            """Say something in the channel through caller 2 (node 2) until both workers that
            stayed on node 2 heard a message sent after the kill: the room was rejoined."""
            n = 0
            end = loop.time() + 40
            while set(channel_back) != {"w2a", "w2b"}:
                assert loop.time() < end, f"channel not back on node 2: {channel_back}"
                n += 1
                c2.sendtochannel(channel, {"after": n})
                await asyncio.sleep(0.5)  # the pace of the probe messages, not a synchronisation
                for name in ("w2a", "w2b"):
                    if name not in channel_back and any(
                            isinstance(d["heard"], dict) and "after" in d["heard"] for d in _docs(workers[name], "heard")):
                        channel_back[name] = loop.time() - t_kill

        async def kill() -> None:
            nonlocal t_kill
            t_kill = loop.time()
            killed_wall.append(time.time())
            await asyncio.to_thread(cluster.kill_node, 1)

        async def restart() -> None:
            nonlocal t_restarted
            await asyncio.to_thread(cluster.start_node, 1, 30.0)
            t_restarted = loop.time()
            restarted_ms.append(int(time.time() * 1000))

        tasks: set[asyncio.Task[None]] = set()
        side: list[asyncio.Task[None]] = []
        t0 = loop.time()
        for i in range(total):
            if i == kill_at:
                await kill()
                side.append(asyncio.create_task(channel_after_kill()))
            if i == restart_at:
                side.append(asyncio.create_task(restart()))
            await asyncio.sleep(max(0.0, t0 + i / RATE - loop.time()))  # load pacing
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.wait_for(asyncio.gather(*tasks), CALL_TIMEOUT * 3)
        await asyncio.wait_for(asyncio.gather(*side), 60)
        t_end = loop.time()

        # -- after the restart: node 1 is in the cluster again and w1p (node 1 only) is back on it
        end = loop.time() + 60
        while True:  # w1p reconnects on its backoff (up to 30 s between attempts)
            answer = await c2.api(app=service, resource="w1p", cmd="work", body={"x": total}, timeout=5)
            if answer.get("code") == 0:
                break
            assert answer.get("error") in {"no worker found", "unavailable"}, answer  # not back yet: never ran
            assert loop.time() < end, answer
            await asyncio.sleep(0.5)  # the pace of the probe calls
        assert answer == {"code": 0, "x": total, "port": port1}  # from node 2 to a worker on node 1
        t_w1p_back = loop.time()

        # -- every worker's record --------------------------------------------------------------
        await asyncio.gather(*(w.aclose() for w in workers.values()))
        for w in workers.values():
            assert w.proc is not None and w.proc.returncode == 0, w.log()
        ran = [d for w in workers.values() for d in _docs(w, "ran")]
        counts = collections.Counter(d["ran"] for d in ran)
        assert max(counts.values()) == 1, [x for x, n in counts.items() if n > 1]  # none ran twice
        late = [d for d in ran if d["deadline_ms"] is None or d["start_ms"] >= d["deadline_ms"]]
        assert not late  # none started after its deadline

        assert sorted(results) == list(range(total))  # every call ended, once
        outcomes = collections.Counter(outcome for outcome, _t, _a in results.values())
        assert set(outcomes) <= LEGAL, {o: [a for x, a in results.values() if x == o][:3] for o in outcomes}
        assert all(counts[i] == 1 for i, (o, _t, _a) in results.items() if o == "ok")  # an ok ran, once
        tail = [i for i in range(total * 4 // 5, total) if results[i][0] != "ok"]
        assert not tail, {i: results[i] for i in tail[:5]}  # serving again well before the end

        # -- figures for docs/reliability.md ------------------------------------------------------
        def first_ok_after(t: float, who: int | None = None) -> float | None:
            oks = [end for i, (o, end, _a) in results.items()
                   if o == "ok" and end > t and (who is None or i % 2 == who) and i >= kill_at]
            return min(oks) - t if oks else None

        back = [d["start_ms"] for d in _docs(workers["w1p"], "ran")
                if d["start_ms"] > restarted_ms[0] and d["ran"] != total]  # load calls, not the probe
        refusals = [r.created for r in caplog.records
                    if "/w1p refused a call" in r.getMessage() and "(unavailable)" in r.getMessage()]
        failed_after_kill = [i for i in range(kill_at, total) if results[i][0] != "ok"]
        sessions = {name: (w.log_path.read_text().count("resumed its session"),
                           w.log_path.read_text().count(" online (session "))
                    for name, w in workers.items()}
        figures = {
            "calls": total, "seconds": round(t_end - t0, 1), "outcomes": dict(outcomes),
            "ran_by_worker": {n: len(_docs(w, "ran")) for n, w in workers.items()},
            "first_ok_after_kill_s": {"any": first_ok_after(t_kill), "caller_on_node2": first_ok_after(t_kill, 1),
                                      "caller_on_node1": first_ok_after(t_kill, 0)},
            "last_failed_after_kill_s": (max(results[i][1] for i in failed_after_kill) - t_kill
                                         if failed_after_kill else None),
            "channel_back_after_kill_s": channel_back,
            "node1_restart_s": round(t_restarted - t_kill, 1),
            "w1p_first_ran_after_restart_s": round((min(back) - restarted_ms[0]) / 1000, 1) if back else None,
            "w1p_load_calls_after_restart": len(back),
            "w1p_probe_ok_after_restart_s": round(t_w1p_back - t_restarted, 1),
            "refused_by_dead_jid": len(refusals),
            "refusals_after_kill_s": [round(t - killed_wall[0], 2) for t in refusals],
            "sessions_resumed_fresh": sessions,
            "failures": [(i, i % 2 + 1, o, round(end - t_kill, 2), str(a.get("message"))[:90])
                         for i, (o, end, a) in sorted(results.items()) if o != "ok"][:12],
        }
        print("\nCLUSTER-FAILOVER-FIGURES " + json.dumps(figures))
        # w1p stayed in the service room on node 2 as a ghost; a call to it is refused at once
        # (the server has no session there) and sends it to the back of each caller's list:
        # asked a few times (calls racing the first refusal, once more after a caller's rejoin
        # lists it again; 0-12 measured), not by every call that would pick it (147 before)
        assert figures["refused_by_dead_jid"] <= 50, figures
        assert outcomes["ok"] >= total // 2, figures
    finally:
        for app in callers:
            await app.close(2)
