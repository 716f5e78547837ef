"""``qe-worker``: call workers (``call``, ``ping``, ``info``, ``commands``), schedule jobs on them
(``schedule``, ``jobs``, ``cancel``), watch them live in a browser (``dashboard``), run a worker
script or the default worker (``run``), start a private Prosody (``server``), run the demo
(``demo``), print shell completion (``completion``).

Every subcommand's ``--help`` lists its exit codes. Those that call a worker share them: 0
success, 2 bad usage or configuration, 3 timeout, 4 the worker answered with an error (or, for
``call --app``, no worker of the service is online), 5 cannot connect or log in, 6 the worker
answered with a negative ``code`` (QE's way to report an error in a normal answer, e.g.
``{"code": -1000, "msg": "no api handler"}``; the answer is printed as any other). With
``--json`` their output is JSON only, errors included (``{"error": {"code", "message"}}`` on
stdout), with the same exit codes.
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
from typing import Any, NoReturn

__all__ = ["WORKERS_GROUP", "RunOptions", "add_run_arguments", "main"]

EXIT_OK, EXIT_USAGE, EXIT_TIMEOUT, EXIT_REMOTE, EXIT_CONNECT, EXIT_NEGATIVE = 0, 2, 3, 4, 5, 6

# `qe-worker run` starts the worker registered under this entry-point group and name
# (pyproject.toml: `python = "workers.python:run"`): the library never imports the application.
WORKERS_GROUP = "qe_worker.workers"
DEFAULT_WORKER = "python"
DEFAULT_RESOURCE = "python"
_DASHBOARD_PORT = 8790  # libs.dashboard.DEFAULT_PORT, not imported here: it loads slixmpp (a test checks)
_DEFAULT_POLL_S = 30.0  # schedule --notify: how often to ask the worker whether the job still runs

_CONFIG_HELP = """\
configuration (environment):
  QE_JID, QE_PASSWORD     account to log in with (required)
  QE_HOST, QE_PORT        server(s): HOST[:PORT] or a comma-separated list tried in order
                          (default: DNS SRV of the JID's domain, else the domain; port 5222)
  QE_TLS                  required (default) | optional | off (loopback only)
  QE_ALLOW                comma-separated bare JIDs allowed to call a non-public worker
  QE_MAX_PAYLOAD          largest request or answer, in bytes on the wire (default 240000)
  QE_LOG_LEVEL            DEBUG | INFO | WARNING | ERROR (commands that call a worker log
                          nothing unless it is set; a worker logs at INFO by default)
see README.md for the full table."""

_EPILOG = f"""\
{_CONFIG_HELP}

exit codes: 0 success, 2 bad usage or configuration, 3 timeout, 4 error from the worker,
  5 connection/login, 6 the worker answered with a negative "code"; each command's --help
  lists its own.

shell completion: qe-worker completion bash|zsh|fish (see qe-worker completion --help)
"""


def _exit_codes(*codes: tuple[int | str, str]) -> str:
    return "exit codes:\n" + "\n".join(f"  {code:<2} {meaning}" for code, meaning in codes)


def _caller_exit_codes(ok: str = "success: the answer is printed on stdout",
                       remote: str = "the worker answered with an error; its code is printed (e.g. forbidden,\n"
                                     "     unknown-command)") -> str:
    """The exit codes of a subcommand that calls a worker."""
    return _exit_codes(
        (EXIT_OK, ok),
        (EXIT_USAGE, "bad usage or configuration (e.g. a bad option, QE_JID not set)"),
        (EXIT_TIMEOUT, "no answer within --timeout"),
        (EXIT_REMOTE, remote),
        (EXIT_CONNECT, "cannot connect or log in within --connect-timeout"),
        (EXIT_NEGATIVE, 'the worker answered with a negative "code" (a QE-style error reply, printed as\n'
                        "     any answer)"))


class CliError(Exception):
    """An outcome that ends a subcommand: its exit ``status``, a ``code`` and ``message`` for
    ``--json`` (``{"error": {"code", "message"}}``), and the ``text`` for a person (one line)."""

    def __init__(self, status: int, code: str, message: str, text: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.text = message if text is None else text


class _UsageError(Exception):
    """argparse refused the command line (raised by :class:`_Parser` instead of exiting, so
    that ``--json`` can report it as JSON)."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(self, message)


class _Version(argparse.Action):
    """``--version``: computed when asked for (it imports the library and slixmpp)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(version_line())
        parser.exit()


def version_line() -> str:
    """``qe-worker 0.1.0 (Python 3.11.9, slixmpp 1.17.1)``: what ``--version`` prints."""
    import platform
    from importlib import metadata

    from libs.bridge import version

    try:
        slixmpp = metadata.version("slixmpp")
    except metadata.PackageNotFoundError:  # pragma: no cover - a broken install
        slixmpp = "not installed"
    return f"qe-worker {version()} (Python {platform.python_version()}, slixmpp {slixmpp})"


def _err(message: str) -> None:
    print(f"qe-worker: {message}", file=sys.stderr)


def _report(error: CliError, as_json: bool) -> int:
    """Print ``error`` as ``--json`` (on stdout) or a person (on stderr) wants it; its status."""
    if as_json:
        print(json.dumps({"error": {"code": error.code, "message": error.message}}, ensure_ascii=False))
    else:
        _err(error.text)
    return error.status


def _call_error(exc: BaseException) -> CliError:
    from libs.bridge import AuthenticationFailed, CallTimeout, NotConnected, RemoteError

    if isinstance(exc, CallTimeout):
        return CliError(EXIT_TIMEOUT, exc.code, exc.message, f"timeout: {exc.message}")
    if isinstance(exc, RemoteError):
        return CliError(EXIT_REMOTE, exc.code, exc.remote_message, f"{exc.code}: {exc.remote_message}")
    if isinstance(exc, (NotConnected, AuthenticationFailed)):
        return CliError(EXIT_CONNECT, exc.code, exc.message)
    raise exc


def _seconds(value: str) -> float:
    """argparse type for a positive, finite number of seconds."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {value!r}")
    return seconds


def _json_body(raw: str | None) -> dict[str, Any]:
    """JSON_BODY as given: the JSON text itself, ``-`` (read stdin) or ``@PATH`` (read a
    file), UTF-8; ``CliError`` (usage) with the line to show."""
    if raw is None:
        return {}
    if raw == "-":
        where = "JSON_BODY from stdin"
        if sys.stdin is None:
            raise CliError(EXIT_USAGE, "usage", "JSON_BODY is -, but there is no stdin to read")
        data: bytes | str = sys.stdin.buffer.read()
    elif raw.startswith("@"):
        where = f"JSON_BODY {raw}"
        if raw == "@":
            raise CliError(EXIT_USAGE, "usage", "JSON_BODY @: give a file name after @, e.g. @body.json")
        try:
            with open(raw[1:], "rb") as file:
                data = file.read()
        except OSError as exc:
            raise CliError(EXIT_USAGE, "usage", f"cannot read {where}: {exc.strerror or exc}") from None
    else:
        where, data = "JSON_BODY", raw
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise CliError(EXIT_USAGE, "usage", f"{where} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise CliError(EXIT_USAGE, "usage", f"{where} is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CliError(EXIT_USAGE, "usage", f"{where} must be a JSON object, e.g. '{{\"text\": \"hi\"}}', "
                                            f"not {type(body).__name__}")
    return body


def _session(args: argparse.Namespace, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Log in with the QE_* configuration (within ``--connect-timeout``), return what
    ``work(client)`` returns; ``CliError`` for every way it can fail."""
    from libs.bridge import CallError, Client, ConfigError, load_config
    from libs.startup import configure_logging

    try:
        config = load_config()
    except ConfigError as exc:
        raise CliError(EXIT_USAGE, "config", str(exc)) from None
    # the outcome is printed as one line; logs only when asked for with QE_LOG_LEVEL
    configure_logging(config.log_level if os.environ.get("QE_LOG_LEVEL") else "CRITICAL", config.secrets,
                      config.log_format)

    async def session() -> Any:
        async with Client(config, connect_timeout=args.connect_timeout) as client:
            return await work(client)

    try:
        return asyncio.run(session())
    except ValueError as exc:  # refused before sending: not a JID, a body over QE_MAX_PAYLOAD...
        raise CliError(EXIT_USAGE, "usage", str(exc)) from None
    except CallError as exc:
        raise _call_error(exc) from None


def _print_answer(answer: Any) -> int:
    print(json.dumps(answer, ensure_ascii=False))
    return EXIT_NEGATIVE if _negative_code(answer) else EXIT_OK


def _negative_code(result: Any) -> bool:
    """True for a QE-style error answer: a JSON object whose ``code`` is a negative number
    (QE handlers answer ``{"code": 0, ...}`` on success, ``{"code": -1000, "msg": ...}`` on error)."""
    code = result.get("code") if isinstance(result, dict) else None
    return isinstance(code, (int, float)) and not isinstance(code, bool) and code < 0


def _call(args: argparse.Namespace, cmd: str, body: dict[str, Any] | None = None) -> Any:
    """``cmd(body)`` on the worker at FULL_JID, in a session of its own."""
    return _session(args, lambda client: client.call(args.jid, cmd, body or {}, timeout=args.timeout))


def _cmd_call(args: argparse.Namespace) -> int:
    service = getattr(args, "app", None)
    if service is not None:  # call --app NAME CMD [JSON_BODY]: the positionals shift by one
        if args.body is not None:
            raise CliError(EXIT_USAGE, "usage",
                           "with --app, give CMD and JSON_BODY only: qe-worker call --app NAME CMD [JSON_BODY]")
        cmd, raw = args.jid, args.cmd
    else:
        if args.cmd is None:
            raise CliError(EXIT_USAGE, "usage",
                           "give FULL_JID and CMD (or --app NAME CMD): qe-worker call FULL_JID CMD [JSON_BODY]")
        cmd, raw = args.cmd, args.body
    body = _json_body(raw)
    if service is None:
        from libs._cli_progress import ProgressView

        view = ProgressView(quiet=args.json)
        try:
            return _print_answer(_session(args, lambda client: client.call(
                args.jid, cmd, body, timeout=args.timeout, on_progress=view)))
        finally:
            view.close()

    async def on_service(client: Any) -> Any:
        try:
            return await client.call_service(service, cmd, body, timeout=args.timeout)
        except LookupError as exc:  # the service has no worker online
            raise CliError(EXIT_REMOTE, "no-worker", str(exc), f"no worker found: {exc}") from None

    return _print_answer(_session(args, on_service))


def _cmd_info(args: argparse.Namespace) -> int:
    return _print_answer(_call(args, "info"))


def _cmd_commands(args: argparse.Namespace) -> int:
    from libs._cli_output import command_list, commands_table

    try:
        answer = _call(args, "commands")
    except CliError as exc:
        if exc.code == "unknown-command":
            exc.text += (" (this worker does not list its commands: it predates the built-in 'commands', "
                         "or is not a qe-worker)")
        raise
    if _negative_code(answer):
        return _print_answer(answer)
    try:
        command_list(answer)  # checked with --json too: the same exit status either way
    except ValueError as exc:
        raise CliError(EXIT_REMOTE, "bad-result", str(exc), f"bad-result: {exc}") from None
    print(json.dumps(answer, ensure_ascii=False) if args.json else commands_table(answer))
    return EXIT_OK


def _cmd_schedule(args: argparse.Namespace) -> int:
    from libs.scheduling.client import RemoteWorker

    body = _json_body(args.body)
    if args.poll is not None and not args.notify:
        raise CliError(EXIT_USAGE, "usage", "--poll goes with --notify")
    try:
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
        raise CliError(EXIT_USAGE, "usage", str(exc)) from None

    async def work(client: Any) -> None:
        from libs._watch import JobWatch

        watch = JobWatch(client, args.jid, timeout=args.timeout, poll=args.poll or _DEFAULT_POLL_S) \
            if args.notify else None  # listening before the job exists: its first run may come at once
        handle = await RemoteWorker(client, args.jid, timeout=args.timeout).plan(spec).call(
            args.cmd, body, misfire=args.misfire, notify=args.notify)
        print(json.dumps({"job": handle.id, "next_run": handle.next_run, "trigger": handle.trigger}), flush=True)
        if watch is not None:
            await watch.follow(handle.id, as_json=args.json)

    _session(args, work)
    return EXIT_OK


def _cmd_jobs(args: argparse.Namespace) -> int:
    return _print_answer(_call(args, "jobs"))


def _cmd_cancel(args: argparse.Namespace) -> int:
    return _print_answer(_call(args, "cancel", {"job": args.job}))


def _full_jid_arg(value: str) -> str:
    """argparse type for a worker's full JID (``user@domain/resource``)."""
    node, at, rest = value.partition("@")
    if not node or not at or "/" not in rest or rest.startswith("/") or any(c.isspace() for c in value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a full JID, e.g. worker@example.org/python")
    return value


def _service_arg(value: str) -> str:
    from libs.bridge.services import check_service

    try:
        return check_service(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port_arg(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"a port is 0-65535 (0: a free one), not {port}")
    return port


def _cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; the URL on stdout once the page can be opened."""
    from libs.bridge import CallError, ConfigError, load_config
    from libs.dashboard import DashboardError, DashboardOptions, serve
    from libs.startup import configure_logging

    try:
        config = load_config()
    except ConfigError as exc:
        raise CliError(EXIT_USAGE, "config", str(exc)) from None
    # the outcome is one line, the workers' troubles are on the page; logs only when asked for
    configure_logging(config.log_level if os.environ.get("QE_LOG_LEVEL") else "CRITICAL", config.secrets,
                      config.log_format)
    options = DashboardOptions(host=args.host, port=args.port,
                               token=args.token or os.environ.get("QE_DASHBOARD_TOKEN") or None,
                               interval=args.interval, timeout=args.timeout or min(5.0, max(1.0, args.interval)),
                               apps=tuple(args.app), jids=tuple(args.jid), connect_timeout=args.connect_timeout)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)

        def ready(url: str) -> None:
            print(f"dashboard: {url}", flush=True)
            print("qe-worker: serving the dashboard; Ctrl+C to stop", file=sys.stderr, flush=True)

        await serve(config, options, stop, ready)

    try:
        asyncio.run(main())
    except CallError as exc:
        raise _call_error(exc) from None
    except DashboardError as exc:
        raise CliError(1, "cannot-serve", str(exc)) from None
    return EXIT_OK


def _cmd_completion(args: argparse.Namespace) -> int:
    from libs._completion import script

    sys.stdout.write(script(_parser(), args.shell))
    return EXIT_OK


def _resource_arg(value: str) -> str:
    """argparse type for an XMPP resource."""
    from libs.bridge.access import check_resource

    try:
        return check_resource(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count_arg(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of workers (1 or more)")
    return count


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What a worker's ``run(options) -> exit status`` receives: the options of
    ``qe-worker run`` and ``python -m workers.python``, declared once by :func:`add_run_arguments`."""

    resource: str
    public: bool
    maintenance: bool
    workers: int = 1

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
    parser.add_argument("--workers", type=_count_arg, default=1, metavar="N",
                        help="run N workers in this one process, as RESOURCE-0 .. RESOURCE-{N-1}: each its "
                             "own XMPP session, sharing the loop, timers, executor and TLS context; they "
                             "log in 50 at a time, and a failed login is reported without stopping the "
                             "others (default: 1, as RESOURCE)")


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
                                          ("--maintenance", args.maintenance), ("--workers", args.workers != 1))
                 if value]
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


async def _ping_new_worker(config: Any, jid: str, timeout: float, connect_timeout: float) -> dict[str, Any]:
    from libs.bridge import Client, wait_answering

    async with Client(config, connect_timeout=connect_timeout) as client:
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
            result = asyncio.run(_ping_new_worker(load_config(client_env), f"{worker_jid}/python", args.timeout,
                                                   args.connect_timeout))
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
    parser = _Parser(
        prog="qe-worker",
        description="Workers that join an XMPP server and answer API commands (QE python-worker compatible).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action=_Version, help="print the versions of qe-worker, Python and "
                                                                 "slixmpp, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, description: str, epilog: str,
                func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    def worker_command(name: str, help: str, description: str, func: Callable[[argparse.Namespace], int],
                       exit_codes: str | None = None) -> argparse.ArgumentParser:
        """A subcommand that logs in and talks to the worker at FULL_JID."""
        p = command(name, help, description, f"{exit_codes or _caller_exit_codes()}\n\n{_CONFIG_HELP}", func)
        p.add_argument("jid", metavar="FULL_JID", help="the worker's full JID, e.g. worker@example.org/python")
        add_connection_arguments(p)
        p.add_argument("--json", action="store_true",
                       help='print JSON only: the answer, or {"error": {"code": ..., "message": ...}} on stdout '
                            "(same exit codes)")
        return p

    def add_connection_arguments(p: argparse.ArgumentParser, timeout: float = 10.0,
                                 what: str = "the answer") -> None:
        p.add_argument("--timeout", type=_seconds, default=timeout, metavar="S",
                       help=f"seconds to wait for {what} (default {timeout:g})")
        p.add_argument("--connect-timeout", type=_seconds, default=10.0, metavar="S",
                       help="seconds to wait for the connection and login to the server (default 10)")

    body_help = ("arguments as a JSON object (default {}); - reads it from stdin, @PATH from a file "
                 "(up to QE_MAX_PAYLOAD)")

    p = worker_command("call", "call CMD on a worker (or on a service: --app NAME) and print its JSON answer",
                       "Call CMD on the worker at FULL_JID and print its JSON answer on stdout.\n\n"
                       "  qe-worker call FULL_JID CMD [JSON_BODY]\n"
                       "  qe-worker call --app NAME CMD [JSON_BODY]\n\n"
                       "With --app, the least loaded online worker of service NAME answers; another one\n"
                       "is asked only when the first refused before starting (unavailable, busy), so the\n"
                       "command never runs twice. JSON_BODY may be - (stdin) or @PATH (a file), for large\n"
                       "bodies: up to QE_MAX_PAYLOAD bytes on the wire, refused before sending if larger.",
                       _cmd_call, _caller_exit_codes(remote="the worker answered with an error; its code is "
                                                            "printed (e.g. forbidden,\n     unknown-command); with "
                                                            "--app also: no worker of the service is online"))
    p.add_argument("cmd", metavar="CMD", nargs="?", help="command name, e.g. ping")
    p.add_argument("body", metavar="JSON_BODY", nargs="?", help=body_help)
    p.add_argument("--app", metavar="NAME", help="call a worker of service NAME instead of FULL_JID "
                                                 "(the first positional is then CMD)")

    worker_command("ping", "shorthand for: call FULL_JID ping",
                   "Call the built-in ping of the worker at FULL_JID and print its answer,\n"
                   '{"pong": true, "environment": "python"}.', _cmd_call).set_defaults(cmd="ping", body=None)

    worker_command("info", "print a worker's built-in info (version, uptime, commands, request counters)",
                   "Call the built-in info of the worker at FULL_JID and print its JSON answer: jid,\n"
                   "version, uptime_s, public, commands (names), onapi, requests (counters), sessions,\n"
                   "resumptions, timers. See docs/protocol.md, Built-in commands.", _cmd_info)

    worker_command("commands", "list a worker's commands with their parameters",
                   "Call the built-in commands of the worker at FULL_JID and print a table: one line\n"
                   "per command (name, who may call it, description), then one indented line per\n"
                   "parameter of its JSON Schema (name, type, required or default, description).\n"
                   "With --json, the worker's answer as it came:\n"
                   '  {"commands": [{"name", "description", "access", "schema"}, ...]}',
                   _cmd_commands,
                   _caller_exit_codes("success: the table (--json: the answer) is printed on stdout",
                                      "the worker answered with an error; its code is printed: e.g. forbidden;\n"
                                      "     unknown-command: the worker does not list its commands (an older\n"
                                      "     qe-worker); bad-result: its answer is not a command list"))

    p = worker_command(
        "schedule", "ask a worker to run CMD on a schedule (prints the job id); --notify: and watch it",
        "Ask the worker at FULL_JID to run CMD every INTERVAL, at given instants, or on a cron\n"
        "schedule, and print {\"job\", \"next_run\", \"trigger\"}. The job survives worker restarts;\n"
        "cancel it with `qe-worker cancel FULL_JID JOB`.\n\n"
        "--notify: the worker sends this session a message with the outcome of every run (the\n"
        "library's own notification, \"notify\": true in the schedule request), and the command\n"
        "stays connected and prints one line per run (TIME CMD ok RESULT, or TIME CMD failed:\n"
        "ERROR; --json: each message as JSON), until the job ends (its last --at instant ran,\n"
        "or it was cancelled: seen by asking the worker's jobs after each run and every --poll\n"
        "seconds; a last line says how it ended) or Ctrl+C/SIGTERM. Ctrl+C stops the watching,\n"
        "not the job: it keeps running and keeps sending its results to this session's address;\n"
        "once that is gone, the server passes them on to the account's other sessions (a worker\n"
        "of the same account gets them as chat messages) or stores them offline. Cancel the job\n"
        "if you wanted it only while watching.",
        _cmd_schedule,
        _caller_exit_codes("success: the job is scheduled (--notify: and it ended, or Ctrl+C/SIGTERM\n"
                           "     stopped the watching)"))
    p.add_argument("cmd", metavar="CMD", help="one of the worker's commands")
    p.add_argument("body", metavar="JSON_BODY", nargs="?", help=body_help)
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", metavar="INTERVAL", help="e.g. 500ms, 5s, 2m, 1h30m")
    when.add_argument("--at", metavar="ISO", nargs="+", help="one or more instants with a UTC offset, "
                                                             "e.g. 2026-12-01T09:00:00+01:00")
    when.add_argument("--cron", metavar="EXPR", help='5-field cron expression, e.g. "*/5 * * * *"')
    p.add_argument("--tz", default=None, help="time zone for --cron (default UTC), e.g. Europe/Berlin")
    from libs._enums import MisfirePolicy
    p.add_argument("--misfire", choices=list(MisfirePolicy), default="coalesce",
                   help="runs missed while the worker was down: one catch-up run (coalesce, default) or none")
    p.add_argument("--notify", action="store_true",
                   help="stay connected and print one line per run until the job ends or Ctrl+C")
    p.add_argument("--poll", type=_seconds, default=None, metavar="S",
                   help=f"with --notify: also ask the worker every S seconds whether the job still runs "
                        f"(default {_DEFAULT_POLL_S:g})")

    worker_command("jobs", "list a worker's scheduled jobs (yours; all of them for its owner)",
                   "List the jobs scheduled on the worker at FULL_JID: yours, or all of them if you log\n"
                   'in with the worker\'s own account. Prints {"jobs": [{"job", "cmd", "status", "trigger",\n'
                   '"next_run", "run_count", "last_error", ...}]}.', _cmd_jobs)

    p = worker_command("cancel", "cancel a scheduled job",
                       "Cancel job JOB on the worker at FULL_JID (all its remaining runs); prints\n"
                       '{"cancelled": JOB}, also for a job that had already ended. Another caller\'s job is\n'
                       "not-found, like a job that never existed (the worker's own account may cancel any).",
                       _cmd_cancel)
    p.add_argument("job", metavar="JOB", help="the id printed by `qe-worker schedule`")

    p = command("dashboard", "serve a live web page of the workers this account can see",
                "Serve a web page (default http://127.0.0.1:%d/) that shows the workers this account\n"
                "can see, updated live: online/offline, service, version, uptime; calls/s, p50/p99\n"
                "latency and errors per command as charts; timers with their lateness; scheduled jobs\n"
                "with their next and last runs (the list for the worker's own account, counts for\n"
                "partners).\n\n"
                "It logs in with the QE_* configuration under a random resource and learns everything\n"
                "through XMPP: the other sessions of its own account (presence), the workers of each\n"
                "--app service (its room), and each --jid; every worker is asked `metrics` (JSON form)\n"
                "every --interval seconds. A worker that stops answering shows stale, one that left\n"
                "offline. Workers answer it only if its account is theirs or in their QE_ALLOW.\n\n"
                "On a loopback --host (the default) no token is needed. On any other address a token\n"
                "is required: --token, else QE_DASHBOARD_TOKEN, else a random one; open the URL printed\n"
                "on stdout (it carries ?token=...).\n\n"
                "  qe-worker dashboard\n"
                "  qe-worker dashboard --app resize --jid other@example.org/python --port 9000" % _DASHBOARD_PORT,
                _exit_codes((EXIT_OK, "stopped by Ctrl+C or SIGTERM"),
                            (1, "cannot serve on --host/--port (in use, or not allowed)"),
                            (EXIT_USAGE, "bad usage or configuration (e.g. QE_JID not set)"),
                            (EXIT_CONNECT, "cannot connect or log in within --connect-timeout"))
                + f"\n\n{_CONFIG_HELP}", _cmd_dashboard)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1; any other "
                                                       "requires a token)")
    p.add_argument("--port", type=_port_arg, default=_DASHBOARD_PORT,
                   help=f"port to serve on (default {_DASHBOARD_PORT}; 0: a free one, printed)")
    p.add_argument("--token", default=None, help="the token the page needs (default: QE_DASHBOARD_TOKEN, which "
                                                 "other users cannot see in ps; off loopback a random one if "
                                                 "neither)")
    p.add_argument("--app", metavar="NAME", type=_service_arg, action="append", default=[],
                   help="also show the workers of service NAME (repeatable)")
    p.add_argument("--jid", metavar="FULL_JID", type=_full_jid_arg, action="append", default=[],
                   help="also show the worker at FULL_JID, whatever its presence (repeatable)")
    p.add_argument("--interval", type=_seconds, default=2.0, metavar="S",
                   help="seconds between two polls of a worker (default 2)")
    p.add_argument("--timeout", type=_seconds, default=None, metavar="S",
                   help="seconds one poll may take (default: --interval, between 1 and 5)")
    p.add_argument("--connect-timeout", type=_seconds, default=10.0, metavar="S",
                   help="seconds to wait for the connection and login to the server (default 10)")

    p = command("run", "run a worker script, or the default worker, until Ctrl+C",
                "Run a worker until Ctrl+C or SIGTERM.\n\n"
                "qe-worker run SCRIPT [ARGS...]: run SCRIPT as `python SCRIPT ARGS...` would, after setting up\n"
                "the QE_* configuration, logging and the event loop (as startup() does), with top-level\n"
                "`await` allowed: each top-level statement that awaits runs on the event loop, the others\n"
                "with no loop running, so the script's own run_forever() works.\n\n"
                "qe-worker run [OPTIONS]: run the default worker (ping, info, echo, stats, health, schedule,\n"
                "cancel, jobs) as QE_JID/RESOURCE: the worker installed as entry point "
                f"{DEFAULT_WORKER!r} of group\n{WORKERS_GROUP!r}. The options are the default worker's.",
                _exit_codes((EXIT_OK, "the worker stopped: Ctrl+C, SIGTERM or App.stop(); or SCRIPT ended"),
                            (1, "the server refused the login (at start, or on every reconnect for\n"
                                "     QE_AUTH_GRACE seconds), another client took over the resource, or SCRIPT\n"
                                "     raised an uncaught exception (its traceback is printed)"),
                            (EXIT_USAGE, "bad usage or configuration; SCRIPT cannot be read or compiled; no "
                                         "default\n     worker is installed"),
                            ("n", "SCRIPT called sys.exit(n)"))
                + f"\n\n{_CONFIG_HELP}", _cmd_run)
    add_run_arguments(p)
    p.add_argument("script", metavar="SCRIPT", nargs="?",
                   help="a worker script (.py) to run instead of the default worker")
    p.add_argument("script_args", metavar="ARGS", nargs=argparse.REMAINDER,
                   help="the script's arguments (its sys.argv[1:]), options included")
    p.set_defaults(resource=None)  # None: not given (refused with a SCRIPT)

    p = sub.add_parser("server", help="run a private Prosody or ejabberd (cluster) on 127.0.0.1 for development")
    from libs import devserver

    devserver.add_arguments(p)  # its description and examples
    p.epilog = (p.epilog or "") + "\n" + _exit_codes((EXIT_OK, "stopped by Ctrl+C or SIGTERM"),
                                                     (1, "the server failed to start, or exited unexpectedly"),
                                                     (EXIT_USAGE, "bad usage (e.g. --nodes 2 without --engine ejabberd)"),
                                                     (devserver.EXIT_NOT_INSTALLED, "the server is not installed"))
    p.set_defaults(func=_cmd_server)

    p = command("demo", "private Prosody + the default worker + a ping, all on this machine",
                "Start a private Prosody on 127.0.0.1, the default worker on it, and ping it; then\n"
                "keep both running until Ctrl+C or SIGTERM (--once: exit after the ping). Either way\n"
                "the worker and the server are stopped and the server's data removed.",
                _exit_codes((EXIT_OK, "--once: the worker answered the ping; otherwise stopped by Ctrl+C or "
                                      "SIGTERM"),
                            (EXIT_USAGE, "bad usage"),
                            (EXIT_TIMEOUT, "the demo worker did not answer within --timeout"),
                            (EXIT_CONNECT, "Prosody is not installed")), _cmd_demo)
    p.add_argument("--once", action="store_true", help="exit after the ping instead of serving until Ctrl+C")
    p.add_argument("--port", type=int, default=None, help="client port for Prosody (default: a free one)")
    add_connection_arguments(p, 20.0, "the worker")

    p = command("completion", "print a shell completion script (bash, zsh or fish)",
                "Print a completion script for qe-worker's subcommands and options to stdout.\n"
                "It is generated from this version's options: generate it again after an upgrade.\n\n"
                "  bash:  in ~/.bashrc:  source <(qe-worker completion bash)\n"
                "         or once: qe-worker completion bash > ~/.local/share/bash-completion/completions/qe-worker\n"
                "  zsh:   in ~/.zshrc, after compinit:  source <(qe-worker completion zsh)\n"
                "         or once: qe-worker completion zsh > \"${fpath[1]}/_qe-worker\"\n"
                "  fish:  once: qe-worker completion fish > ~/.config/fish/completions/qe-worker.fish",
                _exit_codes((EXIT_OK, "the script is printed"), (EXIT_USAGE, "bad usage (e.g. an unknown shell)")),
                _cmd_completion)
    from libs._completion import SHELLS

    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parser().parse_args(argv)
    except _UsageError as exc:
        if "--json" in argv:  # not parsed: its parser refused the command line
            print(json.dumps({"error": {"code": "usage", "message": exc.message}}, ensure_ascii=False))
            raise SystemExit(EXIT_USAGE) from None
        argparse.ArgumentParser.error(exc.parser, exc.message)  # usage and message on stderr, exit 2
    try:
        return int(args.func(args))
    except CliError as exc:
        return _report(exc, getattr(args, "json", False))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
