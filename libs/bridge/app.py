"""``App``: one worker = one XMPP resource answering API calls and chat messages.

Compatible with QE python-worker's legacy bridge (``App.xmpp.onapi``, ``App.xmpp.msgreceiver``,
``App.api``, ``App.sendtojid``, channels) and its Nexus decorators (``App.nexus``), with these
deliberate differences (docs/compat.md has the full table):

- the constructor never blocks and needs no running loop: it connects once the loop runs;
  what a script does before that (send, subscribe) is queued, and ``App.find`` called
  before the loop runs runs it until it has the answer;
- ``public`` defaults to False: a worker answers only its own account and ``QE_ALLOW``;
- callback errors are logged with the request id and answered as ``handler-error``; that
  includes ``SystemExit``/``KeyboardInterrupt`` and a handler's own ``CancelledError``, so
  that no handler ends the worker or makes it look shut down (``App.stop()`` stops it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Generator
from importlib import metadata
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, overload

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.trace import TracerProvider

    from ..scheduling import JobScheduler

from .. import _runtime
from ..observability.metrics import MetricsServer, WorkerMetrics
from ..observability.tracing import Tracing
from ..timers import timer_stats
from . import qewire
from ._blocked import BlockedWatch
from ._eager import start_eager
from ._requestlog import RequestLog
from .access import AccessPolicy, Role, check_resource
from .client import ExecModifier, api_call
from .config import ConfigError, WorkerConfig, load_config
from .dispatch import ApiHandler, Dispatcher, MessageHandler
from .errors import CallError, RemoteError
from .nexus import Nexus
from .protocol import (
    ApiError,
    ApiResult,
    Progress,
    ProtocolError,
    decode_request,
    decode_result,
    encode_request,
    xml_safe,
)
from .rest import DEFAULT_PORT, RestServer
from .services import ServiceFinder, channel_room, check_service, service_room
from .specs import APISpecs, MessageSpecs
from .transport import Message, Transport
from .xmpp import XmppTransport

__all__ = ["App", "FindResult", "OutOfScope", "version"]

_COMPAT_PAGE = "docs/compat.md"
_OUT_OF_SCOPE = {
    "udb": "QE's hosted MongoDB",
    "xdb": "QE's hosted MongoDB",
    "uploader": "QE's CDN uploader",
    "cdn": "QE's CDN uploader",
    "register": "QE's cloud registration",
    "sync": "QE's cloud library sync",
}
_ANNOUNCE_EVERY_S = 1.0  # how often a changed load is announced in the service room
_BUILT_INS = {  # the fallbacks' descriptions in `commands` (schema {}); only metrics reads its body
    "ping": "QE's liveness check: {\"pong\": true, \"environment\": \"python\"}",
    "info": "this worker's JID, version, uptime, commands and request counters",
    "commands": "the commands you may run here, with their descriptions and arguments (JSON Schema)",
    "metrics": "this worker's Prometheus metrics: {\"text\": <text exposition>}; with {\"format\": \"json\"} "
               "the same numbers as JSON (owner and partners only)",
}
_BUILT_IN_ACCESS = {"metrics": Role.PARTNER}  # the others: anyone the worker answers
_H = TypeVar("_H", bound=Callable[..., Awaitable[Any]])


_Handle = TypeVar("_Handle")  # what an exec_modifier returns (PERIOD: a ScheduledTask)


class OutOfScope(AttributeError):
    """A QE name for a hosted-platform feature that qe-worker does not provide."""

log = logging.getLogger(__name__)


@functools.cache
def version() -> str:
    """The installed qe-worker's version, read once: ``importlib.metadata`` scans the installed
    distributions on every call (~0.4 ms), and ``info``/``metrics`` answer it on every poll."""
    try:
        return metadata.version("qe-worker")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


class _XmppHooks:
    """``App.xmpp``: where QE scripts assign ``onapi`` and ``msgreceiver``."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        self.msgreceiver: MessageHandler | None = None

    @property
    def onapi(self) -> ApiHandler | None:
        return self._dispatcher.onapi

    @onapi.setter
    def onapi(self, handler: ApiHandler | None) -> None:
        if handler is not None and not inspect.iscoroutinefunction(handler):
            raise TypeError("App.xmpp.onapi must be an async function: async def api(specs): ...")
        self._dispatcher.onapi = handler


def _load_config() -> WorkerConfig:
    config = _runtime.current_config()
    if config is not None:
        return config  # type: ignore[no-any-return]
    try:
        return load_config()
    except ConfigError as exc:
        print(f"qe-worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


class App:
    """A worker. Create it at import time or inside a coroutine; it joins the server as
    ``QE_JID/resource`` as soon as the main loop runs, and reconnects by itself.

    Handlers (``xmpp.onapi``, ``xmpp.msgreceiver``, ``command()``) run on the main loop.
    ``image`` is accepted for QE compatibility and ignored. ``exit_on_fatal`` ends the
    process when the server refuses the login (tests turn it off). ``handle_signals``
    (default: only when created before the loop runs) makes SIGINT/SIGTERM shut down
    gracefully and stop the loop. ``transport`` replaces the XMPP connection, e.g. with
    ``MemoryNetwork().transport(...)`` for tests without a server; the worker then takes its
    JID and configuration from it. ``tracer_provider``: where its OpenTelemetry spans go
    (default: the global provider, if the application installed one).

    ``join_service=False``: belong to no service (join no service room; ``App.find`` and
    ``App.api(app=...)`` elsewhere do not see this worker, which can still call services).
    ``managed=True``: another object runs this worker's life cycle (``WorkerGroup``): the
    constructor does not start it (``start()`` does), and it has no shutdown hook, signal
    handlers, metrics server or loop-blocked detector of its own; a refused login never
    ends the process. ``presence=False``: send no available presence to the server (calls
    still arrive; see ``XmppTransport``).
    """

    def __init__(
        self,
        *,
        resource: str = "python",
        image: str | None = None,
        public: bool = False,
        rest: bool | int = False,
        app: str | None = None,
        accept_delayed: bool | None = None,
        config: WorkerConfig | None = None,
        keepalive: float | None = None,
        exit_on_fatal: bool = True,
        handle_signals: bool | None = None,
        transport: Transport | None = None,
        tracer_provider: TracerProvider | None = None,
        join_service: bool = True,
        managed: bool = False,
        presence: bool = True,
    ) -> None:
        if transport is None:  # a module hosted by another program (the test kit) gets the host's
            transport = _runtime.hosted_transport(resource)
        self.config = config or (transport.config if transport is not None else _load_config())
        # an injected transport has its JID already; else RESOURCE (config) wins over the argument
        self.resource = check_resource(transport.jid.partition("/")[2] if transport is not None
                                       else self.config.resource or resource)
        self.public = public
        self.image = image
        # the service this worker belongs to (App.find / App.api(app=...) find it by that name)
        self.app: str | None = app or self.config.app or self.resource
        try:
            check_service(self.app)
        except ValueError:
            if app or self.config.app:
                raise
            self.app = None  # a resource that cannot name a service: announce nothing
        if not join_service:
            self.app = None
        self.managed = managed
        self._presence = presence
        self.accept_delayed = self.config.accept_delayed if accept_delayed is None else accept_delayed
        self.policy = AccessPolicy.create(self.config.jid, public=public, allow=self.config.allow)
        self.dispatcher = Dispatcher(self.policy, max_payload=self.config.max_payload,
                                     max_per_caller=self.config.max_per_caller)
        self.dispatcher.request_log = RequestLog(self.config.request_log)
        self.dispatcher.fallbacks.update({"ping": self._ping, "info": self._info, "commands": self._commands,
                                          "metrics": self._metrics})
        self.scheduler: JobScheduler | None = None  # set by JobScheduler(self)
        self.metrics = WorkerMetrics(self)
        """This worker's Prometheus metrics (``metrics.registry``, ``metrics.render()``)."""
        if self.config.metrics:  # QE_METRICS=off: nothing recorded per request
            self.dispatcher.observer = self.metrics.observe
        self.dispatcher.tracing = self.tracing = Tracing(tracer_provider)
        """Where this worker's spans go (docs/operations.md, Tracing): ``tracer_provider``,
        else OpenTelemetry's global one; no provider installed, no spans."""
        self.dispatcher.service = self.app
        self.xmpp = _XmppHooks(self.dispatcher)
        self.nexus = Nexus(self)
        self.jid = f"{self.config.jid}/{self.resource}"
        self._channels: dict[str, str] = {}  # room JID -> channel name as subscribed
        self._finder: ServiceFinder | None = None
        self._announced: int | None = None
        self._announcer: asyncio.TimerHandle | None = None
        self.started_at = time.time()
        self._keepalive = self.config.keepalive if keepalive is None else keepalive
        self._exit_on_fatal = exit_on_fatal and not managed
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running: dict[tuple[str, str], asyncio.Task[Any]] = {}  # (caller, request id) -> its task
        self._cancelled_by_caller: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._stopping: asyncio.Task[None] | None = None
        self._on_start: list[Callable[[], object]] = []
        self._on_close: list[Callable[[float], Awaitable[None]]] = []
        self.transport: Transport | None = None
        self._given_transport = transport
        self._started = asyncio.Event()
        self.loop = _runtime.main_loop()
        self._rest: RestServer | None = None
        if rest:
            if rest is True:
                port = DEFAULT_PORT
            elif type(rest) is int and 0 < rest < 65536:
                port = rest
            else:
                raise ValueError(f"App(rest=...) takes True (port {DEFAULT_PORT}) or a port number 1-65535, "
                                 f"not {rest!r}")
            try:
                self._rest = RestServer(self, port)
            except ConfigError as exc:
                print(f"qe-worker: {exc}", file=sys.stderr)
                raise SystemExit(2) from None
            self.on_close(self._rest.close)
        self._metrics_server: MetricsServer | None = None
        if self._rest is None and self.config.metrics_port and not managed:
            self._metrics_server = MetricsServer(self.metrics, self.config.metrics_host, self.config.metrics_port)
            self.on_close(self._metrics_server.close)
        # Script style (App at import time, then run_forever): we own SIGINT/SIGTERM.
        # Inside a running loop the program around us decides, unless asked.
        self._handle_signals = not self.loop.is_running() if handle_signals is None else handle_signals
        self._handle_signals = self._handle_signals and not managed
        if not managed:
            self.loop.call_soon_threadsafe(self._start)

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start a ``managed`` worker (connect once the loop runs; others start by themselves).
        Returns at once, from any thread; a second call changes nothing."""
        self.loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        if self.transport is not None or self._closing:
            return  # started already, or closed before the loop ran
        transport = self._given_transport or XmppTransport(self.config, self.resource, policy=self.policy,
                                                           keepalive=self._keepalive, presence=self._presence)
        transport.on_request = self._on_request
        transport.on_message = self._on_message
        transport.on_fatal = self._on_fatal
        transport.on_cancel = self._on_cancel
        self.dispatcher.progress_sink = transport.send_progress
        transport.describe = self._describe
        transport.run_command = self._run_command
        self._finder = ServiceFinder(transport, self.config.rooms_domain, self.jid)
        transport.on_occupant = self._finder.occupant
        self.transport = transport
        transport.start()
        for room in self._channels:
            transport.join(room, self.jid)
        if self.app is not None:
            self._announce()
        if self._rest is not None:
            self._rest.start()
        if self._metrics_server is not None:
            self._spawn(self._serve_metrics(self._metrics_server))
        if self.config.blocked_ms and not self.managed:  # QE_BLOCKED_MS=0: off
            self._start_blocked_watch(self.config.blocked_ms)
        if not self.managed:
            _runtime.add_shutdown_hook(self.close)
        if self._handle_signals:
            _runtime.install_signal_handlers(self.loop, lambda: self.config.shutdown_timeout)
        log.info("worker %s starting (public=%s, allow=%s)", self.jid, self.public,
                 ",".join(sorted(self.config.allow)) or "-")
        self._started.set()
        for hook in self._on_start:
            hook()

    async def _serve_metrics(self, server: MetricsServer) -> None:
        try:
            await server.start()
        except OSError as exc:
            self._on_fatal(f"QE_METRICS_PORT: cannot listen on {server.host}:{server.port} ({exc.strerror})")

    def _start_blocked_watch(self, threshold_ms: int) -> None:
        watch = BlockedWatch(self.loop, threshold_ms)
        watch.start()

        async def stop(_timeout: float) -> None:
            watch.stop()

        self.on_close(stop)

    def on_close(self, hook: Callable[[float], Awaitable[None]]) -> None:
        """Await ``hook(timeout)`` first thing in ``close()`` (stop what feeds us work)."""
        self._on_close.append(hook)

    def on_start(self, hook: Callable[[], object]) -> None:
        """Call ``hook()`` on the main loop once the worker starts (at once if it has)."""
        if self.transport is not None:
            self.loop.call_soon_threadsafe(hook)
        else:
            self._on_start.append(hook)

    def _on_fatal(self, reason: str) -> None:
        if self._exit_on_fatal:
            _runtime.fail(reason)

    async def _transport(self) -> Transport:
        await self._started.wait()  # set by _start, scheduled on this loop by __init__
        assert self.transport is not None
        return self.transport

    async def wait_online(self, timeout: float = 10.0) -> None:
        """Wait until the worker is logged in (useful in tests and scripts)."""
        await (await self._transport()).wait_online(timeout)

    @property
    def online(self) -> bool:
        return self.transport is not None and self.transport.online

    async def close(self, timeout: float | None = None) -> None:
        """Leave within ``timeout`` s (default ``QE_SHUTDOWN_TIMEOUT``): stop taking requests
        and stop what feeds us work (``on_close`` hooks), let running requests finish,
        cancel those still running near the end (their callers get ``interrupted``), then
        leave the server (unavailable presence, end of stream)."""
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        end = self.loop.time() + timeout
        _runtime.remove_shutdown_hook(self.close)
        self._closing = True
        self.dispatcher.accepting = False
        if self._announcer is not None:
            self._announcer.cancel()
        if self._finder is not None and self.app is not None:
            self._finder.withdraw(self.app)  # callers stop choosing us before we drain
        hooks, self._on_close = self._on_close, []
        for hook in hooks:
            try:
                await hook(timeout * 0.3)
            except Exception:
                log.exception("close hook %r failed", hook)
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            grace = max(0.0, end - self.loop.time() - timeout * 0.3)
            log.info("waiting up to %.1f s for %d running request(s)", grace, len(pending))
            _done, still = await asyncio.wait(pending, timeout=grace) if grace else (set(), pending)
            for task in still:
                task.cancel()
            if still:
                log.warning("cancelled %d request(s) still running at shutdown", len(still))
                await asyncio.wait(still, timeout=timeout * 0.1)
        if self.transport is not None:
            await self.transport.close(max(0.5, end - self.loop.time()))

    def stop(self) -> None:
        """Stop the worker from code, as SIGTERM would: stop taking requests, let running
        ones finish within ``QE_SHUTDOWN_TIMEOUT`` (the caller's own included: a handler
        that calls ``stop()`` and returns gets its answer sent), stop timers and periodic
        tasks, leave the server, then stop the main loop, so that the script's
        ``run_forever()`` returns and the process exits 0 unless the script says otherwise.

        Returns at once; callable from any thread. This is the way for a handler to stop
        the worker: ``SystemExit`` or ``KeyboardInterrupt`` raised in a handler is answered
        ``handler-error`` and does not. In a program that runs the loop itself (``App``
        created inside ``asyncio.run()``, signals not handled by us) only this worker
        closes; the program decides when to end.
        """
        self.loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        if _runtime.request_stop(self.loop, self.config.shutdown_timeout, f"{self.jid}: App.stop() called"):
            return
        if self._stopping is None:
            log.info("%s: App.stop() called: closing this worker", self.jid)
            self._stopping = self.loop.create_task(self.close())

    # -- incoming -----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any] | None:
        # Run the request at once, inside this stanza's callback, up to its first real wait
        # (as an eager task; emulated on Python 3.11): a handler that never waits is answered
        # without another pass through the event loop. The task, if it is still running.
        task, running = start_eager(self.loop, coro)
        if not running:
            return None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_request(self, iq_id: str, sender: str, text: str | None, iq_type: str) -> None:
        task = self._spawn(self._serve(iq_id, sender, text, iq_type))
        if task is not None:  # still running: its caller may cancel it
            key = (sender, iq_id)
            self._running[key] = task
            task.add_done_callback(lambda _t: self._running.pop(key, None))

    def _on_cancel(self, sender: str, iq_id: str) -> None:
        """The caller of ``iq_id`` gave up (``task.cancel()``, Ctrl+C): stop its handler. Only
        the very caller (full JID) can; anyone else's cancel is ignored."""
        task = self._running.get((sender, iq_id))
        if task is None or task.done():
            return
        log.info("request %s: cancelled by its caller %s", iq_id, sender)
        self._cancelled_by_caller.add(task)
        task.add_done_callback(self._cancelled_by_caller.discard)
        task.cancel()

    async def _serve(self, iq_id: str, sender: str, text: str | None, iq_type: str) -> None:
        try:
            answer: ApiResult | ApiError = await self.dispatcher.handle(iq_id, sender, text, iq_type)
        except asyncio.CancelledError:
            # The dispatcher let it through: the request's task was cancelled. While we close,
            # that is close() giving up on it. Otherwise it was not the worker (which cancels
            # requests only there): the handler cancelled its own task
            # (asyncio.current_task().cancel()), and "the worker shut down" would be untrue.
            if self._closing:
                answer = ApiError(iq_id, sender, "interrupted", "the worker shut down before the request finished")
                if self.transport is not None:
                    self.transport.send_answer(answer)
                raise
            if asyncio.current_task() in self._cancelled_by_caller:
                self.dispatcher.stats.failed += 1
                answer = ApiError(iq_id, sender, "interrupted", "cancelled by its caller")
                if self.transport is not None:
                    self.transport.send_answer(answer)  # the IQ wants an answer, even if nobody waits
                return
            log.error("request %s from %s: its task was cancelled while the worker runs, not by the worker",
                      iq_id, sender, exc_info=True)
            self.dispatcher.stats.failed += 1
            answer = ApiError(iq_id, sender, "handler-error", "the handler was cancelled (CancelledError)")
        if self.transport is not None:
            self.transport.send_answer(answer)

    def _on_message(self, message: Message) -> None:
        """A chat or group-chat message: to the handler of its channel, or ``Direct``, else
        ``msgreceiver``. Stored messages (``<delay/>``: offline storage, room history) are
        old news and dropped, as QE does, unless the worker opts in for direct ones."""
        channel: str | None = None
        if message.room is not None:
            channel = self._channels.get(message.room)
            if channel is None or message.delayed:
                return  # a service room (no chat there), a room we left, or history
            handler = self.nexus.channels.get(message.room) or self.xmpp.msgreceiver
        else:
            if self.config.wire == "qe" and not message.delayed and self._qe_call(message):
                return
            if message.delayed and not self.accept_delayed:
                log.debug("message from %s dropped: stored while we were offline (QE_ACCEPT_DELAYED=on takes it)",
                          message.sender)
                return
            handler = self.nexus.direct or self.xmpp.msgreceiver
        specs = self.dispatcher.message(message.sender, self.jid, message.text, self._reply, channel=channel)
        if specs is None:
            return
        if handler is None:
            log.debug("message from %s dropped: no handler for %s", message.sender,
                      f"channel {channel!r}" if channel else "direct messages")
            return
        self._spawn(self._deliver(handler, specs))

    def _qe_call(self, message: Message) -> bool:
        """Whether ``message`` is a call in QE's chat wire format (``QE_WIRE=qe``); if so it
        is served through the same dispatch as IQ calls and answered the same way it came."""
        transport = self.transport
        assert transport is not None  # messages come from it
        try:
            call = qewire.decode(message.text, max_payload=self.config.max_payload)
        except qewire.QeWireError as exc:
            if exc.mid is not None:
                transport.send_message(message.sender, qewire.encode_error(exc.mid, exc.code, exc.message))
            else:
                log.info("ignored a malformed QE-format call from %s: %s", message.sender, exc.message)
            return True
        if call is None:
            return False
        self._spawn(self._serve_qe(message.sender, call))
        return True

    async def _serve_qe(self, sender: str, call: qewire.QeCall) -> None:
        try:
            text = encode_request(call.cmd, call.body, max_payload=self.config.max_payload)
        except (ValueError, ProtocolError) as exc:
            reply = qewire.encode_error(call.mid, getattr(exc, "code", "bad-request"), str(exc))
        else:
            try:
                answer = await self.dispatcher.handle(f"qe-{call.mid}", sender, text, "set")
            except asyncio.CancelledError:
                if self.transport is not None:  # close() gave up on it: say so, as _serve does
                    self.transport.send_message(sender, qewire.encode_error(
                        call.mid, "interrupted", "the worker shut down before the call finished"))
                raise
            if isinstance(answer, ApiResult):
                try:
                    reply = qewire.encode_reply(call.mid, decode_result(answer.payload),
                                                max_payload=self.config.max_payload)
                except qewire.QeWireError as exc:
                    reply = qewire.encode_error(call.mid, exc.code, exc.message)
            else:
                reply = qewire.encode_error(call.mid, answer.code, answer.message)
        if self.transport is not None:
            self.transport.send_message(sender, reply)

    async def _deliver(self, receiver: MessageHandler, specs: MessageSpecs) -> None:
        # As for requests (Dispatcher._handler_error, _serve): nothing the receiver raises
        # ends the worker; only close() cancelling it is a cancellation.
        try:
            await receiver(specs)
        except Exception:
            log.exception("msgreceiver failed on a message from %s", specs.fromjid)
        except asyncio.CancelledError:
            if self._closing:
                raise
            log.error("msgreceiver was cancelled, not by the worker, on a message from %s", specs.fromjid,
                      exc_info=True)
        except GeneratorExit:
            raise
        except BaseException as exc:  # SystemExit, KeyboardInterrupt
            log.error("msgreceiver raised %s on a message from %s; the worker keeps running (App.stop() stops it)",
                      type(exc).__name__, specs.fromjid, exc_info=True)

    def _reply(self, to: str, body: str | dict[str, Any]) -> None:
        self.sendtojid(to, body)

    # -- built-in commands (answer only when onapi did not) -----------------------------

    async def _ping(self, specs: APISpecs) -> dict[str, Any]:
        return {"pong": True, "environment": "python"}  # QE's answer

    async def _info(self, specs: APISpecs) -> dict[str, Any]:
        role = Role(specs.role)
        public = {"jid": self.jid, "version": version(), "public": self.public,
                  "commands": sorted(c["name"] for c in self.describe(role))}
        if not role.at_least(Role.PARTNER):
            return public  # a stranger of a public worker: no internals
        stats = self.dispatcher.stats
        transport = self.transport
        return {
            "jid": self.jid,
            "version": version(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "public": self.public,
            "commands": sorted(c["name"] for c in self.describe(Role(specs.role))),
            "onapi": self.dispatcher.onapi is not None,
            "requests": {
                "received": stats.received,
                "answered": stats.answered,
                "failed": stats.failed,
                "forbidden": stats.forbidden,
                "expired": stats.expired,
                "in_flight": stats.in_flight,
            },
            **(transport.stats() if transport else {"sessions": 0, "resumptions": 0}),
            "timers": [stats.as_dict() for stats in timer_stats()],
        }

    async def _metrics(self, specs: APISpecs) -> dict[str, Any]:
        if not Role(specs.role).at_least(Role.PARTNER):
            raise ProtocolError("forbidden", "you are not allowed to run this command")
        form = specs.body.get("format", "text") if isinstance(specs.body, dict) else "text"
        if form == "json":
            return self.metrics.snapshot(jobs=Role(specs.role).at_least(Role.OWNER))
        if form != "text":
            raise ProtocolError("bad-request", f"format must be \"text\" or \"json\", not {form!r}")
        return {"text": self.metrics.render().decode()}

    async def _commands(self, specs: APISpecs) -> dict[str, Any]:
        return {"commands": self.describe(Role(specs.role))}

    def describe(self, role: Role) -> list[dict[str, Any]]:
        """The commands a caller of ``role`` may run, by name: ``[{"name", "description",
        "access", "schema"}]``, registered ones and the built-ins they do not replace (not
        those only ``onapi`` knows). What ``commands`` answers and disco lists."""
        listed = self.dispatcher.commands.describe(role)
        registered = {c["name"] for c in listed}
        for name in self.dispatcher.fallbacks:
            access = _BUILT_IN_ACCESS.get(name, Role.USER)
            if name not in registered and role.at_least(access):
                listed.append({"name": name, "description": _BUILT_INS.get(name, ""), "access": access.value,
                               "schema": {}})
        return sorted(listed, key=lambda c: c["name"])

    def _describe(self, sender: str) -> list[dict[str, Any]] | None:
        """``Transport.describe``: what ``sender`` may run here, None when it may not call."""
        role = self.policy.role_of(sender)
        return None if role is None else self.describe(role)

    async def _run_command(self, sender: str, cmd: str, body: dict[str, Any],
                           on_progress: Callable[[str], None]) -> ApiResult | ApiError:
        """``Transport.run_command`` (XEP-0050 ad-hoc commands): ``cmd`` with ``body`` for
        ``sender``, through the same dispatch as an API call, with the role the access policy
        gives it (a stranger of a private worker: ``forbidden``, as its API calls)."""
        request_id = f"adhoc-{uuid.uuid4().hex}"
        role = self.policy.role_of(sender)
        if role is None:
            return ApiError(request_id, sender, "forbidden", "this worker is not public and you are not allowed")
        try:
            text = encode_request(cmd, body, max_payload=self.config.max_payload)
            request = decode_request(request_id, sender, text, max_payload=self.config.max_payload)
        except ProtocolError as exc:
            return ApiError(request_id, sender, exc.code, exc.message)
        except ValueError as exc:
            return ApiError(request_id, sender, "bad-request", str(exc))
        return await self.dispatcher.serve(request, role, lambda _to, _id, payload: on_progress(payload))

    # -- public API -----------------------------------------------------------------------

    @property
    def rest(self) -> FastAPI:
        """QE's ``App.rest``: the worker's FastAPI application (``@App.rest.get("/x")``),
        served inside the worker's loop when the worker was made with ``rest=True`` (port
        3000) or ``rest=<port>``."""
        if self._rest is None:
            raise RuntimeError("App.rest needs App(rest=True) (port 3000) or App(rest=<port>)")
        return self._rest.fastapi

    def command(self, name: str, *, description: str | None = None,
                access: Role | str | None = None) -> Callable[[_H], _H]:
        """Register an async function as the handler of command ``name`` (wins over ``onapi``;
        registering a name again replaces the handler).

        ``async def f(specs)`` (QE's) gets the ``APISpecs``; any other signature is typed:
        ``async def resize(width: int, height: int = 100, *, specs)`` is called with the
        body's values, checked against the annotations first (a bad body answers
        ``bad-request`` naming the field; see ``libs.bridge.commands``). ``description``
        (default: the docstring's first line) and the arguments' JSON Schema are listed by
        the ``commands`` built-in and XEP-0030 disco. ``access``: ``"owner"`` (only the
        worker's own account), ``"partner"`` (and ``QE_ALLOW``), ``"user"`` or None
        (whoever the worker admits); others are answered ``forbidden`` and do not see the
        command listed. ``TypeError``/``ValueError`` at once for a handler or name that
        cannot be a command.
        """

        def register(handler: _H) -> _H:
            self.dispatcher.commands.register(name, handler, description=description, access=access)
            return handler

        return register

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
        """Call another worker (full JID) and return its dict; raises ``CallError``s.
        ``on_progress(Progress)`` is called for each progress report the worker sends. With
        ``exec_modifier=PERIOD(...)``: the job's ``ScheduledTask`` (see ``api``)."""
        if exec_modifier is not None:
            return await exec_modifier.submit(self, jid, cmd, body, timeout=timeout)
        return await api_call(await self._transport(), jid, cmd, body, timeout=timeout,
                              max_payload=self.config.max_payload, app=self.app, on_progress=on_progress,
                              tracing=self.tracing)

    @overload
    async def api(self, app: str | None = None, cmd: str = "", body: dict[str, Any] | None = None,
                  jid: str | None = None, resource: str | None = None, timeout: float = 10.0, *,
                  exec_modifier: None = None, **_qe_extra: Any) -> dict[str, Any]: ...
    @overload
    async def api(self, app: str | None = None, cmd: str = "", body: dict[str, Any] | None = None,
                  jid: str | None = None, resource: str | None = None, timeout: float = 10.0, *,
                  exec_modifier: ExecModifier[_Handle], **_qe_extra: Any) -> _Handle | dict[str, Any]: ...
    async def api(self, app: str | None = None, cmd: str = "", body: dict[str, Any] | None = None,
                  jid: str | None = None, resource: str | None = None, timeout: float = 10.0, *,
                  exec_modifier: ExecModifier[Any] | None = None, **_qe_extra: Any) -> Any:
        """QE's caller API: never raises for a failed call, returns ``{"error": code,
        "message": ...}`` instead (``code`` is ``timeout``, ``not-connected``, ``no worker
        found`` or the worker's error code).

        ``jid=`` calls that worker; ``app=`` the least loaded worker of that service (with
        ``resource=`` too: the one with that resource), and another one only when the first
        provably never started the request (``unavailable``, ``busy``): a request never runs
        twice. A service whose last worker went less than 5 s ago (failover, a restart) is
        waited for, within ``timeout``, before ``no worker found``. ``resource=`` alone calls
        a sibling on our own account.

        ``exec_modifier=PERIOD(interval="5s")`` or ``PERIOD(at_time=[...])`` (daffi's words,
        ``from libs.bridge import PERIOD``): the worker runs ``cmd`` on that schedule instead
        of once (it needs a ``JobScheduler``; without one the answer is ``unknown-command``),
        and this returns the job's ``ScheduledTask``; ``task.cancel()`` cancels every
        remaining run. Failures are the same error dicts.
        """
        try:
            if jid is not None:
                return await self.call(jid, cmd, body, timeout=timeout, exec_modifier=exec_modifier)
            if app is not None:
                return await self._call_service(app, cmd, body, timeout, resource, exec_modifier)
            if resource is not None:
                return await self.call(f"{self.config.jid}/{resource}", cmd, body, timeout=timeout,
                                       exec_modifier=exec_modifier)
            return {"error": "no worker found", "message": "App.api needs app=, jid= (full JID) or resource="}
        except RemoteError as exc:  # its message is "code: text"; the code has a key of its own
            return {"error": exc.code, "message": exc.remote_message}
        except CallError as exc:
            return {"error": exc.code, "message": exc.message}
        except LookupError as exc:
            return {"error": "no worker found", "message": str(exc)}
        except ValueError as exc:
            return {"error": "bad-request", "message": str(exc)}

    async def _call_service(self, app: str, cmd: str, body: dict[str, Any] | None, timeout: float,
                            resource: str | None, exec_modifier: ExecModifier[Any] | None = None) -> Any:
        await self._transport()
        assert self._finder is not None

        async def call(jid: str, left: float) -> Any:  # a dict, or exec_modifier's handle
            return await self.call(jid, cmd, body, timeout=left, exec_modifier=exec_modifier)

        return await self._finder.call(app, call, timeout, resource)

    def find(self, app: str, timeout: float = 10.0) -> FindResult:
        """QE's ``App.find(app=...)``: ``{"code": 0, "jids": [...]}``, the full JIDs of the
        online workers of service ``app``, least loaded first (``{"code": -1, "msg": ...,
        "jids": []}`` when they cannot be found).

        Called before the loop runs (at module level, as QE's docs do), it runs the loop
        until it has the answer. Inside a coroutine, ``await App.find(...)``: without
        ``await`` it returns what this worker knows already, without waiting.
        """
        if not self.loop.is_running():
            return FindResult(self.loop.run_until_complete(self._find(app, timeout)), None)
        known: dict[str, Any] = {"code": 0, "jids": []}
        finder = self._finder
        if finder is not None:
            with contextlib.suppress(ValueError):
                known["jids"] = finder.directory.workers(service_room(app, self.config.rooms_domain))
        return FindResult(known, self._find(app, timeout))

    async def _find(self, app: str, timeout: float) -> dict[str, Any]:
        try:
            await self._transport()
            assert self._finder is not None
            return {"code": 0, "jids": await self._finder.find(app, timeout)}
        except (CallError, ValueError) as exc:
            return {"code": -1, "msg": str(exc), "jids": []}

    # -- messages ---------------------------------------------------------------------------

    def sendtojid(self, jid: str, body: str | dict[str, Any] | list[Any]) -> None:
        """Send a chat message to ``jid``; a dict or list is sent as JSON text. Returns at
        once, from any thread; before the worker has started (the loop not running yet) it
        is queued."""
        text = xml_safe(body) if isinstance(body, str) else json.dumps(body)
        self._when_started(lambda transport: transport.send_message(jid, text))

    async def direct(self, jid: str | None = None, body: str | dict[str, Any] | list[Any] = "",
                     app: str | None = None, timeout: float = 10.0, **_qe_extra: Any) -> dict[str, Any]:
        """QE's ``App.direct``: a direct message to ``jid``, or to the least loaded worker of
        service ``app``. ``{"code": 0, "jid": ...}``, or ``{"error": "no worker found", ...}``."""
        if jid is None:
            if app is None:
                return {"error": "no worker found", "message": "App.direct needs jid= or app="}
            found = await self._find(app, timeout)
            if not found["jids"]:
                return {"error": "no worker found", "message": found.get("msg") or f"no worker of {app!r} is online"}
            jid = found["jids"][0]
        self.sendtojid(jid, body)
        return {"code": 0, "jid": jid}

    def subscribe(self, channel: str) -> None:
        """Join channel ``channel`` (a group-chat room, ``channel@<QE_MUC_DOMAIN>``) and get its
        messages at ``@App.nexus.Channel(channel)`` or ``msgreceiver`` with ``specs.channel``
        set. Rejoined after reconnects; no history is replayed. Returns at once."""
        room = channel_room(channel, self.config.rooms_domain)
        if room in self._channels:
            return
        self._channels[room] = channel
        if self.transport is not None:
            self.transport.join(room, self.jid)

    def unsubscribe(self, channel: str) -> None:
        room = channel_room(channel, self.config.rooms_domain)
        if self._channels.pop(room, None) is not None and self.transport is not None:
            self.transport.leave(room)

    def sendtochannel(self, channel: str, body: str | dict[str, Any] | list[Any]) -> None:
        """Send ``body`` to a channel we subscribed to (a dict or list as JSON text); queued
        until we are in it. Returns at once, from any thread. The sender's own copy is not
        delivered back to it."""
        room = channel_room(channel, self.config.rooms_domain)
        if room not in self._channels:
            raise ValueError(f"not subscribed to channel {channel!r}: call App.subscribe({channel!r}) first")
        text = xml_safe(body) if isinstance(body, str) else json.dumps(body)
        self._when_started(lambda transport: self._send_group(transport, room, text))

    def _send_group(self, transport: Transport, room: str, text: str) -> None:
        # wait until the room took us in: a message sent before is refused by the room
        async def send() -> None:
            try:
                await transport.wait_joined(room, self.config.shutdown_timeout + 30)
            except CallError as exc:
                log.warning("message to channel %s not sent: %s", self._channels.get(room, room), exc)
                return
            transport.send_group(room, text)

        self._spawn(send())

    def _when_started(self, action: Callable[[Transport], None]) -> None:
        """Run ``action(transport)`` on the main loop once the worker has started. From
        another thread (a plain ``SetInterval`` callback) it is handed to the loop: the
        transport is not thread-safe."""
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is not self.loop and self.loop.is_running():
            self.loop.call_soon_threadsafe(self._when_started, action)
            return
        if self.transport is not None:
            action(self.transport)
        else:
            self._on_start.append(lambda: action(self.transport))  # type: ignore[arg-type]

    # -- the service's room -------------------------------------------------------------

    def _announce(self) -> None:
        """Say our load in the service's room when it changed; again in a second."""
        self._announcer = None
        if self._closing or self._finder is None or self.app is None:
            return
        load = self.dispatcher.stats.in_flight
        if load != self._announced:
            self._announced = load
            self._finder.announce(self.app, load)
        self._announcer = self.loop.call_later(_ANNOUNCE_EVERY_S, self._announce)

    def __getattr__(self, name: str) -> NoReturn:
        if name in _OUT_OF_SCOPE:
            raise OutOfScope(f"App.{name} is {_OUT_OF_SCOPE[name]}, a hosted-platform feature that qe-worker does "
                             f"not provide (see {_COMPAT_PAGE})")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r} "
                             f"(QE names qe-worker supports are listed in {_COMPAT_PAGE})")


class FindResult(dict[str, Any]):
    """What ``App.find`` returns: the answer as a dict, which can also be awaited (inside a
    coroutine) for a fresh one."""

    def __init__(self, known: dict[str, Any], fresh: Coroutine[Any, Any, dict[str, Any]] | None) -> None:
        super().__init__(known)
        self._fresh = fresh

    def __await__(self) -> Generator[Any, None, dict[str, Any]]:
        if self._fresh is None:
            return dict(self)
        fresh, self._fresh = self._fresh, None
        return (yield from fresh.__await__())

    def __del__(self) -> None:
        if self._fresh is not None:
            self._fresh.close()  # not awaited: no "never awaited" warning for the caller's sync use
