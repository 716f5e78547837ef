"""Workers in their own processes, for tests that signal, kill or restart them.

Why a helper: a worker under test must be a real process (SIGTERM handling, SIGKILL
durability), and every such test needs the same chores: the repository on ``PYTHONPATH``,
its stdout turned into lines the test can wait for (an event, not a sleep), its stderr kept
for assertion messages, and no process left behind when the test fails.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from libs.devserver import DevServer

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["ROOT", "WorkerProcess", "chat_messages", "default_worker"]


class WorkerProcess:
    """``python ARGS...`` run from the repository root with ``env`` over ours.

    ``lines`` holds what the current process printed on stdout so far; ``wait_lines()``
    waits for a condition on them. stderr (the worker's log) goes to ``log_path``.
    ``start()`` again after the process ended (e.g. after ``kill()``) starts a new one with
    the same arguments, as a supervisor would.
    """

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.args = list(args)
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.log_path = log_path
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self._eof = False

    async def start(self) -> WorkerProcess:
        if self.running:
            raise RuntimeError("the worker process is still running")
        self.lines, self._eof = [], False
        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, *self.args, env=self.env, cwd=ROOT,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=log)
        self._reader = asyncio.create_task(self._read(self.proc))
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            async with self._changed:
                self.lines.append(line.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._eof = True
            self._changed.notify_all()

    async def wait_lines(self, predicate: Callable[[list[str]], bool], timeout: float) -> None:
        """Wait until ``predicate(lines)`` holds; AssertionError with the log if the process
        ends or ``timeout`` s pass first."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: predicate(self.lines) or self._eof)
        except TimeoutError:
            raise AssertionError(f"not seen within {timeout:g} s; stdout: {self.lines[-5:]}\n{self.log()}") from None
        if not predicate(self.lines):
            raise AssertionError(f"the worker ended (code {self.proc and self.proc.returncode}); "
                                 f"stdout: {self.lines[-5:]}\n{self.log()}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float) -> int:
        """The exit code; AssertionError with the log if it does not end within ``timeout`` s."""
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"the worker did not exit within {timeout:g} s\n{self.log()}") from None
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)  # every line printed before the exit is in
        return code

    async def kill(self) -> None:
        """SIGKILL, as in a crash (nothing runs on the way out), and reap it."""
        self.signal(signal.SIGKILL)
        await self.wait(10)

    def log(self, tail: int = 40) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return "--- worker log (tail) ---\n" + "\n".join(lines[-tail:])

    async def aclose(self) -> None:
        """End the process if it still runs: SIGTERM, then SIGKILL after 15 s."""
        if self.running:
            self.signal(signal.SIGTERM)
            try:
                await self.wait(15)
            except AssertionError:
                await self.kill()
        if self._reader is not None:
            self._reader.cancel()

    async def __aenter__(self) -> WorkerProcess:
        return await self.start()

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


def chat_messages(client: Any) -> asyncio.Queue[str]:
    """A queue of the bodies of chat messages ``client`` (a ``Client``) receives from now on,
    e.g. the results a worker sends for scheduled jobs with ``notify``."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    client.transport._client.add_event_handler("message", lambda msg: queue.put_nowait(msg["body"]))
    return queue


def default_worker(server: DevServer, accounts: Mapping[str, tuple[str, str]], resource: str,
                   state_dir: Path) -> tuple[WorkerProcess, str]:
    """The default worker (``python -m workers.python``) of account ``worker`` on ``server``
    (a ``DevServer``) as ``resource``, allowing ``client``, with its jobs in ``state_dir``;
    and its full JID. Not started yet."""
    env = {**server.env("worker", accounts["worker"][1]), "QE_STATE_DIR": str(state_dir), "RESOURCE": resource,
           "QE_ALLOW": accounts["client"][0]}
    process = WorkerProcess(["-m", "workers.python"], env, state_dir / f"{resource}.log")
    return process, f"{accounts['worker'][0]}/{resource}"
