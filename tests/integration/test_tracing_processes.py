"""One trace across three real worker processes on a real Prosody: the test calls ``relay`` on
worker A, whose handler calls B, whose handler calls C (``tests/support/traced_worker.py``,
each process with the OpenTelemetry SDK and an in-memory exporter). Every process's spans
are read back and must form one trace, each span the child of the one before:

    test CLIENT -> A SERVER -> A CLIENT -> B SERVER -> B CLIENT -> C SERVER
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs.bridge import Client, load_config, wait_answering
from libs.devserver import DevServer
from tests.support.workers import WorkerProcess

RESOURCES = ("ta", "tb", "tc")


async def test_one_trace_across_three_worker_processes(prosody: DevServer, accounts: dict[str, tuple[str, str]],
                                                       tmp_path: Path) -> None:
    worker_jid, worker_password = accounts["worker"]
    env = {**prosody.env("worker", worker_password), "QE_STATE_DIR": str(tmp_path), "QE_KEEPALIVE": "0"}
    processes = [WorkerProcess(["-m", "tests.support.traced_worker"], {**env, "RESOURCE": r},
                               tmp_path / f"{r}.log") for r in RESOURCES]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        for process in processes:
            await process.start()
        # the test calls as the worker's own account: the owner, who may also read the spans
        async with Client(load_config(env), connect_timeout=10, tracer_provider=provider) as owner:
            jids = [f"{worker_jid}/{r}" for r in RESOURCES]
            await asyncio.gather(*(wait_answering(owner, jid, 30) for jid in jids))
            exporter.clear()  # the pings' spans
            answer = await owner.call(jids[0], "relay", {"next": list(RESOURCES[1:])}, timeout=15)
            assert answer == {"path": list(RESOURCES)}
            [mine] = exporter.get_finished_spans()
            found: dict[str, list[dict[str, Any]]] = {}
            for resource, jid in zip(RESOURCES, jids):
                spans = (await owner.call(jid, "spans", timeout=10))["spans"]
                found[resource] = [s for s in spans if s["name"] == "relay"]
    finally:
        for process in processes:
            await process.aclose()
        provider.shutdown()
    logs = "\n".join(p.log() for p in processes)
    trace_id = f"{mine.context.trace_id:032x}"
    chain = [("test", "CLIENT", f"{mine.context.span_id:016x}", None)]
    for resource in RESOURCES:
        kinds = sorted(s["kind"] for s in found[resource])
        expected = ["SERVER"] if resource == RESOURCES[-1] else ["CLIENT", "SERVER"]
        assert kinds == expected, (resource, found[resource], logs)
        for kind in ("SERVER", "CLIENT")[: len(expected)]:
            [span] = [s for s in found[resource] if s["kind"] == kind]
            assert span["trace_id"] == trace_id, (resource, kind)
            assert span["status"] == "UNSET"
            chain.append((resource, kind, span["span_id"], span["parent_id"]))
    for (_, _, parent_id, _), (resource, kind, _, its_parent) in zip(chain, chain[1:]):
        assert its_parent == parent_id, (resource, kind, chain)
    server_c = next(s for s in found["tc"] if s["kind"] == "SERVER")
    assert server_c["attributes"]["rpc.system"] == "qe-worker" and server_c["attributes"]["rpc.method"] == "relay"
