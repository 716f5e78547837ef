"""What the dashboard knows, with no I/O: the workers it has seen and their series.

Everything comes in as plain calls (``presence``, ``occupant``, ``sample``, ``failed``) with
the time passed in, and goes out as JSON-able dicts (``view``), so the rules are tested
without a server, a browser or a clock.

Rates and latency percentiles are computed from two successive samples of a worker's
``metrics {"format": "json"}``: calls/s and errors/s are counter deltas over the worker's own
clock between the two samples; p50/p99 come from the *delta* of the latency histogram (the
calls of that interval only), interpolated linearly inside the bucket the rank falls in, as
Prometheus' ``histogram_quantile`` does. So a percentile is exact to the bucket bounds (0.5,
1, 2.5, 5, 10, 25 ms ... 60 s), not to the millisecond; a ring of raw latencies in every
worker would be exact, but would cost the request path memory and work for every call, and
the histogram exists already for Prometheus. A counter that went down (the worker restarted)
starts a new baseline: that interval has no point.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["Dashboard", "Point", "WorkerState", "quantile"]

SOURCES: Final = ("option", "service", "account")
"""How the dashboard learnt of a worker: ``--jid``, a service room, the own account's presence."""


def quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram: ``counts[i]`` observations at most
    ``bounds[i]`` (above the previous bound); the last count is the +Inf bucket, for which
    the highest finite bound is returned. None for an empty histogram."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count <= 0:
            continue
        if seen + count >= rank:
            if i >= len(bounds):
                return bounds[-1]
            lo = bounds[i - 1] if i else 0.0
            return lo + (bounds[i] - lo) * max(0.0, rank - seen) / count
        seen += count
    return bounds[-1]


@dataclass(frozen=True, slots=True)
class Point:
    """One interval of one command on one worker: ``t`` is its end (Unix seconds, the
    worker's clock); rates per second; latencies in milliseconds (None: no call in it)."""

    seq: int
    t: float
    calls: float
    errors: float
    p50: float | None
    p99: float | None

    def as_list(self) -> list[Any]:
        return [self.seq, round(self.t, 3), round(self.calls, 3), round(self.errors, 3),
                None if self.p50 is None else round(self.p50, 3), None if self.p99 is None else round(self.p99, 3)]


@dataclass(slots=True)
class WorkerState:
    """One worker as far as the dashboard can tell."""

    jid: str
    sources: set[str] = field(default_factory=set)
    present: bool | None = None  # presence (account or room): None while nothing said
    service: str | None = None
    load: int | None = None
    sample: dict[str, Any] | None = None  # the last good answer
    sampled_at: float | None = None  # when it came (dashboard's monotonic clock)
    error: str | None = None  # the last poll's failure, None after a good one
    error_at: float | None = None
    answered: bool = False  # ever answered a poll
    left_at: float | None = None  # when it was last seen leaving (monotonic), None while present
    series: dict[str, deque[Point]] = field(default_factory=dict)
    totals: dict[str, tuple[int, int]] = field(default_factory=dict)  # cmd -> (calls, errors) since start


class Dashboard:
    """The workers seen and their series. ``stale_after``: seconds without a good answer
    after which a worker that still looks present shows ``stale``; ``history``: points
    kept per command; ``forget_after``: seconds a worker that left stays listed (offline)
    before ``prune`` drops it (those named with ``add`` stay). Single-threaded: call it from
    one event loop; ``now`` is always the caller's monotonic clock."""

    def __init__(self, *, own_jid: str = "", stale_after: float = 10.0, history: int = 150,
                 forget_after: float = 600.0) -> None:
        self.own_jid = own_jid
        self.stale_after = stale_after
        self.history = history
        self.forget_after = forget_after
        self.workers: dict[str, WorkerState] = {}
        self.seq = 0  # the newest point's number: views send only what a page has not seen

    def _worker(self, jid: str, source: str) -> WorkerState:
        worker = self.workers.get(jid)
        if worker is None:
            worker = self.workers[jid] = WorkerState(jid)
        worker.sources.add(source)
        return worker

    # -- what the poller reports ------------------------------------------------------------

    def add(self, jid: str) -> None:
        """A worker named by the user (``--jid``): shown whatever it answers."""
        self._worker(jid, "option")

    def presence(self, jid: str, available: bool, now: float) -> None:
        """Another session of the own account came or left."""
        if jid == self.own_jid:
            return
        worker = self.workers.get(jid)
        if worker is None and not available:
            return
        worker = worker or self._worker(jid, "account")
        worker.sources.add("account")
        self._present(worker, available, now)
        if not available and not self.shown(worker):
            del self.workers[jid]  # a caller of the account that came and went: nothing to keep

    def occupant(self, jid: str, service: str | None, load: int | None, present: bool, now: float) -> None:
        """A worker announced itself in a service room (``service``, ``load``), or left it."""
        if jid == self.own_jid or (not present and jid not in self.workers):
            return
        worker = self._worker(jid, "service")
        self._present(worker, present, now)
        if present:
            worker.service = service
            worker.load = load

    @staticmethod
    def _present(worker: WorkerState, present: bool, now: float) -> None:
        if not present and worker.present is not False:
            worker.left_at = now
        elif present:
            worker.left_at = None
        worker.present = present

    def prune(self, now: float) -> list[str]:
        """Forget the workers that left more than ``forget_after`` seconds ago (not those named
        with ``add``); their JIDs."""
        gone = [jid for jid, w in self.workers.items() if w.present is False and "option" not in w.sources
                and w.left_at is not None and now - w.left_at > self.forget_after]
        for jid in gone:
            del self.workers[jid]
        return gone

    def failed(self, jid: str, code: str, message: str, now: float) -> None:
        """A poll of ``jid`` failed with error ``code`` (``timeout``, ``unavailable``, ...)."""
        worker = self.workers.get(jid)
        if worker is None:
            return
        worker.error = f"{code}: {message}" if message else code
        worker.error_at = now
        if code == "unavailable":  # the server says no such session is online
            self._present(worker, False, now)

    def sample(self, jid: str, doc: dict[str, Any], now: float) -> bool:
        """A poll of ``jid`` answered ``doc``; False (and an error noted) when ``doc`` is not
        a metrics document this dashboard reads."""
        worker = self.workers.get(jid)
        if worker is None:
            return False
        if not (isinstance(doc, dict) and doc.get("format") == "json" and doc.get("version") == 1
                and isinstance(doc.get("calls"), dict) and isinstance(doc.get("latency"), dict)):
            self.failed(jid, "bad-result", "not a qe-worker metrics document (an older worker, or onapi "
                                           "answered 'metrics' itself)", now)
            return False
        previous = worker.sample
        worker.sample, worker.sampled_at = doc, now
        worker.error = worker.error_at = None
        worker.answered = True
        if "account" not in worker.sources or worker.present is None:
            self._present(worker, True, now)
        if isinstance(doc.get("service"), str) and worker.service is None:
            worker.service = doc["service"]
        self._totals(worker, doc)
        if previous is not None:
            self._points(worker, previous, doc)
        return True

    def _totals(self, worker: WorkerState, doc: dict[str, Any]) -> None:
        worker.totals = {cmd: (sum(_ints(outcomes)), sum(n for o, n in _ints_items(outcomes) if o != "ok"))
                         for cmd, outcomes in doc["calls"].items() if isinstance(outcomes, dict)}

    def _points(self, worker: WorkerState, before: dict[str, Any], after: dict[str, Any]) -> None:
        dt = _number(after.get("time")) - _number(before.get("time"))
        if before.get("started_at") != after.get("started_at") or not dt > 0:
            return  # restarted (counters from zero), or clocks that say nothing
        bounds = [float(b) for b in after["latency"].get("buckets", [])]
        old_hist, new_hist = before["latency"].get("commands", {}), after["latency"].get("commands", {})
        t = _number(after.get("time"))
        for cmd, outcomes in after["calls"].items():
            if not isinstance(outcomes, dict):
                continue
            was = before["calls"].get(cmd, {})
            was = was if isinstance(was, dict) else {}
            d_calls = sum(_ints(outcomes)) - sum(_ints(was))
            d_errors = (sum(n for o, n in _ints_items(outcomes) if o != "ok")
                        - sum(n for o, n in _ints_items(was) if o != "ok"))
            counts = _counts(new_hist.get(cmd))
            old = _counts(old_hist.get(cmd)) or [0] * len(counts)
            if d_calls < 0 or d_errors < 0 or len(old) != len(counts):
                continue  # a counter went down: not the same run of the worker
            delta = [a - b for a, b in zip(counts, old)]
            if any(d < 0 for d in delta):
                continue
            p50 = quantile(bounds, delta, 0.5) if bounds else None
            p99 = quantile(bounds, delta, 0.99) if bounds else None
            self.seq += 1
            series = worker.series.get(cmd)
            if series is None:
                series = worker.series[cmd] = deque(maxlen=self.history)
            series.append(Point(self.seq, t, d_calls / dt, d_errors / dt,
                                None if p50 is None else p50 * 1000, None if p99 is None else p99 * 1000))

    # -- what the poller asks ---------------------------------------------------------------

    def to_poll(self) -> list[str]:
        """Every worker to ask now: all but those known to have left."""
        return [jid for jid, w in self.workers.items() if w.present is not False or "option" in w.sources]

    def shown(self, worker: WorkerState) -> bool:
        """Whether the page lists ``worker``: one named or announced as a worker, or a session
        of the own account that answered once (others are the account's clients)."""
        return worker.answered or bool(worker.sources & {"option", "service"})

    def status(self, worker: WorkerState, now: float) -> str:
        """``online`` (answered within ``stale_after``), ``stale`` (present but not answering),
        ``offline`` (left, or the server says it is not there), ``waiting`` (no answer yet)."""
        if worker.present is False:
            return "offline"
        if worker.sampled_at is not None and now - worker.sampled_at <= self.stale_after:
            return "online"
        return "stale" if worker.answered or worker.error is not None else "waiting"

    # -- what the page gets -----------------------------------------------------------------

    def view(self, now: float, since: int = 0) -> dict[str, Any]:
        """The page's state: every shown worker with its summary, timers and jobs, and the
        points numbered above ``since`` (0: all of them). ``seq``: pass it as ``since`` next."""
        workers = []
        for jid in sorted(self.workers):
            worker = self.workers[jid]
            if not self.shown(worker):
                continue
            workers.append(self._worker_view(worker, now, since))
        return {"seq": self.seq, "since": since, "stale_after": self.stale_after, "history": self.history,
                "workers": workers}

    def _worker_view(self, worker: WorkerState, now: float, since: int) -> dict[str, Any]:
        doc = worker.sample or {}
        uptime = None
        if doc and worker.sampled_at is not None:
            uptime = _number(doc.get("time")) - _number(doc.get("started_at"))
            if worker.present is not False:
                uptime += max(0.0, now - worker.sampled_at)
        commands = []
        for cmd in sorted(set(worker.totals) | set(worker.series)):
            series = worker.series.get(cmd, ())
            last = series[-1] if series else None
            calls, errors = worker.totals.get(cmd, (0, 0))
            fresh = []
            for point in reversed(series):  # newest first: an update stops at the first point sent before
                if point.seq <= since:
                    break
                fresh.append(point.as_list())
            fresh.reverse()
            commands.append({"cmd": cmd, "calls": calls, "errors": errors,
                             "last": last.as_list() if last is not None else None, "points": fresh})
        jobs = doc.get("jobs") if isinstance(doc.get("jobs"), dict) else None
        requests = dict(doc["requests"]) if isinstance(doc.get("requests"), dict) else None
        if requests is not None and type(requests.get("in_flight")) is int:
            requests["in_flight"] = max(0, requests["in_flight"] - 1)  # not the poll that asked
        return {
            "jid": worker.jid,
            "status": self.status(worker, now),
            "sources": [s for s in SOURCES if s in worker.sources],
            "service": worker.service,
            "load": worker.load,
            "version": doc.get("worker_version"),
            "uptime_s": None if uptime is None else round(uptime, 1),
            "age_s": None if worker.sampled_at is None else round(now - worker.sampled_at, 1),
            "error": worker.error,
            "requests": requests,
            "commands": commands,
            "timers": [_timer(t) for t in doc.get("timers", []) if isinstance(t, dict)],
            "jobs": jobs,
        }


def _timer(stats: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "kind", "interval_ms", "runs", "errors", "missed", "lateness_p50_ms", "lateness_p99_ms",
            "last_run")
    return {k: stats.get(k) for k in keys}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else math.nan


def _ints(outcomes: dict[str, Any]) -> list[int]:
    return [n for n in outcomes.values() if type(n) is int]


def _ints_items(outcomes: dict[str, Any]) -> list[tuple[str, int]]:
    return [(o, n) for o, n in outcomes.items() if type(n) is int]


def _counts(hist: Any) -> list[int]:
    counts = hist.get("counts") if isinstance(hist, dict) else None
    if not isinstance(counts, list) or not all(type(n) is int for n in counts):
        return []
    return counts
