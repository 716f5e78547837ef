"""Soak test: does a busy worker stay flat (memory, file descriptors, threads, latency) for
half an hour? Not part of CI: it takes as long as you ask.

What runs:

* a private Prosody (``libs.devserver.DevServer``) on 127.0.0.1;
* one worker in its own process (``bench/soak_worker.py``: an ``App`` answering ``echo``,
  plus ``--intervals`` timers, half ``SetInterval`` and half ``SetIntervalSafe``, every
  ``--interval-ms``), so that what is measured is the worker alone;
* this process: one ``Client`` sending ``echo`` calls at a steady ``--rate`` per second,
  open loop: call k is sent at start + k / rate whether or not earlier calls have been
  answered (a closed loop would slow down with the worker and hide the problem). Latency
  is measured from the instant a call was *due*, so a stall of the load generator itself
  shows up as latency instead of silently lowering the rate.

Every ``--sample`` seconds one row is printed: calls due per second in the window, answers
ok / errors, latency p50 / p99 / max, timer ticks per second and ticks missed, the median
timer's lateness p99, the worker's RSS, open file descriptors, threads, asyncio tasks,
objects tracked by its garbage collector, blocks allocated by Python's allocator
(``sys.getallocatedblocks()``: live objects of every kind, unlike RSS, which keeps what
the allocator once needed) and CPU, Prosody's RSS and the 1-minute load
average of the machine (the soak shares it with whatever else runs). At the end (or on
Ctrl+C / SIGTERM: the summary of the samples so far; ``*`` marks a last, partial window) a
summary compares the first and the last sample, fits lines through the samples after the
first one (the first window includes login and warm-up) and through the second half of the
run, and gives a verdict:

  flat      the worker's RSS trend line in the second half of the run rises less than
            2 MB per hour (about one byte per call at 500 calls/s), and neither open fds
            nor threads reach a new maximum in the second half (pools that fill up
            during warm-up are bounded, not leaking)
  GROWING   otherwise (each growing figure is named)

Examples:

  python bench/soak.py --minutes 2                       # a quick check
  nohup python bench/soak.py --minutes 30 --markdown /tmp/soak.md > /tmp/soak.log 2>&1 &
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_bridge import pct  # noqa: E402
from soak_worker import RESOURCE  # noqa: E402

from libs.bridge import CallError, Client, load_config, wait_answering  # noqa: E402
from libs.devserver import DevServer  # noqa: E402

WORKER_SCRIPT = Path(__file__).resolve().parent / "soak_worker.py"
CALL_TIMEOUT = 5.0  # s; a call not answered by then counts as an error ("timeout")
RSS_FLAT_MB_PER_H = 2.0  # "flat": the RSS trend in the 2nd half of the run rises less than this
MB = 1024 * 1024


@dataclass
class Window:
    """What the load generator saw between two samples."""

    started_at: float
    due: int = 0
    ok: int = 0
    shed: int = 0  # not sent: too many calls already in flight (the worker is far behind)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies_ms: list[float] = field(default_factory=list)


@dataclass
class Sample:
    """One row of the table."""

    t_s: float
    window_s: float
    due_per_s: float
    ok: int
    errors: int
    shed: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    ticks_per_s: float | None
    missed: int | None
    lateness_p99_ms: float | None
    rss_mb: float
    fds: int
    threads: int
    tasks: int | None
    gc_objects: int | None
    blocks: int | None
    cpu_pct: float
    server_rss_mb: float
    load1: float
    partial: bool = False


COLUMNS: list[tuple[str, str, int]] = [
    # (header, Sample attribute, width)
    ("min", "t_s", 6),
    ("calls/s", "due_per_s", 7),
    ("ok", "ok", 6),
    ("err", "errors", 4),
    ("shed", "shed", 4),
    ("p50 ms", "p50_ms", 6),
    ("p99 ms", "p99_ms", 6),
    ("max ms", "max_ms", 7),
    ("ticks/s", "ticks_per_s", 7),
    ("missed", "missed", 6),
    ("timer p99 ms", "lateness_p99_ms", 12),
    ("RSS MB", "rss_mb", 6),
    ("fds", "fds", 4),
    ("threads", "threads", 7),
    ("tasks", "tasks", 5),
    ("gc objects", "gc_objects", 10),
    ("blocks", "blocks", 7),
    ("CPU %", "cpu_pct", 5),
    ("server MB", "server_rss_mb", 9),
    ("load", "load1", 4),
]


def _cell(sample: Sample, attr: str) -> str:
    value = getattr(sample, attr)
    if value is None:
        return "-"
    if attr == "t_s":
        return f"{value / 60:.1f}" + ("*" if sample.partial else "")
    if attr in ("due_per_s", "ticks_per_s", "cpu_pct"):
        return f"{value:.0f}"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 100 else f"{value:.1f}"
    return str(value)


def text_row(sample: Sample | None) -> str:
    if sample is None:
        return " ".join(f"{h:>{w}}" for h, _a, w in COLUMNS)
    return " ".join(f"{_cell(sample, a):>{w}}" for _h, a, w in COLUMNS)


def markdown_table(samples: list[Sample]) -> str:
    lines = ["| " + " | ".join(h for h, _a, _w in COLUMNS) + " |",
             "|" + "---:|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(s, a) for _h, a, _w in COLUMNS) + " |" for s in samples]
    return "\n".join(lines)


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, in value per hour."""
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var * 3600


@dataclass
class Totals:
    """Whole-run counters of the load generator."""

    due: int = 0
    ok: int = 0
    shed: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)


def summary(samples: list[Sample], totals: Totals, elapsed_s: float) -> tuple[list[str], str]:
    """The summary lines and the verdict (see the module docstring for the rule)."""
    lines = [f"ran {elapsed_s / 60:.1f} min: {totals.due} calls due ({totals.due / max(elapsed_s, 1e-9):.1f}/s "
             f"achieved), {totals.ok} ok ({totals.ok / max(elapsed_s, 1e-9):.1f}/s), "
             f"{sum(totals.errors.values())} errors{f' {dict(totals.errors)}' if totals.errors else ''}, "
             f"{totals.shed} shed"]
    if not samples:
        return lines + ["no sample taken"], "unknown"
    first, last = samples[0], samples[-1]
    trend = samples[1:]  # the first window includes the login and the warm-up
    early, late = trend[: len(trend) // 2], trend[len(trend) // 2:]
    growing: list[str] = []
    lines.append("")
    lines.append(f"| figure | first ({first.t_s / 60:.1f} min) | last ({last.t_s / 60:.1f} min) | delta | "
                 "slope/h after the first sample | slope/h, 2nd half |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for label, attr in (("worker RSS MB", "rss_mb"), ("open fds", "fds"), ("threads", "threads"),
                        ("asyncio tasks", "tasks"), ("gc objects", "gc_objects"),
                        ("allocated blocks", "blocks"), ("latency p50 ms", "p50_ms"),
                        ("latency p99 ms", "p99_ms"), ("timer lateness p99 ms", "lateness_p99_ms"),
                        ("worker CPU %", "cpu_pct"), ("server RSS MB", "server_rss_mb")):
        a, b = getattr(first, attr), getattr(last, attr)
        slopes = [slope_per_hour([(s.t_s, float(getattr(s, attr))) for s in part if getattr(s, attr) is not None])
                  for part in (trend, late)]
        delta = "-" if a is None or b is None else f"{b - a:+.2f}"
        lines.append(f"| {label} | {_cell(first, attr)} | {_cell(last, attr)} | {delta} | "
                     + " | ".join("-" if x is None else f"{x:+.2f}" for x in slopes) + " |")
        if attr == "rss_mb" and slopes[1] is not None and slopes[1] >= RSS_FLAT_MB_PER_H:
            growing.append(f"worker RSS ({slopes[1]:+.2f} MB/h in the 2nd half)")
        if attr in ("fds", "threads") and early and late:
            before, after = max(getattr(s, attr) for s in early), max(getattr(s, attr) for s in late)
            if after > before:
                growing.append(f"{label} (max {before} in the 1st half, {after} in the 2nd)")
    verdict = "flat" if not growing else "GROWING: " + ", ".join(growing)
    if len(late) < 3:
        verdict += " (too few samples for a trend: run longer)"
    return lines, verdict


class Soak:
    """Drives the calls, takes the samples, prints the table."""

    def __init__(self, args: argparse.Namespace, client: Client, worker: psutil.Process,
                 server: psutil.Process, jid: str, out: TextIO) -> None:
        self.args = args
        self.client = client
        self.worker = worker
        self.server = server
        self.jid = jid
        self.out = out
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        self.t0 = self.loop.time()
        self.window = Window(self.t0)
        self.totals = Totals()
        self.samples: list[Sample] = []
        self.inflight: set[asyncio.Task[None]] = set()
        self.max_inflight = int(args.rate * CALL_TIMEOUT * 2)  # beyond this the worker is hopelessly behind
        self._last_worker_stats: dict[str, Any] | None = None
        self.stopped_at: float | None = None

    async def generate(self) -> None:
        """Open loop: launch every call that is due, then sleep until the next one is."""
        rate = self.args.rate
        n = 0
        while not self.stop.is_set():
            due_now = int((self.loop.time() - self.t0) * rate) + 1
            while n < due_now:
                self.window.due += 1
                self.totals.due += 1
                if len(self.inflight) >= self.max_inflight:
                    self.window.shed += 1
                    self.totals.shed += 1
                else:
                    task = self.loop.create_task(self.one(n, self.t0 + n / rate))
                    self.inflight.add(task)
                    task.add_done_callback(self.inflight.discard)
                n += 1
            await asyncio.sleep(max(0.0, self.t0 + n / rate - self.loop.time()))

    async def one(self, n: int, due: float) -> None:
        code = None
        try:
            answer = await self.client.call(self.jid, "echo", {"n": n}, timeout=CALL_TIMEOUT)
            if answer != {"n": n}:
                code = "wrong-answer"
        except CallError as exc:
            code = exc.code
        window = self.window  # the window the answer arrived in
        if code is None:
            window.ok += 1
            self.totals.ok += 1
            window.latencies_ms.append((self.loop.time() - due) * 1000)
        else:
            window.errors[code] += 1
            self.totals.errors[code] += 1

    async def worker_stats(self) -> dict[str, Any] | None:
        try:
            return await self.client.call(self.jid, "soak-stats", timeout=CALL_TIMEOUT)
        except CallError as exc:
            print(f"# soak-stats failed: {exc}", file=self.out, flush=True)
            return None

    async def take_sample(self, partial: bool = False) -> Sample:
        now = self.loop.time()
        window, self.window = self.window, Window(now)
        span = max(now - window.started_at, 1e-9)
        stats = await self.worker_stats()
        prev = self._last_worker_stats
        ticks_per_s = missed = None
        if stats is not None and prev is not None:
            ticks_per_s = (stats["ticks"] - prev["ticks"]) / span
            missed = stats["missed"] - prev["missed"]
        elif stats is not None:
            ticks_per_s, missed = stats["ticks"] / span, stats["missed"]
        if stats is not None:
            self._last_worker_stats = stats
        lat = window.latencies_ms
        with self.worker.oneshot():
            rss, fds, threads = self.worker.memory_info().rss, self.worker.num_fds(), self.worker.num_threads()
            cpu = self.worker.cpu_percent(None)
        sample = Sample(
            t_s=now - self.t0, window_s=span, due_per_s=window.due / span, ok=window.ok,
            errors=sum(window.errors.values()), shed=window.shed,
            p50_ms=statistics.median(lat) if lat else None, p99_ms=pct(lat, 99) if lat else None,
            max_ms=max(lat) if lat else None, ticks_per_s=ticks_per_s, missed=missed,
            lateness_p99_ms=stats["lateness_p99_ms"] if stats else None,
            rss_mb=rss / MB, fds=fds, threads=threads,
            tasks=stats["tasks"] if stats else None, gc_objects=stats["gc_objects"] if stats else None,
            blocks=stats["allocated_blocks"] if stats else None,
            cpu_pct=cpu, server_rss_mb=self.server.memory_info().rss / MB, load1=os.getloadavg()[0],
            partial=partial,
        )
        self.samples.append(sample)
        if window.errors:
            print(f"# errors in this window: {dict(window.errors)}", file=self.out, flush=True)
        return sample

    async def run(self) -> None:
        """Load and sample until ``--minutes`` have passed or ``stop`` is set (a signal)."""
        self.worker.cpu_percent(None)  # starts the worker's CPU measurement window
        self._last_worker_stats = await self.worker_stats()
        self.t0 = self.loop.time()
        self.window = Window(self.t0)
        end = self.t0 + self.args.minutes * 60
        print(text_row(None), file=self.out, flush=True)
        generator = self.loop.create_task(self.generate())
        try:
            next_sample = self.t0 + self.args.sample
            while self.loop.time() < end - 1e-3:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), min(next_sample, end) - self.loop.time())
                if self.stop.is_set():
                    break
                print(text_row(await self.take_sample()), file=self.out, flush=True)
                self.write_markdown()
                next_sample += self.args.sample
        finally:
            interrupted = self.stop.is_set()
            self.stop.set()
            self.stopped_at = self.loop.time()
            generator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await generator
            if self.inflight:  # let the calls already sent finish (each is bounded by its timeout)
                await asyncio.wait(set(self.inflight), timeout=CALL_TIMEOUT + 1)
            if interrupted and self.stopped_at - self.window.started_at >= 5:
                print(text_row(await self.take_sample(partial=True)), file=self.out, flush=True)

    def report(self) -> str:
        lines, verdict = summary(self.samples, self.totals, (self.stopped_at or self.loop.time()) - self.t0)
        w = self._last_worker_stats
        if w is not None:  # as of the last sample
            lines.insert(1, f"worker: {w['requests']['answered']} requests answered, {w['requests']['failed']} failed; "
                            f"{w['ticks']} timer ticks, {w['missed']} missed, {w['timer_errors']} errors, "
                            f"{w['timers_running']} timers running; {w['sessions']} session(s), "
                            f"{w['resumptions']} resumption(s)")
        return "\n".join(lines + ["", f"verdict: {verdict}"])

    def write_markdown(self, final: bool = False) -> None:
        path = self.args.markdown
        if path is None:
            return
        a = self.args
        head = (f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, Python {platform.python_version()}; "
                f"`python bench/soak.py --minutes {a.minutes:g} --rate {a.rate:g} --intervals {a.intervals} "
                f"--interval-ms {a.interval_ms:g} --sample {a.sample:g}`"
                + ("" if final else " (in progress)"))
        body = [head, "", markdown_table(self.samples), ""]
        if final:
            body += [self.report(), ""]
        Path(path).write_text("\n".join(body))


def spawn_worker(server: DevServer, worker_pw: str, client_jid: str, args: argparse.Namespace,
                 log: TextIO) -> subprocess.Popen[bytes]:
    """The worker in its own session: a Ctrl+C in the terminal reaches only us, and we stop
    it after the summary. Its stdin is a pipe we hold: if we die, it sees EOF and leaves."""
    env = {**os.environ, **server.env("worker", worker_pw), "QE_ALLOW": client_jid, "QE_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, str(WORKER_SCRIPT), "--intervals", str(args.intervals), "--interval-ms", str(args.interval_ms)],
        env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop_worker(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.terminate()  # graceful: App leaves the server, exit 0
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    return proc.returncode


async def main(args: argparse.Namespace) -> int:
    out = sys.stdout
    logdir = Path(tempfile.mkdtemp(prefix="qe-soak-"))
    worker_pw, client_pw = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    with DevServer() as server, open(logdir / "worker.log", "wb") as worker_log:
        server.register("worker", worker_pw)
        client_jid = server.register("client", client_pw)
        proc = spawn_worker(server, worker_pw, client_jid, args, worker_log)  # type: ignore[arg-type]
        jid = f"worker@{server.domain}/{RESOURCE}"
        print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} soak: {args.minutes:g} min, {args.rate:g} calls/s open loop, "
              f"{args.intervals} intervals of {args.interval_ms:g} ms; Prosody pid {server.pid} on port "
              f"{server.port}; worker pid {proc.pid} (log {logdir / 'worker.log'}); "
              f"{os.cpu_count()} cores, Python {platform.python_version()}", file=out, flush=True)
        loop = asyncio.get_running_loop()
        soak: Soak | None = None
        stop_early = asyncio.Event()

        def on_signal() -> None:
            print("# stopping (signal): finishing the calls in flight, then the summary", file=out, flush=True)
            stop_early.set()
            if soak is not None:
                soak.stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            async with Client(load_config(server.env("client", client_pw))) as client:
                await wait_answering(client, jid, 30)
                assert server.pid is not None
                soak = Soak(args, client, psutil.Process(proc.pid), psutil.Process(server.pid), jid, out)
                if stop_early.is_set():
                    soak.stop.set()
                await soak.run()
                print("", file=out)
                print(soak.report(), file=out, flush=True)
                soak.write_markdown(final=True)
        finally:
            code = stop_worker(proc)
            print(f"# worker exited with {code}", file=out, flush=True)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=500.0, help="calls per second, open loop (default: %(default)s)")
    parser.add_argument("--intervals", type=int, default=1000,
                        help="intervals in the worker, half SetInterval, half SetIntervalSafe (default: %(default)s)")
    parser.add_argument("--interval-ms", type=float, default=1000.0,
                        help="period of each interval in ms (default: %(default)s)")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between rows (default: %(default)s)")
    parser.add_argument("--markdown", metavar="FILE", default=None,
                        help="also write the table and the summary as markdown to FILE (rewritten after each row)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.sample <= 0 or args.intervals < 0 or args.interval_ms <= 0:
        parser.error("--minutes, --rate, --sample and --interval-ms must be > 0, --intervals >= 0")
    return args


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
