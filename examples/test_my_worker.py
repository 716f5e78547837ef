"""Tests of my_worker.py, written as a user of qe-worker writes them: copy this file and
my_worker.py into a folder, `pip install qe-worker[testing]`, run `pytest`. The fixtures come
from qe-worker's pytest plugin (docs/testing.md); tests/integration/test_testkit.py runs this
file that way, in a folder of its own.

The first tests load the script in this process, on an in-memory network (no server,
milliseconds each); the last one runs it as deployed, in its own process against a private
Prosody (about a second; skipped when Prosody is not installed).
"""

import asyncio

import pytest

from libs.bridge import RemoteError

pytestmark = pytest.mark.asyncio  # needed in pytest-asyncio's strict mode (its default), harmless in auto


async def test_add(qe_worker_module):
    worker = await qe_worker_module("my_worker.py")      # the script runs up to run_forever()
    assert worker.jid == "worker@localhost/python"
    assert await worker.call("add", {"x": 2, "y": 3}) == {"sum": 5}


async def test_ping_still_answers(qe_worker_module):
    worker = await qe_worker_module("my_worker.py")
    assert await worker.call("ping") == {"pong": True, "environment": "python"}


async def test_greet_answers_and_sends_a_message(qe_worker_module):
    worker = await qe_worker_module("my_worker.py")
    assert await worker.call("greet") == {"code": 0, "role": "partner"}   # client@localhost is allowed
    message = await asyncio.wait_for(worker.messages.get(), 5)
    assert message.text == "hello, client@localhost"


async def test_strangers_are_refused(qe_worker_module, qe_caller):
    worker = await qe_worker_module("my_worker.py")
    stranger = await qe_caller("stranger@localhost")
    with pytest.raises(RemoteError) as error:
        await stranger.call(worker.jid, "add", {"x": 1, "y": 1})
    assert error.value.code == "forbidden"


async def test_the_heartbeat_on_virtual_time(qe_clock, qe_worker_module):
    worker = await qe_worker_module("my_worker.py")
    assert await qe_clock.advance(5 * 60) == 5             # five minutes, at once: 5 ticks ran
    assert await worker.call("beats") == {"beats": 5}
    assert worker.module.beats == 5                        # the script's globals are there too


async def test_on_a_real_server(qe_real_worker, qe_real_caller):
    worker = await qe_real_worker("my_worker.py")          # its own process, as deployed
    client = await qe_real_caller()                        # logged in as client@localhost
    assert await client.call(worker.jid, "add", {"x": 2, "y": 3}) == {"sum": 5}
    assert await worker.stop() == 0                        # SIGTERM: it leaves and exits 0
