"""OpenTelemetry spans across worker calls, on a ``MemoryNetwork`` with the SDK's in-memory
exporter: the caller's and the worker's spans in one trace through the request's ``trace``
key, peers that do not send it, malformed ones, errors, scheduled runs and REST requests.
tests/integration/test_tracing_processes.py does it across three real worker processes."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, StatusCode

from libs.bridge import PERIOD, APISpecs, App, Client, MemoryNetwork, RemoteError
from libs.bridge.protocol import decode_request, encode_request
from libs.observability.tracing import Tracing, parent_context
from libs.scheduling import JobScheduler, JobStore

WAIT = 5.0  # s: upper bound for any answer or run a test waits for
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"  # W3C's example


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
async def make(net: MemoryNetwork) -> AsyncIterator[Callable[..., Any]]:
    """``make(jid, **App kwargs)``: a worker on ``net`` that allows the other test accounts."""
    apps: list[App] = []

    def factory(jid: str, **kwargs: Any) -> App:
        allow = ["caller@localhost", "a@localhost", "b@localhost", "c@localhost"]
        app = App(transport=net.transport(jid, allow=allow), exit_on_fatal=False, **kwargs)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.close(1)


@pytest.fixture
async def caller(net: MemoryNetwork, provider: TracerProvider) -> AsyncIterator[Client]:
    async with Client(transport=net.transport("caller@localhost/t"), tracer_provider=provider) as client:
        yield client


def by_name(exporter: InMemorySpanExporter) -> dict[tuple[str, SpanKind], ReadableSpan]:
    spans = {(s.name, s.kind): s for s in exporter.get_finished_spans()}
    assert len(spans) == len(exporter.get_finished_spans())  # each (name, kind) once here
    return spans


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


async def chain(make: Callable[..., Any], provider: TracerProvider | None, *,
                middle: TracerProvider | None = None) -> tuple[App, App, App]:
    """Workers a -> b -> c: ``a``'s ``first`` calls ``b``'s ``second`` (App.call), which calls
    ``c``'s ``third`` (App.api); ``middle``: b's provider (default: ``provider``)."""
    a = make("a@localhost/w", app="alpha", tracer_provider=provider)
    b = make("b@localhost/w", app="beta", tracer_provider=middle or provider)
    c = make("c@localhost/w", app="gamma", tracer_provider=provider)

    @a.command("first")
    async def first(specs: APISpecs) -> dict[str, Any]:
        return {"a": await a.call(b.jid, "second", {"secret": "hunter2"}, timeout=WAIT)}

    @b.command("second")
    async def second(specs: APISpecs) -> dict[str, Any]:
        return {"b": await b.api(jid=c.jid, cmd="third", timeout=WAIT)}

    @c.command("third")
    async def third(specs: APISpecs) -> dict[str, Any]:
        return {"c": True}

    await asyncio.gather(*(w.wait_online(WAIT) for w in (a, b, c)))
    return a, b, c


async def test_one_trace_with_parents_across_three_workers(make: Any, caller: Client, provider: TracerProvider,
                                                           exporter: InMemorySpanExporter) -> None:
    a, _b, _c = await chain(make, provider)
    assert await caller.call(a.jid, "first", timeout=WAIT) == {"a": {"b": {"c": True}}}
    spans = by_name(exporter)
    order = [("first", SpanKind.CLIENT), ("first", SpanKind.SERVER), ("second", SpanKind.CLIENT),
             ("second", SpanKind.SERVER), ("third", SpanKind.CLIENT), ("third", SpanKind.SERVER)]
    assert set(spans) == set(order)
    assert {s.context.trace_id for s in spans.values()} == {spans[order[0]].context.trace_id}
    assert spans[order[0]].parent is None
    for parent, child in zip(order, order[1:]):
        assert parent_of(spans[child]) == spans[parent].context.span_id, (parent, child)
    server = spans[("second", SpanKind.SERVER)]
    assert server.attributes is not None and dict(server.attributes) == {
        "rpc.system": "qe-worker", "rpc.method": "second", "rpc.service": "beta"}
    client = spans[("second", SpanKind.CLIENT)]
    assert client.attributes is not None and client.attributes["qe.worker"] == "b@localhost/w"
    assert all(s.status.status_code is StatusCode.UNSET for s in spans.values())
    assert "hunter2" not in json.dumps([dict(s.attributes or {}) for s in spans.values()])


async def test_a_worker_without_a_provider_passes_the_context_on(make: Any, caller: Client,
                                                                 provider: TracerProvider,
                                                                 exporter: InMemorySpanExporter) -> None:
    a, _b, _c = await chain(make, provider, middle=TracerProvider())  # b's spans go nowhere we look
    assert await caller.call(a.jid, "first", timeout=WAIT) == {"a": {"b": {"c": True}}}
    spans = by_name(exporter)
    assert ("second", SpanKind.SERVER) not in spans and ("third", SpanKind.CLIENT) not in spans
    # c's span is in the caller's trace, under b's (unseen) client span, itself under a's
    third = spans[("third", SpanKind.SERVER)]
    assert third.context.trace_id == spans[("first", SpanKind.CLIENT)].context.trace_id
    assert third.parent is not None and third.parent.is_remote


async def test_untraced_workers_pass_a_received_context_through(make: Any, net: MemoryNetwork,
                                                                exporter: InMemorySpanExporter,
                                                                provider: TracerProvider) -> None:
    """A worker with no provider at all (OpenTelemetry's global one is not set in the unit
    tests) makes no spans but forwards the context its request carried."""
    assert Tracing().tracer() is None
    a, b, c = await chain(make, None)
    c.dispatcher.tracing = Tracing(provider)  # only the last one records
    async with Client(transport=net.transport("caller@localhost/raw")) as raw:
        text = encode_request("first", {}, trace={"traceparent": PARENT})
        await raw.transport.request(a.jid, text, WAIT)
    [third] = exporter.get_finished_spans()
    assert third.context.trace_id == int(PARENT.split("-")[1], 16)  # the trace the first request named


async def test_a_peer_without_the_key_starts_a_trace_and_old_peers_ignore_it(
        make: Any, net: MemoryNetwork, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    worker = make("a@localhost/w", tracer_provider=provider)
    await worker.wait_online(WAIT)
    async with Client(transport=net.transport("caller@localhost/plain")) as plain:  # no provider: sends no key
        assert await plain.call(worker.jid, "ping", timeout=WAIT) == {"pong": True, "environment": "python"}
    [span] = exporter.get_finished_spans()
    assert span.kind is SpanKind.SERVER and span.parent is None
    # a peer that does not know the key decodes the request as if it were not there
    traced = decode_request("1", "x@y/z", encode_request("echo", {"n": 1}, deadline_ms=5, app="s",
                                                         trace={"traceparent": PARENT}))
    plain_request = decode_request("1", "x@y/z", encode_request("echo", {"n": 1}, deadline_ms=5, app="s"))
    assert (traced.cmd, traced.body, traced.deadline_ms, traced.app) == ("echo", {"n": 1}, 5, "s")
    assert traced.trace == {"traceparent": PARENT} and plain_request.trace is None
    assert decode_request("1", "x@y/z", '{"cmd": "echo", "future": {"x": 1}}').cmd == "echo"


async def test_a_call_not_sampled_makes_no_span_downstream_and_carries_the_decision_on(
        make: Any, net: MemoryNetwork, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """The default sampler (ParentBased) drops what the caller did not sample: no span at any
    worker, and every hop passes on the same trace, still "not sampled" (the shortcut that
    skips the SDK there must keep both)."""
    a, b, c = await chain(make, provider)
    seen: list[tuple[int, bool]] = []

    @c.command("fourth")
    async def fourth(specs: APISpecs) -> dict[str, Any]:
        context = otel_trace.get_current_span().get_span_context()
        seen.append((context.trace_id, context.trace_flags.sampled))
        return {}

    @b.command("second")  # replaces chain's: b calls c's "fourth", which reports what it runs under
    async def second(specs: APISpecs) -> dict[str, Any]:
        return {"b": await b.api(jid=c.jid, cmd="fourth", timeout=WAIT)}

    unsampled = PARENT[:-2] + "00"
    async with Client(transport=net.transport("caller@localhost/raw")) as raw:
        await raw.transport.request(a.jid, encode_request("first", {}, trace={"traceparent": unsampled}), WAIT)
    assert seen == [(int(PARENT.split("-")[1], 16), False)]
    assert exporter.get_finished_spans() == ()
    # a caller whose own sampler says no: nothing recorded either, and the trace goes on
    not_sampled = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    not_sampled.add_span_processor(SimpleSpanProcessor(exporter))
    async with Client(transport=net.transport("caller@localhost/off"), tracer_provider=not_sampled) as client:
        await client.call(a.jid, "first", timeout=WAIT)
    assert len(seen) == 2 and seen[1][1] is False and seen[1][0] != seen[0][0]
    assert exporter.get_finished_spans() == ()
    not_sampled.shutdown()


async def test_a_sampler_that_keeps_unsampled_children_still_decides(make: Any, net: MemoryNetwork,
                                                                     exporter: InMemorySpanExporter) -> None:
    keeps = TracerProvider(sampler=ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON))
    keeps.add_span_processor(SimpleSpanProcessor(exporter))
    worker = make("a@localhost/w", tracer_provider=keeps)
    await worker.wait_online(WAIT)
    async with Client(transport=net.transport("caller@localhost/raw")) as raw:
        text = encode_request("ping", {}, trace={"traceparent": PARENT[:-2] + "00"})
        await raw.transport.request(worker.jid, text, WAIT)
    [span] = exporter.get_finished_spans()
    assert span.kind is SpanKind.SERVER and span.context.trace_id == int(PARENT.split("-")[1], 16)
    keeps.shutdown()


@pytest.mark.parametrize("trace", [
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # not an object
    {"traceparent": 7},
    {"traceparent": "x" * 200},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"},  # a field short
    {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},  # the invalid all-zero id
    {"traceparent": "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    [],
])
async def test_a_malformed_trace_is_ignored_not_refused(trace: Any, make: Any, net: MemoryNetwork,
                                                        provider: TracerProvider,
                                                        exporter: InMemorySpanExporter) -> None:
    worker = make("a@localhost/w", tracer_provider=provider)
    await worker.wait_online(WAIT)
    async with Client(transport=net.transport("caller@localhost/raw")) as raw:
        text = json.dumps({"cmd": "ping", "body": {}, "trace": trace})
        assert json.loads(await raw.transport.request(worker.jid, text, WAIT) or "") == {
            "pong": True, "environment": "python"}
    [span] = exporter.get_finished_spans()
    assert span.parent is None and span.context.trace_id != int(PARENT.split("-")[1], 16)


def test_tracestate_travels_and_an_oversized_one_is_dropped() -> None:
    def trace_of(value: Any) -> Any:
        return decode_request("1", "x@y/z", json.dumps({"cmd": "c", "trace": value})).trace

    assert trace_of({"traceparent": PARENT, "tracestate": "k=v"}) == {"traceparent": PARENT, "tracestate": "k=v"}
    assert trace_of({"traceparent": PARENT, "tracestate": "k=" + "v" * 600}) == {"traceparent": PARENT}
    assert trace_of({"traceparent": PARENT, "tracestate": 3}) == {"traceparent": PARENT}


async def test_errors_set_the_status_and_the_code_but_no_message(make: Any, caller: Client,
                                                                 provider: TracerProvider,
                                                                 exporter: InMemorySpanExporter) -> None:
    worker = make("a@localhost/w", tracer_provider=provider)
    await worker.wait_online(WAIT)

    @worker.command("boom")
    async def boom(specs: APISpecs) -> dict[str, Any]:
        raise RuntimeError("the database password is hunter2")

    with pytest.raises(RemoteError) as failed:
        await caller.call(worker.jid, "boom", timeout=WAIT)
    assert failed.value.code == "handler-error"
    with pytest.raises(RemoteError):
        await caller.call(worker.jid, "nope", timeout=WAIT)
    spans = by_name(exporter)
    for kind in (SpanKind.CLIENT, SpanKind.SERVER):
        span = spans[("boom", kind)]
        assert span.status.status_code is StatusCode.ERROR and span.status.description == "handler-error"
        assert span.attributes is not None and span.attributes["error.type"] == "handler-error"
        assert span.attributes["rpc.response.status_code"] == "handler-error"
        assert span.events == ()  # no exception event: its text may hold secrets
        assert spans[("nope", kind)].attributes["error.type"] == "unknown-command"  # type: ignore[index]
    assert "hunter2" not in repr([dict(s.attributes or {}) for s in spans.values()])


async def test_each_scheduled_run_is_a_trace_of_its_own_linked_to_the_scheduling_call(
        make: Any, caller: Client, provider: TracerProvider, exporter: InMemorySpanExporter,
        tmp_path: Path) -> None:
    worker = make("a@localhost/w", app="sched", tracer_provider=provider)
    worker.scheduler = JobScheduler(worker, JobStore(tmp_path / "jobs.sqlite3"))
    runs: asyncio.Queue[int] = asyncio.Queue()
    other = make("b@localhost/w", tracer_provider=provider)
    await other.wait_online(WAIT)

    @other.command("leaf")
    async def leaf(specs: APISpecs) -> dict[str, Any]:
        return {}

    @worker.command("tick")
    async def tick(specs: APISpecs) -> dict[str, Any]:
        await worker.call(other.jid, "leaf", timeout=WAIT)
        await runs.put(1)
        return {}

    await worker.wait_online(WAIT)
    task = await caller.call(worker.jid, "tick", exec_modifier=PERIOD(interval="100ms"), timeout=WAIT)
    for _ in range(2):
        await asyncio.wait_for(runs.get(), WAIT)
    await task.cancel()
    spans = exporter.get_finished_spans()
    ticks = [s for s in spans if s.name == "tick" and s.kind is SpanKind.INTERNAL]
    assert len(ticks) >= 2
    assert len({s.context.trace_id for s in ticks}) == len(ticks)  # one trace per run
    scheduling = {s.context.span_id for s in spans if s.kind is SpanKind.SERVER and s.name != "leaf"}
    for run in ticks:
        assert run.parent is None
        assert [link.context.span_id for link in run.links] and run.links[0].context.span_id in scheduling
        leaf_calls = [s for s in spans if s.name == "leaf" and s.kind is SpanKind.CLIENT
                      and s.parent is not None and s.parent.span_id == run.context.span_id]
        assert len(leaf_calls) == 1  # the job's own call is its child


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_rest_request_is_a_child_of_the_http_span_and_of_the_callers_trace(
        make: Any, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    worker = make("a@localhost/w", rest=free_port(), tracer_provider=provider)
    other = make("b@localhost/w", tracer_provider=provider)
    await other.wait_online(WAIT)

    @other.command("leaf")
    async def leaf(specs: APISpecs) -> dict[str, Any]:
        return {}

    @worker.command("work")
    async def work(specs: APISpecs) -> dict[str, Any]:
        return await worker.call(other.jid, "leaf", timeout=WAIT)

    await worker.wait_online(WAIT)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=worker.rest), base_url="http://t") as http:
        answer = await http.post("/api/work", json={}, headers={"traceparent": PARENT}, timeout=WAIT)
    assert answer.status_code == 200
    spans = exporter.get_finished_spans()
    [http_span] = [s for s in spans if s.kind is SpanKind.SERVER and s.name.startswith("POST")]
    [served] = [s for s in spans if s.name == "work"]
    [leaf_call] = [s for s in spans if s.name == "leaf" and s.kind is SpanKind.CLIENT]
    assert http_span.context.trace_id == int(PARENT.split("-")[1], 16)
    assert served.kind is SpanKind.INTERNAL and parent_of(served) == http_span.context.span_id
    assert parent_of(leaf_call) == served.context.span_id


@pytest.mark.parametrize(("traceparent", "valid"), [
    (PARENT, True),
    ("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later-fields", True),  # a later version
    ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-more", False),  # version 00 has 4 fields
    ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", False),
    ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", False),  # upper case
    ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", False),
    ("00-0af7651916cd43dd_448eb211c80319c-b7ad6b7169203331-01", False),  # what int(x, 16) would take
    ("", False),
])
def test_the_traceparent_parser_follows_w3c(traceparent: str, valid: bool) -> None:
    from opentelemetry import trace

    context = trace.get_current_span(parent_context({"traceparent": traceparent, "tracestate": "k=v"})).get_span_context()
    assert context.is_valid is valid
    if valid:
        assert context.is_remote and context.trace_id == int(PARENT.split("-")[1], 16)
        assert context.trace_flags.sampled and context.trace_state.get("k") == "v"


@pytest.mark.parametrize("state", ["k=v,BAD KEY=x", "k=v,k=w", ",".join(f"k{i}=v" for i in range(33)),
                                   "k=v\x01", "=v"])
def test_a_bad_tracestate_is_dropped_without_a_log_line(state: str, caplog: pytest.LogCaptureFixture) -> None:
    from opentelemetry import trace

    caplog.set_level(logging.DEBUG)
    context = trace.get_current_span(parent_context({"traceparent": PARENT, "tracestate": state})).get_span_context()
    assert context.is_valid and len(context.trace_state) == 0  # the parent stands, the state is gone
    assert caplog.records == []  # what any caller can send must not write the worker's log
    good = trace.get_current_span(parent_context({"traceparent": PARENT, "tracestate": " a=1 , b@c=x y ,"}))
    assert dict(good.get_span_context().trace_state) == {"a": "1", "b@c": "x y"}


def test_the_observability_package_imports_first() -> None:
    """``from libs.observability import Tracing`` in a fresh process, before ``libs.bridge``
    (which imports it while it loads)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "from libs.observability import Tracing, WorkerMetrics"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
