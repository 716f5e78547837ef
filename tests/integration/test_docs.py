"""Every ```python block of README.md and docs/*.md runs (issue #11, point 6): users copy
them, so a snippet that breaks must fail CI.

How a block is run is chosen by an HTML comment on the line right before its fence (invisible
on GitHub), never guessed:

``(no comment)``
    A complete program that leaves nothing behind in the process (no timers, no loop, no
    XMPP): ``exec`` in a fresh ``__main__`` namespace in this process. A block that leaves
    a thread, a main loop or a shutdown hook behind fails here: mark it ``script``.
``<!-- doctest: script -->``, ``<!-- doctest: script worker=default -->``, ``worker=NAME``
    A complete program, run as ``python FILE`` from the repository root with the ``QE_*``
    variables of the ``client`` account; it must exit 0. ``worker=default`` first starts
    the default worker (``python -m workers.python``) as ``worker@localhost/python``,
    ``worker=NAME`` the block marked ``worker name=NAME``; both allow ``client``.
``<!-- doctest: worker [name=NAME] [call=CMD] [body=JSON] [expect=JSON] -->``
    A worker script (it ends in ``run_forever()``), run as ``python FILE`` with the
    ``QE_*`` variables of the ``worker`` account and ``QE_ALLOW=client@localhost``. It must
    answer ``ping`` as ``worker@localhost/python`` (and ``CMD`` with ``body`` by ``expect``,
    JSON without spaces), then exit 0 on SIGTERM. With ``run=qe-worker`` it is run as
    ``qe-worker run FILE`` instead (a script with top-level ``await``).
``<!-- doctest: skip reason="why" -->``
    Not run. The reason is required; keep skips rare.

A script's stderr and a worker's log must not hold a traceback or an ERROR line: exceptions
in timer callbacks and handlers are logged, not raised, so the exit code alone would miss them.

Tracebacks point into the Markdown file: the code is compiled (or written to a file) behind
as many blank lines as precede it, so ``line N`` is line N of the ``.md`` file.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import textwrap
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from libs import _runtime
from libs.bridge import Client, load_config, wait_answering
from libs.devserver import DevServer
from tests.support.workers import ROOT, WorkerProcess, default_worker

DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))

KINDS = {"exec": set(), "script": {"worker"}, "worker": {"name", "call", "body", "expect", "run"}, "skip": {"reason"}}
WORKER_RESOURCE = "python"  # every worker in the docs joins as worker@localhost/python
BLOCK_TIMEOUT = 30.0  # seconds one script may run; pytest-timeout bounds the whole test

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
_MARKER = re.compile(r"^<!--\s*doctest:(.*?)-->\s*$")
_OPTION = re.compile(r'(\w+)=("[^"]*"|\S+)')


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    kind: str = "exec"
    options: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # a malformed marker

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def source(self) -> str:
        """The code behind blank lines, so that its line numbers are the file's."""
        return "\n" * self.line + self.code


def _parse_marker(text: str) -> tuple[str, dict[str, str], str | None]:
    words = text.split(None, 1)
    kind, rest = (words[0], words[1] if len(words) > 1 else "") if words else ("", "")
    if kind not in KINDS or kind == "exec":
        return kind, {}, f"unknown doctest kind {kind!r} (use one of: script, worker, skip)"
    options = {key: value.strip('"') for key, value in _OPTION.findall(rest)}
    if _OPTION.sub("", rest).strip():
        return kind, options, f"cannot read {rest.strip()!r}: options are key=value (quote values with spaces)"
    unknown = set(options) - KINDS[kind]
    if unknown:
        return kind, options, f"unknown option(s) {sorted(unknown)} for {kind!r}"
    if kind == "skip" and not options.get("reason"):
        return kind, options, 'a skip needs a reason: <!-- doctest: skip reason="..." -->'
    if options.get("run", "qe-worker") != "qe-worker":
        return kind, options, "run= can only be qe-worker (run the block with `qe-worker run FILE`)"
    for key in ("body", "expect"):
        if key in options:
            try:
                json.loads(options[key])
            except ValueError as exc:
                return kind, options, f"{key}= is not JSON: {exc}"
    return kind, options, None


def _scan(path: Path) -> tuple[list[Block], list[str]]:
    """The python blocks of one file, and the problems found outside them (stray markers)."""
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    blocks: list[Block] = []
    problems: list[str] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    marker: tuple[int, str] | None = None  # (line, text) of a marker waiting for its fence
    i = 0
    while i < len(lines):
        text = lines[i].strip()
        m = _MARKER.match(text)
        fence = _FENCE.match(lines[i])
        if m:
            if marker is not None:
                problems.append(f"{name}:{marker[0]}: doctest marker not followed by a python block")
            marker = (i + 1, m.group(1))
        elif fence:
            start, lang = i, fence.group(2).lower()
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence.group(1)):
                i += 1
            code = textwrap.dedent("\n".join(lines[start + 1:i]) + "\n")  # a fence may be indented in a list
            if lang in ("python", "py", "python3"):
                kind, options, error = "exec", {}, None
                if marker is not None:
                    kind, options, error = _parse_marker(marker[1])
                blocks.append(Block(path, start + 1, code, kind, options, error))
            elif marker is not None:
                problems.append(f"{name}:{marker[0]}: doctest marker before a {lang or 'plain'} block")
            marker = None
        elif text and marker is not None:
            problems.append(f"{name}:{marker[0]}: doctest marker not right before a python block")
            marker = None
        i += 1
    if marker is not None:
        problems.append(f"{name}:{marker[0]}: doctest marker at the end of the file")
    return blocks, problems


def _collect() -> tuple[list[Block], list[str]]:
    blocks: list[Block] = []
    problems: list[str] = []
    for path in DOCS:
        found, trouble = _scan(path)
        blocks += found
        problems += trouble
    names = [b.options["name"] for b in blocks if b.kind == "worker" and "name" in b.options]
    problems += [f"two worker blocks are named {n!r}" for n in sorted({n for n in names if names.count(n) > 1})]
    for b in blocks:
        wanted = b.options.get("worker", "default")
        if b.kind == "script" and wanted != "default" and wanted not in names:
            problems.append(f"{b.id}: worker={wanted!r} names no `worker name=...` block")
    return blocks, problems


BLOCKS, PROBLEMS = _collect()


def test_the_docs_have_python_blocks_and_well_formed_markers():
    assert len(BLOCKS) >= 10, [b.id for b in BLOCKS]  # the scanner found them (guards against a silent 0)
    assert PROBLEMS == []


def test_the_scanner_reads_markers_and_rejects_bad_ones(tmp_path: Path):
    doc = tmp_path / "doc.md"
    doc.write_text(textwrap.dedent("""\
        ```python
        print(1)
        ```
        <!-- doctest: worker name=w call=echo body={"a":1} expect={"a":1} -->

        ```python
        pass
        ```
        - in a list:

          ```python
          x = 1
          ```
        <!-- doctest: skip -->
        ```python
        ```
        <!-- doctest: skip reason="the why" -->
        ```py
        ```
        <!-- doctest: script wroker=default -->
        ```python
        ```
        <!-- doctest: guess -->
        ```python
        ```
        <!-- doctest: script -->
        ```sh
        ls
        ```
        <!-- doctest: script -->
        text in between
        ```python
        ```
        """), encoding="utf-8")
    blocks, problems = _scan(doc)
    assert [(b.line, b.kind, b.options, b.error is None) for b in blocks] == [
        (1, "exec", {}, True),
        (6, "worker", {"name": "w", "call": "echo", "body": '{"a":1}', "expect": '{"a":1}'}, True),
        (11, "exec", {}, True),
        (15, "skip", {}, False),
        (18, "skip", {"reason": "the why"}, True),
        (21, "script", {"wroker": "default"}, False),
        (24, "guess", {}, False),
        (32, "exec", {}, True),
    ]
    assert blocks[2].code == "x = 1\n" and blocks[2].source().count("\n") == 12
    assert problems == ["doc.md:26: doctest marker before a sh block",
                        "doc.md:30: doctest marker not right before a python block"]


# -- running ------------------------------------------------------------------------------


@dataclass
class Env:
    """What a block runs against: the session's Prosody and its accounts."""

    server: DevServer
    accounts: dict[str, tuple[str, str]]
    tmp: Path

    @property
    def worker_jid(self) -> str:
        return f"{self.accounts['worker'][0]}/{WORKER_RESOURCE}"

    def client_env(self) -> dict[str, str]:
        return {**self.server.env("client", self.accounts["client"][1]), "QE_STATE_DIR": str(self.tmp / "client")}

    def worker_env(self) -> dict[str, str]:
        return {**self.server.env("worker", self.accounts["worker"][1]), "QE_ALLOW": self.accounts["client"][0],
                "QE_STATE_DIR": str(self.tmp / "worker")}

    def write(self, block: Block) -> Path:
        """The block as a file named after its place, e.g. ``docs-timers.md-8.py``."""
        path = self.tmp / (block.id.replace("/", "-").replace(":", "-") + ".py")
        path.write_text(block.source(), encoding="utf-8")
        return path


def _process_state() -> tuple[Any, ...]:
    """What a block must not change in this process (threads are compared separately: one
    of an earlier test may end meanwhile)."""
    return _runtime._RT.loop, tuple(_runtime._RT.hooks), _runtime._RT.config


def _problems_in_log(text: str) -> list[str]:
    """Lines of a log or stderr that say something went wrong, though the exit code was 0
    (an exception in a timer callback or a handler is logged, not raised)."""
    return [line for line in text.splitlines() if "Traceback" in line or " ERROR " in line or " CRITICAL " in line]


def _run_in_process(block: Block) -> None:
    before, threads = _process_state(), set(threading.enumerate())
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(block.source(), str(block.path), "exec"), namespace)  # our own docs, reviewed
    leaked = _process_state() != before or bool(set(threading.enumerate()) - threads)
    assert not leaked, (f"{block.id} left a thread, main loop, shutdown hook or config behind in the test "
                        f"process: mark it <!-- doctest: script --> so that it runs in its own process")


async def _start_worker(env: Env, block: Block) -> WorkerProcess:
    """Start the worker script ``block`` and wait until it answers ``ping``."""
    log = env.tmp / "worker.log"
    runner = ["-m", "libs.cli", "run"] if block.options.get("run") == "qe-worker" else []
    process = WorkerProcess([*runner, str(env.write(block))], env.worker_env(), log)
    process.env = {**_base_environ(), **env.worker_env()}
    await process.start()
    try:
        async with Client(load_config(env.client_env())) as client:
            try:
                pong = await wait_answering(client, env.worker_jid, 20)
            except Exception as exc:
                raise AssertionError(f"{block.id} did not answer ping at {env.worker_jid}: {exc!r}\n"
                                     f"{process.log()}") from None
    except BaseException:
        await process.aclose()
        raise
    assert pong == {"pong": True, "environment": "python"}, pong
    return process


async def _stop_worker(process: WorkerProcess, what: str) -> None:
    """SIGTERM; the worker must leave and exit 0 in time, with no error in its log."""
    try:
        process.signal(signal.SIGTERM)
        code = await process.wait(15)
        assert code == 0, f"{what} exited with {code} after SIGTERM\n{process.log()}"
        assert _problems_in_log(process.log_path.read_text(errors="replace")) == [], process.log()
    finally:
        await process.aclose()


async def _run_worker_block(env: Env, block: Block) -> None:
    process = await _start_worker(env, block)
    try:
        if "call" in block.options:
            async with Client(load_config(env.client_env())) as client:
                answer = await client.call(env.worker_jid, block.options["call"],
                                           json.loads(block.options.get("body", "{}")), timeout=10)
            if "expect" in block.options:
                assert answer == json.loads(block.options["expect"]), f"{block.id}: {answer}"
    finally:
        await _stop_worker(process, block.id)


async def _run_script_block(env: Env, block: Block) -> None:
    wanted = block.options.get("worker")
    worker: WorkerProcess | None = None
    if wanted == "default":
        worker, jid = default_worker(env.server, env.accounts, WORKER_RESOURCE, env.tmp)
        assert jid == env.worker_jid
        worker.env = {**_base_environ(), **worker.env}
        await worker.start()
        try:
            async with Client(load_config(env.client_env())) as client:
                await wait_answering(client, jid, 20)
        except BaseException:
            await worker.aclose()
            raise
    elif wanted is not None:
        (partner,) = [b for b in BLOCKS if b.kind == "worker" and b.options.get("name") == wanted]
        worker = await _start_worker(env, partner)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(env.write(block)), cwd=ROOT,
            env={**_base_environ(), **env.client_env()},
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), BLOCK_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"{block.id} did not finish within {BLOCK_TIMEOUT:g} s") from None
        report = f"--- stdout ---\n{out.decode(errors='replace')}\n--- stderr ---\n{err.decode(errors='replace')}"
        assert proc.returncode == 0, f"{block.id} exited with {proc.returncode}\n{report}"
        assert _problems_in_log(err.decode(errors="replace")) == [], f"{block.id} logged an error\n{report}"
    finally:
        if worker is not None:
            await _stop_worker(worker, f"the worker for {block.id}")


def _base_environ() -> dict[str, str]:
    """Our environment without QE_* and RESOURCE (a developer's own settings must not leak in)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("QE_") and k != "RESOURCE"}
    return {**environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    assert block.error is None, f"{block.id}: {block.error}"
    if block.kind == "skip":
        pytest.skip(block.options["reason"])
    if block.kind == "exec":
        _run_in_process(block)
        return
    env = Env(request.getfixturevalue("prosody"), request.getfixturevalue("accounts"), tmp_path)
    if block.kind == "script":
        asyncio.run(_run_script_block(env, block))
    else:
        asyncio.run(_run_worker_block(env, block))
