"""Calls across ejabberd nodes vs within one node vs on Prosody, in one run (issue #16).

Servers, all private and on loopback (libs.devserver): a 2-node ``EjabberdCluster`` and a
Prosody with its own network settings (stock: Nagle on). Rows, each a caller and a worker:

- **ejabberd, across nodes**: the worker logged in on node 1, the caller on node 2: every
  request and answer goes through Erlang distribution between the nodes.
- **ejabberd, one node**: the same worker, a caller on node 1.
- **Prosody (stock)**: a worker and a caller on the one server.

For each, ours (``Client.call(jid, "ping")`` to an ``App``, XEP-0198 on: the defaults) and
the anchor, a raw slixmpp client sending an IQ echo to a bare slixmpp answerer on the same
nodes. Sequential calls give p50/p99 (bench_bridge.latencies: blocks of 50 interleaved
across every row, so whatever else the machine does hits all rows alike); ``--par`` calls
with ``--inflight`` outstanding give throughput (rows in rotated order, best of
``--rounds``). Ratios against the within-one-node row and against Prosody.

    python bench/bench_cluster.py [--seq 2000] [--par 10000] [--inflight 100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import slixmpp  # noqa: E402
from bench_bridge import RawEcho, _login, _plain, latencies, pct, raw_call, throughput  # noqa: E402

from libs.bridge import App, Client  # noqa: E402
from libs.bridge.config import load_config  # noqa: E402
from libs.devserver import DevServer, EjabberdCluster, EjabberdNotInstalled  # noqa: E402

Call = Callable[[], Awaitable[Any]]
PAYLOAD = '{"cmd":"ping","body":{},"deadline":1764000000000}'  # the size of our request

ROWS = ("ejabberd, across nodes (caller node 2 -> worker node 1)",
        "ejabberd, one node (caller and worker on node 1)",
        "Prosody 0.12 (stock)")


async def pong(specs: Any) -> dict[str, bool] | None:
    return {"pong": True} if specs.cmd == "ping" else None


async def setup(stack: AsyncExitStack, server: DevServer | EjabberdCluster, worker_node: int,
                caller_nodes: tuple[int, ...], tag: str) -> list[tuple[Call, Call]]:
    """One worker (ours and raw) on ``worker_node``; per caller node, (ours, raw) calls to it."""
    pw = secrets.token_urlsafe(12)
    for user in ("worker", "raw", "caller"):
        server.register(user, pw)

    def env(user: str, node: int) -> dict[str, str]:
        if isinstance(server, EjabberdCluster):
            return server.env(user, pw, node=node)
        return server.env(user, pw)

    def address(node: int) -> tuple[str, int]:
        return server.host, (server.ports[node - 1] if isinstance(server, EjabberdCluster) else server.port)

    app = App(resource=f"bench-{tag}", public=True, config=load_config(env("worker", worker_node)), keepalive=0,
              exit_on_fatal=False)
    app.xmpp.onapi = pong
    await app.wait_online(15)
    stack.push_async_callback(app.close, 2)
    echo = RawEcho(f"raw@{server.domain}/bench-{tag}", pw)
    await _login(echo.client, *address(worker_node))
    stack.push_async_callback(echo.client.disconnect)
    calls = []
    for node in caller_nodes:
        client = await stack.enter_async_context(Client(load_config(env("caller", node))))
        raw = _plain(slixmpp.ClientXMPP(f"caller@{server.domain}/raw-{tag}-{node}", pw))
        await _login(raw, *address(node))
        stack.push_async_callback(raw.disconnect)
        calls.append((
            lambda c=client: c.call(app.jid, "ping", timeout=30),
            lambda r=raw: raw_call(r, echo.client.boundjid.full, PAYLOAD),
        ))
    return calls


async def main(args: argparse.Namespace) -> int:
    began = time.strftime("%H:%M", time.gmtime())
    try:
        cluster = EjabberdCluster(nodes=2)
    except EjabberdNotInstalled as exc:  # `./run bench` runs every bench: say why, go on with the others
        print(f"bench_cluster: skipped: {exc}")
        return 0
    with cluster, DevServer() as prosody:
        async with AsyncExitStack() as stack:
            (across, within) = await setup(stack, cluster, 1, (2, 1), "ej")
            (stock,) = await setup(stack, prosody, 1, (1,), "pr")
            calls: dict[str, Call] = {}
            for row, (ours, raw) in zip(ROWS, (across, within, stock), strict=True):
                calls[f"{row} | qe-worker"] = ours
                calls[f"{row} | raw slixmpp"] = raw
            lat = await latencies(calls, args.seq)
            names = list(calls)
            rps: dict[str, list[float]] = {name: [] for name in names}
            for r in range(args.rounds):
                shift = r * 2 % len(names)
                for name in names[shift:] + names[:shift]:
                    rps[name].append(await throughput(calls[name], args.par, args.inflight))
    results = {name: {"p50": statistics.median(lat[name]), "p99": pct(lat[name], 99), "rps": max(rps[name])}
               for name in names}
    report(args, results, began)
    return 0


def report(args: argparse.Namespace, results: dict[str, dict[str, float]], began: str) -> None:
    print(f"# {time.strftime('%Y-%m-%d')} {began}-{time.strftime('%H:%M', time.gmtime())} UTC, Python "
          f"{platform.python_version()}, slixmpp {slixmpp.__version__}, {os.cpu_count()} cores; seq={args.seq} "
          f"interleaved, par={args.par}, inflight={args.inflight}, best of {args.rounds} rounds")
    print("| row | side | p50 ms | p99 ms | calls/s | p50 vs one node | calls/s vs one node | p50 vs Prosody |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        row, side = name.split(" | ")
        one = results[f"{ROWS[1]} | {side}"]
        pro = results[f"{ROWS[2]} | {side}"]
        print(f"| {row} | {side} | {r['p50']:.3f} | {r['p99']:.3f} | {r['rps']:.0f} | "
              f"{r['p50'] / one['p50']:.2f}x | {r['rps'] / one['rps']:.2f}x | {r['p50'] / pro['p50']:.2f}x |")
    for row in ROWS:
        ours, raw = results[f"{row} | qe-worker"], results[f"{row} | raw slixmpp"]
        print(f"ours/raw on {row}: p50 {ours['p50'] / raw['p50']:.2f}x, calls/s {ours['rps'] / raw['rps']:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=2000, help="sequential calls per row, for latency")
    parser.add_argument("--par", type=int, default=10000, help="calls per row and round, for throughput")
    parser.add_argument("--inflight", type=int, default=100, help="calls in flight for throughput")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds; the best is reported")
    sys.exit(asyncio.run(main(parser.parse_args())))
