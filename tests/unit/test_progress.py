"""Progress reports and cancellation by the caller, on a MemoryNetwork: coalescing, what the
caller sees, a caller's cancel stopping the handler (and only that caller's)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from libs.bridge import APISpecs, App, Progress, RemoteError
from libs.bridge.progress import ProgressReporter
from libs.bridge.protocol import decode_progress, encode_progress


def test_progress_payload_round_trip_and_bad_values() -> None:
    assert decode_progress(encode_progress(0.25, "a quarter")) == Progress(0.25, "a quarter")
    assert decode_progress(encode_progress(None)) == Progress(None, "")
    assert decode_progress(encode_progress(1, "x" * 5000)) == Progress(1.0, "x" * 1000)  # cut
    for bad in (-0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="fraction"):
            encode_progress(bad)  # type: ignore[arg-type]
    for junk in ("", "[]", '{"fraction": 2}', '{"fraction": true}', '{"text": 3}', "{", '{"fraction": NaN}'):
        assert decode_progress(junk) is None, junk  # a peer's bad report is ignored, not an error


async def test_reports_are_coalesced_and_the_last_and_the_final_ones_are_never_lost() -> None:
    sent: list[Progress | None] = []
    reporter = ProgressReporter(lambda p: sent.append(decode_progress(p)), asyncio.get_running_loop(),
                                min_interval=3600)
    for i in range(100):
        await reporter.report(i / 100, f"step {i}")
    assert sent == [Progress(0.0, "step 0")]  # the first at once, the others wait for the interval
    await reporter.report(1.0, "done")  # done goes at once, and replaces what waited
    assert sent == [Progress(0.0, "step 0"), Progress(1.0, "done")]
    reporter.close()

    flushed: list[Progress | None] = []
    reporter = ProgressReporter(lambda p: flushed.append(decode_progress(p)), asyncio.get_running_loop(),
                                min_interval=0.01)
    await reporter.report(0.1)
    await reporter.report(0.2)
    await reporter.report(0.3, "latest")
    while len(flushed) < 2:  # the waiting report goes out when the interval ends: the latest one
        await asyncio.sleep(0.005)
    assert flushed == [Progress(0.1, ""), Progress(0.3, "latest")]


@pytest.fixture
async def worker(net) -> Any:
    app = App(transport=net.transport("worker@localhost/python", allow=["friend@localhost"]))
    app.state = {"cancelled": asyncio.Event(), "entered": asyncio.Event()}  # type: ignore[attr-defined]

    @app.command("resize")
    async def resize(specs: APISpecs) -> dict[str, Any]:
        for i in range(1, 5):
            await specs.progress(i / 4, f"resized {i} of 4")
        return {"done": True}

    @app.command("forever")
    async def forever(specs: APISpecs) -> dict[str, Any]:
        app.state["entered"].set()  # type: ignore[attr-defined]
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            app.state["cancelled"].set()  # type: ignore[attr-defined]
            raise
        return {}

    await app.wait_online()
    yield app
    await app.close(1)


async def test_the_caller_sees_progress_then_the_answer(worker, connect) -> None:
    friend = await connect("friend@localhost")
    seen: list[Progress] = []
    assert await friend.call(worker.jid, "resize", on_progress=seen.append, timeout=5) == {"done": True}
    assert seen[0] == Progress(0.25, "resized 1 of 4") and seen[-1] == Progress(1.0, "resized 4 of 4")
    assert [p.fraction for p in seen] == sorted(p.fraction for p in seen)  # in order, coalesced in between
    # a caller that ignores progress gets the same answer
    assert await friend.call(worker.jid, "resize", timeout=5) == {"done": True}


async def test_a_caller_cancelling_its_call_cancels_the_handler(worker, connect) -> None:
    friend = await connect("friend@localhost")
    call = asyncio.create_task(friend.call(worker.jid, "forever", timeout=30))
    await asyncio.wait_for(worker.state["entered"].wait(), 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(worker.state["cancelled"].wait(), 5)  # the handler was cancelled on the worker
    assert worker.dispatcher.stats.in_flight == 0


async def test_only_the_caller_itself_can_cancel(worker, connect) -> None:
    friend = await connect("friend@localhost")
    call = asyncio.create_task(friend.call(worker.jid, "forever", timeout=30))
    await asyncio.wait_for(worker.state["entered"].wait(), 5)
    [(caller, request_id)] = list(worker._running)
    assert caller == friend.transport.jid
    worker._on_cancel("friend@localhost/other", request_id)  # same account, another resource
    worker._on_cancel("stranger@localhost/x", request_id)
    await asyncio.sleep(0)  # a cancel would have been delivered by now
    assert not worker.state["cancelled"].is_set() and not call.done()
    worker._on_cancel(caller, request_id)
    with pytest.raises(RemoteError) as error:
        await asyncio.wait_for(call, 5)
    assert error.value.code == "interrupted" and "cancelled by its caller" in error.value.remote_message
