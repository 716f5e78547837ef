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
Then the worker's request path alone, in process (``Dispatcher.handle``, min of 7 rounds),
and the whole call in memory (caller and worker in this process) in a hot loop vs with the
caches evicted before each call, as they are between the round trips of a real call on a
small machine: what tracing adds to a call's latency is the cold figure, several times the
hot one.
``--instructions`` counts instructions per call under valgrind instead (deterministic, the
same on a busy machine): the worker's whole side of a real call, as ``request_path.py``
measures it (slixmpp on a fake socket, XEP-0198 on), per configuration; the traced ones get
requests with a ``trace`` key, as a traced caller sends them.

    python bench/bench_observability.py [--seq 4000] [--inprocess 20000] [--cold 1000] [--aa]
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
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_bridge import latencies, pct  # noqa: E402  (bench/ is on sys.path when run as a script)
from observability_worker import Drop, sdk  # noqa: E402  (the workers' SDK set-up, the same for the callers)
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, TraceIdRatioBased  # noqa: E402

from libs.bridge import App, Client, MemoryNetwork, load_config, wait_answering  # noqa: E402
from libs.bridge.protocol import encode_request  # noqa: E402
from libs.devserver import DevServer  # noqa: E402

HERE = Path(__file__).resolve().parent
SAMPLED = 0.1  # the "sampled" row: the share of traces a caller keeps (TraceIdRatioBased)
BODY = {"text": "hello", "n": 42}


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


def span_cost(n: int) -> dict[str, float]:
    """us per span in a loop (min of 7 rounds): the SDK's own ``start_span`` + ``end`` with
    the same attributes, vs the same span through ``Tracing`` (ours: the ``trace`` key parsed
    and written, the context made current), at each end of a call. The SDK as in the XMPP
    rows (``ParentBased``, a ``BatchSpanProcessor`` whose exporter drops the spans; its queue
    big enough that none is dropped in the loop)."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import SpanKind

    from libs.observability.tracing import Tracing, end, parent_context

    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1 << 20))
    tracer = provider.get_tracer("bench")
    tracing = Tracing(provider)
    received = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    parent = parent_context(received)
    jid = "w@localhost/obs"

    def sdk_client() -> None:
        tracer.start_span("echo", kind=SpanKind.CLIENT,
                          attributes={"rpc.system": "qe-worker", "rpc.method": "echo", "qe.worker": jid}).end()

    def ours_client() -> None:
        span, _carrier = tracing.start_call("echo", jid)
        end(span, None, "ok")

    def sdk_server() -> None:
        span = tracer.start_span("echo", context=parent, kind=SpanKind.SERVER,
                                 attributes={"rpc.system": "qe-worker", "rpc.method": "echo", "rpc.service": "s"})
        token = otel_context.attach(otel_trace.set_span_in_context(span, parent))
        otel_context.detach(token)
        span.end()

    def ours_server() -> None:
        span, token = tracing.start_serving("echo", received, service="s")
        end(span, token, "ok")

    best = {}
    for name, fn in (("sdk client", sdk_client), ("ours client", ours_client), ("sdk server", sdk_server),
                     ("ours server", ours_server)):
        best[name] = float("inf")
        for _ in range(7):
            t = time.perf_counter()
            for _ in range(n):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t) / n * 1e6)
    provider.shutdown()
    return best


_EVICT = bytearray(8 << 20)  # 8 MB: more than this machine's caches


def _evict() -> None:
    """Touch every cache line of 8 MB, as the server and the other end do between two calls
    of a real round trip on a small machine: what ran before is no longer in the caches."""
    buf = _EVICT
    for i in range(0, len(buf), 64):
        buf[i] ^= 1


async def cold_vs_hot(calls: int) -> dict[str, tuple[float, float]]:
    """p50 us of ``Client.call`` in memory (caller and worker in this process, no I/O), for
    the rows of the XMPP table, in a hot loop vs with the caches evicted before each call
    (``_evict``, not timed): (hot, cold) per row. Why a call's latency grows by several times
    what the added code costs in a loop."""
    net = MemoryNetwork()
    rows = {"off": (None, None, False), "on": (sdk(), sdk(), True), "unsampled": (sdk(ALWAYS_OFF), sdk(ALWAYS_OFF), False)}
    pairs: dict[str, tuple[Client, str]] = {}
    apps: list[App] = []
    for name, (caller_provider, worker_provider, metrics) in rows.items():
        app = App(transport=net.transport(f"w@localhost/{name}"), exit_on_fatal=False, handle_signals=False,
                  tracer_provider=worker_provider)
        app.dispatcher.request_log.rate = 0.0
        if not metrics:
            app.dispatcher.observer = None

        @app.command("echo")
        async def echo(specs):  # type: ignore[no-untyped-def]
            return specs.body

        await app.wait_online(5)
        client = Client(transport=net.transport(f"w@localhost/caller-{name}"), tracer_provider=caller_provider)
        await client.__aenter__()
        pairs[name] = (client, app.jid)
        apps.append(app)
    result: dict[str, tuple[float, float]] = {}
    for cold in (False, True):
        lat: dict[str, list[float]] = {name: [] for name in pairs}
        for _ in range(max(1, calls // 50)):
            for name, (client, jid) in pairs.items():
                for _ in range(50):
                    if cold:
                        _evict()
                    t = time.perf_counter()
                    await client.call(jid, "echo", BODY)
                    lat[name].append((time.perf_counter() - t) * 1e6)
        for name, values in lat.items():
            hot = result.get(name, (0.0, 0.0))[0]
            result[name] = (statistics.median(values), 0.0) if not cold else (hot, statistics.median(values))
    for client, _jid in pairs.values():
        await client.__aexit__(None, None, None)
    for app in apps:
        await app.close(1)
    for caller_provider, worker_provider, _metrics in rows.values():
        for provider in (caller_provider, worker_provider):
            if provider is not None:
                provider.shutdown()
    return result


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
    spans = span_cost(args.inprocess // 4)
    print(f"\n{'one span, in a loop':28} {'us/span':>8}")
    for end_ in ("client", "server"):
        sdk_us, ours_us = spans[f"sdk {end_}"], spans[f"ours {end_}"]
        print(f"{end_ + ': the SDK alone':28} {sdk_us:8.2f}\n{end_ + ': through Tracing':28} {ours_us:8.2f}"
              f"  (ours: {ours_us - sdk_us:+.2f})")
    cold = await cold_vs_hot(args.cold)
    print(f"\n{'Client.call in memory, p50':28} {'hot us':>8} {'cold us':>8} {'+hot':>7} {'+cold':>7} {'cold/hot':>8}")
    for name, label in (("off", "metrics + tracing off"), ("on", "metrics + tracing on"),
                        ("unsampled", "tracing on, not sampled")):
        hot, cold_us = cold[name]
        add_hot, add_cold = hot - cold["off"][0], cold_us - cold["off"][1]
        factor = f"{add_cold / add_hot:7.1f}x" if name != "off" and add_hot > 0 else f"{cold_us / hot:7.1f}x"
        print(f"{label:28} {hot:8.1f} {cold_us:8.1f} {add_hot:+7.1f} {add_cold:+7.1f} {factor:>8}")
    print("(cold: 8 MB touched before each call, untimed, as the server and the other end do between two calls)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=4000, help="sequential calls per row")
    parser.add_argument("--inprocess", type=int, default=20000, help="calls per round in process")
    parser.add_argument("--cold", type=int, default=1000, help="calls per row, hot and cold, in memory")
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
