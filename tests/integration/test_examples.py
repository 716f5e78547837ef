"""QE's seed scripts (examples/seed_*.py, verbatim) run unmodified against a real server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

import pytest

from libs.bridge import Client, load_config, wait_answering
from tests.support.scripts import EXAMPLES, ROOT, Script

pytestmark = pytest.mark.core  # runs on every server (./run test-ejabberd: a 2-node ejabberd cluster)


@pytest.fixture
async def run_script(prosody, accounts) -> AsyncIterator:
    procs: list[asyncio.subprocess.Process] = []

    async def start(name: str, resource: str) -> Script:
        _jid, password = accounts["worker"]
        env = {**os.environ, **prosody.env("worker", password), "RESOURCE": resource,
               "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        proc = await asyncio.create_subprocess_exec(sys.executable, str(EXAMPLES / name), env=env, cwd=ROOT,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        procs.append(proc)
        return Script(proc)

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                raise
            assert code == 0, (await proc.stderr.read()).decode()


async def _ping(prosody, accounts, jid: str) -> dict:
    # as the worker's own account: woken by the worker's presence, not by polling
    async with Client(load_config(prosody.env("worker", accounts["worker"][1]))) as client:
        return await wait_answering(client, jid, 20)


@pytest.mark.parametrize("name", ["seed_1_set_interval.py", "seed_2_set_interval_safe.py"])
async def test_interval_example_prints_hello_and_answers_ping(run_script, prosody, accounts, name):
    resource = name.split(".")[0].replace("_", "")
    script = await run_script(name, resource)
    assert await script.next_line(10) == "hello"
    assert await _ping(prosody, accounts, f"{accounts['worker'][0]}/{resource}") == {"pong": True}
    assert await script.next_line(10) == "hello"  # it keeps going


async def test_stop_example_prints_five_hellos_then_stops(run_script, prosody, accounts):
    script = await run_script("seed_3_set_interval_stop.py", "seed3")
    lines = [await script.next_line(10) for _ in range(6)]
    assert lines == ["hello"] * 5 + ["interval cleared."]
    jid = f"{accounts['worker'][0]}/seed3"
    assert await _ping(prosody, accounts, jid) == {"pong": True}  # still serving
    async with Client(load_config(prosody.env("worker", accounts["worker"][1]))) as owner:
        info = await owner.call(jid, "info", timeout=5)
    assert info["timers"] == []  # the interval is gone, not merely quiet
    with pytest.raises(TimeoutError):  # and nothing more is printed (1.5 intervals)
        await script.next_line(1.5)


async def test_remote_scheduling_example_against_the_default_worker(prosody, accounts, tmp_path):
    from libs.scheduling import JobStore
    from workers.python.worker import build

    env = prosody.env("worker", accounts["worker"][1])
    worker = build(resource="exsched", config=load_config(env), store=JobStore(tmp_path / "j.sqlite3"),
                   exit_on_fatal=False, keepalive=0)
    try:
        await worker.wait_online(10)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLES / "remote_scheduling.py"), worker.jid,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        lines = out.decode().splitlines()
        assert lines[0].startswith("scheduled job ")
        assert [line.endswith("{'hello': 'scheduled'}") for line in lines[1:4]] == [True] * 3
        assert lines[4].startswith("cancelled ")
    finally:
        await worker.close(2)


async def test_periodic_tasks_example_runs_its_tasks(run_script, prosody, accounts):
    script = await run_script("periodic_tasks.py", "periodic")
    assert await script.next_line(15) == "report written"  # the 5 s task ran on its thread
    async with Client(load_config(prosody.env("worker", accounts["worker"][1]))) as owner:
        tasks = (await owner.call(f"{accounts['worker'][0]}/periodic", "tasks", timeout=5))["tasks"]
    stats = {t["name"]: t for t in tasks}
    assert {"report", "refresh", "system_health_check", "log_statistics"} <= set(stats)
    assert stats["report"]["run_count"] >= 1 and stats["report"]["error_count"] == 0
    assert all(t["is_running"] for t in tasks)


async def test_repeating_task_runner_example_prints_twice_in_three_seconds():
    """Seed 001's usage example as written: "The code snippet will take 3 seconds, and the
    "Hello, World!" string will be printed 2 times" (no server, no event loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "repeating_task_runner.py"), cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    loop = asyncio.get_running_loop()
    started = loop.time()
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    took = loop.time() - started
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["Hello, World!"] * 2 and err == b""
    assert 3.0 <= took < 10.0  # its own sleeps; an upper bound for a loaded machine only
