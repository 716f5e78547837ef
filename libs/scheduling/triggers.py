"""Triggers: when a scheduled job fires. Sans-IO: pure values and functions.

Nothing here reads a clock, sleeps, starts a thread or touches asyncio. Every question is
answered relative to an instant the caller passes in (``after``, ``now``), so the whole module
is deterministic and may be used from any thread. The runner that owns the clock asks
``trigger.next_fire(after)`` for the next planned fire time, adds jitter with
``trigger.apply_jitter(...)`` and, after a delay or downtime, asks :func:`due_runs` what to do
about fire times that passed while nobody ran them.

Instants in and out are timezone-aware ``datetime`` objects; results are always in UTC.
Naive datetimes are refused everywhere (they are ambiguous) with ``ValueError``.

Three triggers:

* :class:`IntervalTrigger` -- every N seconds on a fixed grid ``start + k*interval``
  (elapsed time; DST does not affect it).
* :class:`DateTrigger` -- a fixed list of instants (one-shot or multi-shot).
* :class:`CronTrigger` -- a 5-field cron expression read on the wall clock of a time zone,
  with explicit DST rules (see its docstring and docs/scheduling.md).

Each has ``to_spec()`` (a JSON-able dict) and :func:`trigger_from_spec` reverses it and also
accepts the shorter forms users type.
"""

from __future__ import annotations

import bisect
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from libs._enums import MisfirePolicy

from ._time import aware_utc, iso

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

#: Iteration budget of the generic (cron) misfire count before it jumps ahead.
DEFAULT_MAX_STEPS = 10_000


# --------------------------------------------------------------------------- durations

_UNIT_US: dict[str, int] = {}
for _names, _us in (
    (("us", "µs", "usec", "microsecond", "microseconds"), 1),
    (("ms", "msec", "millisecond", "milliseconds"), 1_000),
    (("s", "sec", "secs", "second", "seconds"), 1_000_000),
    (("m", "min", "mins", "minute", "minutes"), 60_000_000),
    (("h", "hr", "hrs", "hour", "hours"), 3_600_000_000),
    (("d", "day", "days"), 86_400_000_000),
    (("w", "week", "weeks"), 604_800_000_000),
):
    for _name in _names:
        _UNIT_US[_name] = _us

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_PLAIN = re.compile(rf"\s*{_NUMBER}\s*")
_PART = re.compile(rf"\s*{_NUMBER}\s*([a-zµ]+)\s*")
_HINT = "use e.g. '500ms', '5s', '2m', '1h30m'"


def _duration(value: object, what: str = "interval", *, allow_zero: bool = False) -> timedelta:
    """parse_duration with the kind of value ("interval", "jitter") named in errors."""
    bad = ValueError(f"bad {what} {value!r}: {_HINT}")
    if isinstance(value, timedelta):
        total_us = value // _US
    elif isinstance(value, bool):
        raise bad
    elif isinstance(value, int):
        total_us = value * 1_000_000
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise bad
        total_us = _round_us(Decimal(value) * 1_000_000)
    elif isinstance(value, str):
        total_us = _parse_duration_text(value, bad)
    else:
        raise bad
    if total_us < 0 or (total_us == 0 and not allow_zero):
        bound = "must not be negative" if allow_zero else "must be greater than zero"
        raise ValueError(f"bad {what} {value!r}: {bound}")
    try:
        return timedelta(microseconds=total_us)
    except OverflowError:
        raise ValueError(f"bad {what} {value!r}: too large") from None


def _round_us(us: Decimal) -> int:
    return int(us.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _parse_duration_text(text: str, bad: ValueError) -> int:
    plain = _PLAIN.fullmatch(text)
    if plain:
        return _round_us(Decimal(plain.group(1)) * 1_000_000)
    pos, total, seen = 0, Decimal(0), set()
    while pos < len(text):
        m = _PART.match(text, pos)
        if not m or m.end() == pos:
            raise bad
        number, unit = m.group(1), m.group(2)
        factor = _UNIT_US.get(unit)
        if factor is None or factor in seen:  # unknown unit, or a unit given twice
            raise bad
        seen.add(factor)
        total += Decimal(number) * factor  # the regex only lets digits and one dot through
        pos = m.end()
    if not seen:  # empty or blank
        raise bad
    return _round_us(total)


def parse_duration(value: object) -> timedelta:
    """A positive duration from a ``timedelta``, seconds (int/float) or text.

    Text is a plain number of seconds (``"90"``, ``"1.5"``) or number+unit parts, optionally
    separated by spaces: ``"500ms"``, ``"5s"``, ``"2m"``, ``"1h30m"``, ``"1h 30m"``,
    ``"1.5s"``, ``"1d"``, ``"1.2 minutes"``. Units: us, ms, s, m, h, d, w (and their long
    names); each unit at most once. Exact to the microsecond (decimal arithmetic, no float
    drift). Zero, negative, empty and unparsable values raise ``ValueError`` naming the input.
    """
    return _duration(value, "interval")


def format_duration(value: timedelta) -> str:
    """The canonical text form of a positive duration; ``parse_duration`` reverses it exactly.

    ``timedelta(seconds=90)`` -> ``"1m30s"``, ``timedelta(seconds=1.5)`` -> ``"1s500ms"``.
    """
    total = value // _US
    if total <= 0:
        raise ValueError(f"bad duration {value!r}: must be greater than zero")
    parts = []
    for unit, size in (
        ("d", 86_400_000_000),
        ("h", 3_600_000_000),
        ("m", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
        ("us", 1),
    ):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


# --------------------------------------------------------------------------- instants

_TIME_HINT = "use an ISO 8601 time with an offset, e.g. '2024-05-01T12:00:00Z', or a UNIX timestamp"


def _to_utc(value: object, what: str = "time") -> datetime:
    """An aware UTC datetime from an aware datetime, a UNIX timestamp or ISO 8601 text."""
    if isinstance(value, datetime):
        return aware_utc(value, what)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"bad {what} {value!r}: not a finite timestamp")
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"bad {what} {value!r}: timestamp out of range") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"bad {what} {value!r}: {_TIME_HINT}") from None
        if parsed.tzinfo is None:
            raise ValueError(f"bad {what} {value!r}: no UTC offset, so it is ambiguous; {_TIME_HINT}")
        return parsed.astimezone(UTC)
    raise ValueError(f"bad {what} {value!r}: {_TIME_HINT}")


def _to_us(value: datetime) -> int:
    return (value - _EPOCH) // _US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


# --------------------------------------------------------------------------- the ABC


class Trigger(ABC):
    """When a job fires: an immutable value that answers "what is the next fire time?".

    Pure: no clock reads, no IO, safe to share between threads. Subclasses implement
    :meth:`next_fire`, :meth:`describe` and :meth:`_spec`; the rest has defaults.
    """

    __slots__ = ("_jitter",)

    def __init__(self, jitter: object = None) -> None:
        # None or any zero ("0s", 0) means no jitter.
        self._jitter = timedelta(0) if jitter is None else _duration(jitter, "jitter", allow_zero=True)

    # -- the contract

    @abstractmethod
    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after`` (aware), in UTC; None when there are no more."""

    @abstractmethod
    def describe(self) -> str:
        """One line for people, e.g. ``"every 5s"``."""

    def to_spec(self) -> dict[str, Any]:
        """A JSON-able dict; :func:`trigger_from_spec` turns it back into an equal trigger.

        It carries ``"v": SPEC_VERSION``: specs are stored (job files, persisted tasks), and
        a later format must be able to tell an old spec from a new one."""
        return {**self._spec(), "v": SPEC_VERSION}

    @abstractmethod
    def _spec(self) -> dict[str, Any]:
        """The spec without its version key."""

    def anchored(self, now: datetime) -> Trigger:
        """The trigger to store when a schedule is created at ``now``.

        Only an :class:`IntervalTrigger` without ``start`` changes (it is anchored at ``now``);
        every other trigger returns itself. Owners call this once, generically.
        """
        aware_utc(now, "now")
        return self

    # -- jitter

    @property
    def jitter_s(self) -> float:
        """Maximum random delay added to each run, in seconds (0.0 = none)."""
        return self._jitter.total_seconds()

    def apply_jitter(self, fire_time: datetime, rand: Callable[[], float]) -> datetime:
        """``fire_time + rand() * jitter``: when to actually start the run planned for ``fire_time``.

        ``rand`` returns a number in [0, 1] (e.g. ``random.random``); it is not called when
        the trigger has no jitter. ``next_fire`` stays deterministic: it never sees jitter, so
        jitter never accumulates and never shifts the grid.
        """
        fire = aware_utc(fire_time, "fire_time")
        if not self._jitter:
            return fire
        r = rand()
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"rand() returned {r!r}; it must return a number in [0, 1]")
        return fire + timedelta(microseconds=round(r * (self._jitter // _US)))

    # -- iteration and counting (used by due_runs; subclasses override for speed)

    def _iter_after(self, after: datetime) -> Iterator[datetime]:
        current: datetime | None = after
        while current is not None:
            current = self.next_fire(current)
            if current is not None:
                yield current

    def _fires_between(self, lo: datetime, hi: datetime, max_steps: int) -> tuple[int, datetime | None]:
        """(count, last) of the fire times f with lo < f <= hi, in bounded work.

        Walks at most ``max_steps`` fire times. If more remain, it finds the last one by
        bisection over time (about 40 ``next_fire`` calls) and estimates the count from the
        mean spacing of the ones it walked since ``lo`` (exact for evenly spaced schedules).
        """
        count, last = 0, cast(datetime | None, None)
        for fire in self._iter_after(lo):
            if fire > hi:
                return count, last
            count += 1
            last = fire
            if count >= max_steps:
                break
        else:
            return count, last
        assert last is not None
        following = self.next_fire(last)
        if following is None or following > hi:
            return count, last
        lo_us, hi_us = _to_us(last), _to_us(hi)  # next_fire(lo) <= hi < next_fire(hi)
        while hi_us - lo_us > 1:
            mid = (lo_us + hi_us) // 2
            probe = self.next_fire(_from_us(mid))
            if probe is not None and probe <= hi:
                lo_us = mid
            else:
                hi_us = mid
        final = self.next_fire(_from_us(lo_us))
        assert final is not None and final <= hi
        spacing = (last - lo) / count  # lo is normally a fire time too: whole periods
        return count + max(1, round((final - last) / spacing)), final

    # -- value semantics

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_spec() == other.to_spec()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self.to_spec().items()))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_spec()!r})"


# --------------------------------------------------------------------------- interval


class IntervalTrigger(Trigger):
    """Fires at ``start + k*interval`` for k = 0, 1, 2, ... (``start`` is the first fire).

    The grid is fixed: ``next_fire`` computes from the anchor with integer microseconds,
    never from ``after + interval``, so late or jittered runs never drift the schedule.
    Elapsed time, not wall clock: "every 1d" is every 86,400 s, also across DST (use a
    :class:`CronTrigger` for "daily at 02:30 local").

    Without ``start`` the trigger is unanchored; its owner calls :meth:`anchored` with the
    current time once (first fire = now + interval) and stores the result.
    """

    __slots__ = ("_interval", "_interval_us", "_start")

    def __init__(self, interval: object, *, start: object = None, jitter: object = None) -> None:
        super().__init__(jitter)
        self._interval = parse_duration(interval)
        self._interval_us = self._interval // _US
        self._start = None if start is None else _to_utc(start, "start")
        if self._jitter > self._interval:
            raise ValueError(
                f"bad jitter {format_duration(self._jitter)!r}: larger than the interval "
                f"{format_duration(self._interval)!r}, so runs could swap order"
            )

    @property
    def interval(self) -> timedelta:
        return self._interval

    @property
    def start(self) -> datetime | None:
        return self._start

    def anchored(self, now: datetime) -> IntervalTrigger:
        """Self if it has a start; else a copy whose first fire is ``now + interval``."""
        now = aware_utc(now, "now")
        if self._start is not None:
            return self
        return IntervalTrigger(self._interval, start=now + self._interval, jitter=self._jitter or None)

    def _anchor(self) -> datetime:
        if self._start is None:
            raise RuntimeError(f"{self.describe()} is not anchored: call .anchored(now) and use the result")
        return self._start

    def _fires_up_to(self, t: datetime) -> int:
        """How many fire times are <= t."""
        delta_us = (t - self._anchor()) // _US
        return 0 if delta_us < 0 else delta_us // self._interval_us + 1

    def _nth(self, k: int) -> datetime | None:
        try:
            return self._anchor() + timedelta(microseconds=k * self._interval_us)
        except OverflowError:
            return None

    def next_fire(self, after: datetime) -> datetime | None:
        return self._nth(self._fires_up_to(aware_utc(after, "after")))

    def _fires_between(self, lo: datetime, hi: datetime, max_steps: int) -> tuple[int, datetime | None]:
        below, upto = self._fires_up_to(lo), self._fires_up_to(hi)
        if upto <= below:
            return 0, None
        return upto - below, self._nth(upto - 1)

    def describe(self) -> str:
        text = f"every {format_duration(self._interval)}"
        if self._start is not None:
            text += f" from {iso(self._start)}"
        if self._jitter:
            text += f", jitter up to {format_duration(self._jitter)}"
        return text

    def _spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"every": format_duration(self._interval)}
        if self._start is not None:
            spec["start"] = iso(self._start)
        if self._jitter:
            spec["jitter"] = format_duration(self._jitter)
        return spec


# --------------------------------------------------------------------------- date


class DateTrigger(Trigger):
    """Fires once at each of a fixed set of instants (daffi's ``PERIOD(at_time=[...])``).

    ``times`` is one value or an iterable of: aware datetimes, UNIX timestamps (UTC seconds,
    int/float) or ISO 8601 strings with an offset. Naive datetimes and offset-less strings are
    refused (ambiguous). Times are sorted and deduplicated; when the last one has passed,
    ``next_fire`` returns None.
    """

    __slots__ = ("_times",)

    def __init__(self, times: object) -> None:
        super().__init__(None)
        if isinstance(times, (str, bytes, datetime, int, float)) or not isinstance(times, Iterable):
            items: list[object] = [times]
        else:
            items = list(cast(Iterable[object], times))
        if not items:
            raise ValueError("DateTrigger needs at least one time")
        self._times: tuple[datetime, ...] = tuple(sorted({_to_utc(item) for item in items}))

    @property
    def times(self) -> tuple[datetime, ...]:
        return self._times

    def next_fire(self, after: datetime) -> datetime | None:
        i = bisect.bisect_right(self._times, aware_utc(after, "after"))
        return self._times[i] if i < len(self._times) else None

    def _fires_between(self, lo: datetime, hi: datetime, max_steps: int) -> tuple[int, datetime | None]:
        i, j = bisect.bisect_right(self._times, lo), bisect.bisect_right(self._times, hi)
        return (j - i, self._times[j - 1]) if j > i else (0, None)

    def describe(self) -> str:
        if len(self._times) == 1:
            return f"once at {iso(self._times[0])}"
        return f"at {len(self._times)} times from {iso(self._times[0])} to {iso(self._times[-1])}"

    def _spec(self) -> dict[str, Any]:
        return {"at": [iso(t) for t in self._times]}


# --------------------------------------------------------------------------- cron

_CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _wall_to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a naive wall-clock time in ``zone`` stands for, by the DST rules.

    * exists once: that instant;
    * exists twice (fall back): the first occurrence (``fold=0``);
    * does not exist (spring forward gap): the first instant after the gap, i.e. the
      transition itself (its wall-clock reading is the end of the gap, e.g. 03:00).
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # In a gap, fold=0 applies the offset from before the transition and fold=1 the one
    # from after; the transition lies between the two readings. Bisect to the second.
    other = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    lo_s = math.floor(min(first, other).timestamp())  # reads before the gap (< wall)
    hi_s = math.ceil(max(first, other).timestamp())  # reads after the gap (> wall)
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) > wall:
            hi_s = mid
        else:
            lo_s = mid
    return datetime.fromtimestamp(hi_s, UTC)


class CronTrigger(Trigger):
    """Standard 5-field cron (minute hour day-of-month month day-of-week) on a zone's wall clock.

    Field syntax is cronsim's (Debian cron): lists, ranges, steps, names (``MON``, ``JAN``),
    ``L``, ``nW``, ``DOW#n``; day-of-month and day-of-week are OR-ed unless one starts with
    ``*``. The aliases ``@hourly``, ``@daily``/``@midnight``, ``@weekly``, ``@monthly``,
    ``@yearly``/``@annually`` are accepted.

    DST rule (one rule for every expression): each matching wall-clock time fires exactly once.

    * A wall-clock time that does not exist (spring forward, e.g. 02:30 Europe/Berlin on the
      last Sunday of March) fires once at the first valid instant after the gap (03:00 local).
      Several matches inside the gap (``*/15``) collapse into that one run.
    * A wall-clock time that occurs twice (fall back, 02:30 on the last Sunday of October)
      fires once, at its first occurrence. The repeated hour is not fired again, also for
      ``0 * * * *`` or ``*/15 * * * *`` (they pause for the repeated hour).

    cronsim only matches fields on naive wall-clock times; mapping them to instants is
    :func:`_wall_to_utc`.
    """

    __slots__ = ("_expr", "_fields", "_tz", "_zone")

    def __init__(self, expr: str, tz: str = "UTC", *, jitter: object = None) -> None:
        super().__init__(jitter)
        if not isinstance(expr, str):
            raise ValueError(f"bad cron expression {expr!r}: expected text like '*/5 * * * *'")
        self._expr = " ".join(expr.split())
        fields = _CRON_ALIASES.get(self._expr.lower(), self._expr)
        count = len(fields.split())
        if count != 5:
            raise ValueError(
                f"bad cron expression {expr!r}: expected 5 fields (minute hour day month weekday), got {count}"
            )
        try:
            CronSim(fields, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"bad cron expression {expr!r}: {exc}") from None
        self._fields = fields
        if not isinstance(tz, str):
            raise ValueError(f"unknown time zone {tz!r}: give an IANA name such as 'Europe/Berlin'")
        try:
            self._zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {tz!r}: give an IANA name such as 'Europe/Berlin'") from None
        self._tz = tz

    @property
    def expr(self) -> str:
        return self._expr

    @property
    def tz(self) -> str:
        return self._tz

    def _iter_after(self, after: datetime) -> Iterator[datetime]:
        after = aware_utc(after, "after")
        zone = self._zone
        wall = after.astimezone(zone).replace(tzinfo=None)
        last = after
        matches = CronSim(self._fields, wall)
        while True:
            try:
                candidate = next(matches)  # StopIteration: nothing in 50 years
                fire = _wall_to_utc(candidate, zone)
            except (StopIteration, OverflowError):
                return
            # Skips the instants at or before `after` (a start inside the repeated hour reads
            # an earlier wall time) and the duplicates a DST gap collapses into one instant.
            if fire > last:
                last = fire
                yield fire

    def next_fire(self, after: datetime) -> datetime | None:
        return next(self._iter_after(after), None)

    def describe(self) -> str:
        text = f"cron '{self._expr}' ({self._tz})"
        if self._jitter:
            text += f", jitter up to {format_duration(self._jitter)}"
        return text

    def _spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"cron": self._expr, "tz": self._tz}
        if self._jitter:
            spec["jitter"] = format_duration(self._jitter)
        return spec


# --------------------------------------------------------------------------- specs

SPEC_VERSION: Final = 1
"""Version of the trigger spec format; a spec without ``"v"`` is version 1 (what users write)."""

_SPEC_KEYS = {
    "every": frozenset({"every", "start", "jitter", "v"}),
    "at": frozenset({"at", "v"}),
    "cron": frozenset({"cron", "tz", "jitter", "v"}),
}


def trigger_from_spec(spec: dict[str, Any]) -> Trigger:
    """The trigger a spec describes; reverses ``Trigger.to_spec`` and parses user input.

    Forms (exactly one of ``every``, ``at``, ``cron``)::

        {"every": "5s", "start"?: "2024-05-01T12:00:00Z", "jitter"?: "1s"}
        {"at": ["2024-05-01T12:00:00Z", 1714566000, ...]}   # or a single value
        {"cron": "*/5 * * * *", "tz"?: "Europe/Berlin", "jitter"?: "30s"}

    Anything else raises ``ValueError`` saying what is wrong.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"bad trigger spec {spec!r}: expected a dict with 'every', 'at' or 'cron'")
    kinds = [kind for kind in _SPEC_KEYS if kind in spec]
    if len(kinds) != 1:
        found = " and ".join(repr(k) for k in kinds) or "none of them"
        raise ValueError(
            f"bad trigger spec {spec!r}: needs exactly one of 'every', 'at', 'cron' (found {found})"
        )
    kind = kinds[0]
    version = spec.get("v", 1)
    if isinstance(version, bool) or version != SPEC_VERSION:  # only version 1 so far: nothing to convert
        newer = isinstance(version, int) and not isinstance(version, bool) and version > SPEC_VERSION
        raise ValueError(f"bad trigger spec {spec!r}: version {version!r} "
                         + ("is from a newer qe-worker" if newer else f"is not {SPEC_VERSION}"))
    unknown = sorted(str(key) for key in spec if key not in _SPEC_KEYS[kind])
    if unknown:
        allowed = ", ".join(sorted(_SPEC_KEYS[kind]))
        raise ValueError(
            f"bad trigger spec {spec!r}: unknown key(s) {', '.join(unknown)} (allowed with {kind!r}: {allowed})"
        )
    if kind == "every":
        return IntervalTrigger(spec["every"], start=spec.get("start"), jitter=spec.get("jitter"))
    if kind == "at":
        return DateTrigger(spec["at"])
    return CronTrigger(spec["cron"], spec.get("tz", "UTC"), jitter=spec.get("jitter"))


# --------------------------------------------------------------------------- misfires


def due_runs(
    trigger: Trigger,
    last_planned: datetime,
    now: datetime,
    policy: MisfirePolicy | str,
    *,
    grace_s: float = 1.0,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> tuple[datetime | None, int, datetime | None]:
    """What to run at ``now`` for a job whose planned fire time ``last_planned`` has come.

    ``last_planned`` is the fire time the runner planned and has not run yet (its stored
    next-fire time). The due fire times are ``last_planned`` and every fire time after it up
    to and including ``now``. Returns ``(run_now_for, missed_count, next_fire_after_now)``:

    * ``run_now_for`` -- the fire time to run once now (the latest due one), or None;
    * ``missed_count`` -- due fire times that get no run of their own;
    * ``next_fire_after_now`` -- ``trigger.next_fire(now)``: the next fire time to plan.

    Policies:

    * ``"coalesce"`` -- one catch-up run stands for all due fire times, however late.
    * ``"skip"`` -- no catch-up: the latest due fire time runs only if it is at most
      ``grace_s`` seconds old (so a runner that wakes a little late still runs on-time
      fires); everything older is only counted.

    If ``last_planned > now`` nothing is due: ``(None, 0, last_planned)``.

    Bounded work whatever the gap: interval and date triggers count arithmetically; other
    triggers walk at most ``max_steps`` fire times, then bisect to the latest one and
    estimate the count from the mean spacing (exact for evenly spaced cron schedules).
    """
    policy = MisfirePolicy.parse(policy)
    if not (math.isfinite(grace_s) and grace_s >= 0):
        raise ValueError(f"bad grace_s {grace_s!r}: must be a number >= 0")
    if max_steps < 2:
        raise ValueError(f"bad max_steps {max_steps!r}: must be >= 2")
    last_planned = aware_utc(last_planned, "last_planned")
    now = aware_utc(now, "now")
    if last_planned > now:
        return None, 0, last_planned
    extra, latest = trigger._fires_between(last_planned, now, max_steps)
    due = 1 + extra
    latest = latest or last_planned
    following = trigger.next_fire(now)
    if policy is MisfirePolicy.COALESCE or (now - latest).total_seconds() <= grace_s:
        return latest, due - 1, following
    return None, due, following
