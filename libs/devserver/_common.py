"""What the private servers (Prosody, ejabberd) share: input checks, ports, process groups,
the readiness probe and the interface both satisfy.

Why one place: a test or the CLI must be able to swap one engine for the other without
knowing which one it holds, so the names, errors and checks have to be the same.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import weakref
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

__all__ = [
    "ManagedServer",
    "ServerNotInstalled",
    "XmppDevServer",
]

LOOPBACK = "127.0.0.1"

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
# A deliberately conservative username alphabet: it survives both servers' nodeprep unchanged
# (apart from lower-casing), the shell, and the QE_JID variable.
_USER_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

_LOG_TAIL_LINES = 30


class ServerNotInstalled(RuntimeError):
    """Raised when the executables of the chosen server cannot be found."""


@runtime_checkable
class XmppDevServer(Protocol):
    """What a private server offers a test or the CLI, whatever the engine.

    ``env(user, password)`` gives the ``QE_*`` variables of one client; on a cluster the
    account's node is chosen by the server (spread over the nodes), so that code written for
    one server exercises routing between nodes unchanged.
    """

    host: str
    port: int
    domain: str
    workdir: Path

    @property
    def running(self) -> bool: ...

    def start(self, timeout: float = ...) -> "XmppDevServer": ...

    def stop(self, timeout: float = ...) -> None: ...

    def kill(self) -> None: ...

    def restart(self, timeout: float = ...) -> None: ...

    def cleanup(self) -> None: ...

    def register(self, user: str, password: str) -> str: ...

    def env(self, user: str, password: str) -> dict[str, str]: ...


def which(name: str, missing: type[ServerNotInstalled]) -> str:
    """Resolve an executable at call time (so PATH changes are honoured), else raise
    ``missing`` (the engine's own error, whose message says how to install it)."""
    path = shutil.which(name)
    if path is None:
        raise missing()
    return path


def finalize(procs: list[subprocess.Popen[bytes] | None], workdir: Path, owned: bool) -> None:
    """Last-resort cleanup at garbage collection / interpreter exit (``weakref.finalize``):
    never leave a server process running, and remove ``workdir`` if we created it."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            hard_stop(proc)
    if owned:
        shutil.rmtree(workdir, ignore_errors=True)


class ManagedServer:
    """The life cycle both engines share, on top of their own ``start``/``stop``: restart,
    clean-up of a work dir we created, and use as a context manager.

    Subclasses set ``workdir``, ``_owned`` (we created ``workdir``) and ``_finalizer`` (what
    stops the processes and removes the dir if the object is dropped without ``cleanup``).
    """

    workdir: Path
    _owned: bool
    _finalizer: "weakref.finalize[Any, Any]"

    def start(self, timeout: float = 10.0) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def restart(self, timeout: float = 30.0) -> None:
        """Stop (if running) and start again on the same ports and data."""
        self.stop()
        self.start(timeout=timeout)

    def cleanup(self) -> None:
        """Stop everything and remove ``workdir`` if we created it (a given workdir is kept)."""
        self.stop()
        if self._owned:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._finalizer.detach()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def check_domain(domain: str) -> str:
    """The domain lower-cased, or ValueError: it ends up in config files and JIDs."""
    domain = domain.strip().lower()
    if not _DOMAIN_RE.match(domain):
        raise ValueError(f"invalid XMPP domain: {domain!r}")
    return domain


def check_port(port: int | None) -> None:
    if port is not None and not (0 < port < 65536):
        raise ValueError(f"invalid port: {port!r}")


def check_account(user: str, password: str) -> None:
    """Refuse what either server would mangle or accept silently (an empty password)."""
    if not _USER_RE.match(user):
        raise ValueError(f"invalid username {user!r}: use letters, digits, '.', '_' or '-'")
    if not password:
        raise ValueError("password must not be empty")
    if "\0" in password:
        raise ValueError("password must not contain NUL")


def valid_user(user: str) -> bool:
    return _USER_RE.match(user) is not None


def client_env(jid: str, password: str, host: str, port: int) -> dict[str, str]:
    """The ``QE_*`` variables that point a worker or client at a private server (plain TCP)."""
    return {
        "QE_JID": jid,
        "QE_PASSWORD": password,
        "QE_HOST": host,
        "QE_PORT": str(port),
        "QE_TLS": "off",
    }


_LOW_PORTS = (10000, 32767)  # below Linux's default ephemeral range (32768-60999)
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = LOOPBACK) -> int:
    """A port free on ``host`` now, for a server to listen on a moment later.

    Why not the kernel's pick (bind to port 0): that comes from the ephemeral range, the same
    range the kernel draws from for every outgoing connection and for other listeners on port
    0 (an ejabberd node's Erlang distribution port), so in the moment before the server binds
    it, another socket may take it: seen as ``eaddrinuse`` when a cluster's second node started.
    So a random port below the ephemeral range, checked bindable, never handed out twice by
    this process; the kernel's pick only if none is found."""
    low, high = _LOW_PORTS
    ephemeral_low, _ = _ephemeral_range()
    high = min(high, ephemeral_low - 1)
    rng = random.Random()
    for _ in range(200 if high > low else 0):
        port = rng.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def log_tails(*paths: Path) -> str:
    parts = []
    for path in paths:
        text = tail(path)
        if text:
            parts.append(f"--- {path} (tail) ---\n{text}")
    return "\n".join(parts) or "(no log output)"


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process group we created for a server (its pgid is its pid: start_new_session)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover - only if the group changed hands
        proc.send_signal(sig)


def hard_stop(proc: subprocess.Popen[bytes] | None, *, reap_children: bool = False) -> None:
    """SIGKILL the group and reap the process.

    ``reap_children``: also reap the process's descendants (Erlang's ``erl_child_setup`` and
    its port programs), which a SIGKILL orphans. Their new parent would be init, and in some containers init
    reaps nothing, so each kill would leave a zombie; for the moment of the kill we are a
    "child subreaper" (Linux) so they become ours and we wait for them.
    """
    if proc is None:
        return
    children = _descendants(proc.pid) if reap_children else []
    subreaper = bool(children) and _set_subreaper(True)
    try:
        signal_group(proc, signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            pass
        deadline = time.monotonic() + 2.0
        for pid in children if subreaper else []:
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        break
                except ChildProcessError:  # not ours (reparented elsewhere) or already reaped
                    break
                time.sleep(0.01)
    finally:
        if subreaper:
            _set_subreaper(False)


def _descendants(pid: int) -> list[int]:
    """Children, grandchildren... of ``pid`` (Linux /proc; empty elsewhere)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except (OSError, ValueError):
        return found
    return found + [d for child in found for d in _descendants(child)]


def _set_subreaper(on: bool) -> bool:
    """prctl(PR_SET_CHILD_SUBREAPER); False where unavailable."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1 if on else 0, 0, 0, 0)) == 0  # 36: PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def stream_answers(host: str, port: int, domain: str, timeout: float) -> bool:
    """Open an XMPP stream and wait for ``<stream:features>`` from ``domain``.

    A bare TCP connect is not enough: the kernel accepts into the backlog while the server is
    still loading modules, and a connect could reach another process that took the port. A
    features answer from our domain proves the server runs and serves our virtual host. The
    stream is closed politely and we wait for the hang-up: a probe session still open at
    SIGTERM time makes Prosody's shutdown wait ~1 s for it.
    """
    header = (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' version='1.0' "
        f"to='{domain}'>"
    ).encode()
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(header)
            received = b""
            while b"</stream:features>" not in received and b"<stream:features/>" not in received:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    return False
                received += chunk
            ours = f"from='{domain}'".encode() in received or f'from="{domain}"'.encode() in received
            try:
                sock.sendall(b"</stream:stream>")
                sock.settimeout(max(0.05, min(0.5, deadline - time.monotonic())))
                while sock.recv(65536):
                    pass
            except OSError:
                pass
            return ours
    except OSError:
        return False
