"""The cap on log lines caused by other people's traffic (``libs.bridge._log_limit``)."""

from __future__ import annotations

import pytest

from libs.bridge._log_limit import LogLimit, suppressed_note


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_per_window_then_the_next_line_counts_what_was_dropped() -> None:
    clock = Clock()
    limit = LogLimit(burst=3, window=60.0, clock=clock)
    assert [limit.allow("forbidden") for _ in range(5)] == [0, 0, 0, None, None]
    clock.now += 59.9
    assert limit.allow("forbidden") is None
    clock.now += 0.1  # a new window: allowed, and it reports the three left out
    assert limit.allow("forbidden") == 3
    assert limit.allow("forbidden") == 0


def test_kinds_are_counted_apart() -> None:
    limit = LogLimit(burst=1, window=60.0, clock=Clock())
    assert limit.allow("bad-request") == 0
    assert limit.allow("bad-request") is None
    assert limit.allow("forbidden") == 0


def test_note_and_arguments() -> None:
    assert suppressed_note(0) == ""
    assert "7 similar" in suppressed_note(7)
    with pytest.raises(ValueError):
        LogLimit(burst=0)
    with pytest.raises(ValueError):
        LogLimit(window=0)


async def test_a_flood_of_refused_calls_logs_at_most_the_burst(caplog: pytest.LogCaptureFixture) -> None:
    from libs.bridge.access import AccessPolicy
    from libs.bridge.dispatch import Dispatcher
    from libs.bridge.protocol import encode_request

    dispatcher = Dispatcher(AccessPolicy("worker@example.org", public=False))
    text = encode_request("ping", {})
    with caplog.at_level("INFO", logger="libs.bridge.dispatch"):
        for n in range(500):
            answer = await dispatcher.handle(f"id{n}", "stranger@example.org/x", text)
            assert answer.code == "forbidden"  # every caller still gets its answer
        for n in range(500):
            await dispatcher.handle(f"bad{n}", "stranger@example.org/x", "not json")
    assert len([r for r in caplog.records if "refused" in r.message]) == 20
    assert len([r for r in caplog.records if "bad request" in r.message]) == 20
    assert dispatcher.stats.forbidden == 500  # the counters still count everything
