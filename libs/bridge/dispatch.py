"""From a received ``<api/>`` payload to the answer to send: decode, authorise, route, run.

No XMPP here: the adapter hands in ``(iq_id, sender, text, iq_type)`` and sends back whatever
``handle()`` returns, so every rule (access, deadlines, unknown commands, bad results) is
tested without a server. The life cycle of a request is

    received -> decoded -> authorised -> running -> answered | expired | failed

and each step that ends early returns an ``ApiError`` with the code for that step.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter_ns
from types import CoroutineType
from typing import Any

from opentelemetry.trace import SpanKind

from ..observability.tracing import Tracing, end
from ._eager import Resumed
from ._log_limit import LogLimit, suppressed_note
from ._requestlog import RequestLog
from .access import AccessPolicy, Role, bare_jid, resource_of
from .commands import CommandRegistry
from .progress import RequestProgress
from .protocol import (
    DEFAULT_MAX_PAYLOAD,
    ApiError,
    ApiRequest,
    ApiResult,
    ProtocolError,
    decode_request,
    encode_result,
)
from .specs import APISpecs, MessageSpecs

__all__ = ["ApiHandler", "DispatchStats", "Dispatcher", "MessageHandler", "Observer"]

log = logging.getLogger(__name__)

_NOT_TAKEN: Any = object()  # no handler took the command (unknown-command)
_NOT_YOURS = "you are not allowed to run this command"  # says no more: not which role would be

ApiHandler = Callable[[APISpecs], Awaitable[dict[str, Any] | None]]
MessageHandler = Callable[[MessageSpecs], Awaitable[None]]
Observer = Callable[[str, ApiResult | ApiError, float], None]
"""``(cmd, answer, seconds)``: told of every admitted request once it is answered; ``seconds``
from receipt to answer, the same reading of the clock as the request log's."""


def _outcome(answer: ApiResult | ApiError) -> str:
    return "ok" if type(answer) is ApiResult else answer.code  # type: ignore[union-attr]


def _cancel_requested() -> bool:
    """Whether someone cancelled the task we run in (``Task.cancelling()``).

    That is how a ``CancelledError`` of the worker's shutdown, or of whoever awaits
    ``handle()``/``execute()``, differs from one the handler raised itself or let out of a
    future that someone else cancelled: only the first must propagate. Our own deadline
    needs no check here: ``asyncio.timeout`` turns its cancellation into ``TimeoutError``.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclass
class DispatchStats:
    received: int = 0
    answered: int = 0
    failed: int = 0
    forbidden: int = 0
    expired: int = 0
    in_flight: int = 0


class Dispatcher:
    """Routes API calls to ``commands`` first, then to ``onapi``, then to ``fallbacks``.

    ``commands`` is the registry of ``App.command()`` and ``@App.nexus.API``: a command there
    is refused ``forbidden`` to a caller below its ``access``, and a typed one's body is
    checked (``bad-request`` naming the field) before its handler runs; ``onapi`` is QE's
    single handler, consulted for names the registry lacks; ``fallbacks`` are built-ins
    (``ping``, ``info``, ``commands``) that answer only when ``onapi`` returned nothing, so a
    QE script's own ``ping`` wins and every worker still answers ``ping``. As in QE, a
    handler that ran and returned a falsy value (None, ``{}``) answers ``{}``;
    ``unknown-command`` is for a command no handler took: not registered, and no ``onapi``
    (nor built-in) to take it.
    """

    def __init__(self, policy: AccessPolicy, *, max_payload: int = DEFAULT_MAX_PAYLOAD,
                 max_per_caller: int = 0) -> None:
        self.policy = policy
        self.max_payload = max_payload
        self.max_per_caller = max_per_caller  # 0: no limit
        self._per_caller: dict[str, int] = {}
        self.commands = CommandRegistry()
        self.onapi: ApiHandler | None = None
        self.fallbacks: dict[str, ApiHandler] = {}
        self.accepting = True
        self.progress_sink: Callable[[str, str, str], None] | None = None
        """``(caller, request_id, progress_json)``: where ``specs.progress`` reports go."""
        self.stats = DispatchStats()
        self.observer: Observer | None = None
        """Told of each request that got past decoding and access (metrics); on the loop, so cheap."""
        self.tracing = Tracing()
        """Where the request spans go (libs.observability.tracing); no provider: none made."""
        self.service: str | None = None
        """The worker's service, for the spans' ``rpc.service``."""
        self._log_limit = LogLimit()  # lines that other people's traffic causes
        self.request_log = RequestLog()  # one INFO line per finished request (rate 0: off)

    async def handle(self, iq_id: str, sender: str, text: str | None, iq_type: str = "set") -> ApiResult | ApiError:
        """Never raises, except ``CancelledError`` when the task running it is cancelled:
        every outcome is an answer to send, whatever the handler raised (``SystemExit``,
        ``KeyboardInterrupt`` and a ``CancelledError`` of its own included). ``iq_type`` is
        the type of the IQ that carried ``text`` (only ``set`` is a request)."""
        self.stats.received += 1
        started = perf_counter_ns() if self.request_log.rate or self.observer is not None else 0
        try:
            request = decode_request(iq_id, sender, text, iq_type=iq_type, max_payload=self.max_payload)
        except ProtocolError as exc:
            if (dropped := self._log_limit.allow("bad-request")) is not None:
                log.info("bad request %s from %s: %s%s", iq_id, sender, exc.message, suppressed_note(dropped))
            return self._count(ApiError(iq_id, sender, exc.code, exc.message), "", started)
        role = self.policy.role_of(sender)
        if role is None:
            if (dropped := self._log_limit.allow("forbidden")) is not None:
                log.warning("refused %r from %s: not the owner and not in QE_ALLOW%s", request.cmd, sender,
                            suppressed_note(dropped))
            return self._count(ApiError(iq_id, sender, "forbidden", "this worker is not public and you are not "
                                        "allowed"), request.cmd, started)
        answer = await self._admit(request, role, self.progress_sink, SpanKind.SERVER)
        return self._count(answer, request.cmd, started, admitted=True)

    async def execute(self, request: ApiRequest, role: Role) -> ApiResult | ApiError:
        """Run a request that did not arrive over the wire but was authorised by the caller
        earlier (a scheduled job); routed and counted like any other, its span the root of
        a trace of its own, linked to ``request.trace`` (the call that scheduled it)."""
        self.stats.received += 1
        started = perf_counter_ns() if self.request_log.rate or self.observer is not None else 0
        self.stats.in_flight += 1
        try:
            if self.tracing.tracer() is None:
                answer = await self._run(request, role)
            else:
                span, token = self.tracing.start_serving(request.cmd, request.trace, kind=SpanKind.INTERNAL,
                                                         service=self.service, job=True)
                outcome = "interrupted"
                try:
                    answer = await self._run(request, role)
                    outcome = _outcome(answer)
                finally:
                    end(span, token, outcome)
        finally:
            self.stats.in_flight -= 1
        return self._count(answer, request.cmd, started, admitted=True)

    def _count(self, answer: ApiResult | ApiError, cmd: str, started: int, *, admitted: bool = False
               ) -> ApiResult | ApiError:
        """Count the answer; with ``started`` (``perf_counter_ns()`` at receipt, 0: not
        timed), one reading of the clock feeds both the observer (admitted requests only)
        and the request log."""
        if started:
            elapsed_ns = perf_counter_ns() - started
            if admitted and self.observer is not None:
                self.observer(cmd, answer, elapsed_ns / 1e9)
            if self.request_log.rate:
                self.request_log.finished(cmd, answer.to, _outcome(answer), elapsed_ns)
        if isinstance(answer, ApiResult):
            self.stats.answered += 1
        elif answer.code == "forbidden":
            self.stats.forbidden += 1
        elif answer.code == "expired":
            self.stats.expired += 1
        else:
            self.stats.failed += 1
        return answer

    async def serve(self, request: ApiRequest, role: Role,
                    progress: Callable[[str, str, str], None] | None = None) -> ApiResult | ApiError:
        """Serve a request from another front-end (HTTP) that authenticated its caller itself
        and gives its role: from there on, the life cycle of a request that came over XMPP
        (shutdown, deadline, per-caller limit, routing, the same answers), counted alike.
        ``progress`` gets the handler's progress reports, as ``progress_sink`` does for XMPP.
        Its span is ``INTERNAL``, a child of the span current here (the HTTP server's)."""
        self.stats.received += 1
        started = perf_counter_ns() if self.request_log.rate or self.observer is not None else 0
        answer = await self._admit(request, role, progress, SpanKind.INTERNAL)
        return self._count(answer, request.cmd, started, admitted=True)

    async def _admit(self, request: ApiRequest, role: Role, sink: Callable[[str, str, str], None] | None,
                     kind: SpanKind) -> ApiResult | ApiError:
        """``sink``: where ``specs.progress`` reports go (None: nowhere). The handler runs
        inside the request's span (when tracing is on, or the caller sent a trace context)."""
        if request.trace is None and self.tracing.tracer() is None:
            return await self._gate(request, role, sink)
        span, token = self.tracing.start_serving(request.cmd, request.trace, kind=kind, service=self.service,
                                                 inherit=kind is SpanKind.INTERNAL)
        outcome = "interrupted"  # cancelled: the worker shut down, or the caller gave up
        try:
            answer = await self._gate(request, role, sink)
            outcome = _outcome(answer)
        finally:
            end(span, token, outcome)
        return answer

    async def _gate(self, request: ApiRequest, role: Role,
                    sink: Callable[[str, str, str], None] | None) -> ApiResult | ApiError:
        iq_id, sender = request.id, request.sender
        if not self.accepting:
            return ApiError(iq_id, sender, "unavailable", "the worker is shutting down")
        if request.expired():
            if (dropped := self._log_limit.allow("expired")) is not None:
                log.info("dropped expired %r (%s) from %s%s", request.cmd, iq_id, sender, suppressed_note(dropped))
            return ApiError(iq_id, sender, "expired", "the request's deadline passed before it could run")
        # One account flooding us must not starve the others (the owner's calls get through):
        # the owner is never limited, everyone else per bare JID.
        caller = bare_jid(request.sender)
        running = self._per_caller.get(caller, 0)
        if self.max_per_caller and role is not Role.OWNER and running >= self.max_per_caller:
            return ApiError(iq_id, sender, "busy", f"you already have {running} requests running here; retry later")
        self._per_caller[caller] = running + 1
        self.stats.in_flight += 1
        try:
            return await self._run(request, role, sink)
        finally:
            self.stats.in_flight -= 1
            left = self._per_caller[caller] - 1
            if left:
                self._per_caller[caller] = left
            else:
                del self._per_caller[caller]

    async def _run(self, request: ApiRequest, role: Role,
                   sink: Callable[[str, str, str], None] | None = None) -> ApiResult | ApiError:
        if sink is None:
            return await self._run_specs(request, role, None)
        progress = RequestProgress(sink, request.sender, request.id)
        try:
            return await self._run_specs(request, role, progress)
        finally:
            progress.close()

    async def _run_specs(self, request: ApiRequest, role: Role, progress: RequestProgress | None) -> ApiResult | ApiError:
        specs = APISpecs(
            cmd=request.cmd,
            body=request.body,
            role=role.value,
            jid=request.sender,
            id=request.id,
            uid=bare_jid(request.sender),
            resource=resource_of(request.sender),
            deadline_ms=request.deadline_ms,
            app=request.app,
            _progress=progress,
        )
        command = self.commands.get(request.cmd)
        if command is not None and not command.allows(role):
            if (dropped := self._log_limit.allow("forbidden")) is not None:
                log.warning("refused %r from %s: it needs role %s%s", request.cmd, request.sender, command.access,
                            suppressed_note(dropped))
            return ApiError(request.id, request.sender, "forbidden", _NOT_YOURS)
        deadline: asyncio.Timeout | None = None
        try:
            # a typed command's body is checked here: a bad one raises ProtocolError (bad-request)
            call = command.call(specs) if command is not None else self._route(specs)
            if type(call) is not CoroutineType:  # some other awaitable: no first step of ours
                deadline = asyncio.timeout(request.remaining_s())
                async with deadline:
                    result = await call
            else:
                # Run the handler up to its first wait right here: most return without
                # waiting, and need no deadline timer. One that waits continues under it.
                try:
                    yielded = call.send(None)
                except StopIteration as done:
                    result = done.value
                else:
                    rest = Resumed(call, yielded)
                    deadline = asyncio.timeout(request.remaining_s())
                    async with deadline:
                        result = await rest
        except ProtocolError as exc:  # a handler's deliberate refusal, with its code
            return ApiError(request.id, request.sender, exc.code, exc.message)
        except TimeoutError as exc:
            if deadline is None or not deadline.expired():  # the handler's own timeout, not our deadline
                return self._handler_error(request, role, exc)
            log.warning("%r (%s) from %s ran past its deadline and was cancelled", request.cmd, request.id, request.sender)
            return ApiError(request.id, request.sender, "expired", "the request's deadline passed while it ran")
        except Exception as exc:
            return self._handler_error(request, role, exc)
        except asyncio.CancelledError as exc:
            if _cancel_requested():
                raise  # our task was cancelled (the worker's shutdown, or whoever awaits us): not an answer
            return self._handler_error(request, role, exc)  # raised by the handler, or a future it awaited
        except GeneratorExit:
            raise  # the coroutine is being closed: it must not go on to answer
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: the handler's, not the worker's
            return self._handler_error(request, role, exc)
        if result is _NOT_TAKEN:
            return ApiError(request.id, request.sender, "unknown-command", f"unknown command {request.cmd!r}")
        answer = encode_result(request, result or {}, max_payload=self.max_payload)
        if isinstance(answer, ApiError) and (dropped := self._log_limit.allow("bad-result")) is not None:
            log.warning("handler for %r returned a result we cannot send (%s: %s; request %s from %s)%s",
                        request.cmd, answer.code, answer.message, request.id, bare_jid(request.sender),
                        suppressed_note(dropped))
        return answer

    async def _route(self, specs: APISpecs) -> Any:
        """No command registered under this name: ``onapi``, then the built-in fallback;
        ``_NOT_TAKEN`` when neither exists."""
        fallback = self.fallbacks.get(specs.cmd)
        if self.onapi is None:
            return _NOT_TAKEN if fallback is None else await fallback(specs)
        result = await self.onapi(specs)
        if not result and fallback is not None:
            result = await fallback(specs)
        return result

    def _handler_error(self, request: ApiRequest, role: Role, exc: BaseException) -> ApiError:
        """The ``handler-error`` answer for a handler that raised ``exc``, logged once at ERROR.

        A handler runs on the worker's behalf, so nothing it raises may end the worker or be
        mistaken for the worker's own doing: ``SystemExit``/``KeyboardInterrupt`` are answered
        like any error (``App.stop()`` is how a handler stops the worker), and a
        ``CancelledError`` the worker did not cause says so instead of ``unavailable``.
        """
        name = type(exc).__name__
        if isinstance(exc, asyncio.CancelledError):
            log.error("handler for %r was cancelled, not by the worker (request %s from %s)",
                      request.cmd, request.id, request.sender, exc_info=exc)
            detail = f"the handler was cancelled ({name})"  # our words: nothing of the handler's to hide
        else:
            if isinstance(exc, Exception):
                log.error("handler for %r failed (request %s from %s)", request.cmd, request.id, request.sender,
                          exc_info=exc)
            else:
                log.error("handler for %r raised %s (request %s from %s); answered as an error, the worker keeps "
                          "running (App.stop() stops it)", request.cmd, name, request.id, request.sender, exc_info=exc)
            # strangers learn that it failed, not why
            detail = name if role is Role.USER else f"{name}: {exc}"
        return ApiError(request.id, request.sender, "handler-error", f"{request.cmd!r} failed: {detail}")

    def message(
        self,
        sender: str,
        own_full_jid: str,
        text: str,
        reply: Callable[[str, str | dict[str, Any]], None],
        *,
        channel: str | None = None,
    ) -> MessageSpecs | None:
        """The ``MessageSpecs`` for a chat message (in ``channel``, when it came through one),
        or None if the sender may not reach us. ``sender`` is the real JID, which for a
        channel message is the occupant's account when the room shows it."""
        role = self.policy.role_of(sender)
        if role is None:
            if (dropped := self._log_limit.allow("message")) is not None:
                log.info("ignored a message from %s: not allowed%s", sender, suppressed_note(dropped))
            return None
        body: str | dict[str, Any] | list[Any] = text
        if text[:1] in ("{", "["):  # QE's bodies are a dict or a list; other text stays text
            try:
                doc = json.loads(text)
            except (ValueError, RecursionError):
                doc = None
            if isinstance(doc, (dict, list)):
                body = doc
        return MessageSpecs(
            fromjid=sender,
            body=body,
            role=role.value,
            uid=bare_jid(sender),
            resource=resource_of(sender),
            itsme=sender == own_full_jid,
            itsbro=bare_jid(sender) == self.policy.own,
            channel=channel,
            _reply=reply,
        )
