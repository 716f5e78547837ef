"""The per-call cost of metrics + tracing: the same call with both on vs both off, in one run.

Workers in one process (``bench/observability_worker.py``) on a private Prosody (stock
network settings), the same ``echo`` command: ``obs-off`` has neither metrics nor a tracer
provider, ``obs-metrics`` the metrics observer, ``obs-on`` the metrics observer and the
OpenTelemetry SDK (a ``BatchSpanProcessor`` whose exporter drops the spans, so no network is
measured), ``obs-unsampled`` the SDK only, called by a caller whose sampler says no; the
"sampled" row calls ``obs-on`` from a caller that keeps 10 % of traces (``TraceIdRatioBased``),
as production fleets sample. The
request log is off in all. The caller (this process) calls each with its own ``Client``; the
"on" one makes a ``CLIENT`` span per call too (same SDK set-up), so that ratio covers both
ends of a real XMPP call. Sequential calls interleaved in blocks (``bench_bridge.latencies``)
give p50/p99 and the ratios; ``--aa`` makes "on" off as well (the noise floor of the ratio).
Then the worker's request path alone, in process (``Dispatcher.handle``, min of 7 rounds).
``--instructions`` counts instructions per call under valgrind instead (deterministic, the
same on a busy machine): the worker's whole side of a real call, as ``request_path.py``
measures it (slixmpp on a fake socket, XEP-0198 on), per configuration; the traced ones get
requests with a ``trace`` key, as a traced caller sends them.

    python bench/bench_observability.py [--seq 4000] [--inprocess 20000] [--aa]
    python bench/bench_observability.py --instructions
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_bridge import latencies, pct  # noqa: E402  (bench/ is on sys.path when run as a script)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased  # noqa: E402

from libs.bridge import App, Client, MemoryNetwork, load_config, wait_answering  # noqa: E402
from libs.bridge.protocol import encode_request  # noqa: E402
from libs.devserver import DevServer  # noqa: E402

HERE = Path(__file__).resolve().parent
SAMPLED = 0.1  # the "sampled" row: the share of traces a caller keeps (TraceIdRatioBased)
BODY = {"text": "hello", "n": 42}


class Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def sdk(root: Sampler = ALWAYS_ON) -> TracerProvider:
    provider = TracerProvider(sampler=ParentBased(root))
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    return provider


async def over_xmpp(seq: int, aa: bool) -> dict[str, list[float]]:
    with DevServer() as server:
        password = secrets.token_urlsafe(12)
        server.register("worker", password)
        env = {**os.environ, **server.env("worker", password), "QE_LOG_LEVEL": "WARNING", "QE_REQUEST_LOG": "off"}
        proc = await asyncio.create_subprocess_exec(sys.executable, str(HERE / "observability_worker.py"),
                                                    *(["aa"] if aa else []), env=env)
        provider, unsampled, tenth = sdk(), sdk(ALWAYS_OFF), sdk(TraceIdRatioBased(SAMPLED))
        config = load_config(server.env("worker", password))
        try:
            async with Client(config) as plain, \
                    Client(config, tracer_provider=None if aa else provider) as traced, \
                    Client(config, tracer_provider=unsampled) as not_sampled, \
                    Client(config, tracer_provider=None if aa else tenth) as sampling:
                # row -> (worker, caller); "sampled" calls the "on" worker, which follows the
                # caller's decision (ParentBased), as a fleet that samples at its edge does
                rows = {"off": ("off", plain), "metrics": ("metrics", plain), "on": ("on", traced),
                        "sampled": ("on", sampling), "unsampled": ("unsampled", not_sampled)}
                for worker, _client in rows.values():
                    await wait_answering(plain, f"{config.jid}/obs-{worker}", 20)

                def caller(worker: str, client: Client) -> Callable[[], Awaitable[object]]:
                    jid = f"{config.jid}/obs-{worker}"
                    return lambda: client.call(jid, "echo", BODY)

                return await latencies({row: caller(*pair) for row, pair in rows.items()}, seq)
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 20)
            provider.shutdown()
            unsampled.shutdown()
            tenth.shutdown()


async def in_process(calls: int) -> dict[str, float]:
    """us per ``Dispatcher.handle`` of ``echo``, metrics+tracing off vs on (min of 7 rounds)."""
    provider = sdk()
    net = MemoryNetwork()
    off = App(transport=net.transport("w@localhost/off"), exit_on_fatal=False, handle_signals=False)
    on = App(transport=net.transport("w@localhost/on"), exit_on_fatal=False, handle_signals=False,
             tracer_provider=provider)
    off.dispatcher.observer = None
    for app in (off, on):
        app.dispatcher.request_log.rate = 0.0

        @app.command("echo")
        async def echo(specs):  # type: ignore[no-untyped-def]
            return specs.body

    text = encode_request("echo", BODY)
    best = {"off": float("inf"), "on": float("inf")}
    for _ in range(7):
        for name, app in (("off", off), ("on", on)):
            handle = app.dispatcher.handle
            t = time.perf_counter()
            for i in range(calls):
                await handle(str(i), "w@localhost/caller", text)
            best[name] = min(best[name], (time.perf_counter() - t) / calls * 1e6)
    for app in (off, on):
        await app.close(1)
    provider.shutdown()
    return best


async def worker_side(mode: str, calls: int) -> None:
    """``calls`` calls fed to a worker on a fake socket (``request_path.py``) with ``off``,
    ``metrics``, ``tracing`` (the SDK) or both ``on``, or ``unsampled`` (the SDK, requests
    whose caller did not sample them); prints nothing (what ``--instructions`` runs under
    valgrind)."""
    import request_path as rp

    from libs.bridge.xmpp import XmppTransport

    XmppTransport._connect = lambda self: None  # type: ignore[method-assign]  # no server here
    provider = sdk() if mode in ("on", "tracing") else sdk(ALWAYS_OFF) if mode == "unsampled" else None
    config = load_config({"QE_JID": "worker@localhost", "QE_PASSWORD": "x", "QE_HOST": "127.0.0.1",
                          "QE_TLS": "off", "QE_REQUEST_LOG": "off", "QE_BLOCKED_MS": "0"})
    app = App(resource="obs", public=True, config=config, keepalive=0, exit_on_fatal=False, handle_signals=False,
              tracer_provider=provider)
    if mode not in ("on", "metrics"):
        app.dispatcher.observer = None

    @app.command("echo")
    async def echo(specs):  # type: ignore[no-untyped-def]
        return specs.body

    await app._started.wait()
    assert app.transport is not None
    flags = "00" if mode == "unsampled" else "01"  # the caller's sampling decision, which ParentBased follows
    trace = {"traceparent": f"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}"} if provider else None

    def make_iq(n: int) -> bytes:
        text = encode_request("echo", BODY, deadline_ms=time.time_ns() // 1_000_000 + 30_000, trace=trace)
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
        return (f"<iq type='set' id='q{n}' from='caller@localhost/c' to='{app.jid}'>"
                f"<api xmlns='urn:qe:worker:api:1'>{text}</api></iq>").encode()

    answerer = rp.Answerer(mode, app.transport._client, True, make_iq)  # type: ignore[attr-defined]
    for _ in range(calls):
        await answerer.call()
    await app.close(0.1)
    if provider is not None:
        provider.shutdown()


def instructions(low: int = 500, high: int = 2500) -> None:
    def count(mode: str, calls: int) -> int:
        out = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
             sys.executable, __file__, "--only", mode, "--calls", str(calls)],
            capture_output=True, text=True, check=True,
        ).stderr
        match = re.search(r"I\s+refs:\s+([\d,]+)", out)
        assert match, out[-2000:]
        return int(match.group(1).replace(",", ""))

    print(f"# {time.strftime('%Y-%m-%d %H:%M')} Python {platform.python_version()}, valgrind, "
          f"({high} - {low} calls) / {high - low}; the worker's side of a call (request_path.py)")
    rows = (("off", "metrics + tracing off"), ("metrics", "metrics on"), ("tracing", "tracing on (SDK)"),
            ("on", "metrics + tracing on"), ("unsampled", "metrics off, tracing on, caller did not sample"))
    per_call = {mode: (count(mode, high) - count(mode, low)) / (high - low) for mode, _ in rows}
    for mode, label in rows:
        print(f"| {label} | {per_call[mode] / 1000:.0f} k instructions/call | {per_call[mode] / per_call['off']:.3f}x |")


async def main(args: argparse.Namespace) -> int:
    print(f"# bench_observability  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {os.cpu_count()} cores  "
          f"Python {platform.python_version()}  Prosody (stock network settings)")
    lat = await over_xmpp(args.seq, args.aa)
    p50 = {name: statistics.median(values) for name, values in lat.items()}
    print(f"\n{'XMPP call':28} {'p50 ms':>8} {'p99 ms':>8} {'p50 vs off':>11}")
    rows = (("off", "metrics + tracing off"), ("metrics", "metrics on"),
            ("on", "off again (A/A)" if args.aa else "metrics + tracing on"),
            ("sampled", "off again (A/A)" if args.aa else f"... {SAMPLED:.0%} of traces kept"),
            ("unsampled", "tracing on, not sampled"))
    for name, label in rows:
        print(f"{label:28} {p50[name]:8.3f} {pct(lat[name], 99):8.3f} {p50[name] / p50['off']:10.3f}x")
    us = await in_process(args.inprocess)
    print(f"\n{'Dispatcher.handle, no I/O':28} {'us/call':>8} {'vs off':>8}")
    for name, label in (("off", "metrics + tracing off"), ("on", "metrics + tracing on")):
        print(f"{label:28} {us[name]:8.2f} {us[name] / us['off']:7.2f}x")
    print(f"\nworker-side cost: +{us['on'] - us['off']:.2f} us/call = "
          f"{(us['on'] - us['off']) / (p50['off'] * 1000) * 100:.1f} % of the off call's p50")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=4000, help="sequential calls per row")
    parser.add_argument("--inprocess", type=int, default=20000, help="calls per round in process")
    parser.add_argument("--aa", action="store_true", help="both rows off: the noise floor of the ratio")
    parser.add_argument("--instructions", action="store_true", help="instructions per call under valgrind")
    parser.add_argument("--only", choices=("off", "metrics", "tracing", "on", "unsampled"),
                        help="what --instructions runs: calls, no output")
    parser.add_argument("--calls", type=int, default=2000, help="with --only: how many")
    cli = parser.parse_args()
    if cli.instructions:
        instructions()
    elif cli.only:
        asyncio.run(worker_side(cli.only, cli.calls))
    else:
        sys.exit(asyncio.run(main(cli)))
