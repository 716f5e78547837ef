"""Calling workers: ``call()`` for one-off calls, ``Client`` for many, ``api_call`` for both.

A call carries a deadline equal to its timeout, so a worker that receives it late (after a
reconnect, or from a server queue) refuses it instead of doing work nobody waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from ..observability.tracing import Tracing, end
from .access import bare_jid
from .config import WorkerConfig, load_config
from .errors import CallError, CallTimeout, RemoteError
from .protocol import Progress, ProtocolError, decode_progress, decode_result, encode_request, now_ms
from .serial import serial_generator
from .services import ServiceFinder
from .transport import Transport
from .xmpp import XmppTransport

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["Caller", "Client", "ExecModifier", "api_call", "call", "random_resource", "wait_answering"]

log = logging.getLogger(__name__)


# -- exec_modifier= (daffi's word): a call carried out otherwise than once, now -----------------

_Handle = TypeVar("_Handle")
_Handle_co = TypeVar("_Handle_co", covariant=True)


class Caller(Protocol):
    """What calls a worker and returns its dict: ``Client`` and ``App``."""

    async def call(self, jid: str, cmd: str, body: dict[str, Any] | None = None, *,
                   timeout: float = 10.0) -> dict[str, Any]: ...


class ExecModifier(Protocol[_Handle_co]):
    """What ``exec_modifier=`` takes (``Client.call``, ``App.call``, ``App.api``): it carries
    the call out itself, through ``caller``, and returns what stands for it. The one there
    is: ``PERIOD`` (libs.scheduling, re-exported here), which has the worker run the command
    on a schedule and returns the job's ``ScheduledTask``. The bridge knows it only by this
    shape: scheduling builds on the bridge, not the reverse."""

    async def submit(self, caller: Caller, jid: str, cmd: str, body: dict[str, Any] | None, *,
                     timeout: float) -> _Handle_co: ...


def random_resource(prefix: str = "client") -> str:
    return f"{prefix}_{serial_generator(8)}"


async def api_call(
    transport: Transport,
    jid: str,
    cmd: str,
    body: dict[str, Any] | None = None,
    *,
    timeout: float = 10.0,
    max_payload: int | None = None,
    app: str | None = None,
    on_progress: Callable[[Progress], object] | None = None,
    tracing: Tracing | None = None,
) -> dict[str, Any]:
    """Call ``cmd`` on the worker at full JID ``jid`` over an existing transport.

    Returns the worker's dict. Raises ``ValueError`` for a bad cmd/body (nothing sent),
    ``RemoteError`` (the worker said no: ``.code`` tells why), ``CallTimeout``,
    ``NotConnected`` or ``AuthenticationFailed``. The call is a ``CLIENT`` span of
    ``tracing`` (default: OpenTelemetry's global provider), and the request carries the
    current trace context either way (docs/operations.md, Tracing).
    """
    span, trace = (tracing or _TRACING).start_call(cmd, jid)
    if span is None:  # no spans here; a context our handler received goes on
        return await _call(transport, jid, cmd, body, timeout, max_payload, app, on_progress, trace)
    outcome = "interrupted"  # cancelled: the caller gave up
    try:
        result = await _call(transport, jid, cmd, body, timeout, max_payload, app, on_progress, trace)
        outcome = "ok"
        return result
    except CallError as exc:
        outcome = exc.code
        raise
    except ValueError:
        outcome = "bad-request"
        raise
    finally:
        end(span, None, outcome)


_TRACING = Tracing()  # OpenTelemetry's global provider, for api_call without one


async def _call(transport: Transport, jid: str, cmd: str, body: dict[str, Any] | None, timeout: float,
                max_payload: int | None, app: str | None, on_progress: Callable[[Progress], object] | None,
                trace: dict[str, str] | None) -> dict[str, Any]:
    node, _, rest = jid.partition("@")
    if not node or not rest or " " in jid or rest.startswith("/"):
        raise ValueError(f"{jid!r} is not a JID: expected user@domain/resource")
    if "/" not in rest:
        raise ValueError(f"{jid!r} is a bare JID: address the worker's full JID, e.g. {jid}/python")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError("timeout must be a positive number of seconds")
    kwargs = {} if max_payload is None else {"max_payload": max_payload}
    try:
        text = encode_request(cmd, body, deadline_ms=now_ms() + int(timeout * 1000), app=app, trace=trace,
                              **kwargs)
    except ProtocolError as exc:
        raise ValueError(exc.message) from None
    try:
        answer = await transport.request(jid, text, timeout, _progress_callback(jid, on_progress))
    except RemoteError as exc:
        if exc.code == "expired":  # the worker gave up at our deadline: for us, a timeout
            raise CallTimeout(f"{jid} did not finish {cmd!r} within {timeout:g} s") from None
        raise
    try:
        return decode_result(answer)
    except ProtocolError as exc:
        raise RemoteError(exc.code, exc.message) from None


def _progress_callback(jid: str, on_progress: Callable[[Progress], object] | None) -> Callable[[str], None] | None:
    if on_progress is None:
        return None

    def received(payload: str) -> None:
        progress = decode_progress(payload)
        if progress is None:
            return  # a peer's malformed report: ignored
        try:
            on_progress(progress)
        except Exception:
            log.exception("on_progress failed on a report from %s", jid)

    return received


class Client:
    """A logged-in caller: ``async with Client() as c: await c.call(jid, "ping")``.

    Logs in with the ``QE_*`` configuration under a random resource, so it never takes over
    a worker's resource; or uses ``transport`` (e.g. ``MemoryNetwork().transport(...)``).
    ``tracer_provider``: where its call spans go (default: OpenTelemetry's global provider).
    """

    def __init__(self, config: WorkerConfig | None = None, *, resource: str | None = None,
                 connect_timeout: float = 10.0, transport: Transport | None = None,
                 tracer_provider: TracerProvider | None = None) -> None:
        self.tracing = Tracing(tracer_provider)
        """Where this client's call spans go: ``tracer_provider``, else OpenTelemetry's global one."""
        self.config = config or (transport.config if transport is not None else load_config())
        self.connect_timeout = connect_timeout
        self.transport: Transport = transport or XmppTransport(
            self.config, resource or random_resource(), keepalive=0, fail_fast=True)
        self._finder = ServiceFinder(self.transport, self.config.rooms_domain, self.transport.jid)
        self.transport.on_occupant = self._finder.occupant

    async def __aenter__(self) -> Client:
        self.transport.start()
        try:
            await self.transport.wait_online(self.connect_timeout)
        except BaseException:
            await self.transport.close(1.0)
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.transport.close(2.0)

    @overload
    async def call(self, jid: str, cmd: str, body: dict[str, Any] | None = None, *,
                   timeout: float = 10.0, exec_modifier: None = None,
                   on_progress: Callable[[Progress], object] | None = None) -> dict[str, Any]: ...
    @overload
    async def call(self, jid: str, cmd: str, body: dict[str, Any] | None = None, *,
                   timeout: float = 10.0, exec_modifier: ExecModifier[_Handle],
                   on_progress: Callable[[Progress], object] | None = None) -> _Handle: ...
    async def call(self, jid: str, cmd: str, body: dict[str, Any] | None = None, *,
                   timeout: float = 10.0, exec_modifier: ExecModifier[Any] | None = None,
                   on_progress: Callable[[Progress], object] | None = None) -> Any:
        """Call ``cmd`` on the worker at full JID ``jid``: its dict, or ``CallError``s (see
        ``api_call``). ``on_progress(Progress)`` is called for each progress report the
        handler sends (``await specs.progress(...)``); cancelling the task that awaits this
        tells the worker, which cancels the handler. With ``exec_modifier=PERIOD(...)`` the
        worker (it needs a ``JobScheduler``) runs ``cmd`` on that schedule instead, and this
        returns the job's ``ScheduledTask``, whose ``cancel()`` cancels every remaining run."""
        if exec_modifier is not None:
            return await exec_modifier.submit(self, jid, cmd, body, timeout=timeout)
        return await api_call(self.transport, jid, cmd, body, timeout=timeout,
                              max_payload=self.config.max_payload, on_progress=on_progress, tracing=self.tracing)

    async def find(self, app: str, *, timeout: float = 10.0) -> list[str]:
        """Full JIDs of the online workers of service ``app``, least loaded first."""
        return await self._finder.find(app, timeout)

    async def call_service(self, app: str, cmd: str, body: dict[str, Any] | None = None, *,
                           timeout: float = 10.0, resource: str | None = None) -> dict[str, Any]:
        """Call ``cmd`` on the least loaded worker of service ``app``; another worker only when
        the first provably never started it (``unavailable``, ``busy``). Raises ``CallError``s,
        and ``LookupError`` when the service has no worker online."""
        return await self._finder.call(app, lambda jid, left: self.call(jid, cmd, body, timeout=left),
                                       timeout, resource)


async def call(jid: str, cmd: str, body: dict[str, Any] | None = None, *, timeout: float = 10.0,
               config: WorkerConfig | None = None) -> dict[str, Any]:
    """One call on a fresh connection (log in, call, log out). For many calls use ``Client``."""
    async with Client(config, connect_timeout=timeout) as client:
        return await client.call(jid, cmd, body, timeout=timeout)


# wait_answering's wait between pings: a caller of the worker's own account is woken by the
# worker's presence (this only bounds a lost one); any other caller gets no presence and polls
_RETRY_OWN_ACCOUNT_S = 2.0
_RETRY_S = 0.05


async def wait_answering(client: Client, jid: str, timeout: float) -> dict[str, Any]:
    """Ping ``jid`` until it answers (a worker just started in another process needs a
    moment to log in; until then the server says ``unavailable``) and return the pong.

    Between pings it waits for the worker's available presence, which the server sends the
    moment the worker logs in to the other sessions of the worker's own account (and to
    subscribers). Other callers never get that presence, so they ping again every 50 ms;
    the worker's own account only after 2 s without it.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    own_account = bare_jid(client.transport.jid) == bare_jid(jid)
    arrived = asyncio.Event()
    stop_watching = client.transport.watch_available(jid, arrived.set)
    try:
        while True:
            arrived.clear()  # before the ping: presence that comes after it wakes the wait below
            try:
                return await client.call(jid, "ping", timeout=max(0.5, end - loop.time()))
            except RemoteError as exc:
                # interrupted: a ping queued for the session a restarted worker left behind,
                # bounced when the new one took the resource (a ping is safe to repeat)
                if exc.code not in ("unavailable", "interrupted") or loop.time() > end:
                    raise
            wait = min(_RETRY_OWN_ACCOUNT_S if own_account else _RETRY_S, max(0.0, end - loop.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), wait)
    finally:
        stop_watching()
