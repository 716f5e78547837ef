"""Progress and cancellation over a real Prosody: reports reach the caller before the answer,
a caller that ignores them is unaffected, and a cancelled call stops the handler."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from libs.bridge import APISpecs, App, Progress, load_config

pytestmark = pytest.mark.core  # runs on every server (./run test-ejabberd: a 2-node ejabberd cluster)


async def test_progress_and_cancel_over_xmpp(prosody, accounts, login) -> None:
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_ALLOW": accounts["client"][0]}
    app = App(resource="progress", config=load_config(env), exit_on_fatal=False, keepalive=0)
    entered, cancelled, step = asyncio.Event(), asyncio.Event(), asyncio.Event()

    @app.command("resize")
    async def resize(specs: APISpecs) -> dict[str, Any]:
        await specs.progress(0.5, "half")
        await step.wait()  # the caller saw "half" while we still run
        await specs.progress(1.0, "all")
        return {"done": True}

    @app.command("forever")
    async def forever(specs: APISpecs) -> dict[str, Any]:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    try:
        await app.wait_online(10)
        client = await login("client")
        seen: list[Progress] = []

        def on_progress(progress: Progress) -> None:
            seen.append(progress)
            step.set()

        answer = await client.call(app.jid, "resize", timeout=10, on_progress=on_progress)
        assert answer == {"done": True}
        assert seen == [Progress(0.5, "half"), Progress(1.0, "all")]  # both, in order, before the answer

        step.clear()
        step.set()
        assert await client.call(app.jid, "resize", timeout=10) == {"done": True}  # progress ignored: same answer

        call = asyncio.create_task(client.call(app.jid, "forever", timeout=30))
        await asyncio.wait_for(entered.wait(), 10)
        call.cancel()
        await asyncio.wait_for(cancelled.wait(), 10)  # the worker stopped the handler
        assert call.cancelled()
        assert await client.call(app.jid, "ping", timeout=5) == {"pong": True, "environment": "python"}
    finally:
        await app.close(2)


async def test_qe_worker_call_shows_progress_and_ctrl_c_cancels_the_handler(prosody, accounts) -> None:
    import os
    import signal
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_ALLOW": accounts["client"][0]}
    app = App(resource="cliprogress", config=load_config(env), exit_on_fatal=False, keepalive=0)
    entered, cancelled = asyncio.Event(), asyncio.Event()

    @app.command("resize")
    async def resize(specs: APISpecs) -> dict[str, Any]:
        await specs.progress(0.5, "half")
        await asyncio.sleep(0.3)  # the work; reports 0.1 s apart or more all go out
        await specs.progress(1.0, "all")
        return {"done": True}

    @app.command("forever")
    async def forever(specs: APISpecs) -> dict[str, Any]:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    client_env = {**os.environ, **prosody.env("client", accounts["client"][1])}

    async def qe(*args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "libs.cli", *args, env=client_env, cwd=root,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    try:
        await app.wait_online(10)
        proc = await qe("call", app.jid, "resize")
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert (proc.returncode, out.decode()) == (0, '{"done": true}\n')
        assert err.decode().splitlines() == ["progress: 50% half", "progress: 100% all"]  # not a TTY: lines

        proc = await qe("call", "--json", app.jid, "resize")
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert (proc.returncode, out.decode(), err.decode()) == (0, '{"done": true}\n', "")  # --json: quiet

        proc = await qe("call", app.jid, "forever", "--timeout", "60")
        await asyncio.wait_for(entered.wait(), 20)
        proc.send_signal(signal.SIGINT)  # Ctrl+C
        await asyncio.wait_for(cancelled.wait(), 10)  # the worker stopped the handler
        await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 130
    finally:
        await app.close(2)
