"""``App.rest``: the worker's HTTP face, as QE's ``App.rest`` (a FastAPI application).

Why inside the worker's event loop and not in a thread: handlers, timers and XMPP already run
on that loop; an HTTP request that calls a handler must be the same kind of request as one
that came over XMPP (same ``Dispatcher``, access, deadlines, limits, answers), and a second
loop in a thread would make every handler thread-unsafe. uvicorn runs as a task of the loop,
with its signal handling switched off: the worker keeps its own (graceful SIGTERM).

Safer than QE: bound to 127.0.0.1 unless ``QE_REST_HOST`` says otherwise, a bearer token
(``QE_REST_TOKEN``) mandatory when not on loopback, no CORS unless ``QE_REST_CORS`` lists
origins. Built in: ``POST /api/{cmd}`` (the same dispatch; errors mapped to HTTP statuses),
``GET /health``, ``GET /commands``, ``GET /metrics`` (Prometheus; owner and partners), and FastAPI's OpenAPI docs (``/docs``).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route functions'
# annotations at run time, and fastapi is imported only when a worker serves HTTP.
import asyncio
import hmac
import inspect
import logging
import uuid
from typing import TYPE_CHECKING, Any, Final

from .access import Role
from .config import ConfigError, WorkerConfig, is_loopback
from .protocol import ApiError, ApiRequest, now_ms

if TYPE_CHECKING:
    from fastapi import FastAPI, Request, Response

    from .app import App

__all__ = ["DEFAULT_PORT", "HTTP_STATUS", "RestServer"]

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 3000  # QE's

HTTP_STATUS: Final[dict[str, int]] = {
    "bad-request": 400,
    "forbidden": 403,
    "unknown-command": 404,
    "not-found": 404,
    "too-large": 413,
    "busy": 429,
    "handler-error": 500,
    "bad-result": 500,
    "unavailable": 503,
    "interrupted": 503,
    "expired": 504,
}
"""The HTTP status of each error code (docs/protocol.md); the body is the same JSON error."""

_LOCAL_ROLE: Final = Role.OWNER
"""The role of a request without a token on a loopback-only server: only processes of this
machine can reach it, as they could read the worker's configuration."""


def check_rest_config(config: WorkerConfig) -> None:
    """``ConfigError`` when the HTTP server would be exposed without a token."""
    if not is_loopback(config.rest_host) and not config.rest_tokens:
        raise ConfigError("QE_REST_TOKEN", f"required when QE_REST_HOST is not a loopback address "
                                           f"({config.rest_host!r}): anyone who can reach the port could call the worker")


class RestServer:
    """The FastAPI application and the uvicorn server that serves it for one ``App``."""

    def __init__(self, app: "App", port: int) -> None:
        from fastapi import FastAPI

        check_rest_config(app.config)
        self.worker = app
        self.host = app.config.rest_host
        self.port = port
        self.tokens = tuple((token.encode(), Role(role)) for token, role in app.config.rest_tokens)
        # FastAPI's own HTTP server span (0.165+: OpenTelemetry's HTTP conventions, W3C trace
        # context from the headers) is the parent of the dispatcher's span; its per-operation
        # spans (dependencies, serialisation) would only add noise around one handler call.
        options: dict[str, Any] = {}
        if "telemetry" in inspect.signature(FastAPI).parameters:
            options["telemetry"] = {"tracer_provider": app.tracing.provider, "operation_spans": False}
        self.fastapi: "FastAPI" = FastAPI(title=f"qe-worker {app.jid}", version="1", **options)
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self.started = asyncio.Event()
        if app.config.rest_cors:
            from fastapi.middleware.cors import CORSMiddleware

            self.fastapi.add_middleware(CORSMiddleware, allow_origins=list(app.config.rest_cors),
                                        allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
        self._routes()

    # -- routes -----------------------------------------------------------------------------

    def role_of(self, request: "Request") -> Role | None:
        """The caller's role from its bearer token; None when it has none that we know.
        Without tokens configured (loopback only), every caller is the owner."""
        if not self.tokens:
            return _LOCAL_ROLE
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return None
        raw = given.strip().encode()
        found = None
        for token, role in self.tokens:  # compare with every token: no timing hint which one matched
            if hmac.compare_digest(token, raw):
                found = role
        return found

    def _routes(self) -> None:
        from fastapi import Request
        from fastapi.responses import JSONResponse, Response

        api = self.fastapi
        worker = self.worker

        def refused() -> JSONResponse:
            return JSONResponse({"error": {"code": "forbidden", "message": "a valid bearer token is required"}},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})

        @api.post("/api/{cmd}", summary="Run a command, as an XMPP call would")
        async def run(cmd: str, request: Request, timeout: float | None = None) -> Response:
            """The JSON body is the command's arguments (``{}`` when empty). ``timeout``
            (seconds) is the request's deadline, as over XMPP."""
            return await self._answer(cmd, request, timeout)

        @api.get("/health", summary="Is the worker up and online on XMPP")
        async def health() -> dict[str, Any]:
            return {"status": "ok", "online": worker.online, "jid": worker.jid, "accepting": worker.dispatcher.accepting}

        @api.get("/metrics", summary="Prometheus metrics (owner and partner tokens)")
        async def metrics(request: Request) -> Response:
            role = self.role_of(request)
            if role is None:
                return refused()
            if not role.at_least(Role.PARTNER):
                return JSONResponse({"error": {"code": "forbidden", "message": "metrics are for the owner and "
                                                                               "partners"}}, status_code=403)
            from ..observability.metrics import CONTENT_TYPE

            return Response(worker.metrics.render(), media_type=CONTENT_TYPE)

        @api.get("/commands", summary="The commands this caller may run")
        async def commands(request: Request) -> Response:
            role = self.role_of(request)
            if role is None:
                return refused()
            answer = await self.dispatch("commands", b"", role, None)
            if isinstance(answer, ApiError):
                return Response(answer.payload, status_code=HTTP_STATUS.get(answer.code, 500),
                                media_type="application/json")
            return Response(answer.payload or "{}", media_type="application/json")

    async def _answer(self, cmd: str, request: "Request", timeout: float | None) -> "Response":
        from fastapi.responses import JSONResponse, Response

        role = self.role_of(request)
        if role is None:
            return JSONResponse({"error": {"code": "forbidden", "message": "a valid bearer token is required"}},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        answer = await self.dispatch(cmd, await request.body(), role, timeout)
        if isinstance(answer, ApiError):
            return Response(answer.payload, status_code=HTTP_STATUS.get(answer.code, 500),
                            media_type="application/json")
        return Response(answer.payload or "{}", media_type="application/json")

    async def dispatch(self, cmd: str, raw: bytes, role: Role, timeout: float | None) -> Any:
        """One HTTP call through the worker's dispatcher, as the caller ``rest:<role>``."""
        from .protocol import ProtocolError, decode_request, encode_request

        request_id = f"http-{uuid.uuid4().hex}"
        sender = f"rest:{role.value}"
        dispatcher = self.worker.dispatcher
        try:
            body = _body(raw, dispatcher.max_payload)
            deadline = None if timeout is None else now_ms() + int(timeout * 1000)
            text = encode_request(cmd, body, deadline_ms=deadline, max_payload=dispatcher.max_payload)
            request: ApiRequest = decode_request(request_id, sender, text, max_payload=dispatcher.max_payload)
        except ProtocolError as exc:
            return ApiError(request_id, sender, exc.code, exc.message)
        except ValueError as exc:
            return ApiError(request_id, sender, "bad-request", str(exc))
        return await dispatcher.serve(request, role)

    # -- life cycle ---------------------------------------------------------------------------

    def _document_commands(self) -> None:
        """One documented route per registered command, ``POST /api/<name>``, with its
        parameters' JSON Schema as the request body in the OpenAPI page. They run through the
        same ``dispatch`` as ``/api/{cmd}`` (our validation, our errors; FastAPI does not
        validate the body), and come first so that they are the ones matched."""
        from fastapi import Request
        from fastapi.responses import Response

        router = self.fastapi.router
        before = len(router.routes)
        def route(name: str) -> Any:
            async def run(request: Request, timeout: float | None = None) -> Response:
                return await self._answer(name, request, timeout)

            return run

        for spec in self.worker.dispatcher.commands.values():
            self.fastapi.post(
                f"/api/{spec.name}", summary=spec.description or spec.name, tags=["commands"],
                description=f"Access: {spec.access.value} and above.",
                openapi_extra={"requestBody": {"required": False, "content": {
                    "application/json": {"schema": _inline_refs(spec.schema)}}}},
            )(route(spec.name))
        added = router.routes[before:]
        del router.routes[before:]
        router.routes[:0] = added
        self.fastapi.openapi_schema = None  # built again with them

    def start(self) -> None:
        """Serve on the running loop (a task); called when the worker starts."""
        from .._asgi import LoopServer

        self._document_commands()
        self._server = LoopServer(self.fastapi, self.host, self.port, name="App.rest",
                                  on_error=self.worker._on_fatal)
        self._server.start()
        self._task = asyncio.get_running_loop().create_task(self._announce(), name="rest started")

    async def _announce(self) -> None:
        await self._server.started.wait()
        log.info("App.rest serving on http://%s:%d (token %s)", self.host, self.port,
                 "required" if self.tokens else "not required: loopback only")
        self.started.set()

    async def close(self, timeout: float) -> None:
        """Stop taking connections and let running HTTP requests finish within ``timeout``."""
        if self._task is not None:
            self._task.cancel()
        if self._server is not None:
            await self._server.close(timeout)


def _body(raw: bytes, max_payload: int) -> dict[str, Any]:
    import json

    from .protocol import ProtocolError

    if len(raw) > max_payload:
        raise ProtocolError("too-large", f"the body is {len(raw)} bytes, the limit is {max_payload}")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad-request", f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("bad-request", "the body must be a JSON object (the command's arguments)")
    return body


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its local ``#/$defs/...`` references replaced by what they name: in an
    OpenAPI document such a reference would point at the document's root, not the schema's."""
    defs = schema.get("$defs", {})

    def inline(node: Any, depth: int = 0) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/") and depth < 20:
                siblings = {k: inline(v, depth) for k, v in node.items() if k != "$ref"}  # e.g. a default
                return {**inline(defs.get(ref[len("#/$defs/"):], {}), depth + 1), **siblings}
            return {k: inline(v, depth) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [inline(v, depth) for v in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result
