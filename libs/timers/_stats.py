"""Per-timer statistics: run accounting, a compact lateness window, the ``TimerStats`` snapshot.

Why a histogram and not a list of the last 1024 samples: a worker may run 100,000 timers,
and 1024 floats each would be 0.8 GB. Lateness is recorded instead in log-spaced buckets
(1 us wide below 8 us, then 4 buckets per power of two, so a reported percentile - the
bucket's middle - is within 12.5 % of the true sample) with 8-bit counts, in two windows
of 255 runs: the current one and the previous one. Percentiles therefore describe the
last 255-510 runs. Memory: about 100 bytes per timer (a range of a few octaves of
lateness), allocated at the first sampled run; the range shrinks again when outliers age out.

Layout of the ``array('B')``: ``[n_current, n_previous, lo, cur_lo, prev_lo, cur_lo+1, ...]``:
only buckets from the lowest to the highest one seen in the two windows are stored.

Run counters live in one ``array('d')`` per timer (``ACC_*`` indexes), updated in place:
a timer's statistics allocate nothing per run once it has run a few times. They are exact.

Lateness is sampled under load. Recording a lateness sample was the largest part of a
tick's statistics (about a third of the loop's whole per-tick cost at 100,000 ticks a
second, bench/RESULTS.md, "Timers: cheaper statistics"), so when runs are recorded
in batches of more than ``BUSY_BATCH`` (many ticks due together: the load where the cost
shows), only every ``SAMPLE_EVERY``-th run of each timer is sampled, counting that timer's
own runs (its 8th, 16th, 24th, ...): deterministic, and fair to every timer whatever its
place in the batches. A sample then stands for the ``SAMPLE_EVERY`` runs up to it (it is
added with that weight), so the windows still describe the last 255-510 *runs*, and busy
moments weigh in the percentiles as much as quiet ones, where every run is sampled.

Thread affinity: none; callers serialise access (the engine's lock).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol

__all__ = [
    "BUSY_BATCH",
    "SAMPLE_EVERY",
    "WINDOW",
    "Recorded",
    "TimerStats",
    "lateness_add",
    "lateness_quantiles",
    "lateness_samples",
    "record_runs",
    "snapshot",
    "stride_for",
]

WINDOW = 255
"""Runs per window (8-bit counts); percentiles cover the last WINDOW..2*WINDOW runs."""

SAMPLE_EVERY = 8
"""Under load, the lateness of every SAMPLE_EVERY-th run of a timer is sampled (see the module doc)."""

BUSY_BATCH = 16
"""Runs recorded together above which lateness is sampled; at or below it every run is."""


def stride_for(batch: int) -> int:
    """Which runs to sample the lateness of when ``batch`` runs are recorded together:
    1 (every run) for small batches, ``SAMPLE_EVERY`` under load."""
    return 1 if batch <= BUSY_BATCH else SAMPLE_EVERY

_MAX_BUCKET = 151  # 2**40 us (about 12 days) and beyond share the last bucket


def _bucket(seconds: float) -> int:
    return _bucket_us(int(seconds * 1e6) if seconds > 0.0 else 0)


def _bucket_us(us: int) -> int:
    if us < 8:
        return us
    e = us.bit_length()  # us is in [2**(e-1), 2**e): 4 buckets of width 2**(e-3)
    b = (e << 2) - 8 + ((us >> (e - 3)) & 3)
    return b if b < _MAX_BUCKET else _MAX_BUCKET


def _bucket_mid_us(b: int) -> float:
    if b < 8:
        return b + 0.5
    e = (b + 8) >> 2
    width = 1 << (e - 3)
    return ((4 + (b & 3)) << (e - 3)) + width / 2


_FAST = 4096  # bucket of every lateness below 4.096 ms, precomputed
_BUCKET = [_bucket_us(us) for us in range(_FAST)]
_HEAD = 3  # n_current, n_previous, lowest bucket stored


_MARGIN = 8  # empty buckets kept (or added) beyond the lowest and highest one seen
# Why a margin: lateness wanders over a few octaves, and an array that fits exactly what was
# seen would be replaced by a wider one again and again (see docs/timers.md, "Design notes").


def _zeros(n: int) -> array[int]:
    return array("B", bytes(n))


def lateness_add(counts: array[int] | None, seconds: float, weight: int = 1) -> array[int]:
    """Record one lateness sample standing for ``weight`` runs (1..``SAMPLE_EVERY``);
    returns the (possibly new) counts array."""
    us = int(seconds * 1e6)
    b = _BUCKET[us] if 0 <= us < _FAST else _bucket(seconds)
    if counts is not None and counts[0] + weight <= WINDOW:  # the common case: a bucket in range
        i = _HEAD + 2 * (b - counts[2])
        if _HEAD <= i < len(counts):
            counts[0] += weight
            counts[i] += weight
            return counts
    return _add_slow(counts, b, seconds, weight)


def _add_slow(counts: array[int] | None, b: int, seconds: float, weight: int) -> array[int]:
    """``lateness_add`` when the array is new, must widen, or the window is full."""
    if counts is None:
        lo = max(0, b - _MARGIN)
        counts = _zeros(_HEAD + 2 * (b + _MARGIN + 1 - lo))
        counts[2] = lo
    lo = counts[2]
    if b < lo:  # widen downwards
        new_lo = max(0, b - _MARGIN)
        counts = counts[:_HEAD] + _zeros(2 * (lo - new_lo)) + counts[_HEAD:]
        counts[2] = lo = new_lo
    i = _HEAD + 2 * (b - lo)
    if len(counts) <= i:  # widen upwards
        counts = counts + _zeros(i + 2 + 2 * _MARGIN - len(counts))
    if counts[0] + weight > WINDOW:
        counts = _rotate(counts)
        lo = counts[2]
        if b < lo or len(counts) <= _HEAD + 2 * (b - lo):
            return lateness_add(counts, seconds, weight)
        i = _HEAD + 2 * (b - lo)
    counts[0] += weight
    counts[i] += weight
    return counts


def _rotate(counts: array[int]) -> array[int]:
    """The full current window becomes the previous one. Empty buckets at either end beyond
    ``_MARGIN`` are then dropped, so an old outlier does not pin memory forever; when there
    are none to drop, the array is reused in place."""
    body = counts[_HEAD:]
    body[1::2] = body[0::2]  # prev_b = cur_b
    body[0::2] = _zeros(len(body) // 2)  # cur_b = 0
    used = [k for k in range(len(body) // 2) if body[2 * k + 1]]
    first = max(0, used[0] - _MARGIN)
    last = min(len(body) // 2 - 1, used[-1] + _MARGIN)
    if first == 0 and last == len(body) // 2 - 1:
        counts[_HEAD:] = body
        counts[1] = counts[0]
        counts[0] = 0
        return counts
    return array("B", [0, counts[0], counts[2] + first]) + body[2 * first : 2 * last + 2]


def lateness_quantiles(counts: array[int] | None, qs: tuple[float, ...]) -> list[float | None]:
    """Estimated quantiles in seconds (None when there is no sample)."""
    if counts is None:
        return [None for _ in qs]
    total = counts[0] + counts[1]
    if total == 0:
        return [None for _ in qs]
    ranks = [max(1, math.ceil(q * total)) for q in qs]
    out: list[float | None] = [None] * len(qs)
    lo = counts[2]
    seen = 0
    for k in range((len(counts) - _HEAD) // 2):
        seen += counts[_HEAD + 2 * k] + counts[_HEAD + 2 * k + 1]
        for j, rank in enumerate(ranks):
            if out[j] is None and seen >= rank:
                out[j] = _bucket_mid_us(lo + k) / 1e6
        if all(v is not None for v in out):
            break
    return out


def lateness_samples(counts: array[int] | None) -> int:
    """How many runs the percentiles describe (a sample taken under load stands for
    ``SAMPLE_EVERY`` runs)."""
    return 0 if counts is None else counts[0] + counts[1]


@dataclass(frozen=True, slots=True)
class TimerStats:
    """A snapshot of one timer's statistics. Times are milliseconds unless noted.

    ``missed`` counts ticks that never ran: grid points passed during a stall (coalesced
    or skipped) and ticks dropped because ``max_instances`` runs were still in flight.
    ``lateness_*`` is how long after its deadline a callback started (p50/p99 over the
    last 255-510 runs, within 12.5 %; under load estimated from every 8th run of the timer,
    see the module doc); ``lateness_samples`` is how many runs they describe.
    ``last_run`` is wall-clock epoch seconds.
    """

    name: str
    kind: str  # "interval" or "timeout"
    safe: bool  # True: the callback runs on the event loop
    interval_ms: float  # interval (or delay, for a timeout)
    is_running: bool
    runs: int
    errors: int
    missed: int
    in_flight: int
    last_run: float | None
    runtime_mean_ms: float | None
    runtime_max_ms: float | None
    lateness_p50_ms: float | None
    lateness_p99_ms: float | None
    lateness_samples: int

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return asdict(self)


# -- run accounting ---------------------------------------------------------------------

ACC_RUNS, ACC_ERRORS, ACC_LAST, ACC_RT_SUM, ACC_RT_MAX = range(5)
"""Indexes into a timer's ``_acc`` array: runs, errors, start of the last run (on the
engine's clock), sum and maximum of the run times (seconds)."""
_ACC_ZERO = array("d", bytes(8 * 5))


class Recorded(Protocol):
    """What the statistics read and write on a timer (``_timers.Timer`` implements it)."""

    _REPEAT: ClassVar[bool]
    _SAFE: ClassVar[bool]
    _name: str
    _interval: float
    _missed: int
    _inflight: int
    _acc: array[float] | None  # ACC_* counters, allocated at the first run
    _hist: array[int] | None  # the lateness windows, allocated at the first sampled run


def record_runs(runs: Sequence[Any], stride: int = 1) -> None:
    """Account for finished runs, given flat: ``timer, deadline, start, end, error, ...``.

    Each run leaves the timer's in-flight count and adds to its counters (exact); with
    ``stride`` > 1 (``stride_for``: a busy batch) only every ``stride``-th run of each timer
    adds a lateness sample, of weight ``stride``. The hottest code of a busy timer process
    (once per tick), hence literal indexes into ``_acc`` (the ``ACC_*`` values), the runs
    unpacked five at a time from one iterator (no index arithmetic, no copy), and no call
    per run but a sampled ``lateness_add``.
    """
    add = lateness_add
    it = iter(runs)
    for t, deadline, start, end, error in zip(it, it, it, it, it, strict=True):
        t._inflight -= 1
        acc = t._acc
        if acc is None:
            acc = t._acc = array("d", _ACC_ZERO)
        n = acc[0] + 1.0  # ACC_RUNS, with this one
        acc[0] = n
        if error:
            acc[1] += 1.0  # ACC_ERRORS
        acc[2] = start  # ACC_LAST
        runtime = end - start
        acc[3] += runtime  # ACC_RT_SUM
        if runtime > acc[4]:  # ACC_RT_MAX
            acc[4] = runtime
        if stride == 1 or n % stride == 0.0:  # the timer's stride-th, 2*stride-th, ... run
            t._hist = add(t._hist, start - deadline, stride)


def snapshot(t: Recorded, *, is_running: bool, now: float, wall_now: float) -> TimerStats:
    """``t``'s statistics as a ``TimerStats``; ``now`` and ``wall_now`` are the engine's clock
    and the wall clock read together (to turn the last start into epoch seconds)."""
    p50, p99 = lateness_quantiles(t._hist, (0.5, 0.99))
    acc = t._acc if t._acc is not None else _ACC_ZERO
    runs = int(acc[ACC_RUNS])
    return TimerStats(
        name=t._name,
        kind="interval" if t._REPEAT else "timeout",
        safe=t._SAFE,
        interval_ms=t._interval * 1000.0,
        is_running=is_running,
        runs=runs,
        errors=int(acc[ACC_ERRORS]),
        missed=t._missed,
        in_flight=t._inflight,
        last_run=wall_now - (now - acc[ACC_LAST]) if runs else None,
        runtime_mean_ms=acc[ACC_RT_SUM] / runs * 1000.0 if runs else None,
        runtime_max_ms=acc[ACC_RT_MAX] * 1000.0 if runs else None,
        lateness_p50_ms=None if p50 is None else p50 * 1000.0,
        lateness_p99_ms=None if p99 is None else p99 * 1000.0,
        lateness_samples=lateness_samples(t._hist),
    )
