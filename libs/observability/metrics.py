"""Prometheus metrics of one worker, in a registry of its own.

Why a registry per ``App`` and not prometheus_client's global one: several workers may live
in one process (tests, ``qe-worker run`` with several scripts) and each must expose its own
numbers without name clashes.

Why a custom collector: most numbers already exist as plain counters (``DispatchStats``,
``Transport.stats()``, ``timer_stats()``, the job scheduler's tasks). The collector reads
them when Prometheus scrapes, so they cost nothing on the request path. Only what exists
nowhere else is recorded per request, by ``Dispatcher.observer``: calls by command and
outcome, and a latency histogram per command, in plain dicts and lists (no locks: everything
runs on the worker's loop, scrapes included).

Label values stay bounded whatever callers send: the outcome is ``ok`` or one of the
protocol's error codes; a command is named by its own label only when it is registered, a
built-in, or one of the first ``MAX_COMMANDS`` names ``onapi`` answered; any other is
``_other`` (a stranger probing names cannot grow the registry).

Exposure (``MetricsServer``, ``App``): ``GET /metrics`` on ``App.rest`` when the worker
serves HTTP, else on ``QE_METRICS_PORT`` (a small asyncio HTTP server in the worker's loop,
``127.0.0.1`` unless ``QE_METRICS_HOST``), and the ``metrics`` command for owner/partner:
the text exposition, or with ``{"format": "json"}`` the same numbers as one JSON document
(``snapshot()``), which is what ``qe-worker dashboard`` polls: a program that draws charts
wants structure, and parsing the exposition in a browser would tie it to our metric names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ..bridge.protocol import ApiResult
from ..timers import timer_stats

if TYPE_CHECKING:
    from ..bridge.app import App
    from ..bridge.protocol import ApiError

__all__ = ["BUCKETS", "CONTENT_TYPE", "MAX_COMMANDS", "SNAPSHOT_VERSION", "MetricsServer", "WorkerMetrics"]

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds (seconds) of the latency histogram's buckets; +Inf comes after."""
MAX_COMMANDS: Final = 100
"""Command names ``onapi`` answered that get a label of their own; later ones are ``_other``."""
OTHER: Final = "_other"
SNAPSHOT_VERSION: Final = 1
"""``version`` of ``WorkerMetrics.snapshot()``'s document; raised when a field changes meaning."""


class _Latency:
    """One command's histogram: counts per bucket (not cumulative), their sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0


class WorkerMetrics(Collector):
    """The metrics of one ``App``: ``registry`` holds this collector and nothing else.

    ``observe`` is ``Dispatcher.observer``; ``collect`` runs at each scrape. Both on the
    worker's loop (``render()`` from another thread could see a dict change size).
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.calls: dict[tuple[str, str], int] = {}
        self.latency: dict[str, _Latency] = {}
        self._named: set[str] = set()  # onapi's command names with a label of their own
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- the request path ----------------------------------------------------------------------

    def observe(self, cmd: str, answer: ApiResult | ApiError, seconds: float) -> None:
        outcome = "ok" if type(answer) is ApiResult else answer.code  # type: ignore[union-attr]
        if cmd not in self.latency:
            cmd = self._label(cmd, outcome)
        key = (cmd, outcome)
        self.calls[key] = self.calls.get(key, 0) + 1
        hist = self.latency.get(cmd)
        if hist is None:
            hist = self.latency[cmd] = _Latency()
        hist.counts[bisect_left(BUCKETS, seconds)] += 1
        hist.total += seconds

    def _label(self, cmd: str, outcome: str) -> str:
        dispatcher = self.app.dispatcher
        if cmd in dispatcher.commands or cmd in dispatcher.fallbacks:
            return cmd
        if outcome in ("unknown-command", "forbidden") or dispatcher.onapi is None:
            return OTHER
        if cmd in self._named or len(self._named) < MAX_COMMANDS:
            self._named.add(cmd)
            return cmd
        return OTHER

    # -- scrapes ---------------------------------------------------------------------------------

    def snapshot(self, *, jobs: bool = False) -> dict[str, Any]:
        """The metrics as one JSON-able document (docs/protocol.md, ``metrics``): who the
        worker is, request counters, calls by command and outcome, the latency histogram per
        command (counts per bucket, not cumulative, ``BUCKETS`` then +Inf), the process's
        timers, and the job counts. ``jobs``: also one entry per scheduled job (cmd,
        trigger, next and last run): the owner's view, as the ``jobs`` command gives the
        owner every job and a partner only its own."""
        from ..bridge.app import version

        app = self.app
        stats = app.dispatcher.stats
        transport = app.transport
        calls: dict[str, dict[str, int]] = {}
        for (cmd, outcome), count in sorted(self.calls.items()):
            calls.setdefault(cmd, {})[outcome] = count
        doc: dict[str, Any] = {
            "format": "json",
            "version": SNAPSHOT_VERSION,
            "jid": app.jid,
            "service": app.app,
            "worker_version": version(),
            "started_at": app.started_at,
            "time": time.time(),
            "online": app.online,
            "requests": {"received": stats.received, "answered": stats.answered, "failed": stats.failed,
                         "forbidden": stats.forbidden, "expired": stats.expired, "in_flight": stats.in_flight},
            "calls": calls,
            "latency": {"buckets": list(BUCKETS),
                        "commands": {cmd: {"counts": list(hist.counts), "sum": hist.total}
                                     for cmd, hist in sorted(self.latency.items())}},
            "transport": transport.stats() if transport is not None else {},
            "timers": [t.as_dict() for t in timer_stats()],
        }
        scheduler = app.scheduler
        if scheduler is not None:
            tasks = scheduler.tasks
            summary = [task.statistics for task in tasks.values()]
            doc["jobs"] = {"count": len(tasks), "runs": sum(s["run_count"] for s in summary),
                           "failures": sum(s["error_count"] for s in summary),
                           "missed": sum(s["missed_count"] for s in summary)}
            if jobs:
                doc["jobs"]["list"] = [_job_entry(scheduler, job_id, task.statistics)
                                       for job_id, task in sorted(tasks.items())]
        return doc


    def render(self) -> bytes:
        """The text exposition of every metric (Prometheus' format 0.0.4)."""
        return generate_latest(self.registry)

    def collect(self) -> Iterable[Metric]:
        yield from self._worker()
        yield from self._requests()
        yield from self._transport()
        yield from self._timers()
        yield from self._jobs()

    def _worker(self) -> Iterator[Metric]:
        from ..bridge.app import version

        app = self.app
        info = GaugeMetricFamily("qe_worker_info", "This worker (always 1)", labels=["jid", "version"])
        info.add_metric([app.jid, version()], 1)
        yield info
        yield GaugeMetricFamily("qe_worker_start_time_seconds", "When the worker was created (Unix time)",
                                value=app.started_at)
        yield GaugeMetricFamily("qe_worker_online", "1 while logged in to the XMPP server", value=int(app.online))

    def _requests(self) -> Iterator[Metric]:
        stats = self.app.dispatcher.stats
        yield CounterMetricFamily("qe_requests_received", "Requests received, whatever became of them",
                                  value=stats.received)
        answers = CounterMetricFamily("qe_requests_answered", "Requests by how they ended (every front-end; "
                                      "refusals before decoding included)", labels=["result"])
        for result in ("answered", "failed", "forbidden", "expired"):
            answers.add_metric([result], getattr(stats, result))
        yield answers
        yield GaugeMetricFamily("qe_requests_in_flight", "Requests running now", value=stats.in_flight)
        calls = CounterMetricFamily("qe_calls", "Admitted requests by command and outcome (ok or the error code; "
                                    "busy: refused by the per-caller limit)", labels=["cmd", "outcome"])
        for (cmd, outcome), count in sorted(self.calls.items()):
            calls.add_metric([cmd, outcome], count)
        yield calls
        latency = HistogramMetricFamily("qe_call_duration_seconds", "Time from admission to answer, by command",
                                        labels=["cmd"])
        for cmd, hist in sorted(self.latency.items()):
            running, buckets = 0, []
            for bound, count in zip((*map(str, BUCKETS), "+Inf"), hist.counts):
                running += count
                buckets.append((bound, running))
            latency.add_metric([cmd], buckets, hist.total)
        yield latency

    def _transport(self) -> Iterator[Metric]:
        transport = self.app.transport
        stats: dict[str, int] = transport.stats() if transport is not None else {}
        yield CounterMetricFamily("qe_xmpp_sessions", "XMPP logins (reconnects = this - 1)",
                                  value=stats.get("sessions", 0))
        yield CounterMetricFamily("qe_xmpp_resumptions", "Sessions resumed (XEP-0198) instead of a new login",
                                  value=stats.get("resumptions", 0))
        yield CounterMetricFamily("qe_keepalive_pings_answered", "Keepalive pings the server answered",
                                  value=stats.get("pings_answered", 0))
        yield CounterMetricFamily("qe_keepalive_failures", "Keepalive pings not answered in time",
                                  value=stats.get("pings_late", 0))

    def _timers(self) -> Iterator[Metric]:
        timers = timer_stats()  # the process's timers: those of every worker in it
        count = GaugeMetricFamily("qe_timers", "Live timers of the process, by kind", labels=["kind"])
        for kind in ("interval", "timeout"):
            count.add_metric([kind], sum(1 for t in timers if t.kind == kind))
        yield count
        for name, field, doc in (("qe_timer_runs", "runs", "Runs of the live timers"),
                                 ("qe_timer_errors", "errors", "Runs of the live timers that raised"),
                                 ("qe_timer_missed", "missed", "Ticks of the live timers that never ran")):
            # gauges: a timer that stops takes its counts with it
            yield GaugeMetricFamily(name, doc, value=sum(getattr(t, field) for t in timers))
        late = GaugeMetricFamily("qe_timer_lateness_seconds", "Worst lateness percentile over the live timers "
                                 "(their last 255-510 runs)", labels=["quantile"])
        for quantile, field in (("0.5", "lateness_p50_ms"), ("0.99", "lateness_p99_ms")):
            values = [v for t in timers if (v := getattr(t, field)) is not None]
            late.add_metric([quantile], max(values) / 1000 if values else 0.0)
        yield late

    def _jobs(self) -> Iterator[Metric]:
        scheduler = self.app.scheduler
        if scheduler is None:
            return
        tasks = list(scheduler.tasks.values())
        stats = [task.statistics for task in tasks]
        yield GaugeMetricFamily("qe_jobs", "Scheduled jobs running here", value=len(tasks))
        yield GaugeMetricFamily("qe_job_runs", "Runs of those jobs since the worker started",
                                value=sum(s["run_count"] for s in stats))
        yield GaugeMetricFamily("qe_job_failures", "Their runs that failed since the worker started",
                                value=sum(s["error_count"] for s in stats))
        yield GaugeMetricFamily("qe_job_missed", "Their runs missed (misfires) since the worker started",
                                value=sum(s["missed_count"] for s in stats))
        upcoming = [when for task in tasks if isinstance(when := task.next_run, datetime)]
        yield GaugeMetricFamily("qe_job_next_run_timestamp_seconds", "When the next job runs (Unix time; 0: none)",
                                value=min(upcoming).timestamp() if upcoming else 0.0)


def _job_entry(scheduler: Any, job_id: str, stats: dict[str, Any]) -> dict[str, Any]:
    """One job of ``snapshot(jobs=True)``: its command from the store, timings from its task."""
    job = scheduler.store.get(job_id)
    return {"job": job_id, "cmd": job.cmd if job is not None else None, "trigger": stats["trigger"],
            "next_run": stats["next_run"], "last_run": stats["last_run"], "run_count": stats["run_count"],
            "error_count": stats["error_count"], "missed_count": stats["missed_count"],
            "last_error": stats["last_error"]}


class MetricsServer:
    """``GET /metrics`` on its own port, for a worker without ``App.rest``: an asyncio server
    in the worker's loop. Not prometheus_client's ``start_http_server``: that serves from a
    thread, which would read the worker's dicts while the loop changes them, and a thread per
    worker cannot be stopped with the worker. Nor uvicorn: one path needs no framework."""

    def __init__(self, metrics: WorkerMetrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics served on http://%s:%d/metrics", self.host, self.port)

    async def close(self, timeout: float = 1.0) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            if method not in (b"GET", b"HEAD"):
                status, body, ctype = b"405 Method Not Allowed", b"GET only\n", b"text/plain"
            elif path != b"/metrics":
                status, body, ctype = b"404 Not Found", b"see /metrics\n", b"text/plain"
            else:
                status, body, ctype = b"200 OK", self.metrics.render(), CONTENT_TYPE.encode()
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                         + (body if method != b"HEAD" else b""))
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
