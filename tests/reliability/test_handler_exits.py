"""Handlers that try to end the worker, in a worker process, as a new user would write them.

What callers and operators may rely on: a handler that raises ``SystemExit`` (``sys.exit()``),
``KeyboardInterrupt`` or a ``CancelledError`` of its own gets its caller a prompt
``handler-error`` naming what it raised -- not a timeout, not ``unavailable`` -- and the
worker keeps serving; SIGTERM then still ends it with 0. A handler that wants the worker to
stop calls ``App.stop()``: its caller gets its answer and the process exits 0 by itself.
"""

from __future__ import annotations

import asyncio
import signal
import textwrap

import pytest

from libs.bridge import RemoteError, wait_answering
from tests.support.workers import WorkerProcess

CALL_TIMEOUT_S = 20.0  # an answer that came only at this timeout would be the bug
PROMPT_S = 5.0  # "promptly": far below the timeout, generous for a loaded machine
EXIT_S = 15.0

WORKER = textwrap.dedent(
    """
    from libs.startup import startup
    startup()
    import asyncio
    import sys
    from libs.bridge import App as app

    App = app(resource="handler-exits")

    @App.command("raise")
    async def raise_(specs):
        if specs.body["wait"]:
            await asyncio.sleep(0.01)
        what = specs.body["what"]
        if what == "sys.exit":
            sys.exit(3)
        if what == "KeyboardInterrupt":
            raise KeyboardInterrupt
        raise asyncio.CancelledError

    @App.command("stop")
    async def stop(specs):
        App.stop()
        return {"stopping": True}

    asyncio.get_event_loop().run_forever()
    print("loop ended", flush=True)
    """
)

RAISED = {"sys.exit": "SystemExit: 3", "KeyboardInterrupt": "KeyboardInterrupt", "CancelledError": "the handler was cancelled"}


def _worker(prosody, accounts, tmp_path, resource: str) -> tuple[WorkerProcess, str]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**prosody.env("worker", accounts["worker"][1]), "RESOURCE": resource, "QE_ALLOW": accounts["client"][0]}
    return WorkerProcess([str(script)], env, tmp_path / "worker.log"), f"{accounts['worker'][0]}/{resource}"


@pytest.mark.timeout(90)
async def test_a_handler_cannot_end_the_worker_and_each_caller_gets_its_answer(prosody, accounts, login, tmp_path,
                                                                             report):
    process, jid = _worker(prosody, accounts, tmp_path, "handler-exits")
    client = await login("client")
    loop = asyncio.get_running_loop()
    async with process as worker:
        await wait_answering(client, jid, 20)
        took = []
        for what, says in RAISED.items():
            for wait in (False, True):
                started = loop.time()
                with pytest.raises(RemoteError) as info:
                    await client.call(jid, "raise", {"what": what, "wait": wait}, timeout=CALL_TIMEOUT_S)
                took.append(loop.time() - started)
                assert info.value.code == "handler-error", (what, wait, worker.log())
                assert says in info.value.remote_message, (what, wait, info.value.remote_message)
                assert took[-1] < PROMPT_S, (what, wait, worker.log())
        assert await client.call(jid, "ping", timeout=10) == {"pong": True, "environment": "python"}
        assert worker.running
        worker.signal(signal.SIGTERM)
        code = await worker.wait(EXIT_S)
    report(f"6 calls whose handlers raised SystemExit/KeyboardInterrupt/CancelledError: answered in "
           f"{min(took) * 1000:.0f}-{max(took) * 1000:.0f} ms; exit code {code} after SIGTERM")
    assert code == 0, worker.log()
    assert "loop ended" in worker.lines
    log = worker.log_path.read_text()
    assert "Task exception was never retrieved" not in log
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 6 and all("'raise'" in line for line in errors), "\n".join(errors)


@pytest.mark.timeout(60)
async def test_app_stop_in_a_handler_answers_it_and_the_worker_exits_0(prosody, accounts, login, tmp_path):
    process, jid = _worker(prosody, accounts, tmp_path, "handler-stops")
    client = await login("client")
    async with process as worker:
        await wait_answering(client, jid, 20)
        assert await client.call(jid, "stop", timeout=10) == {"stopping": True}
        code = await worker.wait(EXIT_S)
    assert code == 0, worker.log()
    assert "loop ended" in worker.lines
