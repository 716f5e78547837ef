#!/usr/bin/env python3
"""CPU time per ``SetIntervalSafe`` tick on each side of the hand-over, on the real clock, with
no threads and no loop (so other tenants' load hardly moves it, unlike lateness):

* loop side: ``Engine.drain`` over batches of 25 ticks (100,000 ticks a second with one
  hand-over every 0.25 ms) of 100,000 one-second timers with a no-op callback, statistics
  recorded as in production (after a warm-up, so every timer has its histogram);
* the same with the statistics' recording replaced by the in-flight count alone: what the
  statistics cost is the difference;
* timer-thread side: ``Engine.wake_locked`` (deadline heap and routing) at one wake-up every
  0.25 ms of virtual time over the same 100,000 timers.

    python bench/timer_tick_cost.py                  # this checkout
    python bench/timer_tick_cost.py --root ../other  # another checkout of qe-worker

Prints the best and median of 5 repetitions, in microseconds per tick.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

N = 100_000
BATCH = 25


def repeat(measure: Callable[[], float], times: int = 5) -> tuple[float, float]:
    values = [measure() for _ in range(times)]
    return min(values), statistics.median(values)


def loop_side(stats: bool) -> tuple[float, float]:
    from libs.timers import SetIntervalSafe, _engine
    from libs.timers._engine import Engine
    from libs.timers.virtual import ManualDriver
    from tests.support.timers import FakeLoop

    if not stats:
        def inflight_only(runs: Any, *_: Any) -> None:
            for t in runs[::5]:
                t._inflight -= 1

        _engine.record_runs = inflight_only  # type: ignore[assignment]
    loop = FakeLoop()
    eng = Engine(time.monotonic, resolve_loop=lambda: loop, driver=ManualDriver)  # type: ignore[arg-type,return-value]
    cls: Any = type("Safe", (SetIntervalSafe,), {"__slots__": (), "_engine": eng})
    timers = [cls(lambda: None, 1000).start() for _ in range(N)]

    def batches(drain: bool, rounds: int) -> None:
        for _ in range(rounds):
            for b in range(0, N, BATCH):
                now = time.monotonic()
                flat: list[Any] = []
                for t in timers[b : b + BATCH]:
                    t._inflight += 1
                    flat += (t, now - 0.0003)
                if drain:
                    eng._outbox[loop] = flat  # type: ignore[index]
                    eng.drain(loop)  # type: ignore[arg-type]
                else:
                    for t in timers[b : b + BATCH]:
                        t._inflight -= 1

    def once() -> float:
        p = time.process_time()
        batches(True, 3)
        with_drain = time.process_time() - p
        p = time.process_time()
        batches(False, 3)  # building the batches: the benchmark's, subtracted
        return (with_drain - (time.process_time() - p)) / (3 * N) * 1e6

    batches(True, 10)  # warm-up: 10 runs each, histograms allocated
    return repeat(once)


def thread_side() -> tuple[float, float]:
    from tests.support.timers import Virtual

    v = Virtual()
    for i in range(N):
        v.clock.now = i / N
        v.SetIntervalSafe(lambda: None, 1000).start()
    eng = v.engine
    at = [1.0]

    def wakes(seconds: float) -> int:
        t, end, ticks = at[0], at[0] + seconds, 0
        while t < end:
            t += 0.00025
            with eng.lock:
                eng.wake_locked(t)
            box = eng._outbox.pop(v.loop, [])  # type: ignore[call-overload]
            ticks += len(box) // 2
            for x in box[::2]:
                x._inflight -= 1
            v.loop.posted.clear()
        at[0] = t
        return ticks

    def once() -> float:
        p = time.process_time()
        ticks = wakes(1.0)
        return (time.process_time() - p) / ticks * 1e6

    wakes(1.0)
    return repeat(once)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                    help="the qe-worker checkout to measure (default: this one)")
    ap.add_argument("--part", choices=("loop", "loop-nostats", "thread"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    if args.part:  # one measurement in this process (a fresh one for each: no patched leftovers)
        best, median = thread_side() if args.part == "thread" else loop_side(args.part == "loop")
        print(f"{best:.3f} {median:.3f}")
        return
    import subprocess

    print(f"# {args.root.resolve()}: CPU time per SetIntervalSafe tick, {N:,} one-second timers (us)\n")
    print("| side | best | median |")
    print("|---|---:|---:|")
    results = {}
    for part, label in (("loop", "loop: drain, with statistics"), ("loop-nostats", "loop: drain, statistics off"),
                        ("thread", "timer thread: wake-up (heap, routing)")):
        out = subprocess.run([sys.executable, __file__, "--root", str(args.root), "--part", part],
                             capture_output=True, text=True, check=True).stdout.split()
        results[part] = float(out[1])
        print(f"| {label} | {out[0]} | {out[1]} |", flush=True)
    print(f"| statistics (median difference) | | {results['loop'] - results['loop-nostats']:.3f} |")


if __name__ == "__main__":
    main()
