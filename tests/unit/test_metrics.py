"""Prometheus metrics of a worker on a ``MemoryNetwork``: the families carry the right values
after some calls; each App has its own registry; strangers read no internals (``info``,
``metrics``); label values stay bounded whatever names callers send; timer counts stay exact
when the timers sample lateness."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from libs.bridge import App, MemoryNetwork, ProtocolError, RemoteError
from libs.observability.metrics import MAX_COMMANDS, OTHER
from libs.timers import SetIntervalSafe
from libs.timers._stats import BUSY_BATCH
from libs.timers.virtual import VirtualClock

Factory = Callable[..., App]


@pytest.fixture
async def make_app(net: MemoryNetwork) -> AsyncIterator[Factory]:
    apps: list[App] = []

    def factory(jid: str = "worker@localhost/python", *, allow: tuple[str, ...] = ("friend@localhost",),
                **kwargs: Any) -> App:
        app = App(transport=net.transport(jid, allow=allow), **kwargs)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.close(1)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of a text exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


async def test_calls_outcomes_latency_and_counters_after_some_calls(make_app: Factory, connect: Any) -> None:
    app = make_app()

    @app.command("add")
    async def add(x: int, y: int) -> dict[str, Any]:
        return {"sum": x + y}

    @app.command("nope")
    async def nope() -> None:
        raise ProtocolError("not-found", "nothing here")

    await app.wait_online(1)
    friend = await connect("friend@localhost")
    for i in range(3):
        assert await friend.call(app.jid, "add", {"x": i, "y": 1}, timeout=2) == {"sum": i + 1}
    with pytest.raises(RemoteError):
        await friend.call(app.jid, "add", {"x": "wide"}, timeout=2)
    with pytest.raises(RemoteError):
        await friend.call(app.jid, "nope", timeout=2)
    await friend.call(app.jid, "ping", timeout=2)
    stranger = await connect("stranger@elsewhere")
    with pytest.raises(RemoteError):
        await stranger.call(app.jid, "add", {"x": 1, "y": 2}, timeout=2)  # forbidden before admission

    found = samples(app.metrics.render().decode())
    assert value(found, "qe_calls_total", cmd="add", outcome="ok") == 3
    assert value(found, "qe_calls_total", cmd="add", outcome="bad-request") == 1
    assert value(found, "qe_calls_total", cmd="nope", outcome="not-found") == 1
    assert value(found, "qe_calls_total", cmd="ping", outcome="ok") == 1
    assert value(found, "qe_call_duration_seconds_count", cmd="add") == 4
    assert value(found, "qe_call_duration_seconds_bucket", cmd="add", le="+Inf") == 4
    assert 0 < value(found, "qe_call_duration_seconds_sum", cmd="add") < 1
    assert value(found, "qe_requests_received_total") == 7
    assert value(found, "qe_requests_answered_total", result="answered") == 4
    assert value(found, "qe_requests_answered_total", result="forbidden") == 1
    assert value(found, "qe_requests_answered_total", result="failed") == 2
    assert value(found, "qe_requests_in_flight") == 0
    assert value(found, "qe_xmpp_sessions_total") == 1
    assert value(found, "qe_xmpp_resumptions_total") == 0
    assert value(found, "qe_keepalive_failures_total") == 0
    assert value(found, "qe_worker_online") == 1
    assert value(found, "qe_worker_info", jid=app.jid, version=value_version(found)) == 1
    for family in ("qe_timers", "qe_timer_runs", "qe_timer_missed", "qe_timer_lateness_seconds"):
        assert any(name == family for name, _labels in found), family
    assert not any(name.startswith("qe_job") for name, _labels in found)  # no JobScheduler here


def value_version(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> str:
    return next(dict(labels)["version"] for name, labels in found if name == "qe_worker_info")


async def test_each_app_has_its_own_registry(make_app: Factory, connect: Any) -> None:
    one, two = make_app("worker@localhost/one"), make_app("worker@localhost/two")
    await one.wait_online(1)
    await two.wait_online(1)
    owner = await connect("worker@localhost")
    await owner.call(one.jid, "ping", timeout=2)
    assert one.metrics.registry is not two.metrics.registry
    assert value(samples(one.metrics.render().decode()), "qe_calls_total", cmd="ping", outcome="ok") == 1
    assert ("qe_calls_total", (("cmd", "ping"), ("outcome", "ok"))) not in samples(two.metrics.render().decode())


async def test_the_metrics_command_is_for_owner_and_partners(make_app: Factory, connect: Any) -> None:
    app = make_app(public=True)
    await app.wait_online(1)
    friend = await connect("friend@localhost")
    text = (await friend.call(app.jid, "metrics", timeout=2))["text"]
    assert "# TYPE qe_requests_received_total counter" in text and "qe_requests_in_flight" in text
    stranger = await connect("stranger@elsewhere")
    with pytest.raises(RemoteError) as refused:
        await stranger.call(app.jid, "metrics", timeout=2)
    assert refused.value.code == "forbidden"
    listed = {c["name"] for c in (await stranger.call(app.jid, "commands", timeout=2))["commands"]}
    assert "metrics" not in listed and "info" in listed
    assert "metrics" in {c["name"] for c in (await friend.call(app.jid, "commands", timeout=2))["commands"]}


async def test_info_tells_strangers_no_internals(make_app: Factory, connect: Any) -> None:
    app = make_app(public=True)
    await app.wait_online(1)
    stranger = await connect("stranger@elsewhere")
    info = await stranger.call(app.jid, "info", timeout=2)
    assert set(info) == {"jid", "version", "public", "commands"}
    assert "metrics" not in info["commands"]
    friend = await connect("friend@localhost")
    full = await friend.call(app.jid, "info", timeout=2)
    assert {"requests", "timers", "sessions", "uptime_s"} <= set(full)


async def test_command_labels_stay_bounded(make_app: Factory, connect: Any) -> None:
    app = make_app(public=True)

    async def onapi(specs: Any) -> dict[str, Any]:
        return {"ok": True}

    app.xmpp.onapi = onapi
    await app.wait_online(1)
    stranger = await connect("stranger@elsewhere")
    for i in range(MAX_COMMANDS + 20):
        await stranger.call(app.jid, f"probe{i}", timeout=2)
    cmds = {dict(labels)["cmd"] for name, labels in samples(app.metrics.render().decode()) if name == "qe_calls_total"}
    assert len(cmds) == MAX_COMMANDS + 1 and OTHER in cmds
    assert value(samples(app.metrics.render().decode()), "qe_calls_total", cmd=OTHER, outcome="ok") == 20


async def test_the_json_form_of_metrics_has_the_same_numbers(make_app: Factory, connect: Any, tmp_path: Any) -> None:
    from libs.observability.metrics import BUCKETS
    from libs.scheduling import JobScheduler, JobStore

    app = make_app(public=True)
    JobScheduler(app, JobStore(tmp_path / "jobs.sqlite3"))

    @app.command("add")
    async def add(x: int, y: int) -> dict[str, Any]:
        return {"sum": x + y}

    await app.wait_online(1)
    friend = await connect("friend@localhost")
    for i in range(3):
        await friend.call(app.jid, "add", {"x": i, "y": 1}, timeout=2)
    with pytest.raises(RemoteError):
        await friend.call(app.jid, "add", {"x": "wide"}, timeout=2)
    owner = await connect("worker@localhost")
    job = await owner.call(app.jid, "schedule", {"cmd": "ping", "trigger": {"every": "1h"}}, timeout=2)

    doc = await friend.call(app.jid, "metrics", {"format": "json"}, timeout=2)
    assert doc["format"] == "json" and doc["version"] == 1 and doc["jid"] == app.jid
    assert doc["service"] == "python" and doc["started_at"] == app.started_at
    assert doc["calls"]["add"] == {"ok": 3, "bad-request": 1}
    assert doc["latency"]["buckets"] == list(BUCKETS)
    counts = doc["latency"]["commands"]["add"]["counts"]
    assert len(counts) == len(BUCKETS) + 1 and sum(counts) == 4
    assert doc["requests"]["received"] >= 5 and doc["requests"]["in_flight"] == 1  # this very call
    assert doc["jobs"]["count"] == 1 and "list" not in doc["jobs"]  # a partner: counts only
    mine = await owner.call(app.jid, "metrics", {"format": "json"}, timeout=2)
    [entry] = mine["jobs"]["list"]
    assert entry["job"] == job["job"] and entry["cmd"] == "ping" and entry["next_run"]
    assert "text" in await friend.call(app.jid, "metrics", {"format": "text"}, timeout=2)
    with pytest.raises(RemoteError) as bad:
        await friend.call(app.jid, "metrics", {"format": "xml"}, timeout=2)
    assert bad.value.code == "bad-request"
    stranger = await connect("stranger@elsewhere")
    with pytest.raises(RemoteError) as refused:
        await stranger.call(app.jid, "metrics", {"format": "json"}, timeout=2)
    assert refused.value.code == "forbidden"


async def test_qe_metrics_off_records_nothing_per_request(make_app: Factory, connect: Any, net: MemoryNetwork) -> None:
    import dataclasses

    transport = net.transport("worker@localhost/quiet", allow=["friend@localhost"])
    app = App(transport=transport, config=dataclasses.replace(transport.config, metrics=False))
    try:
        await app.wait_online(1)
        friend = await connect("friend@localhost")
        await friend.call(app.jid, "ping", timeout=2)
        found = samples(app.metrics.render().decode())
        assert app.dispatcher.observer is None
        assert not any(name.startswith(("qe_calls", "qe_call_duration")) for name, _ in found)
        assert value(found, "qe_requests_received_total") == 1  # read from the counters at scrape time
    finally:
        await app.close(1)


async def test_timer_counts_stay_exact_when_lateness_is_sampled(make_app: Factory) -> None:
    # 32 intervals due together: batches big enough that lateness is sampled (every 8th run)
    app = make_app()
    with VirtualClock() as clock:
        for _ in range(2 * BUSY_BATCH):
            SetIntervalSafe(lambda: None, 10).start()
        assert await clock.advance(0.205) == 20 * 2 * BUSY_BATCH
        found = samples(app.metrics.render().decode())
    assert value(found, "qe_timers", kind="interval") == 2 * BUSY_BATCH
    assert value(found, "qe_timer_runs") == 20 * 2 * BUSY_BATCH
    assert value(found, "qe_timer_missed") == 0
    assert value(found, "qe_timer_lateness_seconds", quantile="0.99") == pytest.approx(0.5e-6)  # on time: 0-1 us
