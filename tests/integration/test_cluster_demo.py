"""scripts/cluster-demo.sh, the tested script of docs/scaling.md ("The tested script for one
machine"), run as a user runs it: its calls are answered across nodes and through a service,
and whether it ends or is interrupted (Ctrl+C), nothing it started is left running.

Every process the script starts inherits ``TMPDIR`` (this test's ``tmp_path``), which no
other process has: that is how the test finds leftovers.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import psutil
import pytest

from tests.support.scripts import ROOT

pytestmark = [pytest.mark.ejabberd_only("the script starts a 2-node ejabberd cluster of its own"), pytest.mark.core]

SCRIPT = ROOT / "scripts" / "cluster-demo.sh"


def _qe_worker() -> str:
    found = shutil.which("qe-worker", path=str(Path(sys.executable).parent)) or shutil.which("qe-worker")
    if found is None:
        pytest.fail("qe-worker is not installed next to this Python (pip install -e .)", pytrace=False)
    return found


async def _start(tmp_path: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "TMPDIR": str(tmp_path), "QE_WORKER": _qe_worker()}
    for name in [k for k in env if k.startswith("QE_") and k != "QE_WORKER"]:
        del env[name]  # the script sets what its processes need; nothing of the test's own
    return await asyncio.create_subprocess_exec(
        "bash", str(SCRIPT), cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)  # a process group, as a terminal's job


def _started_by_the_script(tmp_path: Path) -> list[str]:
    """The processes still running (zombies hold nothing) that inherited the script's TMPDIR."""
    left = []
    for proc in psutil.process_iter(["pid", "name", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("TMPDIR") == str(tmp_path):
                left.append(f"{proc.info['pid']} {proc.info['name']}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return left


async def _none_left(tmp_path: Path, timeout: float = 5.0) -> None:
    """Processes the script waited for are gone at its exit; allow a reaping moment."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while (left := _started_by_the_script(tmp_path)) and loop.time() < end:
        await asyncio.sleep(0.1)  # polling the process table: there is no event for "gone"
    assert not left, f"left running: {left}"
    assert list(tmp_path.iterdir()) == [], "the script's directories are removed"


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def test_the_demo_calls_across_nodes_and_through_a_service_then_stops_everything(tmp_path):
    proc = await _start(tmp_path)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 55)
    finally:
        await _kill(proc)
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()
    assert re.search(r"^# cluster up: node 1 at 127\.0\.0\.1:\d+, node 2 at 127\.0\.0\.1:\d+$", text, re.M), text
    for i in range(3):
        assert f'node 2 -> worker@localhost/fleet-{i} (node 1): {{"pong": true, "environment": "python"}}' in text
    served = re.findall(r"^node 2 -> service demo, call \d: answered by (\S+)$", text, re.M)
    assert len(served) == 2 and set(served) <= {"worker@localhost/demo-n1", "worker@localhost/demo-n2"}, text
    assert text.rstrip().endswith("# all calls answered\n# stopped the workers and the cluster".rstrip()), text
    await _none_left(tmp_path)


async def test_ctrl_c_while_the_workers_start_stops_the_workers_and_the_cluster(tmp_path):
    proc = await _start(tmp_path)
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 40)
        assert first.startswith(b"# cluster up"), first
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl+C does: the whole foreground job gets it
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await _kill(proc)
    assert proc.returncode == 130, (out + err).decode()
    assert out.decode().rstrip().endswith("# stopped the workers and the cluster"), (out + err).decode()
    await _none_left(tmp_path)
