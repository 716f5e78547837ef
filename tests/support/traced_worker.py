"""``python -m tests.support.traced_worker``: a worker in a process of its own that records
its OpenTelemetry spans, for tests of tracing across real processes.

Set up as an application would: the SDK's ``TracerProvider`` installed as OpenTelemetry's
global provider before the ``App`` exists (the worker takes nothing else), here with an
in-memory exporter so the test can read the spans back. It answers

- ``relay`` ``{"next": [resource, ...]}``: calls ``relay`` on the sibling worker of the same
  account with the first resource (``App.api(resource=...)``) and the rest of the list, and
  answers ``{"path": [its own resource, ...what the next one answered]}``;
- ``spans`` (owner only): the spans finished so far, as plain dicts (ids in hex).
"""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs.bridge import APISpecs, App
from libs.bridge.protocol import ProtocolError
from libs.startup import startup


def main() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    startup()
    app = App(resource="traced")  # RESOURCE in the environment wins

    @app.command("relay")
    async def relay(specs: APISpecs) -> dict[str, Any]:
        rest = list(specs.body.get("next", []))
        path = [app.resource]
        if rest:
            answer = await app.api(resource=rest[0], cmd="relay", body={"next": rest[1:]}, timeout=10)
            if "error" in answer:
                raise ProtocolError("handler-error", f"{rest[0]}: {answer['error']}")
            path += answer["path"]
        return {"path": path}

    @app.command("spans", access="owner")
    async def spans(specs: APISpecs) -> dict[str, Any]:
        return {"spans": [{
            "name": s.name,
            "kind": s.kind.name,
            "trace_id": f"{s.context.trace_id:032x}",
            "span_id": f"{s.context.span_id:016x}",
            "parent_id": None if s.parent is None else f"{s.parent.span_id:016x}",
            "status": s.status.status_code.name,
            "attributes": dict(s.attributes or {}),
        } for s in exporter.get_finished_spans()]}

    asyncio.get_event_loop().run_forever()


if __name__ == "__main__":
    main()
