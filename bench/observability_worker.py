"""The worker process of ``bench/bench_observability.py``: workers in one process (one loop,
so all get the same share of the machine), each answering ``echo``:

- ``obs-off``: no metrics observer, no tracer provider;
- ``obs-metrics``: the metrics observer only;
- ``obs-on``: the metrics observer and the OpenTelemetry SDK, a ``BatchSpanProcessor`` whose
  exporter drops every span (argv ``aa``: off as well, to measure the noise floor);
- ``obs-unsampled``: the SDK too (``ParentBased``), for callers that did not sample.

The request log is off in both (``QE_REQUEST_LOG=off`` from the bench), so "off" reads no
clock at all."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler  # noqa: E402

from libs.bridge import APISpecs, App  # noqa: E402
from libs.startup import startup  # noqa: E402


class Drop(SpanExporter):
    """Exports nowhere: the cost measured is making and batching spans, not a network."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def sdk(root: Sampler = ALWAYS_ON) -> TracerProvider:
    provider = TracerProvider(sampler=ParentBased(root))
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    return provider


def worker(resource: str, metrics: bool, provider: TracerProvider | None) -> App:
    app = App(resource=resource, tracer_provider=provider)
    if not metrics:
        app.dispatcher.observer = None  # metrics recorded per request: none

    @app.command("echo")
    async def echo(specs: APISpecs) -> dict[str, Any]:
        return specs.body

    return app


if __name__ == "__main__":
    startup()
    on = sys.argv[1:] != ["aa"]
    workers = [worker("obs-off", False, None), worker("obs-metrics", True, None),
               worker("obs-on", on, sdk() if on else None), worker("obs-unsampled", False, sdk(ALWAYS_OFF))]
    asyncio.get_event_loop().run_forever()
