"""What finding workers through a service costs, and what a pool of worker processes gives.

On a private Prosody with its stock network settings, in one run:

1. **Choosing a worker**: sequential ``App.api(app=...)`` vs ``App.api(jid=...)`` to the same
   one worker process (``ping``), interleaved in blocks; p50/p99 and the ratio. The target:
   ``app=`` p50 <= ``jid=`` p50 + 0.1 ms (the choice is made from a live table, no round trip).
2. **A pool**: 1, 2 and 4 worker processes of one service behind one caller
   (``App.api(app=...)``, 100 in flight, a ``work`` command that computes for ``--work-ms``);
   calls/s and the ratio to one worker. This machine has 2 cores shared by the caller, the
   server and the workers: a pool helps as far as cores are free, no further.
3. **Fan-out**: one channel message to 10 subscribed workers vs 10 direct messages to them;
   time until the last of the 10 has it (p50/p99) and the ratio.

    python bench/bench_services.py [--seq 2000] [--par 3000] [--work-ms 1] [--rounds 200]
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_bridge import latencies, pct, throughput  # noqa: E402  (bench/ is on sys.path when run as a script)

from libs.bridge import App, MessageSpecs, load_config  # noqa: E402
from libs.devserver import DevServer  # noqa: E402

HERE = Path(__file__).resolve().parent


async def start_workers(server: DevServer, password: str, service: str, n: int) -> list[asyncio.subprocess.Process]:
    procs = []
    for i in range(n):
        env = {**os.environ, **server.env("worker", password), "QE_APP": service, "RESOURCE": f"{service}-{i}",
               "QE_LOG_LEVEL": "WARNING"}
        procs.append(await asyncio.create_subprocess_exec(sys.executable, str(HERE / "service_worker.py"), env=env))
    return procs


async def stop(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        proc.terminate()
    await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 30)


async def until_found(caller: App, service: str, n: int, timeout: float = 30) -> list[str]:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        found = await caller.find(app=service)
        if len(found["jids"]) >= n:
            return list(found["jids"])
        if loop.time() > end:
            raise TimeoutError(f"only {found} of service {service} after {timeout} s")
        await asyncio.sleep(0.1)  # workers still logging in (a bench, not a test)


def no_error(call: Callable[[], Awaitable[dict[str, Any]]]) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def checked() -> dict[str, Any]:
        result = await call()
        assert "error" not in result, result
        return result

    return checked


async def fan_out(server: DevServer, password: str, rounds: int) -> dict[str, list[float]]:
    channel = f"fan{secrets.token_hex(3)}"
    config = load_config(server.env("worker", password))
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def receive(specs: MessageSpecs) -> None:
        arrived.put_nowait(time.perf_counter())

    workers = [App(resource=f"fan-{i}", config=config, exit_on_fatal=False, keepalive=0) for i in range(10)]
    sender = App(resource="fan-sender", config=config, exit_on_fatal=False, keepalive=0)
    for w in workers:
        w.xmpp.msgreceiver = receive
        w.subscribe(channel)
    sender.subscribe(channel)
    await asyncio.gather(*(w.wait_online(10) for w in [*workers, sender]))
    for app in [*workers, sender]:
        assert app.transport is not None
        await app.transport.wait_joined(f"{channel}@{config.rooms_domain}", 10)

    async def last_of_ten(send: Callable[[], None]) -> float:
        t = time.perf_counter()
        send()
        last = t
        for _ in range(10):
            last = await asyncio.wait_for(arrived.get(), 10)
        return (last - t) * 1000

    def by_channel() -> None:
        sender.sendtochannel(channel, "x")

    def direct() -> None:
        for w in workers:
            sender.sendtojid(w.jid, "x")

    out: dict[str, list[float]] = {"channel (1 message, 10 occupants)": [], "10 direct messages": []}
    for _ in range(20):
        await last_of_ten(by_channel)
        await last_of_ten(direct)
    for _ in range(rounds):
        out["channel (1 message, 10 occupants)"].append(await last_of_ten(by_channel))
        out["10 direct messages"].append(await last_of_ten(direct))
    await asyncio.gather(*(app.close(2) for app in [*workers, sender]))
    return out


async def main(args: argparse.Namespace) -> int:
    print(f"# bench_services  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {os.cpu_count()} cores  "
          f"Python {platform.python_version()}  Prosody (stock network settings)")
    with DevServer() as server:
        password = secrets.token_urlsafe(12)
        server.register("worker", password)
        caller = App(resource="bench-caller", config=load_config(server.env("worker", password)),
                     exit_on_fatal=False, keepalive=0)
        await caller.wait_online(10)

        # 1. choosing a worker
        service = f"one{secrets.token_hex(2)}"
        procs = await start_workers(server, password, service, 1)
        [jid] = await until_found(caller, service, 1)
        lat = await latencies({
            "App.api(jid=...)": lambda: caller.api(jid=jid, cmd="ping"),
            "App.api(app=...)": lambda: caller.api(app=service, cmd="ping"),
        }, args.seq)
        await stop(procs)
        print("\n## 1. choosing a worker (sequential ping, one worker process)")
        print(f"{'':24} {'p50 ms':>8} {'p99 ms':>8}")
        for name, values in lat.items():
            print(f"{name:24} {statistics.median(values):8.3f} {pct(values, 99):8.3f}")
        by_jid, by_app = statistics.median(lat["App.api(jid=...)"]), statistics.median(lat["App.api(app=...)"])
        ok_choice = by_app <= by_jid + 0.1
        print(f"app= costs {by_app - by_jid:+.3f} ms p50 ({by_app / by_jid:.2f}x); target <= +0.1 ms: "
              f"{'met' if ok_choice else 'MISSED'}")

        # 2. a pool
        print(f"\n## 2. pool of worker processes (App.api(app=...), 100 in flight, work {args.work_ms} ms CPU)")
        base = None
        for n in (1, 2, 4):
            service = f"pool{n}{secrets.token_hex(2)}"
            procs = await start_workers(server, password, service, n)
            await until_found(caller, service, n)
            work = no_error(lambda s=service: caller.api(app=s, cmd="work", body={"ms": args.work_ms}))
            await throughput(work, 300, 100)  # warm-up
            rate = await throughput(work, args.par, 100)
            await stop(procs)
            base = base or rate
            print(f"{n} worker(s): {rate:8.0f} calls/s  {rate / base:.2f}x one worker")

        # 3. fan-out
        fan = await fan_out(server, password, args.rounds)
        print("\n## 3. fan-out to 10 workers: time until the last has it")
        for name, values in fan.items():
            print(f"{name:36} p50 {statistics.median(values):7.3f} ms  p99 {pct(values, 99):7.3f} ms")
        ch, dm = (statistics.median(v) for v in fan.values())
        print(f"channel / direct: {ch / dm:.2f}x")
        await caller.close(2)
    return 0 if ok_choice else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=2000, help="sequential calls per row in part 1")
    parser.add_argument("--par", type=int, default=3000, help="calls per pool size in part 2")
    parser.add_argument("--work-ms", type=float, default=1.0, help="CPU time of each call in part 2")
    parser.add_argument("--rounds", type=int, default=200, help="fan-out rounds in part 3")
    sys.exit(asyncio.run(main(parser.parse_args())))
