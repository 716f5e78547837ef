"""``App.rest``: ``POST /api/echo`` vs the same command over XMPP vs a bare FastAPI route on
the same uvicorn server, in one run.

One worker process (``bench/rest_worker.py``) on a private Prosody with its stock network
settings; the caller is this process: ``httpx.AsyncClient`` (keep-alive) for HTTP, our
``Client`` for XMPP. Sequential calls (interleaved in blocks) give p50/p99; ``--inflight``
concurrent calls give throughput. The bare route is the floor for HTTP (FastAPI + uvicorn
doing the same JSON echo without our dispatch); the ratio says what our dispatch costs.

    python bench/bench_rest.py [--seq 2000] [--par 5000] [--inflight 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import socket
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_bridge import latencies, pct, throughput  # noqa: E402  (bench/ is on sys.path when run as a script)

from libs.bridge import Client, load_config, wait_answering  # noqa: E402
from libs.devserver import DevServer  # noqa: E402

HERE = Path(__file__).resolve().parent
BODY = {"text": "hello", "n": 42}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def main(args: argparse.Namespace) -> int:
    print(f"# bench_rest  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {os.cpu_count()} cores  "
          f"Python {platform.python_version()}  Prosody (stock network settings)")
    with DevServer() as server:
        password = secrets.token_urlsafe(12)
        server.register("worker", password)
        env = {**os.environ, **server.env("worker", password), "QE_LOG_LEVEL": "WARNING"}
        port = free_port()
        proc = await asyncio.create_subprocess_exec(sys.executable, str(HERE / "rest_worker.py"), str(port), env=env)
        try:
            async with Client(load_config(server.env("worker", password))) as client, \
                    httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                                      limits=httpx.Limits(max_connections=args.inflight)) as http:
                jid = f"{client.config.jid}/rest-bench"
                await wait_answering(client, jid, 20)
                for _ in range(200):  # until uvicorn answers too
                    try:
                        (await http.get("/health")).raise_for_status()
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)

                async def via_rest() -> None:
                    (await http.post("/api/echo", json=BODY)).raise_for_status()

                async def via_bare() -> None:
                    (await http.post("/bare", json=BODY)).raise_for_status()

                async def via_xmpp() -> None:
                    await client.call(jid, "echo", BODY)

                rows = {"bare FastAPI route (floor)": via_bare, "App.rest POST /api/echo": via_rest,
                        "XMPP call (Client.call)": via_xmpp}
                lat = await latencies(rows, args.seq)
                rates = {name: await throughput(call, args.par, args.inflight) for name, call in rows.items()}
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 20)
    floor = statistics.median(lat["bare FastAPI route (floor)"])
    floor_rate = rates["bare FastAPI route (floor)"]
    print(f"\n{'':30} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9} {'p50 vs floor':>13} {'rate vs floor':>14}")
    for name, values in lat.items():
        p50 = statistics.median(values)
        print(f"{name:30} {p50:8.3f} {pct(values, 99):8.3f} {rates[name]:9.0f} {p50 / floor:12.2f}x "
              f"{rates[name] / floor_rate:13.2f}x")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=2000, help="sequential calls per row")
    parser.add_argument("--par", type=int, default=5000, help="calls per row for throughput")
    parser.add_argument("--inflight", type=int, default=50, help="calls in flight for throughput")
    sys.exit(asyncio.run(main(parser.parse_args())))
