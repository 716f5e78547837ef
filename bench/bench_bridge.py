"""qe-worker ping vs a raw slixmpp IQ echo, on each server of a matrix, in one run.

The servers (``--servers``): Prosody as users run it ("prosody-default": its own network
settings, i.e. Nagle's algorithm on its sockets) and tuned ("prosody-tuned":
``network_settings = { nagle = false }``). On each, the anchor is raw slixmpp, with and
without XEP-0198 (its plugin with slixmpp's defaults on both raw clients).

Both sides use the same server, the same caller machinery (one slixmpp client sending IQ
``set`` stanzas) and the same payload size; the only difference is what answers: a bare
slixmpp handler that echoes the payload back, or a qe-worker ``App`` (protocol decode, access
check, dispatch to ``onapi``, JSON encode). Sequential calls give latency (p50/p99); 100 in
flight give throughput. Latency samples are interleaved in blocks across the implementations;
throughput rounds rotate their order.

The two "raw caller" rows isolate the worker side: the same raw slixmpp caller as the
baseline (no XEP-0198 on its stream) sends our ``<api/>`` request (same JSON our client
sends, deadline included) to a qe-worker, so the only difference from the baseline row is
what answers. The other qe-worker rows are end to end: our ``Client`` calls the worker, with
XEP-0198 on both streams or on neither.

Target, per server: ours (XEP-0198 on, the default) p50 <= the faster raw row's p50 + 0.1 ms
(raw without XEP-0198, in practice), and throughput >= 1.0x the better raw row. The exit status is 1 when a server misses it.

    python bench/bench_bridge.py [--seq 3000] [--par 20000] [--inflight 100] [--rounds 3]
                                 [--servers prosody-default,prosody-tuned]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import slixmpp  # noqa: E402
from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402

from libs.bridge import App, Client  # noqa: E402
from libs.bridge.config import load_config  # noqa: E402
from libs.bridge.protocol import NS, encode_request, now_ms  # noqa: E402
from libs.devserver import DevServer  # noqa: E402

RAW = ("raw slixmpp IQ echo (XEP-0198 off)", "raw slixmpp IQ echo (XEP-0198 on)")
OURS = ("qe-worker (XEP-0198 on, default)", "qe-worker (XEP-0198 off)")
WORKER_SIDE = ("raw caller -> qe-worker (XEP-0198 on)", "raw caller -> qe-worker (XEP-0198 off)")
RAW_NS = "urn:bench:raw"
RAW_TAG = f"{{{RAW_NS}}}echo"


def _plain(client: slixmpp.ClientXMPP) -> slixmpp.ClientXMPP:
    client.enable_plaintext = True
    client.enable_starttls = False
    client.enable_direct_tls = False
    client.plugin["feature_mechanisms"].unencrypted_scram = True
    return client


async def _login(client: slixmpp.ClientXMPP, host: str, port: int) -> None:
    started = asyncio.get_running_loop().create_future()
    client.add_event_handler("session_start", lambda _e: started.done() or started.set_result(True))
    client.connect(host, port)
    await asyncio.wait_for(started, 10)
    client.send_presence()


class RawEcho:
    """The baseline: a slixmpp client answering our IQ with its payload, nothing else."""

    def __init__(self, jid: str, password: str, *, stream_management: bool = False) -> None:
        self.client = _plain(slixmpp.ClientXMPP(jid, password))
        if stream_management:
            self.client.register_plugin("xep_0198")
        self.client.register_handler(
            Callback("raw", MatchXPath(f"{{jabber:client}}iq/{RAW_TAG}"), self._on_iq)
        )

    def _on_iq(self, iq: slixmpp.Iq) -> None:
        if iq["type"] != "set":
            return
        reply = self.client.Iq()
        reply["id"], reply["to"], reply["type"] = iq["id"], iq["from"], "result"
        el = ET.Element(RAW_TAG)
        el.text = iq.xml.find(RAW_TAG).text
        reply.xml.append(el)
        self.client.send(reply)


async def raw_call(client: slixmpp.ClientXMPP, to: str, text: str) -> None:
    iq = client.make_iq_set(ito=to)
    el = ET.Element(RAW_TAG)
    el.text = text
    iq.xml.append(el)
    await iq.send(timeout=30)


async def raw_api_call(client: slixmpp.ClientXMPP, to: str) -> None:
    """Our request, sent the raw way: what ``Client.call(to, "ping", timeout=30)`` sends."""
    iq = client.make_iq_set(ito=to)
    el = ET.Element(f"{{{NS}}}api")
    el.text = encode_request("ping", {}, deadline_ms=now_ms() + 30_000)
    iq.xml.append(el)
    await iq.send(timeout=30)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def latencies(calls: dict[str, Callable[[], Awaitable[Any]]], seq: int, block: int = 50) -> dict[str, list[float]]:
    """Sequential round trips, interleaved in blocks of ``block`` calls per implementation,
    so that whatever the machine or the server does meanwhile (Lua GC after a load phase,
    another process) hits every implementation alike."""
    for call in calls.values():
        for _ in range(200):  # warm-up
            await call()
    lat: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(max(1, seq // block)):
        for name, call in calls.items():
            for _ in range(block):
                t = time.perf_counter()
                await call()
                lat[name].append((time.perf_counter() - t) * 1000)
    return lat


async def throughput(call: Callable[[], Awaitable[Any]], par: int, inflight: int) -> float:
    sem = asyncio.Semaphore(inflight)

    async def one() -> None:
        async with sem:
            await call()

    gc.collect()
    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(par)))
    return par / (time.perf_counter() - t)


SERVERS = {
    # what users run: Prosody's own network settings (Nagle on its sockets)
    "prosody-default": {"nagle": True},
    # the extra row: network_settings = { nagle = false }
    "prosody-tuned": {"nagle": False},
}


async def measure_server(args: argparse.Namespace, server: DevServer) -> dict[str, dict[str, float]]:
    """Every row on one server: (p50, p99, req/s) by row name."""
    server.register("worker", "wpw")
    server.register("raw", "rpw")
    server.register("caller", "cpw")

    async def onapi(specs):
        if specs.cmd == "ping":
            return {"pong": True}
        return None

    apps = {}
    for sm in ("on", "off"):
        config = load_config({**server.env("worker", "wpw"), "QE_STREAM_MANAGEMENT": sm})
        apps[sm] = App(resource=f"bench-sm-{sm}", public=True, config=config, keepalive=0, exit_on_fatal=False)
        apps[sm].xmpp.onapi = onapi
        await apps[sm].wait_online(10)

    raws, raw_callers = {}, {}
    for sm in ("off", "on"):  # the anchor, as users write it: slixmpp with and without XEP-0198
        raws[sm] = RawEcho(f"raw@{server.domain}/bench-sm-{sm}", "rpw", stream_management=sm == "on")
        await _login(raws[sm].client, server.host, server.port)
        raw_callers[sm] = _plain(slixmpp.ClientXMPP(f"caller@{server.domain}/raw-sm-{sm}", "cpw"))
        if sm == "on":
            raw_callers[sm].register_plugin("xep_0198")
        await _login(raw_callers[sm], server.host, server.port)

    caller_env = server.env("caller", "cpw")
    async with Client(load_config(caller_env)) as client, \
            Client(load_config({**caller_env, "QE_STREAM_MANAGEMENT": "off"})) as client_nosm:
        payload = '{"cmd":"ping","body":{},"deadline":1764000000000}'  # same size as ours
        calls = {
            RAW[0]: lambda: raw_call(raw_callers["off"], raws["off"].client.boundjid.full, payload),
            RAW[1]: lambda: raw_call(raw_callers["on"], raws["on"].client.boundjid.full, payload),
            OURS[0]: lambda: client.call(apps["on"].jid, "ping", timeout=30),
            OURS[1]: lambda: client_nosm.call(apps["off"].jid, "ping", timeout=30),
            WORKER_SIDE[0]: lambda: raw_api_call(raw_callers["off"], apps["on"].jid),
            WORKER_SIDE[1]: lambda: raw_api_call(raw_callers["off"], apps["off"].jid),
        }
        lat = await latencies(calls, args.seq)
        names = (*RAW, *OURS)
        rps: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.rounds):  # rotate the order so no one always follows the same load
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                rps[name].append(await throughput(calls[name], args.par, args.inflight))

    await asyncio.gather(*(c.disconnect() for c in (*raw_callers.values(), *(r.client for r in raws.values()))))
    for app in apps.values():
        await app.close(2)
    return {name: {"p50": statistics.median(lat[name]), "p99": pct(lat[name], 99), "rps": max(rps.get(name, [0.0]))}
            for name in calls}


def report(args: argparse.Namespace, results: dict[str, dict[str, dict[str, float]]]) -> bool:
    """Print the table; True when every server row meets the target."""
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"slixmpp {slixmpp.__version__}, seq={args.seq} interleaved, par={args.par} "
          f"inflight={args.inflight}, best of {args.rounds} rounds")
    print("| server | row | p50 ms | p99 ms | req/s | p50 vs raw (SM off) | p50 vs raw (SM on) | throughput vs best raw |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    met = True
    for server, rows in results.items():
        anchor_off, anchor_on = rows[RAW[0]], rows[RAW[1]]
        best_raw = max(anchor_off["rps"], anchor_on["rps"])
        for name, row in rows.items():
            rate = f"{row['rps']:.0f}" if row["rps"] else "-"
            ratio = f"{row['rps'] / best_raw:.2f}x" if row["rps"] else "-"
            print(f"| {server} | {name} | {row['p50']:.3f} | {row['p99']:.3f} | {rate} | "
                  f"{row['p50'] - anchor_off['p50']:+.3f} ms | {row['p50'] - anchor_on['p50']:+.3f} ms | {ratio} |")
        ours = rows[OURS[0]]
        p50_ok = ours["p50"] <= min(anchor_off["p50"], anchor_on["p50"]) + 0.1
        rps_ok = ours["rps"] >= best_raw
        met = met and p50_ok and rps_ok
        print(f"| {server} | **target** (ours, XEP-0198 on: p50 <= the faster raw's + 0.1 ms; "
              f"throughput >= 1.0x the better raw) | {'met' if p50_ok else 'MISSED'} | | "
              f"{'met' if rps_ok else 'MISSED'} | | | |")
    return met


async def main(args: argparse.Namespace) -> int:
    results = {}
    for name in args.servers:
        with DevServer(**SERVERS[name]) as server:
            results[name] = await measure_server(args, server)
    return 0 if report(args, results) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=3000, help="sequential calls for latency, per implementation")
    parser.add_argument("--par", type=int, default=20000, help="calls for throughput")
    parser.add_argument("--inflight", type=int, default=100, help="calls in flight for throughput")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds; the best is reported")
    parser.add_argument("--servers", type=lambda v: v.split(","), default=list(SERVERS),
                        help=f"comma-separated, in order (default: {','.join(SERVERS)})")
    parsed = parser.parse_args()
    unknown = [name for name in parsed.servers if name not in SERVERS]
    if unknown:
        parser.error(f"unknown server {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    sys.exit(asyncio.run(main(parsed)))
