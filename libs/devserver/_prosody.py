"""A private, throwaway Prosody on 127.0.0.1 for demos and integration tests.

Why this exists: the workers need a real XMPP server to talk to, but a developer or a CI job
must not have to configure (or be able to break) the system-wide Prosody. ``DevServer`` writes
its own config into a temp directory, runs ``prosody -F`` as a child process on a free
loopback port and creates accounts with ``prosodyctl`` -- nothing in ``/etc/prosody`` or
``/var/lib/prosody`` is read or written (checked with ``strace``), and no socket other than
the loopback c2s listener is opened (no s2s, no HTTP, no component port).

Measured facts and quirks (Prosody 0.12.3 from Debian 12, checked with strace/openssl):

* ``prosody --config CFG -F`` is listening in ~0.1 s; as root the config needs
  ``run_as_root = true`` (otherwise ``prosodyctl`` drops to the ``prosody`` user, which cannot
  write our root-owned temp dir).
* ``prosodyctl --config CFG register USER DOMAIN PASSWORD`` works both while the server is
  stopped and while it runs: with ``storage = "internal"`` the running server reads the account
  file on each login, so a freshly registered account can log in at once (no reload needed).
  ``register`` on an existing user exits 0 and *overwrites the password* (an upsert).
  Usernames are nodeprep'ed by Prosody (``Alice`` is stored as ``alice``); an empty password
  is accepted by prosodyctl, so we reject it ourselves. The password travels on prosodyctl's
  command line (visible in ``ps``), acceptable for a loopback throwaway server only.
* ``mod_tls`` advertises STARTTLS even when no certificate exists, and the handshake then
  fails ("no shared cipher"): a client that tries STARTTLS gets disconnected. We therefore do
  **not** load ``tls``, so no TLS is offered at all; clients must use plain TCP
  (``QE_TLS=off``; with slixmpp also ``feature_mechanisms.unencrypted_scram = True``).
* Without ``certificates = <dir>`` Prosody logs an error about ``<config dir>/certs``; we point
  it at an empty ``certs/`` directory in the workdir.
* ``installer_plugin_path`` defaults to ``/var/lib/prosody/custom_plugins`` (resolved against the
  compiled-in data dir before ``data_path`` is applied); we point it into the workdir so that
  plugins installed system-wide for the real server cannot change our test server.
* When the c2s port is taken, Prosody does *not* exit: it logs ``Failed to open server port``
  and keeps running. ``start()`` therefore waits for Prosody's own log line
  ``Activated service 'c2s' on [127.0.0.1]:PORT`` instead of trusting a connect alone, which
  could reach a foreign process on that port.
* The port is bound (and the kernel accepts connections) *before* Prosody's event loop runs,
  and mod_posix installs its SIGTERM handler from a timer on the loop: a SIGTERM right after
  the port opens kills Prosody uncleanly (exit -15). ``start()`` therefore confirms readiness
  with a short XMPP probe (stream header -> ``<stream:features>`` from our domain).
* A session still open when SIGTERM arrives makes Prosody's shutdown wait ~1 s ("Waiting for
  sessions to close"); with none open, ``stop()`` takes ~10 ms. The probe closes its stream
  and waits for Prosody to hang up for that reason.
* Do not load ``limits`` (it throttles a client to a few dozen stanzas/s); a stanza above
  ``c2s_stanza_size_limit`` makes Prosody close the sender's whole stream.
* After SIGKILL the stale ``prosody.pid`` is harmless: the next start rewrites it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import time
import weakref
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
    "ProsodyNotInstalled",
    "DevServer",
]

log = logging.getLogger(__name__)

_INSTALL_HINT = "prosody not found: install it with `apt-get install -y prosody` (Debian)"

# Rooms as workers use them: unlocked at once (no configuration form to submit first),
# non-anonymous (every occupant sees real JIDs, status code 100), temporary (gone with the
# last occupant), no history replayed to newcomers, and created by local accounts only.
# Measured on Prosody 0.12.3; muc_room_default_history_length is read by mod_muc.lua there.
# ejabberd gets the same rooms (libs.devserver._ejabberd).
_MUC_OPTIONS = (
    "muc_room_locking = false",
    "muc_room_default_public_jids = true",
    "muc_room_default_persistent = false",
    "muc_room_default_history_length = 0",
    'restrict_room_creation = "local"',
)

_READY_POLL = 0.02  # seconds between readiness checks; Prosody needs ~0.1 s to listen


class ProsodyNotInstalled(ServerNotInstalled):
    """Raised when the ``prosody``/``prosodyctl`` executables cannot be found on PATH."""

    def __init__(self, message: str = _INSTALL_HINT) -> None:
        super().__init__(message)



def _lua_str(value: str | os.PathLike[str]) -> str:
    """Quote a value as a Lua string literal, so odd paths cannot break (or inject into) the config."""
    out = ['"']
    for ch in os.fspath(value):
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append("\\%03d" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)



class DevServer(ManagedServer):
    """A Prosody instance owned by this process, bound to 127.0.0.1 only.

    All state (config, accounts, pidfile, logs) lives in ``workdir``; ``cleanup()`` removes it
    when we created it. The port stays fixed for the object's life so that ``kill()`` +
    ``restart()`` looks like a real server outage to connected clients.
    """

    host: str = LOOPBACK

    def __init__(
        self,
        *,
        domain: str = "localhost",
        port: int | None = None,
        workdir: str | os.PathLike[str] | None = None,
        stanza_size_limit: int = 1_100_000,
        muc: bool = True,
        tls: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
        nagle: bool = True,
    ) -> None:
        domain = check_domain(domain)
        check_port(port)
        if stanza_size_limit <= 0:
            raise ValueError("stanza_size_limit must be positive")
        # Fail before creating anything on disk: the message tells the user how to fix it.
        self._prosody = which("prosody", ProsodyNotInstalled)
        self._prosodyctl = which("prosodyctl", ProsodyNotInstalled)

        self.domain: str = domain
        self.port: int = port if port is not None else free_port(self.host)
        self.stanza_size_limit = stanza_size_limit
        self.muc = muc
        # Prosody's own default (Nagle on its sockets) unless told otherwise: what users'
        # servers do, so tests and demos see what they see. False adds
        # network_settings = { nagle = false } (the tuned row of bench/bench_bridge.py).
        self.nagle = nagle
        # (certificate, key) PEM files: offer STARTTLS with them and require it
        self.tls = None if tls is None else (Path(tls[0]).resolve(), Path(tls[1]).resolve())
        self._owned = workdir is None
        if workdir is None:
            self.workdir: Path = Path(tempfile.mkdtemp(prefix="qe-prosody-"))
        else:
            self.workdir = Path(workdir).resolve()
            self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc_box: list[subprocess.Popen[bytes] | None] = [None]
        self._console_file: Any = None
        self._finalizer = weakref.finalize(self, finalize, self._proc_box, self.workdir, self._owned)

    # -- paths ---------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.workdir / "prosody.cfg.lua"

    @property
    def data_path(self) -> Path:
        return self.workdir / "data"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "prosody.pid"

    @property
    def log_path(self) -> Path:
        """Prosody's own log (file sink, line-buffered, so it survives SIGKILL)."""
        return self.workdir / "prosody.log"

    @property
    def console_log_path(self) -> Path:
        """stdout/stderr of the process: errors that happen before logging is set up."""
        return self.workdir / "prosody.console.log"

    @property
    def _proc(self) -> subprocess.Popen[bytes] | None:
        return self._proc_box[0]

    @property
    def running(self) -> bool:
        """True while our Prosody process is alive (it may still be starting up)."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # -- config ----------------------------------------------------------------------------
    def config_text(self) -> str:
        """The Prosody config; every path is absolute and inside ``workdir``."""
        w = self.workdir
        lines = [
            "-- Generated by libs.devserver: a private, loopback-only Prosody. Do not edit.",
        ]
        if os.geteuid() == 0:
            # Root only: otherwise prosodyctl switches to the 'prosody' user, which cannot
            # write our root-owned temp dir.
            lines.append("run_as_root = true")
        lines += [
            "daemonize = false",
            f"pidfile = {_lua_str(w / 'prosody.pid')}",
            f"data_path = {_lua_str(w / 'data')}",
            f"installer_plugin_path = {_lua_str(w / 'custom_plugins')}",
            f"certificates = {_lua_str(w / 'certs')}",
            f"log = {{ info = {_lua_str(w / 'prosody.log')} }}",
            'interfaces = { "127.0.0.1" }',
            'local_interfaces = { "127.0.0.1" }',
            f"c2s_ports = {{ {self.port:d} }}",
            "c2s_direct_tls_ports = { }",
            "legacy_ssl_ports = { }",
            "s2s_ports = { }",
            "s2s_direct_tls_ports = { }",
            "component_ports = { }",
            "http_ports = { }",
            "https_ports = { }",
            # "tls" only with a certificate: without one mod_tls still offers STARTTLS,
            # which then fails. No "limits": it throttles clients to a few dozen stanzas/s.
            'modules_enabled = { "disco", "roster", "saslauth", "ping", "register",'
            ' "smacks", "carbons", "presence"' + (', "tls"' if self.tls else "") + " }",
            'modules_disabled = { "s2s", "offline" }',
            f"c2s_require_encryption = {'true' if self.tls else 'false'}",
            "allow_unencrypted_plain_auth = true",
            "allow_registration = false",
            f"c2s_stanza_size_limit = {self.stanza_size_limit:d}",
            *([] if self.nagle else ["network_settings = { nagle = false }"]),
            'authentication = "internal_hashed"',
            'storage = "internal"',
            "",
            f"VirtualHost {_lua_str(self.domain)}",
        ]
        if self.tls:
            lines.append(f"ssl = {{ certificate = {_lua_str(self.tls[0])}, key = {_lua_str(self.tls[1])} }}")
        if self.muc:
            lines += [
                "",
                f"Component {_lua_str('conference.' + self.domain)} \"muc\"",
                *(f"    {option}" for option in _MUC_OPTIONS),
            ]
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        for sub in ("data", "certs", "custom_plugins"):
            (self.workdir / sub).mkdir(mode=0o700, exist_ok=True)
        self.config_path.write_text(self.config_text(), encoding="utf-8")

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> "DevServer":
        """Start Prosody and return once it accepts connections on ``port``.

        Readiness is Prosody's own "Activated service 'c2s' on [127.0.0.1]:PORT" log line
        followed by a short connect that gets ``<stream:features>`` from our domain: a connect
        alone could reach another process that grabbed the port (Prosody keeps running when
        it cannot bind), or succeed before Prosody's event loop (and SIGTERM handler) runs.
        """
        if self.running:
            log.debug("prosody already running (pid %s)", self.pid)
            return self
        self._write_config()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._close_console()
        self._console_file = open(self.console_log_path, "ab")
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [self._prosody, "--config", str(self.config_path), "-F"],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._console_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: signals reach Prosody only
        )
        self._proc_box[0] = proc
        ready_marker = "Activated service 'c2s' on "
        port_marker = f"[{self.host}]:{self.port}"
        deadline = t0 + timeout
        while True:
            if proc.poll() is not None:
                self._close_console()
                raise RuntimeError(
                    f"prosody exited early with code {proc.returncode}\n{self._log_tails()}"
                )
            new_log = self._read_log_from(log_offset)
            if "Failed to open server port" in new_log:
                self._hard_stop()
                self._close_console()
                raise RuntimeError(
                    f"prosody could not listen on {self.host}:{self.port} (port in use?)\n"
                    f"{self._log_tails()}"
                )
            if any(ready_marker in ln and port_marker in ln for ln in new_log.splitlines()):
                if self._stream_answers(min(1.0, max(0.05, deadline - time.monotonic()))):
                    break
            if time.monotonic() >= deadline:
                self._hard_stop()
                self._close_console()
                raise TimeoutError(
                    f"prosody did not accept connections on {self.host}:{self.port} within "
                    f"{timeout:.1f}s\n{self._log_tails()}"
                )
            time.sleep(_READY_POLL)
        log.info(
            "prosody pid %d listening on %s:%d (domain %s) after %.3fs; workdir %s",
            proc.pid, self.host, self.port, self.domain, time.monotonic() - t0, self.workdir,
        )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop gracefully (SIGTERM lets Prosody close streams and flush), SIGKILL after ``timeout``.

        Idempotent: stopping a stopped server does nothing.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("prosody pid %d ignored SIGTERM for %.1fs; killing it", proc.pid, timeout)
                self._hard_stop()
            else:
                log.info("prosody pid %d stopped (code %s)", proc.pid, proc.returncode)
        self._close_console()

    def kill(self) -> None:
        """SIGKILL the server, as in a crash: clients see a dropped TCP connection. Data is kept."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._hard_stop()
            log.info("prosody pid %d killed", proc.pid)
        self._close_console()





    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<DevServer {self.domain} {self.host}:{self.port} {state} {self.workdir}>"

    # -- accounts --------------------------------------------------------------------------
    def register(self, user: str, password: str) -> str:
        """Create the account ``user@domain`` (or reset its password) and return the bare JID.

        Works whether the server runs or not: ``prosodyctl`` writes the account file directly
        and the running server reads it at the next login (measured on 0.12.3).
        """
        check_account(user, password)
        self._write_config()
        t0 = time.monotonic()
        result = subprocess.run(
            [self._prosodyctl, "--config", str(self.config_path), "register", user, self.domain, password],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
        if result.returncode != 0:
            out = (result.stdout + result.stderr).decode("utf-8", errors="replace").strip()
            raise RuntimeError(f"prosodyctl register {user}@{self.domain} failed ({result.returncode}): {out}")
        jid = f"{user.lower()}@{self.domain}"
        log.debug("registered %s in %.3fs", jid, time.monotonic() - t0)
        return jid

    def env(self, user: str, password: str) -> dict[str, str]:
        """The ``QE_*`` variables that point a worker or client at this server (plain TCP)."""
        jid = user if "@" in user else f"{user.lower()}@{self.domain}"
        return client_env(jid, password, self.host, self.port)

    # -- internals -------------------------------------------------------------------------
    def _hard_stop(self) -> None:
        hard_stop(self._proc)

    def _close_console(self) -> None:
        if self._console_file is not None:
            self._console_file.close()
            self._console_file = None

    def _read_log_from(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _stream_answers(self, timeout: float) -> bool:
        """A features answer proves Prosody's event loop runs (and with it mod_posix's SIGTERM
        handler, installed from a timer: a SIGTERM before that kills it uncleanly)."""
        return stream_answers(self.host, self.port, self.domain, timeout)

    def _log_tails(self) -> str:
        return log_tails(self.console_log_path, self.log_path)
