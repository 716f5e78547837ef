"""A worker script on a real server: ``PrivateServer`` (a throwaway Prosody with accounts made
on demand) and ``real_worker()`` (the script in its own process, as ``qe-worker run`` runs it).

Why beside the in-memory kit: ``worker_module()`` proves the worker's logic; this proves the
script as deployed: its own process, the ``QE_*`` configuration, a login, XMPP on the wire,
SIGTERM. It is slower (a process and a login per worker: about a second) and needs Prosody.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Final

from ..bridge import Client, WorkerConfig, load_config, wait_answering
from ..devserver import DevServer

__all__ = ["PrivateServer", "RealWorker", "WorkerFailed", "real_worker"]

STOP_TIMEOUT: Final = 15.0
"""Seconds a worker gets to exit after SIGTERM before it is killed."""

_LOG_TAIL: Final = 40


class WorkerFailed(RuntimeError):
    """The worker process did not come up: it exited, or did not answer in time. The message
    ends with the tail of its output."""


class PrivateServer:
    """A private Prosody on 127.0.0.1 (``libs.devserver.DevServer``) whose accounts are made
    on first use, each with a random password: ``worker``, ``client``, ``stranger``, any name.

    ``start()``/``close()`` or ``with PrivateServer() as server:``. ``ProsodyNotInstalled``
    from the constructor when Prosody is missing. Thread affinity: none; not thread-safe.
    """

    def __init__(self, server: DevServer | None = None) -> None:
        self.dev = server if server is not None else DevServer()
        self._accounts: dict[str, tuple[str, str]] = {}

    def start(self) -> PrivateServer:
        if not self.dev.running:
            self.dev.start()
        return self

    def close(self) -> None:
        """Stop the server and remove its files."""
        self.dev.cleanup()

    def __enter__(self) -> PrivateServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def account(self, name: str) -> tuple[str, str]:
        """``(bare JID, password)`` of account ``name``, registered on first use."""
        if name not in self._accounts:
            password = secrets.token_urlsafe(16)
            self._accounts[name] = (self.dev.register(name, password), password)
        return self._accounts[name]

    def jid(self, name: str) -> str:
        """The bare JID of account ``name`` (``client`` -> ``client@localhost``); a JID as it is."""
        return name if "@" in name else self.account(name)[0]

    def env(self, name: str) -> dict[str, str]:
        """The ``QE_*`` variables that log in as account ``name`` (plain TCP, loopback)."""
        return self.dev.env(*self.account(name))

    def config(self, name: str) -> WorkerConfig:
        return load_config(self.env(name))

    def client(self, name: str = "client", *, connect_timeout: float = 10.0) -> Client:
        """A ``Client`` of account ``name``: ``async with server.client() as client:``."""
        return Client(self.config(name), connect_timeout=connect_timeout)


class RealWorker:
    """A worker script running in its own process (made by ``real_worker()``)."""

    def __init__(self, jid: str, path: Path, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.jid = jid
        """Its full JID, e.g. ``worker@localhost/python``."""
        self.path = path
        self.process = process
        self.log_path = log_path
        """Its stdout and stderr (the log), as they come."""

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def log(self) -> str:
        """What it printed and logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (a graceful stop, as a supervisor does), then its exit status; killed if it
        has not exited within ``timeout`` s (``WorkerFailed`` then). Once it ended, returns
        its status again."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await asyncio.wait_for(self.process.wait(), 5.0)
                raise WorkerFailed(f"{self.path.name} did not exit within {timeout:g} s of SIGTERM; killed\n"
                                   f"{_tail(self.log())}") from None
        return self.process.returncode


@contextlib.asynccontextmanager
async def real_worker(
    target: str | os.PathLike[str],
    server: PrivateServer,
    *,
    account: str = "worker",
    allow: Iterable[str] = ("client",),
    resource: str = "python",
    env: Mapping[str, str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    timeout: float = 30.0,
) -> AsyncIterator[RealWorker]:
    """Run the worker script ``target`` (a path) as ``qe-worker run`` does, in its own process,
    logged in to ``server`` as ``account`` with ``QE_ALLOW`` = ``allow`` (account names or
    JIDs) and ``RESOURCE`` = ``resource`` (which overrides the script's ``App(resource=...)``,
    as QE's ``RESOURCE`` does); yield it once it answers ``ping``. On the way out it gets
    SIGTERM (killed after ``STOP_TIMEOUT``) if still running.

    The process starts from ``os.environ`` without its ``QE_*`` and ``RESOURCE``, then
    ``env`` on top; its output goes to ``log_dir`` (a new temporary directory by default),
    where ``QE_STATE_DIR`` is too. ``WorkerFailed`` (with its output) if it exits, or does not
    answer within ``timeout`` s.
    """
    path = Path(target).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no worker script at {path}")
    folder = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="qe-worker-test-"))
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{path.stem}.{resource}.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("QE_") and k != "RESOURCE"}
    environ.update(server.env(account), QE_ALLOW=",".join(server.jid(a) for a in allow), RESOURCE=resource,
                   QE_STATE_DIR=str(folder / "state"), PYTHONUNBUFFERED="1")
    environ.update(env or {})
    jid = f"{server.jid(account)}/{resource}"
    with open(log_path, "ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "libs.cli", "run", str(path), cwd=path.parent, env=environ,
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT)
    worker = RealWorker(jid, path, process, log_path)
    try:
        await _wait_answering(worker, server, account, timeout)
        yield worker
    finally:
        await worker.stop()


async def _wait_answering(worker: RealWorker, server: PrivateServer, account: str, timeout: float) -> None:
    """Until the worker answers ``ping`` (asked as its own account, which it always answers
    and which the server tells at once when the worker logs in); ``WorkerFailed`` if its
    process ends first or ``timeout`` s pass."""
    answering = exited = None
    try:
        async with asyncio.timeout(timeout), server.client(account) as owner:
            answering = asyncio.ensure_future(wait_answering(owner, worker.jid, timeout))
            exited = asyncio.ensure_future(worker.process.wait())
            try:
                await asyncio.wait({answering, exited}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (answering, exited):
                    task.cancel()
                await asyncio.wait({answering, exited})
    except TimeoutError:
        pass
    if answering is not None and answering.done() and not answering.cancelled() and answering.exception() is None:
        return
    if exited is not None and exited.done() and not exited.cancelled():
        why = f"exited with status {worker.process.returncode} before it answered ping"
    elif answering is not None and answering.done() and not answering.cancelled():
        why = f"did not answer ping at {worker.jid}: {answering.exception()!r}"
    else:
        why = f"did not answer ping at {worker.jid} within {timeout:g} s"
    raise WorkerFailed(f"{worker.path.name} {why}\n{_tail(worker.log())}")


def _tail(text: str) -> str:
    return "--- worker output (tail) ---\n" + "\n".join(text.splitlines()[-_LOG_TAIL:])
