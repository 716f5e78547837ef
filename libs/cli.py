"""``qe-worker``: run a worker script or the default worker, call workers, schedule jobs,
start a private Prosody, run the demo.

Exit codes (``call``/``ping``/``schedule``/``jobs``/``cancel``): 0 success, 2 bad usage or configuration, 3 timeout,
4 the worker answered with an error (or, for ``call --app``, no worker of the service is online), 5 cannot connect or log in, 6 the worker answered with a
negative ``code`` (QE's way to report an error in a normal answer, e.g. ``{"code": -1000, "msg":
"no api handler"}``; the answer is printed as any other).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["WORKERS_GROUP", "RunOptions", "add_run_arguments", "main"]

EXIT_OK, EXIT_USAGE, EXIT_TIMEOUT, EXIT_REMOTE, EXIT_CONNECT, EXIT_NEGATIVE = 0, 2, 3, 4, 5, 6

# `qe-worker run` starts the worker registered under this entry-point group and name
# (pyproject.toml: `python = "workers.python:run"`): the library never imports the application.
WORKERS_GROUP = "qe_worker.workers"
DEFAULT_WORKER = "python"
DEFAULT_RESOURCE = "python"

_EPILOG = """\
configuration (environment):
  QE_JID, QE_PASSWORD     account to log in with (required)
  QE_HOST, QE_PORT        server address (default: the JID's domain, 5222)
  QE_TLS                  required (default) | optional | off (loopback only)
  QE_ALLOW                comma-separated bare JIDs allowed to call a non-public worker
  QE_LOG_LEVEL            DEBUG | INFO (default) | WARNING | ERROR
see README.md for the full table.

exit codes of call/ping/schedule/jobs/cancel: 0 ok, 2 usage/config, 3 timeout, 4 error from the worker (call --app:
  or no worker of the service online), 5 connection/login,
  6 the worker answered with a negative "code" (QE-style error reply, printed as any answer)
"""


def _err(message: str) -> None:
    print(f"qe-worker: {message}", file=sys.stderr)


def _call_exit(exc: BaseException) -> int:
    from libs.bridge import AuthenticationFailed, CallTimeout, NotConnected, RemoteError

    if isinstance(exc, CallTimeout):
        _err(f"timeout: {exc.message}")
        return EXIT_TIMEOUT
    if isinstance(exc, RemoteError):
        _err(f"{exc.code}: {exc.remote_message}")
        return EXIT_REMOTE
    if isinstance(exc, (NotConnected, AuthenticationFailed)):
        _err(str(exc))
        return EXIT_CONNECT
    raise exc


def _json_body(raw: str | None) -> dict[str, Any]:
    """Parse JSON_BODY; ``ValueError`` with the message to show."""
    if raw is None:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"JSON_BODY is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("JSON_BODY must be a JSON object, e.g. '{\"text\": \"hi\"}'")
    return body


def _with_client(args: argparse.Namespace, work: Callable[[Any], Awaitable[Any]]) -> int:
    """Log in with the QE_* configuration, run ``work(client)``, print its JSON result."""
    from libs.bridge import CallError, Client, ConfigError, load_config
    from libs.startup import configure_logging

    if not (math.isfinite(args.timeout) and args.timeout > 0):
        _err("--timeout must be a positive number of seconds")
        return EXIT_USAGE
    try:
        config = load_config()
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    # the outcome is printed as one line; logs only when asked for with QE_LOG_LEVEL
    configure_logging(config.log_level if os.environ.get("QE_LOG_LEVEL") else "CRITICAL", config.secrets)

    async def session() -> Any:
        async with Client(config, connect_timeout=args.timeout) as client:
            return await work(client)

    try:
        result = asyncio.run(session())
    except ValueError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except CallError as exc:
        return _call_exit(exc)
    except LookupError as exc:  # call --app: the service has no worker online
        _err(f"no worker found: {exc}")
        return EXIT_REMOTE
    print(json.dumps(result, ensure_ascii=False))
    return EXIT_NEGATIVE if _negative_code(result) else EXIT_OK


def _negative_code(result: Any) -> bool:
    """True for a QE-style error answer: a JSON object whose ``code`` is a negative number
    (QE handlers answer ``{"code": 0, ...}`` on success, ``{"code": -1000, "msg": ...}`` on error)."""
    code = result.get("code") if isinstance(result, dict) else None
    return isinstance(code, (int, float)) and not isinstance(code, bool) and code < 0


def _cmd_call(args: argparse.Namespace) -> int:
    service = getattr(args, "app", None)
    if service is not None:  # call --app NAME CMD [JSON_BODY]: the positionals shift by one
        if args.body is not None:
            _err("with --app, give CMD and JSON_BODY only: qe-worker call --app NAME CMD [JSON_BODY]")
            return EXIT_USAGE
        cmd, raw = args.jid, args.cmd
    else:
        if args.cmd is None:
            _err("give FULL_JID and CMD (or --app NAME CMD): qe-worker call FULL_JID CMD [JSON_BODY]")
            return EXIT_USAGE
        cmd, raw = args.cmd, args.body
    try:
        body = _json_body(raw)
    except ValueError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if service is not None:
        return _with_client(args, lambda client: client.call_service(service, cmd, body, timeout=args.timeout))
    return _with_client(args, lambda client: client.call(args.jid, cmd, body, timeout=args.timeout))


def _cmd_schedule(args: argparse.Namespace) -> int:
    from libs.scheduling.client import RemoteWorker

    try:
        body = _json_body(args.body)
        if args.tz is not None and args.cron is None:
            raise ValueError("--tz goes with --cron (--every and --at are absolute)")
        if args.every is not None:
            spec: dict[str, Any] = {"every": args.every}
        elif args.at is not None:
            spec = {"at": list(args.at)}
        else:
            spec = {"cron": args.cron, "tz": args.tz or "UTC"}
        RemoteWorker.check(spec)
    except ValueError as exc:
        _err(str(exc))
        return EXIT_USAGE

    async def work(client: Any) -> dict[str, Any]:
        handle = await RemoteWorker(client, args.jid, timeout=args.timeout).plan(spec).call(
            args.cmd, body, misfire=args.misfire)
        return {"job": handle.id, "next_run": handle.next_run, "trigger": handle.trigger}

    return _with_client(args, work)


def _cmd_jobs(args: argparse.Namespace) -> int:
    return _with_client(args, lambda client: client.call(args.jid, "jobs", {}, timeout=args.timeout))


def _cmd_cancel(args: argparse.Namespace) -> int:
    return _with_client(args, lambda client: client.call(args.jid, "cancel", {"job": args.job}, timeout=args.timeout))


def _resource_arg(value: str) -> str:
    """argparse type for an XMPP resource."""
    from libs.bridge.access import check_resource

    try:
        return check_resource(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What a worker's ``run(options) -> exit status`` receives: the options of
    ``qe-worker run`` and ``python -m workers.python``, declared once by :func:`add_run_arguments`."""

    resource: str
    public: bool
    maintenance: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """The options from ``args``, parsed by a parser :func:`add_run_arguments` set up."""
        return cls(**{field.name: getattr(args, field.name) for field in fields(cls)})


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of a worker run on ``parser``; their dests are the fields of
    :class:`RunOptions`."""
    parser.add_argument("--resource", default=DEFAULT_RESOURCE, type=_resource_arg,
                        help="XMPP resource (default: python; env RESOURCE wins)")
    parser.add_argument("--public", action="store_true",
                        help="answer any caller, not only the own account and QE_ALLOW")
    parser.add_argument("--maintenance", action="store_true",
                        help="run the maintenance tasks: health check (5 min), statistics log (15 min), "
                             "job-history cleanup (1 h)")


def _load_worker(name: str) -> Callable[[RunOptions], int]:
    """The ``run`` registered as ``name`` in :data:`WORKERS_GROUP`; ``LookupError`` with the
    line to show when there is none, or it cannot be imported."""
    from importlib.metadata import entry_points

    found = list(entry_points(group=WORKERS_GROUP, name=name))
    if not found:
        raise LookupError(f"no worker {name!r} is installed (entry point group {WORKERS_GROUP!r}); "
                          "install qe-worker, e.g. pip install -e . in its folder")
    if len(found) > 1:
        raise LookupError(f"more than one worker {name!r} is installed: "
                          + ", ".join(f"{ep.value} ({ep.dist.name if ep.dist else '?'})" for ep in found))
    try:
        run: Callable[[RunOptions], int] = found[0].load()
    except ImportError as exc:
        raise LookupError(f"cannot load worker {name!r} ({found[0].value}): {exc}") from None
    return run


def _cmd_run(args: argparse.Namespace) -> int:
    if args.script is not None:
        given = [flag for flag, value in (("--resource", args.resource is not None), ("--public", args.public),
                                          ("--maintenance", args.maintenance)) if value]
        if given:
            _err(f"{', '.join(given)}: options of the default worker, not of a script (the script's "
                 "App(...) sets them; RESOURCE=... overrides its resource)")
            return EXIT_USAGE
        from libs._script import run_script

        return run_script(args.script, args.script_args)
    if args.resource is None:  # not given (None only tells a script's options apart)
        args.resource = DEFAULT_RESOURCE
    try:
        run = _load_worker(DEFAULT_WORKER)
    except LookupError as exc:
        _err(str(exc))
        return EXIT_USAGE
    return run(RunOptions.from_args(args))


def _cmd_server(args: argparse.Namespace) -> int:
    from libs import devserver

    return devserver.run_from_args(args)


async def _ping_new_worker(config: Any, jid: str, timeout: float) -> dict[str, Any]:
    from libs.bridge import Client, wait_answering

    async with Client(config, connect_timeout=timeout) as client:
        return await wait_answering(client, jid, timeout)


class _StopOnce:
    """The demo's SIGINT/SIGTERM handler: the first signal raises KeyboardInterrupt, which
    stops the demo wherever it is; any later one is ignored, so that a second Ctrl+C cannot
    cut the clean-up short and leave the worker or Prosody running.

    Inside ``held()`` the first signal is only noted, and raised when the block ends: a
    block that starts a process must get to keep its handle, or nothing could stop it.
    """

    def __init__(self) -> None:
        self.stopping = False
        self._holding = False

    def __call__(self, signum: int, _frame: Any) -> None:
        if not self.stopping:
            self.stopping = True
            if not self._holding:
                raise KeyboardInterrupt(signal.Signals(signum).name)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self.stopping:
            raise KeyboardInterrupt("signal held while starting a process")


def _cmd_demo(args: argparse.Namespace) -> int:
    """Ctrl+C or SIGTERM, at any point, is how the demo is stopped: it cleans up and exits 0."""
    from libs.devserver import DevServer, ProsodyNotInstalled

    # SIGTERM, and SIGINT even when a non-interactive shell started us with it ignored,
    # must reach the `finally` in _demo, which stops the worker and the server.
    stop = _StopOnce()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        try:
            server = DevServer(port=args.port)
        except ProsodyNotInstalled as exc:
            _err(str(exc))
            return EXIT_CONNECT
        return _demo(args, server, stop)
    except KeyboardInterrupt:
        return EXIT_OK


def _demo(args: argparse.Namespace, server: Any, stop: _StopOnce) -> int:
    from libs.bridge import CallError, load_config, serial_generator

    worker_pw, client_pw = serial_generator(16), serial_generator(16)
    worker = None
    try:
        with stop.held():
            server.start()
        worker_jid = server.register("worker", worker_pw)
        client_jid = server.register("client", client_pw)
        print(f"private Prosody on {server.host}:{server.port} (data in {server.workdir})", flush=True)
        env = {**os.environ, **server.env("worker", worker_pw), "QE_ALLOW": client_jid,
               "QE_STATE_DIR": str(server.workdir / "state")}  # the demo's jobs die with the demo
        with stop.held():
            worker = subprocess.Popen([sys.executable, "-m", "libs.cli", "run"], env=env)
        print(f"started the default worker as {worker_jid}/python (pid {worker.pid}); it allows {client_jid}",
              flush=True)
        client_env = server.env("client", client_pw)
        t0 = time.perf_counter()
        try:
            result = asyncio.run(_ping_new_worker(load_config(client_env), f"{worker_jid}/python", args.timeout))
        except CallError as exc:
            _err(f"the demo worker did not answer: {exc}")
            return EXIT_TIMEOUT
        print(f"\n$ qe-worker ping {worker_jid}/python\n{json.dumps(result)}   "
              f"({(time.perf_counter() - t0) * 1000:.0f} ms including the worker's login)\n")
        if args.once:
            return EXIT_OK
        exports = " ".join(f"{k}={v}" for k, v in client_env.items())
        print("The worker keeps running. From another terminal, in this folder:\n"
              f"  {exports} .venv/bin/qe-worker call {worker_jid}/python echo '{{\"hello\": \"world\"}}'\n"
              "Press Ctrl+C to stop the worker and the server.", flush=True)
        worker.wait()  # until Ctrl+C / SIGTERM (KeyboardInterrupt), or the worker ends by itself
        return EXIT_OK
    finally:
        stop.stopping = True  # from here on a signal changes nothing: clean up in any case
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        server.cleanup()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qe-worker",
        description="Workers that join an XMPP server and answer API commands (QE python-worker compatible).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def worker_command(name: str, help: str, func: Callable[[argparse.Namespace], int],
                       description: str | None = None) -> argparse.ArgumentParser:
        """A subcommand that logs in and talks to the worker at FULL_JID."""
        p = sub.add_parser(name, help=help, description=description or help, epilog=_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("jid", metavar="FULL_JID", help="the worker's full JID, e.g. worker@example.org/python")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer (default 10)")
        p.set_defaults(func=func)
        return p

    p = worker_command("call", "call CMD on a worker (or on a service: --app NAME) and print its JSON answer",
                       _cmd_call,
                       "Call CMD on the worker at FULL_JID and print the JSON result on stdout.\n\n"
                       "  qe-worker call FULL_JID CMD [JSON_BODY]\n"
                       "  qe-worker call --app NAME CMD [JSON_BODY]\n\n"
                       "With --app, the least loaded online worker of service NAME answers; another one\n"
                       "is asked only when the first refused before starting (unavailable, busy), so the\n"
                       "command never runs twice.")
    p.add_argument("cmd", metavar="CMD", nargs="?", help="command name, e.g. ping")
    p.add_argument("body", metavar="JSON_BODY", nargs="?", help="arguments as a JSON object (default {})")
    p.add_argument("--app", metavar="NAME", help="call a worker of service NAME instead of FULL_JID "
                                                 "(the first positional is then CMD)")

    worker_command("ping", "shorthand for: call FULL_JID ping", _cmd_call).set_defaults(cmd="ping", body=None)

    p = worker_command("schedule", "ask a worker to run CMD on a schedule (prints the job id)", _cmd_schedule,
                       "Ask the worker at FULL_JID to run CMD every INTERVAL, at given instants, or on a cron "
                       "schedule. The job survives worker restarts; cancel it with `qe-worker cancel FULL_JID JOB`.")
    p.add_argument("cmd", metavar="CMD", help="one of the worker's commands")
    p.add_argument("body", metavar="JSON_BODY", nargs="?", help="arguments as a JSON object (default {})")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", metavar="INTERVAL", help="e.g. 500ms, 5s, 2m, 1h30m")
    when.add_argument("--at", metavar="ISO", nargs="+", help="one or more instants with a UTC offset, "
                                                             "e.g. 2026-12-01T09:00:00+01:00")
    when.add_argument("--cron", metavar="EXPR", help='5-field cron expression, e.g. "*/5 * * * *"')
    p.add_argument("--tz", default=None, help="time zone for --cron (default UTC), e.g. Europe/Berlin")
    from libs._enums import MisfirePolicy
    p.add_argument("--misfire", choices=list(MisfirePolicy), default="coalesce",
                   help="runs missed while the worker was down: one catch-up run (coalesce, default) or none")

    worker_command("jobs", "list a worker's scheduled jobs (yours; all of them for its owner)", _cmd_jobs)

    p = worker_command("cancel", "cancel a scheduled job", _cmd_cancel)
    p.add_argument("job", metavar="JOB", help="the id printed by `qe-worker schedule`")

    p = sub.add_parser("run", help="run a worker script, or the default worker, until Ctrl+C",
                       description="Run a worker until Ctrl+C or SIGTERM.\n\n"
                                   "qe-worker run SCRIPT [ARGS...]: run SCRIPT as `python SCRIPT ARGS...` would, "
                                   "after setting up\nthe QE_* configuration, logging and the event loop (as "
                                   "startup() does), with top-level\n`await` allowed: each top-level statement "
                                   "that awaits runs on the event loop, the others\nwith no loop running, so the "
                                   "script's own run_forever() works. Exit status: the script's\n(0 at its end or "
                                   "after Ctrl+C/SIGTERM/App.stop(), n for sys.exit(n), 1 for an uncaught\n"
                                   "exception, 2 if it cannot be read or compiled).\n\n"
                                   "qe-worker run [OPTIONS]: run the default worker (ping, info, echo, stats, "
                                   "health, schedule,\ncancel, jobs) as QE_JID/RESOURCE: the worker installed as "
                                   f"entry point {DEFAULT_WORKER!r} of group\n{WORKERS_GROUP!r}. The options are "
                                   "the default worker's.",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("script", metavar="SCRIPT", nargs="?",
                   help="a worker script (.py) to run instead of the default worker")
    p.add_argument("script_args", metavar="ARGS", nargs=argparse.REMAINDER,
                   help="the script's arguments (its sys.argv[1:]), options included")
    p.set_defaults(func=_cmd_run, resource=None)  # None: not given (refused with a SCRIPT)

    p = sub.add_parser("server", help="run a private Prosody on 127.0.0.1 for development")
    from libs import devserver

    devserver.add_arguments(p)
    p.set_defaults(func=_cmd_server)

    p = sub.add_parser("demo", help="private Prosody + the default worker + a ping, all on this machine",
                       description="Start a private Prosody on 127.0.0.1, the default worker on it, and ping it.")
    p.add_argument("--once", action="store_true", help="exit after the ping instead of serving until Ctrl+C")
    p.add_argument("--port", type=int, default=None, help="client port for Prosody (default: a free one)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for the worker (default 20)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
