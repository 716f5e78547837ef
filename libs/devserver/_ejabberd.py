"""A private, throwaway ejabberd on 127.0.0.1 -- one node or an N-node cluster -- for demos and
integration tests.

Why this exists: a worker must not work on Prosody only. ejabberd is the other server people
run, and its cluster routes stanzas between Erlang nodes, which Prosody cannot show us. Every
node is an ordinary child process of ours (``erl ... -s ejabberd``), never the system service:
its own directory under ``workdir`` (config, Mnesia spool, logs), its own c2s port on
127.0.0.1, and one ``epmd`` of the cluster's own on a free loopback port, with a random
cookie in ``workdir/.erlang.cookie`` (mode 0400; not on any command line).

Measured facts and quirks (ejabberd 23.01 and Erlang 25 from Debian 12; see also
XMPP-NOTES "ejabberd cluster on one machine"):

* The packaged ``ejabberdctl`` switches to the ``ejabberd`` user, reads the system cookie and
  lets epmd/distribution bind 0.0.0.0; we call ``erl`` directly with ``ERL_LIBS`` pointing at
  the package's code, ``-start_epmd false`` (an epmd that ``erl`` starts by itself outlives the
  nodes) and ``-kernel inet_dist_use_interface {127,0,0,1}``.
* Control commands run in a short-lived hidden node: the same ``erl`` prefix with another
  ``-sname``, ``-hidden`` and ``-s ejabberd_ctl -extra NODE COMMAND ARGS`` (~0.3 s each).
  ``register`` is not an upsert (it fails with "conflict"), and Mnesia logs writes
  asynchronously: an account registered just before a ``kill -9`` is lost. ``register()``
  therefore calls ``ejabberd_auth`` from its control node (``try_register``, else
  ``set_password``) and then ``mnesia:sync_log()`` (``mnesia:dump_log()`` was not enough).
* ``join_cluster ej1@localhost`` runs on the joining node before any client connects: it
  wipes that node's database and restarts ejabberd there. A restarted node keeps its spool
  and rejoins the cluster by itself in ~1.5 s, so ``join_cluster`` runs once per workdir.
* Debian's default config throttles c2s to 3000 B/s (``shaper: normal``) and requires
  STARTTLS; ours has ``shaper: none``, no TLS, ``max_user_sessions`` high (a test logs in
  dozens of resources of one account) and ``max_user_conferences`` high.
* An unknown module name or a bad option value stops the node at once (logged as
  ``critical`` in ``ejabberd.log``); ``start()`` reports the log tail.
* The config is written as JSON (which is YAML). Debian's build has ``mod_carboncopy``, not
  ``mod_carbons``; ``max_user_offline_messages`` must be positive (0 stops the node).
* Unlike Prosody, which rewrites a forged ``from`` to the sender's JID, ejabberd closes the
  stream of a client that sends one (``invalid-from``); and its ``service-unavailable`` bounce
  of an IQ to an offline full JID carries the request's payload back (docs/servers.md).
* Rooms are not replicated between nodes: a room lives on the node where it was created; on
  ``kill -9`` of that node it vanishes silently (a send gets ``item-not-found``).
* One node is ready in ~1.5 s, two nodes with the join in ~3-4 s; 76-95 MB RSS per node.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import secrets
import signal
import subprocess
import tempfile
import time
import weakref
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ._common import (
    LOOPBACK,
    ManagedServer,
    ServerNotInstalled,
    check_account,
    check_domain,
    check_port,
    client_env,
    finalize,
    free_port,
    hard_stop,
    log_tails,
    signal_group,
    stream_answers,
    which,
)

__all__ = [
    "EjabberdNotInstalled",
    "EjabberdCluster",
    "MAX_NODES",
]

log = logging.getLogger(__name__)

_INSTALL_HINT = ("ejabberd not found: install it with "
                 "`apt-get install -y --no-install-recommends ejabberd` (Debian)")

#: More nodes than this on one machine only measures the machine (each node is ~90 MB).
MAX_NODES = 5

_READY_POLL = 0.05
_CTL_TIMEOUT = 60.0
# Where Debian (and the upstream Makefile) put ejabberd's code; ERL_LIBS is their parent.
_APP_GLOBS = (
    "/usr/lib/*/ejabberd-*/ebin/ejabberd.app",
    "/usr/lib/ejabberd-*/ebin/ejabberd.app",
    "/usr/lib/erlang/lib/ejabberd-*/ebin/ejabberd.app",
    "/usr/local/lib/erlang/lib/ejabberd-*/ebin/ejabberd.app",
)


class EjabberdNotInstalled(ServerNotInstalled):
    """Raised when ``erl``/``epmd`` or ejabberd's Erlang code cannot be found."""

    def __init__(self, message: str = _INSTALL_HINT) -> None:
        super().__init__(message)


def _erl_libs() -> str:
    """The directory that holds ``ejabberd-VERSION/`` (``QE_EJABBERD_LIBS`` overrides)."""
    override = os.environ.get("QE_EJABBERD_LIBS")
    if override:
        return override
    for pattern in _APP_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return str(Path(found[-1]).parents[2])
    raise EjabberdNotInstalled()




class EjabberdCluster(ManagedServer):
    """``nodes`` ejabberd nodes on 127.0.0.1 owned by this process, clustered (one node: a
    plain single server).

    Nodes are numbered from 1; ``port`` is node 1's c2s port, ``ports[i - 1]`` node i's.
    Accounts are spread over the nodes round-robin in the order they are registered
    (``node_of``), and ``env(user, password)`` points each client at its account's node, so
    that a test written for one server sends its stanzas across nodes on a cluster; pass
    ``node=`` to choose. Ports stay fixed for the object's life so that ``kill_node`` +
    ``start_node`` looks like a real node outage to the clients connected to it.
    """

    host: str = LOOPBACK
    engine: str = "ejabberd"

    def __init__(
        self,
        *,
        nodes: int = 1,
        domain: str = "localhost",
        port: int | None = None,
        workdir: str | os.PathLike[str] | None = None,
        stanza_size_limit: int = 1_100_000,
        muc: bool = True,
    ) -> None:
        if not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"nodes must be between 1 and {MAX_NODES}, got {nodes}")
        domain = check_domain(domain)
        check_port(port)
        if stanza_size_limit <= 0:
            raise ValueError("stanza_size_limit must be positive")
        # Fail before creating anything on disk: the message tells the user how to fix it.
        self._erl = which("erl", EjabberdNotInstalled)
        self._epmd = which("epmd", EjabberdNotInstalled)
        self._erl_libs = _erl_libs()

        self.domain: str = domain
        self.nodes = nodes
        # port: node 1's; the others (and epmd) get free ones.
        self.ports: list[int] = [port if port is not None and i == 0 else free_port(self.host)
                                 for i in range(nodes)]
        self.epmd_port = free_port(self.host)
        self.stanza_size_limit = stanza_size_limit
        self.muc = muc
        self._owned = workdir is None
        if workdir is None:
            self.workdir: Path = Path(tempfile.mkdtemp(prefix="qe-ejabberd-"))
        else:
            self.workdir = Path(workdir).resolve()
            self.workdir.mkdir(parents=True, exist_ok=True)
        # [epmd, node 1, ..., node N]: one list so that the finalizer sees replacements
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * (nodes + 1)
        self._consoles: list[Any] = [None] * (nodes + 1)
        self._placement: dict[str, int] = {}
        self._finalizer = weakref.finalize(self, finalize, self._procs, self.workdir, self._owned)

    # -- names and paths -------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.ports[0]

    def node_name(self, node: int) -> str:
        self._check_node(node)
        return f"ej{node}@localhost"

    def node_dir(self, node: int) -> Path:
        self._check_node(node)
        return self.workdir / f"node{node}"

    def log_path(self, node: int) -> Path:
        return self.node_dir(node) / "logs" / "ejabberd.log"

    def config_path(self, node: int) -> Path:
        return self.node_dir(node) / "ejabberd.yml"

    @property
    def _cookie_path(self) -> Path:
        return self.workdir / ".erlang.cookie"

    @property
    def _inetrc_path(self) -> Path:
        return self.workdir / "inetrc"

    @property
    def _joined_marker(self) -> Path:
        return self.workdir / "cluster-joined"

    def _check_node(self, node: int) -> None:
        if not 1 <= node <= self.nodes:
            raise ValueError(f"no node {node}: this cluster has nodes 1..{self.nodes}")

    # -- state -----------------------------------------------------------------------------
    def node_running(self, node: int) -> bool:
        self._check_node(node)
        proc = self._procs[node]
        return proc is not None and proc.poll() is None

    @property
    def running(self) -> bool:
        """True while every node process is alive (one may still be starting)."""
        return all(self.node_running(n) for n in range(1, self.nodes + 1))

    def pids(self) -> list[int]:
        """The pids of the running node processes and of epmd (for leak checks)."""
        return [p.pid for p in self._procs if p is not None and p.poll() is None]

    # -- config ----------------------------------------------------------------------------
    def config(self, node: int = 1) -> dict[str, Any]:
        """Node ``node``'s ``ejabberd.yml`` as data; every path is inside ``workdir``."""
        self._check_node(node)
        d = self.domain
        modules: dict[str, Any] = {
            "mod_adhoc": {},
            "mod_carboncopy": {},
            "mod_disco": {},
            "mod_ping": {},
            "mod_roster": {},
            "mod_stream_mgmt": {},
        }
        if self.muc:
            # Prosody's rooms (libs.devserver._prosody._MUC_OPTIONS): created by local
            # accounts, non-anonymous, temporary, no history for newcomers.
            modules["mod_muc"] = {
                "host": f"conference.{d}",
                "access": "all",
                "access_create": "local",
                "history_size": 0,
                "max_user_conferences": 100000,
                "default_room_options": {"anonymous": False, "persistent": False, "mam": False},
            }
        return {
            "hosts": [d],
            "loglevel": "info",  # start() waits for an info line
            "log_rotate_count": 0,
            "hide_sensitive_log_data": True,
            "certfiles": [],
            "auth_method": ["internal"],
            "auth_password_format": "scram",
            "s2s_access": "none",
            "acl": {"local": {"user_regexp": ""}},
            "access_rules": {"local": {"allow": "local"}, "c2s": {"allow": "all"}},
            # Prosody has no session limit; tests log in many resources of one account.
            "shaper_rules": {"max_user_sessions": 100000, "c2s_shaper": "none"},
            "listen": [{
                "port": self.ports[node - 1],
                "ip": self.host,
                "module": "ejabberd_c2s",
                "backlog": 1024,
                "max_stanza_size": self.stanza_size_limit,
                "shaper": "none",
                "access": "c2s",
                "starttls": False,
                "starttls_required": False,
            }],
            "modules": modules,
        }

    def config_text(self, node: int = 1) -> str:
        """``config(node)`` written as JSON, which is YAML: no quoting of ours can break it."""
        return ("# Generated by libs.devserver: a private, loopback-only ejabberd node. Do not edit.\n"
                + json.dumps(self.config(node), indent=2) + "\n")

    def _prepare(self) -> None:
        # Resolve "localhost" from this file: without it Erlang starts inet_gethost helpers,
        # which become unreaped zombies when a node is killed or a control node halts.
        self._inetrc_path.write_text('{lookup, [file]}.\n{host, {127,0,0,1}, ["localhost"]}.\n',
                                     encoding="ascii")
        if not self._cookie_path.exists():
            self._cookie_path.write_text(secrets.token_hex(20), encoding="ascii")
            self._cookie_path.chmod(0o400)  # Erlang refuses a cookie others may read
        for n in range(1, self.nodes + 1):
            for sub in ("spool", "logs"):
                (self.node_dir(n) / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            self.config_path(n).write_text(self.config_text(n), encoding="utf-8")

    def _erl_env(self, node: int | None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_LIBS=self._erl_libs,
            HOME=str(self.workdir),  # where Erlang reads .erlang.cookie
            ERL_INETRC=str(self._inetrc_path),
        )
        if node is not None:
            env.update(
                EJABBERD_CONFIG_PATH=str(self.config_path(node)),
                EJABBERD_LOG_PATH=str(self.log_path(node)),
                ERL_CRASH_DUMP=str(self.node_dir(node) / "erl_crash.dump"),
            )
        return env

    def _erl_prefix(self, sname: str) -> list[str]:
        return [self._erl, "-sname", sname, "-start_epmd", "false",
                "-kernel", "inet_dist_use_interface", "{127,0,0,1}", "-noinput", "+K", "true"]

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "EjabberdCluster":
        """Start epmd and every node (in parallel), join nodes 2..N to node 1 the first time,
        and return once every node answers an XMPP stream on its port."""
        self._prepare()
        t0 = time.monotonic()
        deadline = t0 + timeout
        try:
            self._start_epmd()
            starting = [n for n in range(1, self.nodes + 1) if not self.node_running(n)]
            offsets = {n: self._spawn_node(n) for n in starting}
            for n in starting:
                self._wait_ready(n, offsets[n], deadline)
            if self.nodes > 1 and not self._joined_marker.exists():
                for n in range(2, self.nodes + 1):
                    offset = self._log_size(n)
                    self._ctl(n, "join_cluster", self.node_name(1), timeout=max(5.0, deadline - time.monotonic()))
                    self._wait_ready(n, offset, deadline, restarted=True)
                self._joined_marker.touch()
            for n in starting:
                self._wait_clustered(n, deadline)
        except BaseException:
            self._stop_all(graceful=False)
            raise
        log.info("ejabberd: %d node(s) on %s ports %s (domain %s) after %.3fs; workdir %s",
                 self.nodes, self.host, self.ports, self.domain, time.monotonic() - t0, self.workdir)
        return self

    def start_node(self, node: int, timeout: float = 30.0) -> None:
        """Start one stopped or killed node again on its port and spool; it rejoins the
        cluster by itself."""
        self._check_node(node)
        if self.node_running(node):
            return
        self._start_epmd()
        offset = self._spawn_node(node)
        deadline = time.monotonic() + timeout
        self._wait_ready(node, offset, deadline)
        self._wait_clustered(node, deadline)

    def _wait_clustered(self, node: int, deadline: float) -> None:
        """Wait until ``node`` sees every running node of the cluster. A node that restarts
        accepts clients before it has reconnected to the others, and until then it routes as
        if their sessions did not exist: a call from a client there to a worker on another
        node was answered "not online" (seen in CI after a whole-cluster restart)."""
        if self.nodes == 1:
            return
        wanted = {self.node_name(n) for n in range(1, self.nodes + 1) if self.node_running(n)}
        while True:
            seen = set(self._ctl(node, "list_cluster", check=False).stdout.decode().split())
            if wanted <= seen:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"ejabberd node {node} did not rejoin the cluster in time (sees {sorted(seen)}, "
                                   f"running {sorted(wanted)})\n{self._log_tails(node)}")
            time.sleep(_READY_POLL)

    def kill_node(self, node: int) -> None:
        """SIGKILL one node, as in a crash: its clients see a dropped TCP connection, the other
        nodes are not told (rooms on it vanish). Its data is kept."""
        self._check_node(node)
        proc = self._procs[node]
        if proc is not None and proc.poll() is None:
            hard_stop(proc, reap_children=True)
            log.info("ejabberd node %d (pid %d) killed", node, proc.pid)
        self._close_console(node)

    def stop_node(self, node: int, timeout: float = 10.0) -> None:
        """Stop one node gracefully (SIGTERM: occupants of its rooms get unavailable presence)."""
        self._check_node(node)
        self._stop_proc(node, timeout)

    def restart_node(self, node: int, timeout: float = 30.0) -> None:
        self.stop_node(node)
        self.start_node(node, timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every node (SIGTERM, SIGKILL after ``timeout``), then epmd. Idempotent."""
        self._stop_all(graceful=True, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL every node, as in a crash of the whole service. Data is kept."""
        for n in range(1, self.nodes + 1):
            self.kill_node(n)





    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EjabberdCluster {self.domain} {self.host}:{self.ports} {state} {self.workdir}>"

    # -- accounts --------------------------------------------------------------------------
    def register(self, user: str, password: str) -> str:
        """Create ``user@domain`` (or reset its password) and return the bare JID.

        Needs a running node (accounts are replicated over the cluster). The account gets the
        next node in round-robin order for ``env``.
        """
        check_account(user, password)
        node = next((n for n in range(1, self.nodes + 1) if self.node_running(n)), None)
        if node is None:
            raise RuntimeError("ejabberd is not running: start() it before registering accounts")
        t0 = time.monotonic()
        result = self._register_durably(node, user, password)
        if result.returncode != 0:
            out = (result.stdout + result.stderr).decode("utf-8", errors="replace").strip()
            raise RuntimeError(f"ejabberd register {user}@{self.domain} failed ({result.returncode}): {out}")
        key = user.lower()
        if key not in self._placement:
            self._placement[key] = len(self._placement) % self.nodes + 1
        jid = f"{key}@{self.domain}"
        log.debug("registered %s in %.3fs", jid, time.monotonic() - t0)
        return jid

    def node_of(self, user: str) -> int:
        """The node ``env`` points ``user`` at: round-robin by registration order; a hash of
        the name for accounts registered elsewhere."""
        key = user.split("@", 1)[0].lower()
        if key in self._placement:
            return self._placement[key]
        return zlib.crc32(key.encode()) % self.nodes + 1

    def env(self, user: str, password: str, node: int | None = None) -> dict[str, str]:
        """The ``QE_*`` variables for ``user`` on ``node`` (default: ``node_of(user)``)."""
        node = self.node_of(user) if node is None else node
        self._check_node(node)
        jid = user if "@" in user else f"{user.lower()}@{self.domain}"
        return client_env(jid, password, self.host, self.ports[node - 1])

    # -- internals -------------------------------------------------------------------------
    def _start_epmd(self) -> None:
        proc = self._procs[0]
        if proc is not None and proc.poll() is None:
            return
        self._procs[0] = subprocess.Popen(
            [self._epmd, "-port", str(self.epmd_port), "-address", self.host],
            cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )

    def _spawn_node(self, node: int) -> int:
        """Start node ``node``'s process; returns its log size before, to read only new lines."""
        offset = self._log_size(node)
        self._close_console(node)
        console = open(self.node_dir(node) / "console.log", "ab")
        self._consoles[node] = console
        spool = str(self.node_dir(node) / "spool")
        cmd = self._erl_prefix(self.node_name(node)) + [
            "-mnesia", "dir", json.dumps(spool),  # an Erlang string literal
            "-s", "ejabberd",
        ]
        self._procs[node] = subprocess.Popen(
            cmd, cwd=self.node_dir(node), env=self._erl_env(node), stdin=subprocess.DEVNULL,
            stdout=console, stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: signals reach this node only
        )
        return offset

    def _log_size(self, node: int) -> int:
        try:
            return self.log_path(node).stat().st_size
        except OSError:
            return 0

    def _new_log(self, node: int, offset: int) -> str:
        try:
            with open(self.log_path(node), "rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _wait_ready(self, node: int, offset: int, deadline: float, restarted: bool = False) -> None:
        """Wait for ejabberd's own "Start accepting TCP connections at HOST:PORT" line for our
        port (a connect alone could reach a foreign process on it), then an XMPP answer."""
        port = self.ports[node - 1]
        marker = f"Start accepting TCP connections at {self.host}:{port} "
        proc = self._procs[node]
        assert proc is not None
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ejabberd node {node} exited early with code {proc.returncode}\n"
                                   f"{self._log_tails(node)}")
            new_log = self._new_log(node, offset)
            if "eaddrinuse" in new_log:
                raise RuntimeError(f"ejabberd node {node} could not listen on {self.host}:{port} "
                                   f"(port in use?)\n{self._log_tails(node)}")
            if marker in new_log and stream_answers(self.host, port, self.domain,
                                                    min(1.0, max(0.05, deadline - time.monotonic()))):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"ejabberd node {node} did not accept connections on "
                                   f"{self.host}:{port} in time\n{self._log_tails(node)}")
            time.sleep(_READY_POLL)

    def _ctl(self, node: int, *args: str, check: bool = True,
             timeout: float = _CTL_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
        """Run an ejabberdctl command on ``node`` from a short-lived hidden Erlang node.

        Arguments travel on that node's command line (visible in ``ps``): acceptable for a
        loopback throwaway server only, as with prosodyctl.
        """
        cmd = self._erl_prefix(f"qectl{secrets.token_hex(4)}@localhost") + [
            "-hidden", "-s", "ejabberd_ctl", "-extra", self.node_name(node), *args]
        result = subprocess.run(cmd, cwd=self.workdir, env=self._erl_env(None), stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            out = (result.stdout + result.stderr).decode("utf-8", errors="replace").strip()
            raise RuntimeError(f"ejabberd {args[0]} on node {node} failed ({result.returncode}): {out}")
        return result

    def _register_durably(self, node: int, user: str, password: str) -> subprocess.CompletedProcess[bytes]:
        """Create the account or set its password, then sync Mnesia's transaction log to disk.

        Why not ``ejabberdctl register``: it is no upsert, and Mnesia logs a write
        asynchronously, so an account registered just before a ``kill -9`` was gone after the
        restart (measured: the login then fails as if the password were wrong). Arguments go
        hex-encoded, so no character of a password can reach Erlang's parser.
        """
        script = (
            "[N, U, H, P] = [binary:decode_hex(list_to_binary(A)) || A <- init:get_plain_arguments()], "
            "Node = binary_to_atom(N), "
            "R = case rpc:call(Node, ejabberd_auth, try_register, [U, H, P], 30000) of "
            "{error, exists} -> rpc:call(Node, ejabberd_auth, set_password, [U, H, P], 30000); "
            "Other -> Other end, "
            "D = rpc:call(Node, mnesia, sync_log, [], 30000), "
            "io:format(\"~p ~p~n\", [R, D]), "
            "halt(case {R, D} of {ok, ok} -> 0; _ -> 1 end)."
        )
        hexed = [v.encode().hex() for v in (self.node_name(node), user, self.domain, password)]
        cmd = self._erl_prefix(f"qectl{secrets.token_hex(4)}@localhost") + [
            "-hidden", "-eval", script, "-extra", *hexed]
        return subprocess.run(cmd, cwd=self.workdir, env=self._erl_env(None), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=_CTL_TIMEOUT)

    def _stop_proc(self, index: int, timeout: float) -> None:
        proc = self._procs[index]
        if proc is not None and proc.poll() is None:
            signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("ejabberd process %d ignored SIGTERM for %.1fs; killing it", proc.pid, timeout)
                hard_stop(proc)
        self._close_console(index)

    def _stop_all(self, *, graceful: bool, timeout: float = 10.0) -> None:
        nodes = list(range(1, self.nodes + 1))
        if graceful:
            # In parallel: each node takes ~1 s to stop.
            with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
                list(pool.map(lambda n: self._stop_proc(n, timeout), nodes))
        else:
            for n in nodes:
                self.kill_node(n)
        self._stop_proc(0, timeout)  # epmd last: stopping nodes unregister from it

    def _close_console(self, index: int) -> None:
        console = self._consoles[index]
        if console is not None:
            console.close()
            self._consoles[index] = None

    def _log_tails(self, node: int) -> str:
        return log_tails(self.node_dir(node) / "console.log", self.log_path(node))

