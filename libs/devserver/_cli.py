"""``qe-worker server``: run a private Prosody or ejabberd (cluster) until Ctrl+C/SIGTERM.

Why a CLI: a developer points a worker at a server by pasting ``export QE_...`` lines; this
prints them for every account, on the account's own node on a cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import secrets
import shlex
import signal
import sys
import time
from typing import Sequence

from ._common import ServerNotInstalled, valid_user
from ._ejabberd import MAX_NODES, EjabberdCluster
from ._prosody import DevServer

__all__ = [
    "EXIT_NO_PROSODY",
    "EXIT_NOT_INSTALLED",
    "ENGINES",
    "add_arguments",
    "make_server",
    "run_from_args",
    "serve",
]

#: Exit code of the CLI when the chosen server is not installed.
EXIT_NOT_INSTALLED = 3
EXIT_NO_PROSODY = EXIT_NOT_INSTALLED  # its name before ejabberd

ENGINES = ("prosody", "ejabberd")

_DESCRIPTION = """\
Start a private, throwaway XMPP server on 127.0.0.1 for demos and tests: Prosody (default)
or ejabberd, the latter also as a cluster of N nodes on this machine (--nodes).

It runs as child processes with their own config and data in a temp directory (or --dir),
listens on loopback only, offers no TLS, and touches nothing of the system-wide server
(/etc, /var/lib, its service, its Erlang cookie). For every account it prints a ready-to-paste
`export QE_...` line (on a cluster: pointing at the account's node, spread round-robin);
paste it in another shell to point a worker or client at this server. Ctrl+C (or SIGTERM)
stops the server and removes the temp directory.
"""

_EPILOG = """\
examples:
  qe-worker server
  qe-worker server --port 5222 --user worker:secret --user client:secret2
  qe-worker server --dir ./.prosody   # keep accounts between runs
  qe-worker server --engine ejabberd --nodes 2   # worker and client on different nodes
"""


def _user_spec(value: str) -> tuple[str, str]:
    name, sep, password = value.partition(":")
    if not sep or not name or not password:
        raise argparse.ArgumentTypeError(f"expected NAME:PASSWORD, got {value!r}")
    if not valid_user(name):
        raise argparse.ArgumentTypeError(f"invalid user name {name!r}: use letters, digits, '.', '_' or '-'")
    return name, password


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def _nodes(value: str) -> int:
    try:
        nodes = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 1 <= nodes <= MAX_NODES:
        raise argparse.ArgumentTypeError(f"nodes must be between 1 and {MAX_NODES}, got {nodes}")
    return nodes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``server`` options to ``parser`` (lets the main CLI embed this as a subcommand)."""
    if parser.description is None:
        parser.description = _DESCRIPTION
    if parser.epilog is None:
        parser.epilog = _EPILOG
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--engine", choices=ENGINES, default="prosody",
                        help="which server to run (default: %(default)s)")
    parser.add_argument("--nodes", type=_nodes, default=None, metavar="N",
                        help=f"ejabberd only: run a cluster of N nodes (1-{MAX_NODES}, default 1), "
                             "each with its own port; --port is node 1's")
    parser.add_argument("--port", type=_port, default=None,
                        help="c2s port on 127.0.0.1 (default: a free port chosen by the OS)")
    parser.add_argument("--domain", default="localhost",
                        help="XMPP domain of the virtual host (default: %(default)s)")
    parser.add_argument("--user", dest="users", action="append", type=_user_spec, default=None,
                        metavar="NAME:PASSWORD",
                        help="account to create (repeatable; default: 'worker' and 'client' "
                             "with random passwords)")
    parser.add_argument("--dir", dest="workdir", default=None, metavar="DIR",
                        help="keep config and data in DIR (kept on exit) instead of a temp dir")


def make_server(args: argparse.Namespace) -> DevServer | EjabberdCluster:
    """The server the options ask for (not started). ValueError for a bad combination,
    ServerNotInstalled when its executables are missing."""
    engine = getattr(args, "engine", "prosody")
    nodes = getattr(args, "nodes", None)
    if engine == "prosody":
        if nodes is not None and nodes != 1:
            raise ValueError("--nodes needs --engine ejabberd (Prosody does not cluster)")
        return DevServer(domain=args.domain, port=args.port, workdir=args.workdir)
    if engine == "ejabberd":
        return EjabberdCluster(nodes=nodes or 1, domain=args.domain, port=args.port, workdir=args.workdir)
    raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")


def _export_line(env: dict[str, str]) -> str:
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())


def _banner(server: DevServer | EjabberdCluster) -> str:
    if isinstance(server, EjabberdCluster):
        where = ", ".join(f"node {i + 1} {server.host}:{port}" for i, port in enumerate(server.ports))
        kind = "ejabberd dev server" if server.nodes == 1 else f"ejabberd dev cluster ({server.nodes} nodes)"
        return f"# {kind}: {where}, domain {server.domain}, data in {server.workdir}"
    return (f"# Prosody dev server: {server.host}:{server.port}, domain {server.domain}, "
            f"data in {server.workdir}")


def _account_comment(server: DevServer | EjabberdCluster, name: str) -> str | None:
    if isinstance(server, EjabberdCluster) and server.nodes > 1:
        return f"# {name}: node {server.node_of(name)}"
    return None


def run_from_args(args: argparse.Namespace) -> int:
    """Run the server until Ctrl+C/SIGTERM. Returns the process exit code (0 on clean stop).
    For a process's main only: it returns with SIGINT/SIGTERM ignored (it is on its way out)."""
    users: Sequence[tuple[str, str]] = args.users or [
        ("worker", secrets.token_urlsafe(12)),
        ("client", secrets.token_urlsafe(12)),
    ]
    try:
        server = make_server(args)
    except ServerNotInstalled as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_INSTALLED
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # A plain flag, not a threading.Event: Event.set() takes a lock, and a second signal that
    # lands while the first handler holds it (Ctrl+C to the job, then SIGTERM from a script's
    # clean-up) deadlocked the process in its own handler, leaving the nodes running.
    stop_requested = [False]

    def _on_signal(signum: int, frame: object) -> None:
        stop_requested[0] = True

    # Handle SIGINT ourselves too: a background job of a non-interactive shell starts with
    # SIGINT ignored, so Python's KeyboardInterrupt would never fire there.
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(signum, _on_signal)
        except ValueError:  # not the main thread: the caller has to stop us
            pass
    try:
        try:
            server.start()
            for name, password in users:
                server.register(name, password)
        except (RuntimeError, TimeoutError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(_banner(server))
        for name, password in users:
            comment = _account_comment(server, name)
            if comment:
                print(comment)
            print(_export_line(server.env(name, password)))
        print("# Ctrl+C stops the server.", flush=True)
        while not stop_requested[0]:
            time.sleep(0.1)  # the flag is read within 0.1 s of a signal
            if not server.running:
                if isinstance(server, DevServer):
                    print(f"error: prosody exited unexpectedly\n{server._log_tails()}", file=sys.stderr)
                else:
                    down = [n for n in range(1, server.nodes + 1) if not server.node_running(n)]
                    print(f"error: ejabberd node(s) {down} exited unexpectedly; logs in {server.workdir}",
                          file=sys.stderr)
                return 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        server.cleanup()
        # The process ends after this, and a signal that arrives now (a script's SIGTERM right
        # after the Ctrl+C) must not turn a clean stop into a kill: ignored, not our flag
        # handler, since Python puts the default back for its own handlers as it exits.
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(signum, signal.SIG_IGN)


def serve(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m libs.devserver [options]``."""
    parser = argparse.ArgumentParser(prog="qe-worker server")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_from_args(args)
