"""qe-worker ping vs a raw slixmpp IQ echo, on one private Prosody, in one run.

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

    python bench/bench_bridge.py [--seq 3000] [--par 20000] [--inflight 100] [--rounds 3]
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

NAMES = ("raw slixmpp IQ echo", "qe-worker (XEP-0198 on)", "qe-worker (XEP-0198 off)")
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

    def __init__(self, jid: str, password: str) -> None:
        self.client = _plain(slixmpp.ClientXMPP(jid, password))
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


async def main(args: argparse.Namespace) -> None:
    with DevServer() as server:
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

        raw = RawEcho(f"raw@{server.domain}/bench", "rpw")
        await _login(raw.client, server.host, server.port)

        caller_raw = _plain(slixmpp.ClientXMPP(f"caller@{server.domain}/rawcaller", "cpw"))
        await _login(caller_raw, server.host, server.port)

        caller_env = server.env("caller", "cpw")
        async with Client(load_config(caller_env)) as client, \
                Client(load_config({**caller_env, "QE_STREAM_MANAGEMENT": "off"})) as client_nosm:
            payload = '{"cmd":"ping","body":{},"deadline":1764000000000}'  # same size as ours
            calls = {
                NAMES[0]: lambda: raw_call(caller_raw, f"raw@{server.domain}/bench", payload),
                NAMES[1]: lambda: client.call(apps["on"].jid, "ping", timeout=30),
                NAMES[2]: lambda: client_nosm.call(apps["off"].jid, "ping", timeout=30),
                WORKER_SIDE[0]: lambda: raw_api_call(caller_raw, apps["on"].jid),
                WORKER_SIDE[1]: lambda: raw_api_call(caller_raw, apps["off"].jid),
            }
            lat = await latencies(calls, args.seq)
            rps: dict[str, list[float]] = {name: [] for name in NAMES}
            for r in range(args.rounds):  # rotate the order so no one always follows the same load
                order = NAMES[r % 3:] + NAMES[:r % 3]
                for name in order:
                    rps[name].append(await throughput(calls[name], args.par, args.inflight))

        caller_raw.disconnect()
        raw.client.disconnect()
        for app in apps.values():
            await app.close(2)

    rows = {name: {"p50": statistics.median(lat[name]), "p99": pct(lat[name], 99), "rps": max(rps.get(name, [0.0]))}
            for name in (*NAMES, *WORKER_SIDE)}
    r = rows[NAMES[0]]
    print(f"# {time.strftime('%Y-%m-%d')} Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"seq={args.seq} interleaved, par={args.par} inflight={args.inflight}, best of {args.rounds} rounds")
    print(f"| {'':38} | p50 ms | p99 ms | req/s | throughput vs raw | p50 vs raw |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        rate = f"{row['rps']:.0f} | {row['rps'] / r['rps']:.2f}x" if row["rps"] else "- | -"
        print(f"| {name:38} | {row['p50']:.3f} | {row['p99']:.3f} | {rate} | {row['p50'] - r['p50']:+.3f} ms |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=3000, help="sequential calls for latency, per implementation")
    parser.add_argument("--par", type=int, default=20000, help="calls for throughput")
    parser.add_argument("--inflight", type=int, default=100, help="calls in flight for throughput")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds; the best is reported")
    asyncio.run(main(parser.parse_args()))
