"""The dashboard's sans-IO model: percentiles from histogram deltas, rates from successive
samples, restarts, who is listed and with which status, and incremental views."""

from __future__ import annotations

from typing import Any

import pytest

from libs.dashboard import Dashboard, quantile
from tests.support.metrics_docs import ONE, counts, doc


def test_quantile_interpolates_within_the_bucket_the_rank_falls_in() -> None:
    bounds = [1.0, 2.0, 4.0]
    assert quantile(bounds, [0, 0, 0, 0], 0.5) is None
    assert quantile(bounds, [0, 10, 0, 0], 0.5) == pytest.approx(1.5)  # half-way through (1, 2]
    assert quantile(bounds, [0, 10, 0, 0], 0.99) == pytest.approx(1.99)
    assert quantile(bounds, [10, 0, 0, 0], 0.5) == pytest.approx(0.5)  # the first bucket starts at 0
    assert quantile(bounds, [50, 0, 49, 1], 0.5) == pytest.approx(1.0)
    assert quantile(bounds, [0, 0, 0, 5], 0.99) == 4.0  # +Inf: the highest finite bound
    assert quantile(bounds, [90, 0, 10, 0], 0.99) == pytest.approx(3.8)


def test_two_samples_make_a_point_of_rates_and_percentiles_of_that_interval_only() -> None:
    model = Dashboard()
    model.add(ONE)
    # before: 100 fast calls (bucket 0: up to 0.5 ms); then 10 more, 2 of them failed, in (1, 2.5] ms
    assert model.sample(ONE, doc(time=10.0, calls={"echo": {"ok": 100}}, hist={"echo": counts(b0=100)}), now=1.0)
    assert model.workers[ONE].series == {}  # one sample: no interval yet
    model.sample(ONE, doc(time=12.0, calls={"echo": {"ok": 108, "bad-request": 2}},
                          hist={"echo": counts(b0=100, b2=10)}), now=3.0)
    [point] = model.workers[ONE].series["echo"]
    assert point.t == 12.0
    assert point.calls == pytest.approx(5.0)  # 10 calls in 2 s of the worker's clock
    assert point.errors == pytest.approx(1.0)
    assert point.p50 == pytest.approx(1.75)  # ms: half-way through (1, 2.5] ms
    assert point.p99 == pytest.approx(1 + 1.5 * 9.9 / 10)
    view = model.view(now=3.0)
    [worker] = view["workers"]
    [echo] = worker["commands"]
    assert echo["calls"] == 110 and echo["errors"] == 2 and len(echo["points"]) == 1
    assert worker["requests"]["in_flight"] == 0  # the poll's own call is not counted
    assert worker["uptime_s"] == pytest.approx(12.0 - 5.0)  # the worker's clock, at its answer
    assert model.view(now=4.5)["workers"][0]["uptime_s"] == pytest.approx(7.0 + 1.5)  # and since then


def test_an_interval_without_calls_has_rates_of_zero_and_no_latency() -> None:
    model = Dashboard()
    model.add(ONE)
    same = {"calls": {"echo": {"ok": 3}}, "hist": {"echo": counts(b1=3)}}
    model.sample(ONE, doc(time=10.0, **same), now=1.0)
    model.sample(ONE, doc(time=11.0, **same), now=2.0)
    [point] = model.workers[ONE].series["echo"]
    assert (point.calls, point.errors, point.p50, point.p99) == (0.0, 0.0, None, None)


@pytest.mark.parametrize("second", [
    doc(time=12.0, started_at=2000.0, calls={"echo": {"ok": 1}}, hist={"echo": counts(b0=1)}),  # restarted
    doc(time=12.0, calls={"echo": {"ok": 1}}, hist={"echo": counts(b0=1)}),  # counters went down
    doc(time=9.0, calls={"echo": {"ok": 20}}, hist={"echo": counts(b0=20)}),  # the clock went back
])
def test_no_point_across_a_restart_or_a_clock_that_went_back(second: dict[str, Any]) -> None:
    model = Dashboard()
    model.add(ONE)
    model.sample(ONE, doc(time=10.0, calls={"echo": {"ok": 10}}, hist={"echo": counts(b0=10)}), now=1.0)
    model.sample(ONE, second, now=2.0)
    assert not model.workers[ONE].series.get("echo")
    model.sample(ONE, doc(time=second["time"] + 1, started_at=second["started_at"],
                          calls={"echo": {"ok": 30}}, hist={"echo": counts(b0=30)}), now=3.0)
    assert len(model.workers[ONE].series["echo"]) == 1  # the new baseline counts from there


def test_status_follows_answers_presence_and_the_server() -> None:
    model = Dashboard(stale_after=5.0)
    model.presence(ONE, True, now=0.0)
    worker = model.workers[ONE]
    assert model.status(worker, 0.0) == "waiting"
    model.sample(ONE, doc(time=1.0), now=10.0)
    assert model.status(worker, 15.0) == "online"
    assert model.status(worker, 15.1) == "stale"  # present, but no answer for stale_after
    model.failed(ONE, "timeout", "no answer", now=16.0)
    assert model.status(worker, 16.0) == "stale" and worker.error == "timeout: no answer"
    model.sample(ONE, doc(time=2.0), now=17.0)
    assert model.status(worker, 17.0) == "online" and worker.error is None
    model.presence(ONE, False, now=17.0)
    assert model.status(worker, 17.0) == "offline"
    assert ONE not in model.to_poll()  # not asked while it is away
    model.presence(ONE, True, now=17.5)
    assert ONE in model.to_poll()
    model.failed(ONE, "unavailable", "the server says it is offline", now=18.0)
    assert model.status(worker, 18.0) == "offline"


def test_only_workers_are_listed_not_the_accounts_other_clients() -> None:
    model = Dashboard(own_jid="worker@localhost/dashboard_1")
    model.presence("worker@localhost/dashboard_1", True, now=0.0)  # ourselves
    model.presence("worker@localhost/cli_x", True, now=0.0)  # a caller of the same account: never answers
    model.presence("worker@localhost/gone", False, now=0.0)  # left before we knew it
    model.occupant("worker@localhost/svc", "resize", 2, True, now=0.0)
    model.add("other@localhost/python")
    model.failed("worker@localhost/cli_x", "timeout", "", now=1.0)
    listed = [w["jid"] for w in model.view(now=1.0)["workers"]]
    assert listed == ["other@localhost/python", "worker@localhost/svc"]
    assert sorted(model.to_poll()) == ["other@localhost/python", "worker@localhost/cli_x", "worker@localhost/svc"]
    model.sample("worker@localhost/cli_x", doc(time=1.0), now=2.0)  # it answered: it is a worker after all
    assert "worker@localhost/cli_x" in [w["jid"] for w in model.view(now=2.0)["workers"]]
    [svc] = [w for w in model.view(now=2.0)["workers"] if w["jid"] == "worker@localhost/svc"]
    assert (svc["service"], svc["load"], svc["sources"]) == ("resize", 2, ["service"])


def test_an_answer_that_is_not_a_metrics_document_is_an_error_not_data() -> None:
    model = Dashboard()
    model.add(ONE)
    assert not model.sample(ONE, {"code": -1000, "msg": "no api handler"}, now=1.0)
    worker = model.workers[ONE]
    assert worker.sample is None and worker.error is not None and worker.error.startswith("bad-result")


def test_views_carry_only_the_points_a_page_has_not_seen() -> None:
    model = Dashboard(history=3)
    model.add(ONE)
    for i in range(6):
        model.sample(ONE, doc(time=10.0 + i, calls={"echo": {"ok": i}}, hist={"echo": counts(b0=i)}), now=float(i))
    full = model.view(now=6.0)
    [echo] = full["workers"][0]["commands"]
    assert [p[0] for p in echo["points"]] == [3, 4, 5]  # history=3: the newest three
    assert full["seq"] == 5
    model.sample(ONE, doc(time=16.0, calls={"echo": {"ok": 9}}, hist={"echo": counts(b0=9)}), now=7.0)
    update = model.view(now=7.0, since=full["seq"])
    [echo] = update["workers"][0]["commands"]
    assert [p[0] for p in echo["points"]] == [6] and echo["points"][0][2] == 4.0  # 4 calls in 1 s
    assert echo["last"][0] == 6


def test_callers_that_leave_are_dropped_and_workers_that_left_are_forgotten_later() -> None:
    model = Dashboard(forget_after=60.0)
    model.presence("worker@localhost/cli_x", True, now=0.0)  # a `qe-worker call` of the account
    model.presence("worker@localhost/cli_x", False, now=1.0)
    assert "worker@localhost/cli_x" not in model.workers
    model.presence(ONE, True, now=0.0)
    model.sample(ONE, doc(time=1.0), now=1.0)
    model.occupant("worker@localhost/svc", "resize", 0, True, now=0.0)
    model.add("other@localhost/python")
    model.failed("other@localhost/python", "unavailable", "", now=2.0)
    model.presence(ONE, False, now=10.0)
    model.occupant("worker@localhost/svc", None, None, False, now=20.0)
    assert model.prune(now=70.1) == [ONE]  # left over 60 s ago; the room's worker 50 s ago
    assert model.prune(now=80.1) == ["worker@localhost/svc"]
    assert list(model.workers) == ["other@localhost/python"]  # named with --jid: always listed
    assert model.status(model.workers["other@localhost/python"], 80.1) == "offline"
