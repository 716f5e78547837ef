"""``Resumed`` (a coroutine stepped once, then handed over) and ``start_eager`` (a Task whose
first step runs at once; emulated on Python 3.11, native on 3.12+).

Every test that can be compared with plain asyncio is: the same coroutine run the usual way
must give the same result, exception, cancellation and context behaviour.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import pytest

from libs.bridge._eager import Resumed, start_eager

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def stepped(coro: Coroutine[Any, Any, Any]) -> Resumed:
    """``coro`` after its first step, which must wait."""
    yielded = coro.send(None)
    return Resumed(coro, yielded)


async def via_await(coro: Coroutine[Any, Any, Any]) -> Any:
    return await stepped(coro)


# -- Resumed, awaited -----------------------------------------------------------------------


async def test_awaited_returns_the_value_after_one_wait() -> None:
    async def one_wait() -> str:
        await asyncio.sleep(0.001)
        return "done"

    assert await via_await(one_wait()) == "done"


async def test_awaited_through_several_waits_and_nested_awaits() -> None:
    loop = asyncio.get_running_loop()
    trail: list[str] = []

    async def inner(n: int) -> int:
        fut = loop.create_future()
        loop.call_soon(fut.set_result, n * 10)
        trail.append(f"inner {n}")
        return await fut

    async def many() -> int:
        total = 0
        for n in range(5):
            await asyncio.sleep(0)  # a bare yield
            total += await inner(n)
            await asyncio.sleep(0.0005)  # a timer
        event = asyncio.Event()
        loop.call_later(0.001, event.set)
        await event.wait()
        return total

    assert await via_await(many()) == 100
    assert trail == [f"inner {n}" for n in range(5)]


async def test_first_wait_may_be_a_bare_yield() -> None:
    async def bare() -> int:
        await asyncio.sleep(0)
        return 7

    coro = bare()
    assert coro.send(None) is None  # asyncio.sleep(0) yields None
    assert await Resumed(coro, None) == 7


async def test_exception_after_the_wait_reaches_the_awaiter() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await via_await(fails())


async def test_exception_thrown_in_while_waiting_reaches_the_coroutine() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    seen: list[BaseException] = []

    async def waits() -> str:
        try:
            await fut
        except KeyError as exc:
            seen.append(exc)
            return "handled"
        return "not reached"

    async def waiter() -> str:
        return await stepped(waits())

    task = loop.create_task(waiter())
    await asyncio.sleep(0)
    fut.set_exception(KeyError("k"))
    assert await task == "handled"
    assert isinstance(seen[0], KeyError)


async def test_cancelling_the_awaiting_task_cancels_the_coroutine_and_its_future() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    cleaned = asyncio.Event()

    async def waits() -> None:
        try:
            await fut
        finally:
            cleaned.set()

    task = loop.create_task(via_await(waits()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()
    assert fut.cancelled()


async def test_under_asyncio_timeout() -> None:
    cancelled = False

    async def slow() -> None:
        nonlocal cancelled
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled = True
            raise

    rest = stepped(slow())
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await rest
    assert cancelled


# -- Resumed, driven by hand: send/throw/close are forwarded ----------------------------------


@types.coroutine
def exchange() -> Generator[str, Any, list[Any]]:
    """Yields markers and records what it is sent or thrown."""
    got: list[Any] = []
    try:
        got.append((yield "first"))
        got.append((yield "second"))
    except LookupError as exc:
        got.append(exc)
        got.append((yield "after-throw"))
    return got


def test_send_values_are_forwarded_after_the_hand_over() -> None:
    gen = exchange()
    r = Resumed(gen, gen.send(None))
    assert r.send("ignored: the hand-over") == "first"
    assert r.send(1) == "second"
    with pytest.raises(StopIteration) as stop:
        r.send(2)
    assert stop.value.value == [1, 2]


def test_throw_is_forwarded_and_the_coroutine_may_go_on() -> None:
    gen = exchange()
    r = Resumed(gen, gen.send(None))
    assert r.send(None) == "first"
    err = KeyError("x")
    assert r.throw(err) == "after-throw"
    with pytest.raises(StopIteration) as stop:
        r.send(3)
    assert stop.value.value == [err, 3]


def test_throw_before_the_hand_over_goes_to_the_coroutine_where_it_waits() -> None:
    gen = exchange()
    r = Resumed(gen, gen.send(None))  # waiting at "first"
    assert r.throw(IndexError("early")) == "after-throw"
    with pytest.raises(StopIteration):
        r.send(None)


def test_uncaught_throw_propagates() -> None:
    gen = exchange()
    r = Resumed(gen, gen.send(None))
    with pytest.raises(ZeroDivisionError):
        r.throw(ZeroDivisionError())


def test_close_closes_the_coroutine() -> None:
    closed = False

    async def waits() -> None:
        nonlocal closed
        try:
            await asyncio.sleep(0)
        finally:
            closed = True

    r = stepped(waits())
    r.close()
    assert closed
    with pytest.raises(RuntimeError):  # a closed coroutine cannot be resumed
        r.send(None)


# -- Resumed as a Task's coroutine -------------------------------------------------------------


async def test_task_cancelled_before_its_first_step_cancels_the_waited_future() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    seen: list[str] = []

    async def waits() -> None:
        try:
            await fut
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    task = loop.create_task(stepped(waits()))
    task.cancel()  # before the task ever ran
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]
    assert fut.cancelled()


async def test_task_whose_coroutine_swallows_cancellation_returns_like_a_plain_task() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "kept going"
        return "not reached"

    loop = asyncio.get_running_loop()
    results = []
    for make in (lambda: loop.create_task(stubborn()), lambda: loop.create_task(stepped(stubborn()))):
        task = make()
        await asyncio.sleep(0)
        task.cancel()
        results.append(await task)
    assert results == ["kept going", "kept going"]


async def test_task_repr_and_stack_show_the_wrapped_coroutine() -> None:
    async def some_handler() -> None:
        await asyncio.sleep(10)

    task = asyncio.get_running_loop().create_task(stepped(some_handler()))
    await asyncio.sleep(0)
    assert "some_handler" in repr(task)
    assert any(frame.f_code.co_name == "some_handler" for frame in task.get_stack())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- start_eager ---------------------------------------------------------------------------------


def run_in_callback(fn: Callable[[], Any]) -> asyncio.Future[Any]:
    """Run ``fn`` from a plain loop callback (where stanzas arrive), not inside a task."""
    loop = asyncio.get_running_loop()
    out = loop.create_future()

    def callback() -> None:
        try:
            out.set_result(fn())
        except BaseException as exc:
            out.set_exception(exc)

    loop.call_soon(callback)
    return out


async def test_finishing_in_the_first_step_runs_at_once() -> None:
    loop = asyncio.get_running_loop()
    trail: list[str] = []

    async def quick() -> str:
        trail.append("ran")
        return "answer"

    def start() -> tuple[asyncio.Task[Any], bool, list[str]]:
        task, running = start_eager(loop, quick())
        return task, running, list(trail)  # what had happened when start_eager returned

    task, running, at_return = await run_in_callback(start)
    assert at_return == ["ran"] and not running
    assert await task == "answer"


async def test_waiting_in_the_first_step_is_taken_over_by_the_task() -> None:
    loop = asyncio.get_running_loop()
    trail: list[str] = []

    async def two_steps() -> str:
        trail.append("step 1")
        await asyncio.sleep(0.001)
        trail.append("step 2")
        return "answer"

    task, running = await run_in_callback(lambda: start_eager(loop, two_steps()))
    assert running and trail == ["step 1"]
    assert await task == "answer"
    assert trail == ["step 1", "step 2"]


async def test_exception_in_the_first_step_ends_the_task_with_it() -> None:
    loop = asyncio.get_running_loop()

    async def broken() -> None:
        raise ValueError("at once")

    task, running = await run_in_callback(lambda: start_eager(loop, broken()))
    assert not running
    with pytest.raises(ValueError, match="at once"):
        await task


async def test_the_first_step_runs_as_the_task_so_timeouts_work_there() -> None:
    loop = asyncio.get_running_loop()
    seen: dict[str, Any] = {}

    async def uses_timeout() -> str:
        seen["current"] = asyncio.current_task()
        try:
            async with asyncio.timeout(0.01):  # needs a current task, in the first step
                await asyncio.sleep(10)
        except TimeoutError:
            return "timed out"
        return "not reached"

    task, running = await run_in_callback(lambda: start_eager(loop, uses_timeout()))
    assert running and seen["current"] is task
    assert await task == "timed out"


async def test_task_group_in_the_first_step() -> None:
    loop = asyncio.get_running_loop()

    async def child(n: int) -> int:
        await asyncio.sleep(0)
        return n

    async def group() -> int:
        async with asyncio.TaskGroup() as tg:
            parts = [tg.create_task(child(n)) for n in range(3)]
        return sum(p.result() for p in parts)

    task, _ = await run_in_callback(lambda: start_eager(loop, group()))
    assert await task == 3


async def test_context_is_a_copy_shared_by_all_steps_and_does_not_leak() -> None:
    loop = asyncio.get_running_loop()
    var.set("caller")
    seen: list[str] = []

    async def uses_var() -> str:
        seen.append(var.get())
        var.set("mine")
        await asyncio.sleep(0)
        seen.append(var.get())
        return var.get()

    def start() -> tuple[asyncio.Task[Any], str]:
        task, _ = start_eager(loop, uses_var())
        return task, var.get()  # the callback's context after the eager step

    task, after = await run_in_callback(start)
    assert after == "caller"  # the handler's set() stayed in its own context
    assert await task == "mine"
    assert seen == ["caller", "mine"]
    assert var.get() == "caller"


async def test_finished_first_step_does_not_leak_context_either() -> None:
    loop = asyncio.get_running_loop()

    async def sets_var() -> None:
        var.set("leaked?")

    def start() -> str:
        start_eager(loop, sets_var())
        return var.get()

    assert await run_in_callback(start) == "unset"


async def test_cancel_while_waiting_reaches_the_coroutine() -> None:
    loop = asyncio.get_running_loop()
    trail: list[str] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            trail.append("cancelled")
            raise

    task, _ = await run_in_callback(lambda: start_eager(loop, waits()))
    # The Task's own first step (3.11: the hand-over) was scheduled before our wake-up, so it
    # has run: the Task waits at the coroutine's wait (the next test cancels before that).
    assert not getattr(task.get_coro(), "waiting", False) and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert trail == ["cancelled"]


async def test_cancel_right_after_start_reaches_the_coroutine_at_its_wait() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    trail: list[str] = []

    async def waits() -> None:
        trail.append("started")
        try:
            await fut
        except asyncio.CancelledError:
            trail.append("cancelled")
            raise

    def start_and_cancel() -> asyncio.Task[Any]:
        task, _ = start_eager(loop, waits())
        task.cancel()  # 3.11: before the Task's own first step
        return task

    task = await run_in_callback(start_and_cancel)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert trail == ["started", "cancelled"]
    assert fut.cancelled()


async def test_cancel_after_finishing_in_the_first_step_keeps_the_result() -> None:
    loop = asyncio.get_running_loop()

    async def quick() -> str:
        return "done"

    def start_and_cancel() -> asyncio.Task[Any]:
        task, running = start_eager(loop, quick())
        assert not running
        task.cancel()  # too late, as for a 3.12 eager task that is already done
        return task

    task = await run_in_callback(start_and_cancel)
    assert await task == "done"


async def test_many_waits_then_result_and_exception() -> None:
    loop = asyncio.get_running_loop()

    async def waits_then(n: int, fail: bool) -> int:
        for _ in range(n):
            await asyncio.sleep(0)
        if fail:
            raise RuntimeError(n)
        return n

    started = await run_in_callback(lambda: [start_eager(loop, waits_then(n, n % 3 == 0))[0] for n in range(1, 10)])
    outcomes = await asyncio.gather(*started, return_exceptions=True)
    for n, outcome in enumerate(outcomes, start=1):
        if n % 3 == 0:
            assert isinstance(outcome, RuntimeError) and outcome.args == (n,)
        else:
            assert outcome == n


async def test_from_inside_a_task_it_still_runs() -> None:
    loop = asyncio.get_running_loop()

    async def two_steps() -> str:
        await asyncio.sleep(0)
        return "ok"

    task, running = start_eager(loop, two_steps())  # this test itself is a task
    assert running
    assert await task == "ok"


async def test_no_task_is_left_pending() -> None:
    loop = asyncio.get_running_loop()

    async def quick() -> None:
        return None

    before = len(asyncio.all_tasks(loop))
    await run_in_callback(lambda: [start_eager(loop, quick()) for _ in range(50)])
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gc.collect()
    assert len(asyncio.all_tasks(loop)) == before


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ starts tasks eagerly itself")
async def test_emulation_on_311_uses_one_task_per_call() -> None:
    loop = asyncio.get_running_loop()

    async def waits() -> None:
        await asyncio.sleep(0)

    task, running = await run_in_callback(lambda: start_eager(loop, waits()))
    assert running and isinstance(task.get_coro(), Resumed)
    await task


@pytest.mark.parametrize("cancel_at", ["right-after-start", "while-waiting"])
async def test_cancellation_requests_are_counted_on_the_task_in_every_step(cancel_at: str) -> None:
    """The dispatcher tells a cancellation of the request's task (shutdown) from a
    CancelledError the handler raised by ``current_task().cancelling()``: in every step,
    the first one we run included, that must be the Task's own count, as for a plain task."""
    loop = asyncio.get_running_loop()
    seen: list[int] = []
    waiting = asyncio.Event()

    async def counts() -> None:
        seen.append(asyncio.current_task().cancelling())  # type: ignore[union-attr]
        try:
            waiting.set()
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append(asyncio.current_task().cancelling())  # type: ignore[union-attr]
            raise

    def start() -> asyncio.Task[Any]:
        task, running = start_eager(loop, counts())
        assert running
        if cancel_at == "right-after-start":
            task.cancel()
        return task

    task = await run_in_callback(start)
    if cancel_at == "while-waiting":
        await asyncio.wait_for(waiting.wait(), 2)
        await asyncio.sleep(0)
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert seen == [0, 1]


async def test_a_cancelled_error_raised_in_the_first_step_is_not_a_cancellation_request() -> None:
    """A coroutine that raises CancelledError itself in the step we run: the Task ends
    cancelled (as a plain task would), but no one asked for it (``cancelling()`` is 0)."""
    loop = asyncio.get_running_loop()
    seen: list[int] = []

    async def raises() -> None:
        seen.append(asyncio.current_task().cancelling())  # type: ignore[union-attr]
        raise asyncio.CancelledError("by itself")

    task, running = await run_in_callback(lambda: start_eager(loop, raises()))
    assert not running
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert seen == [0]
    assert task.cancelled()
