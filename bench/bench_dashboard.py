"""What ``qe-worker dashboard`` costs: a worker answering its poll, and the dashboard's own work.

No network. Worker side: ``Dispatcher.handle`` of ``metrics {"format": "json"}`` (what the
dashboard asks) against ``metrics`` as Prometheus text (the alternative a dashboard could parse)
and ``ping`` (the floor: the cheapest command), on one ``App`` with ``--commands`` commands
that have been called (so the histograms are filled), interleaved rounds, min of rounds.
Dashboard side: ``Dashboard.sample`` of one such answer and ``view`` (one update of the page)
for ``--workers`` workers with a full history (150 points per command).

    python bench/bench_dashboard.py [--commands 20] [--workers 50] [--calls 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libs.bridge import App, MemoryNetwork  # noqa: E402
from libs.bridge.protocol import encode_request  # noqa: E402
from libs.dashboard import Dashboard  # noqa: E402

OWNER = "worker@localhost/caller"


async def worker_side(commands: int, calls: int, rounds: int) -> tuple[dict[str, float], dict[str, int], Any]:
    app = App(transport=MemoryNetwork().transport("worker@localhost/python"))
    await app.wait_online(1)
    for i in range(commands):
        async def handler(specs: Any) -> dict[str, Any]:
            return {}

        app.command(f"cmd{i:02d}")(handler)
    for i in range(commands * 20):
        await app.dispatcher.handle(f"w{i}", OWNER, encode_request(f"cmd{i % commands:02d}", {}))
    texts = {"ping (floor)": encode_request("ping", {}),
             "metrics as Prometheus text": encode_request("metrics", {}),
             "metrics as JSON (the dashboard's poll)": encode_request("metrics", {"format": "json"})}
    best = dict.fromkeys(texts, float("inf"))
    sizes: dict[str, int] = {}
    for _ in range(rounds):
        for name, text in texts.items():
            started = time.perf_counter()
            for i in range(calls):
                answer = await app.dispatcher.handle(f"b{i}", OWNER, text)
            best[name] = min(best[name], (time.perf_counter() - started) / calls)
            sizes[name] = len(answer.payload or "")
    doc = json.loads((await app.dispatcher.handle("d", OWNER, texts["metrics as JSON (the dashboard's poll)"]))
                     .payload or "{}")
    await app.close(1)
    return best, sizes, doc


def dashboard_side(doc: dict[str, Any], workers: int, rounds: int) -> tuple[float, float, int]:
    model = Dashboard()
    jids = [f"worker@localhost/w{i}" for i in range(workers)]
    for jid in jids:
        model.add(jid)
    t = doc["time"]
    for step in range(model.history):  # fill the history: every command of every worker moved on
        for jid in jids:
            later = json.loads(json.dumps(doc))
            later["time"] = t + step
            for outcomes in later["calls"].values():
                outcomes["ok"] = outcomes.get("ok", 0) + step
            for hist in later["latency"]["commands"].values():
                hist["counts"][0] += step
            model.sample(jid, later, now=float(step))
    sample_best = view_best = float("inf")
    last = json.loads(json.dumps(doc))
    for r in range(rounds):
        started = time.perf_counter()
        for i, jid in enumerate(jids):
            last["time"] = t + model.history + r * workers + i
            model.sample(jid, last, now=model.history + r)
        sample_best = min(sample_best, (time.perf_counter() - started) / workers)
        started = time.perf_counter()
        update = json.dumps(model.view(model.history + r, since=model.seq - workers * len(doc["calls"])))
        view_best = min(view_best, time.perf_counter() - started)
    full = len(json.dumps(model.view(400.0)))
    del update
    return sample_best, view_best, full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=20)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"Python {platform.python_version()}, {args.commands} commands, {args.workers} workers, "
          f"{args.calls} calls x {args.rounds} rounds (min)")
    best, sizes, doc = asyncio.run(worker_side(args.commands, args.calls, args.rounds))
    floor = best["ping (floor)"]
    print("\n| worker answers | µs per call | vs ping | answer bytes | CPU at one poll / 2 s |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds * 1e6:.1f} | {seconds / floor:.2f}x | {sizes[name]} | "
              f"{seconds / 2 * 100:.4f} % |")
    sample, view, full = dashboard_side(doc, args.workers, args.rounds)
    print("\n| dashboard | time |\n|---|---:|")
    print(f"| sample one answer ({len(doc['calls'])} commands) | {sample * 1e6:.0f} µs |")
    print(f"| one page update, {args.workers} workers (new points only) | {view * 1e3:.2f} ms |")
    print(f"| whole state for a new page, {args.workers} workers x 150 points | {full / 1e6:.2f} MB |")


if __name__ == "__main__":
    main()
