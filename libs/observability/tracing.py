"""OpenTelemetry spans around worker calls: the caller's, the worker's, and what links them.

Why the API and not the SDK: the library only *emits* spans through ``opentelemetry-api``,
which does nothing until the application installs a tracer provider (the SDK, ``pip install
'qe-worker[tracing]'``, or a vendor's). Which spans exist, where they go and how they are
sampled is the application's choice, made once at start-up.

The spans (names and attributes after OpenTelemetry's RPC conventions):

- a ``CLIENT`` span per call (``Client.call``, ``App.call``/``App.api``, every attempt of a
  service call), named after the command;
- a ``SERVER`` span per request a worker handles over XMPP, an ``INTERNAL`` one per REST
  request (under FastAPI's own HTTP server span) and per run of a scheduled job (the root of
  a trace of its own, linked to the call that scheduled the job while the worker runs);
- attributes ``rpc.system`` (``qe-worker``), ``rpc.method`` (the command), ``rpc.service``
  (the worker's service), ``rpc.response.status_code`` (``ok`` or the error code) and, on
  errors, ``error.type`` (the code) with status ``ERROR``. Never a body, a message or a
  resource: what callers send stays out of the spans.

The handler runs with the worker's span current, so the calls it makes are its children and
carry the trace on: the request's ``trace`` key (docs/protocol.md) holds W3C trace context
(``traceparent``, ``tracestate``). A worker without a tracer provider still passes on a
context it received (cheaply: only requests that carry one cost anything).

Cost when no provider is set: ``Tracing.tracer()`` is one global lookup and a type check per
request, and nothing else happens. Thread affinity: none; spans follow the asyncio context.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, NoOpTracerProvider, ProxyTracerProvider, Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["RPC_SYSTEM", "Tracing", "answered", "carrier", "failed"]

RPC_SYSTEM: Final = "qe-worker"
"""``rpc.system`` of every span here."""

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_OFF: Final = (ProxyTracerProvider, NoOpTracerProvider)  # no provider installed: no spans
_NAME: Final = "qe-worker"


class Tracing:
    """Where one worker (or client) gets its tracer: ``provider``, or OpenTelemetry's global
    one when None (the usual case: the application sets it once at start-up)."""

    __slots__ = ("_provider", "_tracer")

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self._provider = provider
        self._tracer: trace.Tracer | None = None

    def tracer(self) -> trace.Tracer | None:
        """The tracer, or None while no provider is installed (then make no spans at all).
        Kept once found: OpenTelemetry's global provider can be set only once."""
        tracer = self._tracer
        if tracer is not None:
            return tracer
        provider = self._provider or trace.get_tracer_provider()
        if isinstance(provider, _OFF):
            return None
        from ..bridge.app import version

        tracer = self._tracer = provider.get_tracer(_NAME, version())
        return tracer

    @property
    def provider(self) -> trace.TracerProvider | None:
        """The provider given to the constructor (None: the global one)."""
        return self._provider

    @contextmanager
    def calling(self, cmd: str, jid: str) -> Iterator[Span | None]:
        """The caller's ``CLIENT`` span around one call, current inside the block (so that
        ``carrier()`` names it); None when there is no tracer."""
        tracer = self.tracer()
        if tracer is None:
            yield None
            return
        with tracer.start_as_current_span(cmd, kind=SpanKind.CLIENT, record_exception=False,
                                          set_status_on_exception=False, attributes={
                                              "rpc.system": RPC_SYSTEM, "rpc.method": cmd, "qe.worker": jid}) as span:
            yield span

    @contextmanager
    def serving(self, cmd: str, received: Mapping[str, str] | None, *, kind: SpanKind = SpanKind.SERVER,
                service: str | None = None, inherit: bool = False, job: bool = False) -> Iterator[Span | None]:
        """The worker's span around one request, current while its handler runs.

        ``received``: the request's trace context (its ``trace`` key), the parent. Without
        one the span is the root of a new trace, or with ``inherit`` the child of the span
        current here (a REST request's HTTP server span): a request that came over the
        network is never the child of whatever the loop's context happens to hold. ``job``:
        a scheduled run, the root of a trace of its own, linked to ``received`` (the context
        of the call that scheduled it).
        Without a tracer, a received context is made current all the same, so that the calls
        the handler makes pass it on; the span is then None.
        """
        tracer = self.tracer()
        parent = _PROPAGATOR.extract(received) if received else None
        if tracer is None:  # pass a received context on, nothing more
            if parent is None:
                yield None
                return
            token = otel_context.attach(parent)
            try:
                yield None
            finally:
                otel_context.detach(token)
            return
        links: list[Link] = []
        if job:  # a root: a run is no part of the call that scheduled it, only linked to it
            scheduled_by = trace.get_current_span(parent).get_span_context() if parent is not None else None
            if scheduled_by is not None and scheduled_by.is_valid:
                links.append(Link(scheduled_by))
            parent = otel_context.Context()
        elif parent is None and not inherit:
            parent = otel_context.Context()
        attributes = {"rpc.system": RPC_SYSTEM, "rpc.method": cmd}
        if service is not None:
            attributes["rpc.service"] = service
        with tracer.start_as_current_span(cmd, context=parent, kind=kind, links=links, attributes=attributes,
                                          record_exception=False, set_status_on_exception=False) as span:
            yield span


def carrier() -> dict[str, str] | None:
    """The current span's W3C trace context for a request's ``trace`` key, or None when
    there is no valid span (no tracing here, and none received)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    found: dict[str, str] = {}
    _PROPAGATOR.inject(found)
    return found or None


def answered(span: Span | None, outcome: str) -> None:
    """Record how a request ended on its span: ``ok`` or an error code (status ERROR)."""
    if span is None:
        return
    span.set_attribute("rpc.response.status_code", outcome)
    if outcome != "ok":
        failed(span, outcome)


def failed(span: Span | None, code: str) -> None:
    """Mark ``span`` failed with error code ``code`` (no message: it may quote the handler)."""
    if span is None:
        return
    span.set_attribute("error.type", code)
    span.set_status(StatusCode.ERROR, code)
