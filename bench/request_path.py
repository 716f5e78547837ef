"""Worker-side cost of one API call, in process: no server, no sockets, no other process.

A slixmpp client is given a fake socket; each call feeds one ``<iq type="set">`` to its
parser from a plain loop callback, exactly as the network would, and the time is taken until
the answer stanza is written back. That is everything a worker does for a call (XML parse,
stanza objects, handler matching, our request path, answer serialisation, slixmpp's send
queue, the event-loop passes in between), without the server or the network. Three
answerers, interleaved in blocks like ``bench_bridge.py``:

- ``raw``: a bare slixmpp handler echoing the payload (the baseline of ``bench_bridge.py``);
- ``off`` / ``on``: a qe-worker ``App`` answering ``ping`` through ``onapi``, XEP-0198 off
  and on (for "on", the server's ``<r/>`` and its ``<a/>`` to our ack requests are fed every
  20 calls too, about what Prosody sends on a stream this busy; ``NO_ACKS=1`` leaves them out).

    python bench/request_path.py [--calls 20000]        # time and CPU per call (noisy on a busy VM)
    python bench/request_path.py --instructions         # instructions per call under valgrind:
                                                        # deterministic, the same on a busy machine
    python bench/request_path.py --profile off          # cProfile of one answerer
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import platform
import pstats
import re
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import slixmpp  # noqa: E402
from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402

from libs.bridge import App  # noqa: E402
from libs.bridge.config import load_config  # noqa: E402
from libs.bridge.protocol import now_ms  # noqa: E402
from libs.bridge.xmpp import XmppTransport  # noqa: E402

ACKS = not os.environ.get("NO_ACKS")
RAW_TAG = "{urn:bench:raw}echo"
HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' from='localhost' id='s1' "
          b"version='1.0' xml:lang='en'>")


class FakeSocket:
    """Stands in for the asyncio transport: records writes, wakes whoever waits for one."""

    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] | None = None

    def write(self, data: bytes) -> None:
        if data.startswith(b"<iq") and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)

    def get_extra_info(self, _name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    abort = close


def _attach(client: slixmpp.ClientXMPP, sm: bool) -> FakeSocket:
    sock = FakeSocket()
    if client._run_out_filters is None:  # connect() starts it; we do not connect
        client._run_out_filters = asyncio.ensure_future(client.run_filters())
    client.connection_made(sock, send_event=False)  # type: ignore[arg-type]
    client.data_received(HEADER)
    client._session_started = True
    client.boundjid = slixmpp.JID(client.requested_jid)
    if sm:
        plugin = client.plugin["xep_0198"]
        plugin.enabled_in = plugin.enabled_out = True
    return sock


class Answerer:
    def __init__(self, name: str, client: slixmpp.ClientXMPP, sm: bool, make_iq: Callable[[int], bytes]) -> None:
        self.name = name
        self.client = client
        self.sm = sm
        self.sock = _attach(client, sm)
        self.make_iq = make_iq
        self.n = 0
        self.sent = 0

    async def call(self) -> float:
        """One call; returns seconds from the stanza's arrival to the answer's write."""
        self.n += 1
        data = self.make_iq(self.n)
        loop = asyncio.get_running_loop()
        self.sock.waiter = waiter = loop.create_future()
        t = time.perf_counter()
        loop.call_soon(self.client.data_received, data)  # as the network would: not inside a task
        await waiter
        dt = time.perf_counter() - t
        if self.sm and ACKS and self.n % 20 == 0:  # what Prosody sends on a busy stream meanwhile
            plugin = self.client.plugin["xep_0198"]
            self.client.data_received(b"<r xmlns='urn:xmpp:sm:3'/>")
            self.client.data_received(f"<a xmlns='urn:xmpp:sm:3' h='{plugin.seq}'/>".encode())
        return dt


def raw_answerer() -> Answerer:
    client = slixmpp.ClientXMPP("raw@localhost/bench", "x")

    def on_iq(iq: slixmpp.Iq) -> None:
        if iq["type"] != "set":
            return
        reply = client.Iq()
        reply["id"], reply["to"], reply["type"] = iq["id"], iq["from"], "result"
        el = ET.Element(RAW_TAG)
        el.text = iq.xml.find(RAW_TAG).text
        reply.xml.append(el)
        client.send(reply)

    client.register_handler(Callback("raw", MatchXPath(f"{{jabber:client}}iq/{RAW_TAG}"), on_iq))
    payload = '{"cmd":"ping","body":{},"deadline":1764000000000}'.replace('"', "&quot;")
    return Answerer("raw slixmpp IQ echo", client, False, lambda n: (
        f"<iq type='set' id='r{n}' from='caller@localhost/c' to='raw@localhost/bench'>"
        f"<echo xmlns='urn:bench:raw'>{payload}</echo></iq>").encode())


async def app_answerer(sm: bool) -> tuple[Answerer, App]:
    config = load_config({"QE_JID": "worker@localhost", "QE_PASSWORD": "x", "QE_HOST": "127.0.0.1",
                          "QE_TLS": "off", "QE_STREAM_MANAGEMENT": "on" if sm else "off"})
    app = App(resource=f"sm-{'on' if sm else 'off'}", public=True, config=config, keepalive=0,
              exit_on_fatal=False, handle_signals=False)

    async def onapi(specs: Any) -> dict[str, Any] | None:
        if specs.cmd == "ping":
            return {"pong": True}
        return None

    app.xmpp.onapi = onapi
    await app._started.wait()
    assert app.transport is not None and app.transport._client is not None

    def make_iq(n: int) -> bytes:
        deadline = now_ms() + 30_000
        return (f"<iq type='set' id='q{n}' from='caller@localhost/c' to='{app.jid}'>"
                f"<api xmlns='urn:qe:worker:api:1'>{{&quot;cmd&quot;:&quot;ping&quot;,&quot;body&quot;:{{}},"
                f"&quot;deadline&quot;:{deadline}}}</api></iq>").encode()

    name = f"qe-worker (XEP-0198 {'on' if sm else 'off'})"
    return Answerer(name, app.transport._client, sm, make_iq), app


async def main(args: argparse.Namespace) -> None:
    XmppTransport._connect = lambda self: None  # type: ignore[method-assign]  # no server here
    raw = raw_answerer()
    off, app_off = await app_answerer(False)
    on, app_on = await app_answerer(True)
    answerers = [raw, off, on]
    if args.only:  # for instruction counts under valgrind: just these calls, no output
        who = {"raw": raw, "off": off, "on": on}[args.only]
        for _ in range(args.calls):
            await who.call()
        for app in (app_off, app_on):
            await app.close(0.1)
        return
    if args.profile:
        who = {"raw": raw, "off": off, "on": on}[args.profile]
        for _ in range(1000):
            await who.call()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.calls):
            await who.call()
        prof.disable()
        pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)
        return
    for a in answerers:
        for _ in range(2000):
            await a.call()
    lat: dict[str, list[float]] = {a.name: [] for a in answerers}
    cpu: dict[str, float] = {a.name: 0.0 for a in answerers}
    block = 200
    gc.collect()
    for _ in range(args.calls // block):
        for a in answerers:
            c = time.process_time()
            for _ in range(block):
                lat[a.name].append(await a.call())
            cpu[a.name] += time.process_time() - c
    base = statistics.median(lat[raw.name])
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} Python {platform.python_version()}, "
          f"{args.calls} calls each, interleaved in blocks of {block}")
    print(f"| {'':28} | p50 us | p99 us | CPU us/call | p50 vs raw |")
    print("|---|---:|---:|---:|---:|")
    for a in answerers:
        v = sorted(lat[a.name])
        p50, p99 = statistics.median(v) * 1e6, v[int(0.99 * len(v))] * 1e6
        print(f"| {a.name:28} | {p50:.1f} | {p99:.1f} | {cpu[a.name] / len(v) * 1e6:.1f} | "
              f"{p50 - base * 1e6:+.1f} us |")
    for app in (app_off, app_on):
        await app.close(0.1)


def instructions(names: tuple[str, ...], low: int = 500, high: int = 2500) -> None:
    """Instructions per call, from two valgrind runs per answerer (``high`` and ``low``
    calls: the difference cancels start-up and shut-down)."""

    def count(name: str, calls: int) -> int:
        out = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
             sys.executable, __file__, "--only", name, "--calls", str(calls)],
            capture_output=True, text=True, check=True,
        ).stderr
        match = re.search(r"I\s+refs:\s+([\d,]+)", out)
        assert match, out[-2000:]
        return int(match.group(1).replace(",", ""))

    print(f"# {time.strftime('%Y-%m-%d %H:%M')} Python {platform.python_version()}, valgrind, "
          f"({high} - {low} calls) / {high - low}")
    base = None
    for name in names:
        per_call = (count(name, high) - count(name, low)) / (high - low)
        base = base or per_call
        print(f"| {name:4} | {per_call / 1000:.0f} k instructions/call | {per_call / base:.2f}x raw |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--instructions", action="store_true", help="instructions per call under valgrind")
    parser.add_argument("--profile", choices=("raw", "off", "on"))
    parser.add_argument("--only", choices=("raw", "off", "on"),
                        help="run only these calls and print nothing (what --instructions runs)")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=35)
    cli = parser.parse_args()
    if cli.instructions:
        instructions(("raw", "off", "on"))
    else:
        asyncio.run(main(cli))
