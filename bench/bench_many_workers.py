"""Many workers in one process (``WorkerGroup``) vs as many raw slixmpp clients, in one run.

Each side runs in a child process of its own against the same private server:

- **ours**: one ``WorkerGroup`` of 1 (the first worker), then one of N-1, logged in
  ``--logins`` at a time; every worker answers ``ping`` (the built-in).
- **raw** (the anchor): N bare ``slixmpp.ClientXMPP`` that answer an IQ echo and nothing else,
  as a user would write them (each client builds its own TLS context, SCRAM in pure Python,
  sends available presence), logged in the same number at a time.
- **ours-nosm** (optional): ours with ``QE_STREAM_MANAGEMENT=off``: at a few calls/s per
  session, XEP-0198 adds the server's ``<r/>`` and our ``<a/>`` to nearly every call.
- **raw-quiet**: the same without the available presence, as a group's workers do by
  default: the server sends every available session of an account the presence of every
  other one, N² stanzas in all, which dominates the raw row's start-up.

Measured per side: the time from spawning the process until every worker has answered a
ping (the caller polls those that have not: an offline full JID is refused at once), the RSS
of the first worker and per worker beyond the first (psutil, after a GC and a settle), then
``--rate`` calls/s to each worker for ``--duration`` s (open loop, round robin; at most
``--inflight`` outstanding, further calls are counted as not sent) with p50/p99 and the CPU
seconds the side's process used, and finally the time SIGTERM takes to close them all. The
caller is one raw slixmpp client in this process (the same one for both sides), so with 2
cores a high total rate measures the caller and the server as much as the workers: compare
the achieved rates and the CPU seconds per 1,000 calls.

Server: ``--server prosody`` (libs.devserver: loopback, no ``mod_limits``, Nagle as Prosody's
default) or ``--server ejabberd-cluster`` (libs.devserver's ``EjabberdCluster(nodes=2)``:
loopback, no shaper, ``max_user_sessions`` high). On the cluster each side puts its workers
on both nodes, alternately (worker i on node ``i % 2 + 1``, the first on node 1: ours as one
``WorkerGroup`` per node, each with its node's address), and the caller logs in on node 2,
so half of the calls cross nodes.

    python bench/bench_many_workers.py [--workers 1000] [--logins 50] [--rate 10]
                                       [--duration 60] [--server prosody|ejabberd-cluster]
                                       [--sides ours,raw]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import platform
import secrets
import signal
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil  # noqa: E402
import slixmpp  # noqa: E402
from bench_bridge import RAW_TAG, RawEcho, _login, _plain, pct  # noqa: E402

from libs.bridge.protocol import NS, encode_request, now_ms  # noqa: E402
from libs.devserver import DevServer, EjabberdCluster  # noqa: E402

Server = DevServer | EjabberdCluster

Call = Callable[[str], Awaitable[Any]]
SIDES = ("ours", "ours-nosm", "raw-quiet", "raw")


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


# -- the children -----------------------------------------------------------------------


def worker_resources(n: int, nodes: int) -> list[list[str]]:
    """The resources of the N workers by node (index 0: node 1): the first on node 1, then
    worker i on node ``i % nodes + 1``; on one node ``first-0``, ``w-0`` .. ``w-(N-2)`` as before."""
    if nodes == 1:
        return [["first-0"] + [f"w-{i}" for i in range(n - 1)]]
    by_node: list[list[str]] = [["first-0"]] + [[] for _ in range(nodes - 1)]
    for i in range(n - 1):
        node = i % nodes
        by_node[node].append(f"w{node + 1}-{i // nodes}")
    return by_node


async def run_ours(n: int, logins: int, addresses: list[tuple[str, int]]) -> None:
    from libs.bridge import WorkerGroup
    from libs.bridge.config import load_config

    def on(node: int) -> Any:
        """The environment's config pointed at one node (no QE_HOST failover list)."""
        host, port = addresses[node]
        return dataclasses.replace(load_config(), host=host, port=port, servers=())

    first = WorkerGroup(1, resource="first", logins=1, handle_signals=False, config=on(0))
    began = time.perf_counter()
    await first.start()
    await asyncio.sleep(1)
    emit(event="first", rss=rss(), seconds=time.perf_counter() - began)
    by_node = worker_resources(n, len(addresses))
    rest = []
    for node, resources in enumerate(by_node):
        count = len([r for r in resources if r != "first-0"])
        if count:
            prefix = "w" if len(addresses) == 1 else f"w{node + 1}"
            # one bound for all: the groups log in at the same time
            rest.append(WorkerGroup(count, resource=prefix, logins=max(1, logins // len(addresses)),
                                    handle_signals=False, config=on(node)))
    began = time.perf_counter()
    started = await asyncio.gather(*(group.start() for group in rest))
    login_s = time.perf_counter() - began
    await asyncio.sleep(1)
    emit(event="all", rss=rss(), seconds=login_s, online=1 + sum(s.online for s in started),
         failed=sum(len(s.failed) for s in started))
    await until_sigterm()
    began = time.perf_counter()
    await asyncio.gather(first.close(), *(group.close() for group in rest))
    emit(event="closed", seconds=time.perf_counter() - began)


async def run_raw(n: int, logins: int, addresses: list[tuple[str, int]], jid: str, password: str,
                  presence: bool) -> None:
    slots = asyncio.Semaphore(logins)
    clients: list[RawEcho] = []
    failed = 0

    async def login(resource: str, node: int) -> None:
        nonlocal failed
        async with slots:
            echo = RawEcho(f"{jid}/{resource}", password)
            clients.append(echo)
            try:
                await (_login if presence else quiet_login)(echo.client, *addresses[node])
            except Exception:  # noqa: BLE001 - counted
                failed += 1

    began = time.perf_counter()
    await login("first-0", 0)
    await asyncio.sleep(1)
    emit(event="first", rss=rss(), seconds=time.perf_counter() - began)
    began = time.perf_counter()
    await asyncio.gather(*(login(resource, node) for node, resources in enumerate(worker_resources(n, len(addresses)))
                           for resource in resources if resource != "first-0"))
    login_s = time.perf_counter() - began
    await asyncio.sleep(1)
    emit(event="all", rss=rss(), seconds=login_s, online=n - failed, failed=failed)
    await until_sigterm()
    began = time.perf_counter()
    await asyncio.gather(*(echo.client.disconnect() for echo in clients), return_exceptions=True)
    emit(event="closed", seconds=time.perf_counter() - began)


async def quiet_login(client: slixmpp.ClientXMPP, host: str, port: int) -> None:
    """``bench_bridge._login`` without the available presence."""
    started = asyncio.get_running_loop().create_future()
    client.add_event_handler("session_start", lambda _e: started.done() or started.set_result(True))
    client.connect(host, port)
    await asyncio.wait_for(started, 10)


async def until_sigterm() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


# -- the caller (this process) ----------------------------------------------------------


class Caller:
    """One raw slixmpp client that matches answers to calls by id in one dict: slixmpp's
    ``iq.send()`` registers a handler per IQ, so every incoming stanza scans every call in
    flight, and with thousands in flight the caller, not the workers, would be measured."""

    def __init__(self, client: slixmpp.ClientXMPP) -> None:
        self.client = client
        self.pending: dict[str, asyncio.Future[None]] = {}
        self._iq_tag = f"{{{client.default_ns}}}iq"
        client.add_filter("in", self._take)

    def _take(self, stanza: Any) -> Any:
        xml = stanza.xml
        if xml.tag == self._iq_tag and xml.get("type") in ("result", "error"):
            future = self.pending.pop(xml.get("id", ""), None)
            if future is not None:
                if not future.done():
                    if xml.get("type") == "result":
                        future.set_result(None)
                    else:
                        future.set_exception(RuntimeError("error answer"))
                return None
        return stanza

    async def call(self, to: str, element: ET.Element) -> None:
        iq = self.client.make_iq_set(ito=to)
        iq.xml.append(element)
        future = asyncio.get_running_loop().create_future()
        self.pending[iq["id"]] = future
        try:
            self.client.send(iq)
            await future
        finally:
            self.pending.pop(iq["id"], None)

    async def api_ping(self, to: str) -> None:
        """What ``Client.call(to, "ping")`` sends."""
        element = ET.Element(f"{{{NS}}}api")
        element.text = encode_request("ping", {}, deadline_ms=now_ms() + 30_000)
        await self.call(to, element)

    async def echo(self, to: str) -> None:
        element = ET.Element(RAW_TAG)
        element.text = "x"
        await self.call(to, element)


async def read_event(proc: asyncio.subprocess.Process, name: str, timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the child ended before {name!r}")
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == name:
            return dict(event)


async def until_all_answer(jids: list[str], call: Call, deadline: float) -> tuple[float, int]:
    """Ping every JID until each has answered once; (time it took, how many never did)."""
    pending = set(jids)
    slots = asyncio.Semaphore(200)
    began = time.perf_counter()

    async def one(jid: str) -> None:
        async with slots:
            try:
                await asyncio.wait_for(call(jid), 5)
                pending.discard(jid)
            except Exception:  # noqa: BLE001 - not online yet: asked again
                pass

    while pending and time.perf_counter() - began < deadline:
        await asyncio.gather(*(one(jid) for jid in list(pending)))
        if pending:
            await asyncio.sleep(0.2)
    return time.perf_counter() - began, len(pending)


async def load(jids: list[str], call: Call, rate: float, duration: float, inflight: int) -> dict[str, Any]:
    """``rate`` calls/s to each JID (round robin over all of them) for ``duration`` s."""
    loop = asyncio.get_running_loop()
    total = rate * len(jids)
    lat: list[float] = []
    errors = not_sent = sent = running = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(jid: str) -> None:
        nonlocal errors, running
        began = time.perf_counter()
        try:
            await asyncio.wait_for(call(jid), 10)
            lat.append((time.perf_counter() - began) * 1000)
        except Exception:  # noqa: BLE001 - counted
            errors += 1
        finally:
            running -= 1

    start = loop.time()
    index = 0
    while (now := loop.time()) < start + duration:
        for _ in range(int((now - start) * total) - sent):
            jid = jids[index % len(jids)]
            index += 1
            sent += 1
            if running >= inflight:
                not_sent += 1
                continue
            running += 1
            task = loop.create_task(one(jid))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.sleep(0.005)
    if tasks:
        await asyncio.wait(tasks, timeout=15)
    return {"target": total, "done": len(lat), "rate": len(lat) / duration, "errors": errors, "not_sent": not_sent,
            "p50": pct(lat, 50) if lat else float("nan"), "p99": pct(lat, 99) if lat else float("nan")}


def addresses_of(server: Server) -> list[tuple[str, int]]:
    """Each node's c2s address, node 1 first (Prosody: its one)."""
    ports = server.ports if isinstance(server, EjabberdCluster) else [server.port]
    return [(server.host, port) for port in ports]


async def measure(side: str, args: argparse.Namespace, server: Server, jid: str, password: str,
                  caller: Caller) -> dict[str, Any]:
    env = {**os.environ, **server.env(jid, password)}
    if side == "ours-nosm":
        env["QE_STREAM_MANAGEMENT"] = "off"
    addresses = ",".join(f"{host}:{port}" for host, port in addresses_of(server))
    cmd = [sys.executable, __file__, "--role", side, "--workers", str(args.workers), "--logins", str(args.logins),
           "--addresses", addresses, "--jid", jid]
    env["BENCH_PASSWORD"] = password
    spawned = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE)
    try:
        first = await read_event(proc, "first", 60)
        nodes = len(addresses_of(server))
        jids = [f"{jid}/{r}" for resources in worker_resources(args.workers, nodes) for r in resources]
        call: Call = caller.api_ping if side.startswith("ours") else caller.echo
        _took, missing = await until_all_answer(jids, call, deadline=600)
        all_answer = time.perf_counter() - spawned
        everyone = await read_event(proc, "all", 600)
        child, me = psutil.Process(proc.pid), psutil.Process()
        servers = [psutil.Process(pid) for pid in server_pids(server)]
        before = [sum(p.cpu_times()[:2]) for p in (child, me, *servers)]
        loaded = await load(jids, call, args.rate, args.duration, args.inflight) if args.duration > 0 else {}
        cpu, cpu_caller, *cpu_servers = (sum(p.cpu_times()[:2]) - b for p, b in zip((child, me, *servers), before,
                                                                                  strict=True))
        cpu_server = sum(cpu_servers)
        rss_loaded = int(child.memory_info().rss)
        proc.send_signal(signal.SIGTERM)
        closed = await read_event(proc, "closed", 120)
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    per_worker = (everyone["rss"] - first["rss"]) / max(1, args.workers - 1)
    return {"all_answer_s": all_answer, "missing": missing, "login_s": everyone["seconds"],
            "online": everyone["online"], "failed": everyone["failed"], "first_rss_mb": first["rss"] / 2**20,
            "per_worker_kb": per_worker / 1024, "rss_after_load_mb": rss_loaded / 2**20,
            "cpu_s": cpu, "cpu_caller_s": cpu_caller, "cpu_server_s": cpu_server, "close_s": closed["seconds"], **loaded}


def start_server(kind: str) -> Server:
    """The server both sides run against: a private Prosody, or a private 2-node ejabberd
    cluster (its config raises ``max_user_sessions``: ejabberd refuses more than 10 sessions
    of one account by default)."""
    if kind == "ejabberd-cluster":
        return EjabberdCluster(nodes=2).start()
    return DevServer().start()


def server_pids(server: Server) -> list[int]:
    """The server's processes whose CPU time counts (a cluster: its nodes, epmd aside)."""
    if isinstance(server, EjabberdCluster):
        return [pid for pid in server.pids() if psutil.Process(pid).name() != "epmd"]
    return [server.pid]


async def main(args: argparse.Namespace) -> int:
    server = start_server(args.server)
    try:
        password = secrets.token_urlsafe(12)
        jid = server.register("worker", password)
        client = _plain(slixmpp.ClientXMPP(f"{jid}/caller", password))
        # the last node (a cluster: node 2, so half of the calls cross nodes); not available,
        # it would get every worker's presence
        await quiet_login(client, *addresses_of(server)[-1])
        caller = Caller(client)
        results = {}
        for side in args.sides.split(","):
            results[side] = await measure(side, args, server, jid, password, caller)
            print(side, json.dumps(results[side]), flush=True)
        client.disconnect()
    finally:
        server.cleanup()
    report(args, results)
    return 0


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    print(f"\n{args.workers} workers, one process per side, {args.server} (loopback, no throttling); "
          f"{platform.python_version()}, slixmpp {slixmpp.__version__}, {os.cpu_count()} cores; "
          f"logins {args.logins} at a time; load {args.rate:g} calls/s each for {args.duration:g} s")
    rows = [
        ("spawn -> all answer ping (s)", "all_answer_s", "{:.1f}"),
        ("logins of the N-1 (s)", "login_s", "{:.1f}"),
        ("online / failed", None, None),
        ("RSS of the first (MB)", "first_rss_mb", "{:.1f}"),
        ("RSS per worker beyond the first (KB)", "per_worker_kb", "{:.0f}"),
        ("calls/s achieved (target)", None, None),
        ("p50 / p99 (ms)", None, None),
        ("errors / not sent (caller at --inflight)", None, None),
        ("CPU s of the side's process under load", "cpu_s", "{:.1f}"),
        ("CPU ms per call", None, None),
        ("CPU s of the caller / of the server", None, None),
        ("SIGTERM -> all closed (s)", "close_s", "{:.2f}"),
    ]
    sides = list(results)
    print(f"{'':44}" + "".join(f"{s:>22}" for s in sides))
    for label, key, fmt in rows:
        cells = []
        for s in sides:
            r = results[s]
            if key is not None:
                cells.append(fmt.format(r[key]))
            elif label.startswith("online"):
                cells.append(f"{r['online']} / {r['failed']}")
            elif label.startswith("calls/s"):
                cells.append(f"{r.get('rate', 0):.0f} ({r.get('target', 0):.0f})")
            elif label.startswith("p50"):
                cells.append(f"{r.get('p50', float('nan')):.1f} / {r.get('p99', float('nan')):.1f}")
            elif label.startswith("errors"):
                cells.append(f"{r.get('errors', 0)} / {r.get('not_sent', 0)}")
            elif label.startswith("CPU s of the caller"):
                cells.append(f"{r['cpu_caller_s']:.1f} / {r['cpu_server_s']:.1f}")
            elif label.startswith("CPU ms"):
                cells.append(f"{1000 * r['cpu_s'] / max(1, r.get('done', 0)):.2f}")
        print(f"{label:44}" + "".join(f"{c:>22}" for c in cells))
    for anchor in ("ours-nosm", "raw-quiet", "raw"):
        if not {"ours", anchor} <= set(results):
            continue
        o, r = results["ours"], results[anchor]
        print(f"ratios ours/{anchor}: "
              f"all answer {o['all_answer_s'] / r['all_answer_s']:.2f}x, "
              f"RSS per worker {o['per_worker_kb'] / r['per_worker_kb']:.2f}x"
              + (f", calls/s {o['rate'] / r['rate']:.2f}x, p50 {o['p50'] / r['p50']:.2f}x, p99 {o['p99'] / r['p99']:.2f}x, "
                 f"CPU per call {(o['cpu_s'] / max(1, o['done'])) / (r['cpu_s'] / max(1, r['done'])):.2f}x"
                 if args.duration > 0 else ""))
    print(f"goals: all answer < 20 s: ours {'met' if results.get('ours', {}).get('all_answer_s', 1e9) < 20 else 'MISSED'}; "
          f"< 1 MB per worker beyond the first: ours "
          f"{'met' if results.get('ours', {}).get('per_worker_kb', 1e9) < 1024 else 'MISSED'}")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=1000)
    p.add_argument("--logins", type=int, default=50, help="logins in progress at once, both sides")
    p.add_argument("--rate", type=float, default=10.0, help="calls/s to each worker in the load phase")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (0: none)")
    p.add_argument("--inflight", type=int, default=2000, help="outstanding calls at most; more are not sent")
    p.add_argument("--server", default="prosody", choices=("prosody", "ejabberd-cluster"))
    p.add_argument("--sides", default="ours,raw-quiet,raw", help=f"of {', '.join(SIDES)}")
    p.add_argument("--role", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--addresses", help=argparse.SUPPRESS)  # HOST:PORT,... node 1 first
    p.add_argument("--jid", help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    ARGS = parse()
    ADDRESSES = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in (ARGS.addresses or "").split(",") if a]
    if ARGS.role in ("ours", "ours-nosm"):
        asyncio.run(run_ours(ARGS.workers, ARGS.logins, ADDRESSES))
    elif ARGS.role in ("raw", "raw-quiet"):
        asyncio.run(run_raw(ARGS.workers, ARGS.logins, ADDRESSES, ARGS.jid, os.environ["BENCH_PASSWORD"],
                            presence=ARGS.role == "raw"))
    else:
        sys.exit(asyncio.run(main(ARGS)))
