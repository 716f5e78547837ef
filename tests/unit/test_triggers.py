"""Unit tests for ``libs.scheduling`` triggers: pure, no clock, no sleeps."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.scheduling import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    Trigger,
    due_runs,
    format_duration,
    parse_duration,
    trigger_from_spec,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def utc(text: str) -> datetime:
    """'2024-03-31 01:00' -> aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(trigger: Trigger, after: datetime, n: int) -> list[datetime]:
    out: list[datetime] = []
    for _ in range(n):
        nxt = trigger.next_fire(after)
        assert nxt is not None
        assert nxt > after
        out.append(nxt)
        after = nxt
    return out


def fires_until(trigger: Trigger, after: datetime, end: datetime) -> list[datetime]:
    out: list[datetime] = []
    while (nxt := trigger.next_fire(after)) is not None and nxt <= end:
        out.append(nxt)
        after = nxt
    return out


# --------------------------------------------------------------------------- parse_duration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("5s", timedelta(seconds=5)),
        ("2m", timedelta(minutes=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("1d", timedelta(days=1)),
        ("1.5s", timedelta(seconds=1.5)),
        ("90", timedelta(seconds=90)),
        ("0.25", timedelta(milliseconds=250)),
        (" 5s ", timedelta(seconds=5)),
        ("1m24s", timedelta(seconds=84)),
        ("1.2 minutes", timedelta(seconds=72)),
        ("2 hours", timedelta(hours=2)),
        ("1w", timedelta(weeks=1)),
        ("250us", timedelta(microseconds=250)),
        ("1s500ms", timedelta(seconds=1.5)),
        ("30m1h", timedelta(hours=1, minutes=30)),
        (5, timedelta(seconds=5)),
        (0.5, timedelta(milliseconds=500)),
        (0.1, timedelta(milliseconds=100)),
        (timedelta(minutes=3), timedelta(minutes=3)),
    ],
)
def test_parse_duration_accepts(value: object, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "5x",
        "s",
        "ms",
        "0",
        "0s",
        "0.0000001s",
        "-5s",
        "5s5s",
        "1h-30m",
        "5 s x",
        "1,5s",
        "five",
        "1e3",
        "5S",
        "inf",
        0,
        0.0,
        -1,
        -0.5,
        float("nan"),
        float("inf"),
        True,
        None,
        [5],
        timedelta(0),
        timedelta(seconds=-1),
        "99999999999d",
    ],
)
def test_parse_duration_rejects_with_the_input_named(value: object) -> None:
    with pytest.raises(ValueError) as err:
        parse_duration(value)
    assert repr(value) in str(err.value)


def test_parse_duration_error_text_shows_examples() -> None:
    with pytest.raises(ValueError, match=r"^bad interval '5x': use e\.g\. '500ms', '5s', '2m', '1h30m'$"):
        parse_duration("5x")


@given(st.integers(min_value=1, max_value=10**15))
def test_format_duration_round_trips(us: int) -> None:
    td = timedelta(microseconds=us)
    assert parse_duration(format_duration(td)) == td


def test_format_duration_is_compact() -> None:
    assert format_duration(timedelta(seconds=90)) == "1m30s"
    assert format_duration(timedelta(seconds=1.5)) == "1s500ms"
    assert format_duration(timedelta(days=8, microseconds=3)) == "8d3us"
    with pytest.raises(ValueError):
        format_duration(timedelta(0))


# --------------------------------------------------------------------------- IntervalTrigger


@pytest.mark.parametrize("interval", ["100ms", "1s500ms", 0.1, "7s", "1h"])
def test_interval_is_anchored_and_does_not_drift_over_10000_steps(interval: object) -> None:
    trigger = IntervalTrigger(interval, start=T0)
    step = parse_duration(interval)
    got = fires(trigger, T0 - timedelta(microseconds=1), 10_000)
    assert got[0] == T0
    assert got[-1] == T0 + 9_999 * step
    assert all(f == T0 + k * step for k, f in enumerate(got))


def test_interval_computes_from_the_anchor_not_from_after() -> None:
    trigger = IntervalTrigger("10s", start=T0)
    rng = random.Random(7)
    fire = T0
    for k in range(1, 2_000):
        late = fire + timedelta(microseconds=rng.randrange(0, 10_000_000))  # ran up to 10 s late
        fire = trigger.next_fire(late)  # type: ignore[assignment]
        assert fire == T0 + timedelta(seconds=10 * k)


def test_interval_next_fire_is_strictly_after() -> None:
    trigger = IntervalTrigger("5s", start=T0)
    assert trigger.next_fire(T0 - timedelta(days=3)) == T0
    assert trigger.next_fire(T0) == T0 + timedelta(seconds=5)
    assert trigger.next_fire(T0 + timedelta(seconds=4.999999)) == T0 + timedelta(seconds=5)
    assert trigger.next_fire(T0 + timedelta(seconds=5)) == T0 + timedelta(seconds=10)


def test_interval_accepts_aware_start_in_any_zone_and_returns_utc() -> None:
    start = datetime(2024, 5, 1, 14, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    nxt = IntervalTrigger("1m", start=start).next_fire(T0)
    assert nxt == T0 + timedelta(minutes=1)
    assert nxt is not None and nxt.tzinfo is UTC


def test_interval_unanchored_until_the_owner_anchors_it() -> None:
    trigger = IntervalTrigger("5s")
    assert trigger.start is None
    with pytest.raises(RuntimeError, match="anchored"):
        trigger.next_fire(T0)
    anchored = trigger.anchored(T0)
    assert anchored.start == T0 + timedelta(seconds=5)
    assert anchored.next_fire(T0) == T0 + timedelta(seconds=5)
    assert anchored.anchored(T0 + timedelta(hours=1)) is anchored  # an anchor is kept
    assert trigger.start is None  # anchored() returned a copy


def test_interval_interval_over_dst_is_elapsed_time() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2024, 3, 30, 2, 30, tzinfo=berlin)
    nxt = IntervalTrigger("1d", start=start).next_fire(start)
    assert nxt == start.astimezone(UTC) + timedelta(hours=24)
    assert nxt is not None and nxt.astimezone(berlin).hour == 3  # 24 h later, the wall clock moved


def test_interval_rejects_naive_and_bad_inputs() -> None:
    with pytest.raises(ValueError, match="naive"):
        IntervalTrigger("5s", start=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        IntervalTrigger("5s", start=T0).next_fire(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="bad interval '5x'"):
        IntervalTrigger("5x")
    with pytest.raises(ValueError, match="bad jitter '1q'"):
        IntervalTrigger("5s", jitter="1q")
    with pytest.raises(ValueError, match="larger than the interval"):
        IntervalTrigger("5s", jitter="6s")


# --------------------------------------------------------------------------- DateTrigger


def test_date_trigger_sorts_and_deduplicates_mixed_inputs() -> None:
    a = T0
    b = T0 + timedelta(minutes=10)
    c = T0 + timedelta(hours=2)
    trigger = DateTrigger(
        [
            c,
            b.timestamp(),  # float UTC timestamp
            "2024-05-01T14:00:00+02:00",  # == a (ISO with offset)
            "2024-05-01T12:00:00Z",  # == a again
            a.astimezone(ZoneInfo("America/New_York")),  # == a in another zone
            int(c.timestamp()),  # == c as int
        ]
    )
    assert trigger.times == (a, b, c)
    assert all(t.tzinfo is UTC for t in trigger.times)


def test_date_trigger_fires_in_order_then_is_exhausted() -> None:
    times = [T0 + timedelta(seconds=s) for s in (30, 10, 20)]
    trigger = DateTrigger(times)
    assert fires_until(trigger, T0 - timedelta(days=1), T0 + timedelta(days=1)) == sorted(times)
    assert trigger.next_fire(T0 + timedelta(seconds=20)) == T0 + timedelta(seconds=30)  # strictly after
    assert trigger.next_fire(T0 + timedelta(seconds=30)) is None
    assert trigger.next_fire(T0 + timedelta(days=365)) is None


def test_date_trigger_single_value_forms() -> None:
    assert DateTrigger(T0).times == (T0,)
    assert DateTrigger(T0.timestamp()).times == (T0,)
    assert DateTrigger("2024-05-01T12:00:00Z").times == (T0,)
    assert DateTrigger(1_714_564_800.25).times == (T0 + timedelta(milliseconds=250),)


@pytest.mark.parametrize(
    ("times", "message"),
    [
        ([datetime(2024, 5, 1, 12)], "naive"),
        (datetime(2024, 5, 1, 12), "naive"),
        (["2024-05-01T12:00:00"], "no UTC offset"),
        (["tomorrow"], "bad time 'tomorrow'"),
        (["1714564800"], "bad time '1714564800'"),
        ([True], "bad time True"),
        ([float("nan")], "not a finite timestamp"),
        ([1e20], "out of range"),
        ([], "at least one time"),
        ([None], "bad time None"),
    ],
)
def test_date_trigger_rejects(times: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DateTrigger(times)


# --------------------------------------------------------------------------- CronTrigger basics


def test_cron_every_five_minutes_in_utc() -> None:
    trigger = CronTrigger("*/5 * * * *")
    assert fires(trigger, utc("2024-05-01 12:03:10"), 4) == [
        utc("2024-05-01 12:05"),
        utc("2024-05-01 12:10"),
        utc("2024-05-01 12:15"),
        utc("2024-05-01 12:20"),
    ]
    assert trigger.next_fire(utc("2024-05-01 12:05")) == utc("2024-05-01 12:10")  # strictly after
    assert trigger.next_fire(utc("2024-05-01 12:04:59.999999")) == utc("2024-05-01 12:05")
    assert fires(trigger, utc("2024-12-31 23:57"), 2) == [
        utc("2024-12-31 23:59:59") + timedelta(seconds=1),
        utc("2025-01-01 00:05"),
    ]


def test_cron_every_five_minutes_in_a_zone_over_a_day() -> None:
    trigger = CronTrigger("*/5 * * * *", "Asia/Kolkata")  # +05:30: still on the 5-minute grid
    got = fires_until(trigger, utc("2024-05-01 00:00"), utc("2024-05-02 00:00"))
    assert len(got) == 288
    assert {f.minute % 5 for f in got} == {0}


def test_cron_wall_clock_follows_the_zone() -> None:
    trigger = CronTrigger("0 9 * * MON-FRI", "America/New_York")
    # Friday 2024-05-03 09:00 EDT -> next is Monday 2024-05-06 09:00 EDT = 13:00Z
    assert trigger.next_fire(utc("2024-05-03 13:00")) == utc("2024-05-06 13:00")


def test_cron_aliases() -> None:
    assert CronTrigger("@daily").next_fire(T0) == utc("2024-05-02 00:00")
    assert CronTrigger("@hourly", "Europe/Berlin").next_fire(T0) == utc("2024-05-01 13:00")


def test_cron_leap_day_over_fifty_years_and_never_past_the_calendar() -> None:
    leap = CronTrigger("0 0 29 2 *")
    # every leap year from 2028 for fifty years and more; 2100 is not one (divisible by 100,
    # not by 400), so 2096 is followed by 2104; 2000 was one (divisible by 400)
    expected = [utc(f"{year}-02-29 00:00") for year in range(2028, 2200, 4) if year not in (2100,)]
    assert fires(leap, T0, len(expected)) == expected
    assert leap.next_fire(utc("1999-03-01 00:00")) == utc("2000-02-29 00:00")
    # past the last 29 February the calendar has (9996), there is none: None, not an error
    assert leap.next_fire(utc("9996-03-01 00:00")) is None
    assert CronTrigger("@yearly").next_fire(utc("9999-01-01 00:00")) is None


@pytest.mark.parametrize(
    "expr",
    [
        "61 * * * *",
        "* * * *",
        "0 0 * * * *",
        "",
        "a b c d e",
        "@reboot",
        "0 0 30 2 *",
        "*/0 * * * *",
        5,
        None,
    ],
)
def test_cron_rejects_bad_expressions_naming_them(expr: Any) -> None:
    with pytest.raises(ValueError, match="bad cron expression") as err:
        CronTrigger(expr)
    assert repr(expr) in str(err.value)


@pytest.mark.parametrize("tz", ["Mars/Olympus", "Europe", "", "../etc/passwd", "utc", 5, None])
def test_cron_rejects_unknown_time_zones_naming_them(tz: Any) -> None:
    with pytest.raises(ValueError, match="unknown time zone") as err:
        CronTrigger("* * * * *", tz)
    assert repr(tz) in str(err.value)


# --------------------------------------------------------------------------- CronTrigger across DST
#
# Europe/Berlin 2024: spring forward Sun 03-31 01:00Z (02:00 CET -> 03:00 CEST);
#                     fall back     Sun 10-27 01:00Z (03:00 CEST -> 02:00 CET).
# America/New_York 2024: spring forward Sun 03-10 07:00Z (02:00 EST -> 03:00 EDT);
#                        fall back     Sun 11-03 06:00Z (02:00 EDT -> 01:00 EST).

DST_CASES = [
    # daily 02:30: the missing 02:30 runs at 03:00 local, the double 02:30 runs once (first)
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2024-03-29 12:00",
        ["2024-03-30 01:30", "2024-03-31 01:00", "2024-04-01 00:30", "2024-04-02 00:30"],
    ),
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2024-10-25 12:00",
        ["2024-10-26 00:30", "2024-10-27 00:30", "2024-10-28 01:30", "2024-10-29 01:30"],
    ),
    (
        "America/New_York",
        "30 2 * * *",
        "2024-03-08 12:00",
        ["2024-03-09 07:30", "2024-03-10 07:00", "2024-03-11 06:30", "2024-03-12 06:30"],
    ),
    # New York repeats 01:00-01:59, so 02:30 happens once there; 01:30 is the double one
    (
        "America/New_York",
        "30 2 * * *",
        "2024-11-01 12:00",
        ["2024-11-02 06:30", "2024-11-03 07:30", "2024-11-04 07:30"],
    ),
    (
        "America/New_York",
        "30 1 * * *",
        "2024-11-01 12:00",
        ["2024-11-02 05:30", "2024-11-03 05:30", "2024-11-04 06:30"],
    ),
    (
        "America/New_York",
        "30 1 * * *",
        "2024-03-08 12:00",
        ["2024-03-09 06:30", "2024-03-10 06:30", "2024-03-11 05:30"],
    ),
    # hourly: 02:00 does not exist -> 03:00 (one run); 02:00 twice -> first only
    (
        "Europe/Berlin",
        "0 * * * *",
        "2024-03-30 22:30",
        ["2024-03-30 23:00", "2024-03-31 00:00", "2024-03-31 01:00", "2024-03-31 02:00"],
    ),
    (
        "Europe/Berlin",
        "0 * * * *",
        "2024-10-26 21:30",
        ["2024-10-26 22:00", "2024-10-26 23:00", "2024-10-27 00:00", "2024-10-27 02:00", "2024-10-27 03:00"],
    ),
    (
        "America/New_York",
        "0 * * * *",
        "2024-03-10 04:30",
        ["2024-03-10 05:00", "2024-03-10 06:00", "2024-03-10 07:00", "2024-03-10 08:00"],
    ),
    (
        "America/New_York",
        "0 * * * *",
        "2024-11-03 03:30",
        ["2024-11-03 04:00", "2024-11-03 05:00", "2024-11-03 07:00", "2024-11-03 08:00"],
    ),
    # every 15 minutes
    (
        "Europe/Berlin",
        "*/15 * * * *",
        "2024-03-31 00:20",
        ["2024-03-31 00:30", "2024-03-31 00:45", "2024-03-31 01:00", "2024-03-31 01:15"],
    ),
    (
        "Europe/Berlin",
        "*/15 * * * *",
        "2024-10-27 00:20",
        ["2024-10-27 00:30", "2024-10-27 00:45", "2024-10-27 02:00", "2024-10-27 02:15"],
    ),
    (
        "America/New_York",
        "*/15 * * * *",
        "2024-03-10 06:20",
        ["2024-03-10 06:30", "2024-03-10 06:45", "2024-03-10 07:00", "2024-03-10 07:15"],
    ),
    (
        "America/New_York",
        "*/15 * * * *",
        "2024-11-03 05:20",
        ["2024-11-03 05:30", "2024-11-03 05:45", "2024-11-03 07:00", "2024-11-03 07:15"],
    ),
]


@pytest.mark.parametrize(("tz", "expr", "after", "expected"), DST_CASES)
def test_cron_exact_utc_instants_across_dst(tz: str, expr: str, after: str, expected: list[str]) -> None:
    trigger = CronTrigger(expr, tz)
    assert fires(trigger, utc(after), len(expected)) == [utc(e) for e in expected]


@pytest.mark.parametrize(
    ("tz", "expr", "day", "count"),
    [
        ("Europe/Berlin", "0 * * * *", "2024-03-31", 23),  # 02:00 -> 03:00, merged with 03:00
        ("Europe/Berlin", "0 * * * *", "2024-10-27", 24),  # repeated 02:00 fires once
        ("Europe/Berlin", "*/15 * * * *", "2024-03-31", 92),  # 02:00..02:45 and 03:00 -> one run
        ("Europe/Berlin", "*/15 * * * *", "2024-10-27", 96),
        ("America/New_York", "0 * * * *", "2024-03-10", 23),
        ("America/New_York", "0 * * * *", "2024-11-03", 24),
        ("America/New_York", "*/15 * * * *", "2024-03-10", 92),
        ("America/New_York", "*/15 * * * *", "2024-11-03", 96),
        ("Europe/Berlin", "30 2 * * *", "2024-03-31", 1),
        ("Europe/Berlin", "30 2 * * *", "2024-10-27", 1),
    ],
)
def test_cron_runs_per_local_day_on_transition_days(tz: str, expr: str, day: str, count: int) -> None:
    zone = ZoneInfo(tz)
    d = date.fromisoformat(day)
    start = datetime.combine(d, datetime.min.time(), zone)
    end = datetime.combine(d + timedelta(days=1), datetime.min.time(), zone)
    got = fires_until(
        CronTrigger(expr, tz), start - timedelta(microseconds=1), end - timedelta(microseconds=1)
    )
    assert len(got) == len(set(got)) == count
    assert {f.astimezone(zone).date() for f in got} == {d}


@pytest.mark.parametrize(
    ("tz", "expr"),
    [
        ("Europe/Berlin", "30 2 * * *"),
        ("America/New_York", "30 2 * * *"),
        ("America/New_York", "30 1 * * *"),
        ("Australia/Sydney", "30 2 * * *"),
        ("Australia/Lord_Howe", "0 2 * * *"),  # 02:00 -> 02:30 gap
        ("Australia/Lord_Howe", "45 1 * * *"),  # 01:30-01:59 repeated
    ],
)
def test_cron_daily_runs_exactly_once_every_local_day_of_a_year(tz: str, expr: str) -> None:
    zone = ZoneInfo(tz)
    start = datetime(2024, 1, 1, tzinfo=zone)
    end = datetime(2025, 1, 1, tzinfo=zone)
    got = fires_until(CronTrigger(expr, tz), start, end)
    days = Counter(f.astimezone(zone).date() for f in got)
    assert len(got) == 366
    assert set(days.values()) == {1}  # no duplicate, no missing day
    assert len(days) == 366
    assert got == sorted(got)


def test_cron_after_inside_the_repeated_hour_does_not_rerun() -> None:
    # 2024-10-27 01:10Z is 02:10 CET, the second pass of 02:00-02:59 in Berlin:
    # 02:30 already ran at 00:30Z (first pass), so the next run is tomorrow.
    assert CronTrigger("30 2 * * *", "Europe/Berlin").next_fire(utc("2024-10-27 01:10")) == utc(
        "2024-10-28 01:30"
    )
    assert CronTrigger("*/15 * * * *", "Europe/Berlin").next_fire(utc("2024-10-27 01:10")) == utc(
        "2024-10-27 02:00"
    )
    # the spring-forward run at 03:00 CEST does not repeat when asked from exactly that instant
    assert CronTrigger("30 2 * * *", "Europe/Berlin").next_fire(utc("2024-03-31 01:00")) == utc(
        "2024-04-01 00:30"
    )


def _field_matches(field: str, value: int) -> bool:
    if field == "*":
        return True
    if field.startswith("*/"):
        return value % int(field[2:]) == 0
    return value in {int(v) for v in field.split(",")}


def _oracle(expr: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The DST rule by brute force: every matching wall minute -> one instant, deduplicated.

    Supports minute/hour fields only (the rest must be '*'); independent of cronsim.
    """
    minute_f, hour_f, *rest = expr.split()
    assert rest == ["*", "*", "*"]
    out: set[datetime] = set()
    wall = start.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0) - timedelta(hours=1)
    last_wall = end.astimezone(zone).replace(tzinfo=None) + timedelta(hours=1)
    while wall <= last_wall:
        if _field_matches(minute_f, wall.minute) and _field_matches(hour_f, wall.hour):
            first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
            if first.astimezone(zone).replace(tzinfo=None) != wall:  # in a gap: scan minutes
                first = wall.replace(tzinfo=zone, fold=1).astimezone(UTC) - timedelta(hours=1)
                while first.astimezone(zone).replace(tzinfo=None) <= wall:
                    first += timedelta(minutes=1)
            out.add(first)
        wall += timedelta(minutes=1)
    return sorted(f for f in out if start < f <= end)


@pytest.mark.parametrize(
    ("tz", "around"),
    [
        ("Europe/Berlin", "2024-03-31 01:00"),
        ("Europe/Berlin", "2024-10-27 01:00"),
        ("America/New_York", "2024-03-10 07:00"),
        ("America/New_York", "2024-11-03 06:00"),
        ("Australia/Lord_Howe", "2024-04-06 15:00"),  # 30-minute fall back (02:00 -> 01:30)
        ("Australia/Lord_Howe", "2024-10-05 15:30"),  # 30-minute spring forward (02:00 -> 02:30)
    ],
)
@pytest.mark.parametrize(
    "expr", ["30 2 * * *", "0 * * * *", "*/15 * * * *", "*/7 * * * *", "45 1,2 * * *", "10 */2 * * *"]
)
def test_cron_matches_the_brute_force_dst_rule(tz: str, around: str, expr: str) -> None:
    zone = ZoneInfo(tz)
    start = utc(around) - timedelta(hours=7)
    end = utc(around) + timedelta(hours=7)
    got = fires_until(CronTrigger(expr, tz), start, end)
    assert got == _oracle(expr, zone, start, end)


# the longest a schedule may wait for its next fire time, by expression: a DST repetition
# pauses a frequent one for the repeated hour (*/15: 02:45 CEST -> 03:00 CET is 75 minutes)
_LONGEST_WAIT = {"*/15 * * * *": timedelta(minutes=75), "*/7 * * * *": timedelta(minutes=64),
                 "0 * * * *": timedelta(hours=2), "10 */2 * * *": timedelta(hours=3),
                 "30 2 * * *": timedelta(hours=25)}


# the DST changes of 2024 in each zone (UTC): instants near them are where rules break
_CHANGES = {"Europe/Berlin": ("2024-03-31 01:00", "2024-10-27 01:00"),
            "America/New_York": ("2024-03-10 07:00", "2024-11-03 06:00"),
            "Australia/Lord_Howe": ("2024-04-06 15:00", "2024-10-05 15:30")}
_US_PER_DAY = 86_400 * 10**6


@given(
    st.sampled_from(sorted(_LONGEST_WAIT)),
    st.sampled_from(sorted(_CHANGES)),
    st.one_of(
        st.tuples(st.none(), st.integers(min_value=0, max_value=366 * _US_PER_DAY - 1)),  # any instant of 2024
        st.tuples(st.integers(0, 1), st.integers(min_value=-26 * _US_PER_DAY // 24, max_value=3 * _US_PER_DAY // 24)),
    ),
)
def test_cron_next_fire_is_the_first_matching_instant(expr: str, tz: str, when: tuple[int | None, int]) -> None:
    """From any instant of 2024 (a leap year), half of them in the hours before and after a
    DST change: the next fire time is the first one the brute-force rule gives (nothing
    earlier, nothing skipped), and it comes within the expression's longest wait."""
    change, offset_us = when
    base = utc("2024-01-01 00:00") if change is None else utc(_CHANGES[tz][change])
    after = base + timedelta(microseconds=offset_us)
    nxt = CronTrigger(expr, tz).next_fire(after)
    expected = _oracle(expr, ZoneInfo(tz), after, after + _LONGEST_WAIT[expr])
    assert expected, "the oracle found no fire time within the longest wait"
    assert nxt == expected[0]


# --------------------------------------------------------------------------- specs


def _round_trip(trigger: Trigger) -> Trigger:
    return trigger_from_spec(json.loads(json.dumps(trigger.to_spec())))


@pytest.mark.parametrize(
    "trigger",
    [
        IntervalTrigger("5s", start=T0),
        IntervalTrigger("1h30m", start=T0, jitter="10s"),
        IntervalTrigger(0.25),
        DateTrigger([T0, T0 + timedelta(seconds=1.5)]),
        CronTrigger("*/5 * * * *"),
        CronTrigger("30 2 * * *", "Europe/Berlin", jitter="1m"),
        CronTrigger("@weekly", "America/New_York"),
    ],
)
def test_spec_round_trips(trigger: Trigger) -> None:
    again = _round_trip(trigger)
    assert again == trigger
    assert hash(again) == hash(trigger)
    assert again.jitter_s == trigger.jitter_s
    assert again.describe() == trigger.describe()
    if isinstance(trigger, IntervalTrigger) and trigger.start is None:
        trigger = trigger.anchored(T0)
        again = again.anchored(T0)
    assert fires(again, T0, 5 if not isinstance(trigger, DateTrigger) else 1) == fires(
        trigger, T0, 5 if not isinstance(trigger, DateTrigger) else 1
    )


@given(
    interval_us=st.integers(min_value=1, max_value=10 * 86_400 * 10**6),
    start=st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    jitter_frac=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
    after_s=st.floats(min_value=-1e9, max_value=1e9),
)
def test_interval_spec_round_trip_property(
    interval_us: int, start: datetime, jitter_frac: float | None, after_s: float
) -> None:
    interval = timedelta(microseconds=interval_us)
    jitter = None if jitter_frac is None else timedelta(microseconds=int(interval_us * jitter_frac))
    trigger = IntervalTrigger(interval, start=start, jitter=jitter)
    again = _round_trip(trigger)
    assert again == trigger
    assert isinstance(again, IntervalTrigger)
    assert again.interval == interval and again.start == start
    after = start + timedelta(seconds=after_s)
    first = trigger.next_fire(after)
    assert again.next_fire(after) == first
    assert first is not None and first > after
    assert (first - start) % interval == timedelta(0)


def test_spec_user_input_forms() -> None:
    assert trigger_from_spec({"every": 5, "start": T0.timestamp()}) == IntervalTrigger("5s", start=T0)
    assert trigger_from_spec({"every": "5s", "start": "2024-05-01T14:00:00+02:00"}).next_fire(
        T0
    ) == T0 + timedelta(seconds=5)
    assert trigger_from_spec({"every": "1m", "jitter": "0s"}).jitter_s == 0.0
    assert trigger_from_spec({"at": 1_714_564_800}) == DateTrigger(T0)
    assert trigger_from_spec({"at": ["2024-05-01T12:00:00Z", 1_714_564_800]}) == DateTrigger([T0])
    cron = trigger_from_spec({"cron": "*/5 * * * *"})
    assert cron == CronTrigger("*/5 * * * *", "UTC")
    assert cron.to_spec() == {"cron": "*/5 * * * *", "tz": "UTC", "v": 1}
    assert trigger_from_spec({"cron": "0  3 * * *", "tz": "Europe/Berlin", "jitter": 30}).jitter_s == 30.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "exactly one of"),
        ({"every": "5s", "cron": "* * * * *"}, "exactly one of"),
        ([("every", "5s")], "expected a dict"),
        ("every 5s", "expected a dict"),
        ({"every": "5s", "tz": "UTC"}, "unknown key"),
        ({"at": [T0.isoformat()], "jitter": "1s"}, "unknown key"),
        ({"cron": "* * * * *", "start": "x"}, "unknown key"),
        ({"every": "5x"}, "bad interval '5x'"),
        ({"every": "5s", "start": "yesterday"}, "bad start 'yesterday'"),
        ({"every": "5s", "jitter": "-1s"}, "bad jitter '-1s'"),
        ({"at": []}, "at least one time"),
        ({"at": ["2024-05-01T12:00:00"]}, "no UTC offset"),
        ({"cron": "* * *"}, "bad cron expression"),
        ({"cron": "* * * * *", "tz": "Nowhere/City"}, "unknown time zone 'Nowhere/City'"),
    ],
)
def test_spec_rejects_bad_specs(spec: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        trigger_from_spec(spec)


def test_describe() -> None:
    assert IntervalTrigger("90s").describe() == "every 1m30s"
    assert (
        IntervalTrigger("5s", start=T0, jitter="1s").describe()
        == "every 5s from 2024-05-01T12:00:00Z, jitter up to 1s"
    )
    assert DateTrigger(T0).describe() == "once at 2024-05-01T12:00:00Z"
    assert DateTrigger([T0, T0 + timedelta(hours=1)]).describe() == (
        "at 2 times from 2024-05-01T12:00:00Z to 2024-05-01T13:00:00Z"
    )
    assert CronTrigger("30 2 * * *", "Europe/Berlin").describe() == "cron '30 2 * * *' (Europe/Berlin)"


# --------------------------------------------------------------------------- jitter


def test_jitter_defaults_to_none_and_does_not_draw() -> None:
    def never() -> float:
        raise AssertionError("rand must not be called without jitter")

    for trigger in (IntervalTrigger("5s", start=T0), DateTrigger(T0), CronTrigger("* * * * *")):
        assert trigger.jitter_s == 0.0
        assert trigger.apply_jitter(T0, never) == T0


@given(r=st.floats(min_value=0.0, max_value=1.0), jitter_ms=st.integers(min_value=1, max_value=600_000))
def test_jitter_stays_within_bounds(r: float, jitter_ms: int) -> None:
    trigger = CronTrigger("* * * * *", jitter=timedelta(milliseconds=jitter_ms))
    assert trigger.jitter_s == jitter_ms / 1000
    got = trigger.apply_jitter(T0, lambda: r)
    assert T0 <= got <= T0 + timedelta(milliseconds=jitter_ms)


def _const(value: float) -> Callable[[], float]:
    return lambda: value


def test_jitter_extremes_and_determinism_of_next_fire() -> None:
    trigger = IntervalTrigger("10s", start=T0, jitter="2s")
    assert trigger.jitter_s == 2.0
    assert trigger.apply_jitter(T0, lambda: 0.0) == T0
    assert trigger.apply_jitter(T0, lambda: 1.0) == T0 + timedelta(seconds=2)
    assert trigger.apply_jitter(T0, lambda: 0.5) == T0 + timedelta(seconds=1)
    rng = random.Random(1)
    jittered = [trigger.apply_jitter(f, rng.random) for f in fires(trigger, T0, 100)]
    assert fires(trigger, T0, 100) == [T0 + timedelta(seconds=10 * k) for k in range(1, 101)]
    assert all(0 <= (j - f).total_seconds() <= 2 for j, f in zip(jittered, fires(trigger, T0, 100)))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="rand"):
            trigger.apply_jitter(T0, _const(bad))
    with pytest.raises(ValueError, match="naive"):
        trigger.apply_jitter(datetime(2024, 1, 1), lambda: 0.5)


# --------------------------------------------------------------------------- misfires


def test_due_runs_on_time_runs_the_planned_fire() -> None:
    trigger = IntervalTrigger("10s", start=T0)
    late = T0 + timedelta(milliseconds=3)
    for policy in ("coalesce", "skip"):
        assert due_runs(trigger, T0, late, policy) == (T0, 0, T0 + timedelta(seconds=10))


def test_due_runs_small_gap() -> None:
    trigger = IntervalTrigger("10s", start=T0)
    now = T0 + timedelta(seconds=35)  # due: 0, 10, 20, 30
    assert due_runs(trigger, T0, now, "coalesce") == (
        T0 + timedelta(seconds=30),
        3,
        T0 + timedelta(seconds=40),
    )
    assert due_runs(trigger, T0, now, "skip") == (None, 4, T0 + timedelta(seconds=40))
    # the latest fire is within the grace period: skip still runs it
    assert due_runs(trigger, T0, now, "skip", grace_s=5.0) == (
        T0 + timedelta(seconds=30),
        3,
        T0 + timedelta(seconds=40),
    )
    # a fire exactly at now is due, not next
    assert due_runs(trigger, T0, T0 + timedelta(seconds=40), "skip")[0] == T0 + timedelta(seconds=40)


def test_due_runs_nothing_due_yet() -> None:
    trigger = IntervalTrigger("10s", start=T0)
    assert due_runs(trigger, T0, T0 - timedelta(seconds=1), "coalesce") == (None, 0, T0)


@pytest.mark.timeout(5)
def test_due_runs_interval_three_weeks_down_is_arithmetic() -> None:
    trigger = IntervalTrigger("1s", start=T0)
    now = T0 + timedelta(weeks=3, milliseconds=500)
    n = 3 * 7 * 86_400  # fire times T0+1s .. T0+n s after T0, plus T0 itself
    last = T0 + timedelta(seconds=n)
    assert due_runs(trigger, T0, now, "coalesce") == (last, n, last + timedelta(seconds=1))
    assert due_runs(trigger, T0, now, "skip", grace_s=0.1) == (None, n + 1, last + timedelta(seconds=1))
    huge = IntervalTrigger("1ms", start=T0)
    ten_years = T0 + timedelta(days=3650)
    run, missed, nxt = due_runs(huge, T0, ten_years, "coalesce")
    assert (run, missed, nxt) == (ten_years, 3650 * 86_400_000, ten_years + timedelta(milliseconds=1))


@pytest.mark.timeout(5)
def test_due_runs_cron_three_weeks_down_is_bounded_and_exact_for_even_spacing() -> None:
    trigger = CronTrigger("* * * * *", "Europe/Berlin")
    first = utc("2024-05-01 12:01")
    now = first + timedelta(weeks=3, seconds=30)
    n = 3 * 7 * 1440  # fires after `first` up to now
    latest = first + timedelta(minutes=n)
    assert due_runs(trigger, first, now, "coalesce") == (latest, n, latest + timedelta(minutes=1))
    assert due_runs(trigger, first, now, "skip") == (None, n + 1, latest + timedelta(minutes=1))
    # small budget: still the exact latest/next, count from the mean spacing
    assert due_runs(trigger, first, now, "coalesce", max_steps=50) == (
        latest,
        n,
        latest + timedelta(minutes=1),
    )


class _CountingEverySecond(Trigger):
    """A trigger with only next_fire: due_runs must use the generic bounded path."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def next_fire(self, after: datetime) -> datetime | None:
        self.calls += 1
        whole = after.replace(microsecond=0)
        return whole + timedelta(seconds=1)

    def describe(self) -> str:
        return "every second"

    def _spec(self) -> dict[str, Any]:
        return {"every": "1s"}


@pytest.mark.timeout(5)
def test_due_runs_generic_trigger_work_is_capped() -> None:
    trigger = _CountingEverySecond()
    now = T0 + timedelta(weeks=3)
    n = 3 * 7 * 86_400
    run, missed, nxt = due_runs(trigger, T0, now, "coalesce")
    assert (run, missed, nxt) == (now, n, now + timedelta(seconds=1))
    assert trigger.calls <= 10_000 + 100  # not 1.8 million


def test_due_runs_irregular_cron_beyond_the_budget_estimates_the_count() -> None:
    trigger = CronTrigger("0,1 * * * *")  # 1 min, then 59 min
    first = utc("2024-05-01 12:00")
    now = utc("2024-05-11 12:30")
    exact = len(fires_until(trigger, first, now))
    run, missed, nxt = due_runs(trigger, first, now, "coalesce", max_steps=100)
    assert run == utc("2024-05-11 12:01") and nxt == utc("2024-05-11 13:00")
    assert abs(missed - exact) <= 1
    assert due_runs(trigger, first, now, "coalesce")[1] == exact  # within the default budget


def test_due_runs_date_trigger() -> None:
    times = [T0 + timedelta(minutes=m) for m in (0, 10, 20, 30)]
    trigger = DateTrigger(times)
    assert due_runs(trigger, times[0], T0 + timedelta(minutes=25), "coalesce") == (times[2], 2, times[3])
    assert due_runs(trigger, times[0], T0 + timedelta(minutes=25), "skip") == (None, 3, times[3])
    assert due_runs(trigger, times[0], T0 + timedelta(days=1), "coalesce") == (times[3], 3, None)


def test_due_runs_dst_gap_counts_each_instant_once() -> None:
    trigger = CronTrigger("*/15 * * * *", "Europe/Berlin")
    first = utc("2024-03-31 00:30")  # 01:30 CET
    now = utc("2024-03-31 01:20")  # 03:20 CEST: due 00:30, 00:45, 01:00 (= 02:00..03:00 local), 01:15
    assert due_runs(trigger, first, now, "coalesce") == (utc("2024-03-31 01:15"), 3, utc("2024-03-31 01:30"))


def test_due_runs_rejects_bad_arguments() -> None:
    trigger = IntervalTrigger("10s", start=T0)
    with pytest.raises(ValueError, match="unknown misfire policy 'all'"):
        due_runs(trigger, T0, T0, "all")
    with pytest.raises(ValueError, match="naive"):
        due_runs(trigger, datetime(2024, 5, 1), T0, "skip")
    with pytest.raises(ValueError, match="naive"):
        due_runs(trigger, T0, datetime(2024, 5, 1), "skip")
    with pytest.raises(ValueError, match="grace_s"):
        due_runs(trigger, T0, T0, "skip", grace_s=-1)
    with pytest.raises(ValueError, match="max_steps"):
        due_runs(trigger, T0, T0, "skip", max_steps=1)


def test_public_surface() -> None:
    from libs import scheduling

    assert set(scheduling.__all__) >= {
        "CronTrigger",
        "DateTrigger",
        "IntervalTrigger",
        "Trigger",
        "due_runs",
        "parse_duration",
        "trigger_from_spec",
    }
    for name in scheduling.__all__:
        assert getattr(scheduling, name) is not None
