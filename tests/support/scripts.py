"""User scripts run as a user runs them: a subprocess whose output lines the test reads."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


class Script:
    """A running script; ``lines`` is everything it printed so far (stdout)."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str = "") -> None:
        self.proc = proc
        self.name = name
        self.lines: list[str] = []

    async def next_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise EOFError(f"{self.name or 'the script'} ended")
        line = raw.decode().rstrip("\n")
        self.lines.append(line)
        return line

    async def line_matching(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line from now on that matches ``pattern`` (regex, searched)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            line = await self.next_line(max(0.01, end - loop.time()))
            if (match := re.search(pattern, line)) is not None:
                return match

    async def rest(self, timeout: float) -> list[str]:
        """Read stdout to its end (the script ended or is ending) and return every line."""
        assert self.proc.stdout is not None
        out = await asyncio.wait_for(self.proc.stdout.read(), timeout)
        self.lines += out.decode().splitlines()
        return self.lines

    async def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then the exit status (killed after ``timeout``)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise


async def start_script(argv: list[str], env: dict[str, str], name: str = "") -> Script:
    """Start ``python ARGV...`` with ``env`` added to ours, from the repository's root."""
    env = {**os.environ, **env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(sys.executable, *argv, env=env, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    return Script(proc, name)


async def qe_worker_run(script: Path, env: dict[str, str], name: str = "") -> Script:
    """``qe-worker run SCRIPT``: how QE-style scripts with top-level ``await`` are run."""
    return await start_script(["-m", "libs.cli", "run", str(script)], env, name)
