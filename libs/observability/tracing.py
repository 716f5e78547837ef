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
  (the worker's service), ``qe.worker`` (the callee's JID, on the caller's span) and, on
  errors, ``rpc.response.status_code`` and ``error.type`` (both the error code) with status
  ``ERROR``. Never a body, a message or the caller's JID: what callers send stays out of
  the spans.

The handler runs with the worker's span current, so the calls it makes are its children and
carry the trace on: the request's ``trace`` key (docs/protocol.md) holds W3C trace context
(``traceparent``, ``tracestate``). A worker without a tracer provider still passes on a
context it received (cheaply: only requests that carry one cost anything).

Cost when no provider is set: ``Tracing.tracer()`` is one global lookup and a type check per
request, and nothing else happens. When one is, the SDK's span is most of it (measured in
bench/RESULTS.md): no context managers here, the W3C header is parsed and written here
rather than by the propagator, and the caller's span is never made current (nothing under
a call makes spans). Each of those microseconds counts several times over in a call's
latency: a call runs once per wake-up, after the server and the other end had the CPU, so
its code runs from cold caches, 2-3x slower than in a loop (measured there).

Not sampled, for nothing: with the SDK's ``ParentBased`` sampler as configured by default
(a parent that was not sampled means no span), a request or call whose parent was not
sampled makes no span at all: the SDK would only hand back a non-recording one. The
parent's context is made current and passed on instead, as a worker without a provider
does; downstream sees the same trace id and the same "not sampled" flag (the parent span
id it sees is the caller's, as no span was made in between). Any other sampler (or
provider) decides every span itself.
Thread affinity: none; spans follow the asyncio context.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    NonRecordingSpan,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
)

__all__ = ["RPC_SYSTEM", "Tracing", "carrier", "end", "parent_context"]

RPC_SYSTEM: Final = "qe-worker"
"""``rpc.system`` of every span here."""

_OFF: Final = (ProxyTracerProvider, NoOpTracerProvider)  # no provider installed: no spans
_NAME: Final = "qe-worker"
# W3C Trace Context, level 1: version-traceid-parentid-flags, lower-case hex; a later version
# may append fields ("-..."), version 00 may not; version ff is invalid.
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# one tracestate list member, key=value (W3C grammar); checked here because OpenTelemetry's
# parser logs a WARNING quoting each bad member, and anyone who may call can send them
_TRACESTATE_MEMBER: Final = re.compile(
    r"([a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])")
_MAX_TRACESTATE_MEMBERS: Final = 32

Token = object
"""What ``start_serving`` returns to give back to ``end`` (a context token, or None)."""


class Tracing:
    """Where one worker (or client) gets its tracer: ``provider``, or OpenTelemetry's global
    one when None (the usual case: the application sets it once at start-up)."""

    __slots__ = ("_follows_unsampled", "_provider", "_tracer")

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self._provider = provider
        self._tracer: trace.Tracer | None = None
        self._follows_unsampled = False  # the tracer makes no span under a parent not sampled

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

        tracer = provider.get_tracer(_NAME, version())
        self._follows_unsampled = _drops_unsampled(tracer)
        self._tracer = tracer
        return tracer

    @property
    def provider(self) -> trace.TracerProvider | None:
        """The provider given to the constructor (None: the global one)."""
        return self._provider

    def start_call(self, cmd: str, jid: str) -> tuple[Span | None, dict[str, str] | None]:
        """The caller's ``CLIENT`` span for one call (None without a tracer), a child of the
        current span, and the trace context the request carries: the new span's, else the
        current one's (a context this worker received, passed on). Not made current: nothing
        under a call makes spans. None too when the current span was not sampled and the
        sampler drops such children (module docstring). ``end()`` it."""
        tracer = self.tracer()
        if tracer is None:
            return None, carrier()
        current = otel_context.get_current()
        if current and self._follows_unsampled:  # an empty context (most callers) has no parent
            under = trace.get_current_span(current).get_span_context()
            if under.is_valid and not under.trace_flags.sampled:
                return None, _carrier_of(under)  # the SDK would make a non-recording span
        span = tracer.start_span(cmd, context=current, kind=SpanKind.CLIENT, attributes={
            "rpc.system": RPC_SYSTEM, "rpc.method": cmd, "qe.worker": jid})
        return span, _carrier_of(span.get_span_context())

    def start_serving(self, cmd: str, received: Mapping[str, str] | None, *, kind: SpanKind = SpanKind.SERVER,
                      service: str | None = None, inherit: bool = False, job: bool = False
                      ) -> tuple[Span | None, Token | None]:
        """The worker's span for one request, made current until ``end(span, token, ...)``.

        ``received``: the request's trace context (its ``trace`` key), the parent. Without
        one the span is the root of a new trace, or with ``inherit`` the child of the span
        current here (a REST request's HTTP server span): a request that came over the
        network is never the child of whatever the loop's context happens to hold. ``job``:
        a scheduled run, the root of a trace of its own, linked to ``received`` (the context
        of the call that scheduled it). Without a tracer, or when ``received`` was not sampled
        and the sampler drops such children (module docstring), a received context is made
        current all the same, so that the calls the handler makes pass it on; the span is
        then None.
        """
        tracer = self.tracer()
        sent_by = _span_context(received) if received else None
        parent = None if not received else otel_context.Context() if sent_by is None else _context_of(sent_by)
        if tracer is None or (sent_by is not None and not sent_by.trace_flags.sampled and self._follows_unsampled
                              and not job):  # no span (none wanted, or none the SDK would record)
            return None, None if parent is None else otel_context.attach(parent)  # the context goes on
        links: list[Link] | None = None
        if job:  # a root: a run is no part of the call that scheduled it, only linked to it
            if sent_by is not None:
                links = [Link(sent_by)]
            parent = otel_context.Context()
        elif parent is None and not inherit:
            parent = otel_context.Context()
        attributes = {"rpc.system": RPC_SYSTEM, "rpc.method": cmd}
        if service is not None:
            attributes["rpc.service"] = service
        span = tracer.start_span(cmd, context=parent, kind=kind, links=links, attributes=attributes)
        return span, otel_context.attach(trace.set_span_in_context(span, parent))


def _drops_unsampled(tracer: trace.Tracer) -> bool:
    """Whether ``tracer`` is the SDK's with a ``ParentBased`` sampler that drops every span
    whose parent (remote or local) was not sampled: its default, and what sampling at the
    edge relies on. Read from the sampler's attributes, so any other sampler, or an SDK
    that changed them, just takes the usual path."""
    sampler = getattr(tracer, "sampler", None)
    if sampler is None or not type(sampler).__module__.startswith("opentelemetry.sdk."):
        return False
    from opentelemetry.sdk.trace.sampling import Decision, ParentBased, StaticSampler

    def drops(child: object) -> bool:
        return isinstance(child, StaticSampler) and getattr(child, "_decision", None) is Decision.DROP

    return (type(sampler) is ParentBased and drops(getattr(sampler, "_remote_parent_not_sampled", None))
            and drops(getattr(sampler, "_local_parent_not_sampled", None)))


def end(span: Span | None, token: Token | None, outcome: str) -> None:
    """End what ``start_call``/``start_serving`` began: ``outcome`` is ``ok`` or the error
    code (set as ``rpc.response.status_code`` and ``error.type``, status ERROR, no message:
    it may quote the handler)."""
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]
    if span is None:
        return
    if outcome != "ok":
        span.set_attributes({"rpc.response.status_code": outcome, "error.type": outcome})
        span.set_status(StatusCode.ERROR, outcome)
    span.end()


def parent_context(received: Mapping[str, str]) -> otel_context.Context:
    """The context ``received`` (a request's ``trace``) names as the parent: an empty one
    when its ``traceparent`` is not valid W3C trace context (then it is ignored)."""
    sent_by = _span_context(received)
    return otel_context.Context() if sent_by is None else _context_of(sent_by)


def _span_context(received: Mapping[str, str]) -> SpanContext | None:
    """The (remote) span context ``received`` names, or None when it is not valid."""
    match = _TRACEPARENT.fullmatch(received.get("traceparent", ""))
    if match is None:
        return None
    version, trace_id, span_id, flags, more = match.groups()
    if version == "ff" or (version == "00" and more) or trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    state = received.get("tracestate")
    return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16)),
                       trace_state=_trace_state(state) if state else None)


def _context_of(sent_by: SpanContext) -> otel_context.Context:
    return trace.set_span_in_context(NonRecordingSpan(sent_by), otel_context.Context())


def _trace_state(header: str) -> TraceState | None:
    """``tracestate`` as W3C defines it, or None (dropped, silently) if any member is not."""
    pairs: dict[str, str] = {}
    for member in header.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        match = _TRACESTATE_MEMBER.fullmatch(member)
        if match is None or match.group(1) in pairs or len(pairs) == _MAX_TRACESTATE_MEMBERS:
            return None
        pairs[match.group(1)] = match.group(2)
    return TraceState(list(pairs.items())) if pairs else None


def carrier() -> dict[str, str] | None:
    """The current span's W3C trace context for a request's ``trace`` key, or None when
    there is no valid span (no tracing here, and none received)."""
    span = trace.get_current_span()
    return None if span is INVALID_SPAN else _carrier_of(span.get_span_context())


def _carrier_of(context: SpanContext) -> dict[str, str] | None:
    if not context.is_valid:
        return None
    found = {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"}
    if context.trace_state:
        found["tracestate"] = context.trace_state.to_header()
    return found
