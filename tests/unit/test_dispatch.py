"""Unit tests for ``libs.bridge.dispatch.Dispatcher``: decode, authorise, route, run — no XMPP."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any

import pytest

from libs.bridge.access import AccessPolicy, Role
from libs.bridge.commands import CommandSpec
from libs.bridge.dispatch import Dispatcher, DispatchStats
from libs.bridge.protocol import ApiError, ApiResult, ProtocolError, encode_request, now_ms
from libs.bridge.specs import APISpecs, MessageSpecs

OWN_FULL = "worker@example.org/python"
OWNER = "worker@example.org/laptop"
FRIEND = "Friend@Other.net/Phone"
STRANGER = "stranger@evil.example/x"


def make(public: bool = False) -> Dispatcher:
    return Dispatcher(AccessPolicy.create(OWN_FULL, public=public, allow=["friend@other.net"]))


async def ping(specs: APISpecs) -> dict[str, Any]:
    return {"pong": True}


def req(cmd: str = "ping", body: dict[str, Any] | None = None, deadline_ms: int | None = None) -> str:
    return encode_request(cmd, body, deadline_ms=deadline_ms)


def result_of(answer: ApiResult | ApiError) -> dict[str, Any]:
    assert isinstance(answer, ApiResult), answer
    return json.loads(answer.payload)


def error_of(answer: ApiResult | ApiError, code: str) -> ApiError:
    assert isinstance(answer, ApiError), answer
    assert answer.code == code, answer
    return answer


class Recorder:
    """An API handler that records the specs it was given and returns a fixed value."""

    def __init__(self, value: Any = None, name: str = "") -> None:
        self.value = value
        self.name = name
        self.calls: list[APISpecs] = []

    async def __call__(self, specs: APISpecs) -> Any:
        self.calls.append(specs)
        return self.value


# -- routing -------------------------------------------------------------------------------


async def test_ping_via_fallbacks() -> None:
    d = make()
    d.fallbacks["ping"] = ping
    answer = await d.handle("iq1", OWNER, req("ping"))
    assert result_of(answer) == {"pong": True}
    assert (answer.id, answer.to) == ("iq1", OWNER)


async def test_commands_win_over_onapi() -> None:
    d = make()
    command, onapi, fallback = Recorder({"from": "command"}), Recorder({"from": "onapi"}), Recorder({"from": "fb"})
    d.commands.register("ping", command)
    d.onapi = onapi
    d.fallbacks["ping"] = fallback
    assert result_of(await d.handle("i", OWNER, req("ping"))) == {"from": "command"}
    assert len(command.calls) == 1
    assert onapi.calls == [] and fallback.calls == []


@pytest.mark.parametrize("falsy", [None, {}, 0, False, ""])
async def test_command_returning_falsy_answers_empty_dict_without_fallback(falsy: Any) -> None:
    d = make()
    d.commands.register("ping", Recorder(falsy))
    fallback = Recorder({"pong": True})
    d.fallbacks["ping"] = fallback
    assert result_of(await d.handle("i", OWNER, req("ping"))) == {}  # QE's behaviour: it ran
    assert fallback.calls == []


async def test_onapi_wins_over_fallbacks() -> None:
    d = make()
    d.onapi = Recorder({"pong": "mine"})
    fallback = Recorder({"pong": True})
    d.fallbacks["ping"] = fallback
    assert result_of(await d.handle("i", OWNER, req("ping"))) == {"pong": "mine"}
    assert fallback.calls == []


async def test_fallback_answers_when_onapi_returns_none() -> None:
    d = make()
    onapi = Recorder(None)
    d.onapi = onapi
    d.fallbacks["ping"] = ping
    assert result_of(await d.handle("i", OWNER, req("ping"))) == {"pong": True}
    assert len(onapi.calls) == 1


async def test_onapi_returning_none_answers_empty_dict() -> None:
    d = make()
    onapi = Recorder(None)
    d.onapi = onapi
    d.fallbacks["ping"] = ping
    assert result_of(await d.handle("i", OWNER, req("frobnicate"))) == {}  # QE: onapi took it
    assert [c.cmd for c in onapi.calls] == ["frobnicate"]


async def test_no_handler_at_all_is_unknown_command() -> None:
    d = make()
    d.fallbacks["ping"] = ping
    err = error_of(await d.handle("i", OWNER, req("anything")), "unknown-command")
    assert "anything" in err.message
    assert err.condition == "item-not-found"
    assert result_of(await d.handle("i", OWNER, req("ping"))) == {"pong": True}


async def test_empty_dict_result_is_a_result() -> None:
    d = make()
    d.onapi = Recorder({})
    assert result_of(await d.handle("i", OWNER, req("x"))) == {}


# -- failures ------------------------------------------------------------------------------


async def boom(specs: APISpecs) -> dict[str, Any]:
    raise ValueError("db password is hunter2")


@pytest.mark.parametrize("sender", [OWNER, FRIEND])
async def test_handler_error_shows_detail_to_owner_and_allowed(sender: str) -> None:
    d = make(public=True)
    d.onapi = boom
    err = error_of(await d.handle("i", sender, req("work")), "handler-error")
    assert "ValueError" in err.message
    assert "hunter2" in err.message
    assert err.condition == "internal-server-error"


async def test_handler_error_hides_detail_from_public_stranger() -> None:
    d = make(public=True)
    d.onapi = boom
    err = error_of(await d.handle("i", STRANGER, req("work")), "handler-error")
    assert "ValueError" in err.message
    assert "hunter2" not in err.message


async def test_forbidden_for_stranger_on_private_worker() -> None:
    d = make(public=False)
    onapi = Recorder({"ok": True})
    d.onapi = onapi
    err = error_of(await d.handle("i", STRANGER, req("ping")), "forbidden")
    assert err.condition == "forbidden"
    assert onapi.calls == []


async def test_public_worker_answers_stranger() -> None:
    d = make(public=True)
    onapi = Recorder({"ok": True})
    d.onapi = onapi
    assert result_of(await d.handle("i", STRANGER, req("ping"))) == {"ok": True}
    assert onapi.calls[0].role == "user"


@pytest.mark.parametrize("text", ["{not json", "[]", None, "", '{"cmd": ""}', '{"cmd": "ping", "body": {"x": NaN}}',
                                  '{"cmd": "ping", "deadline": 1700000000000.5}'])
async def test_bad_request(text: str | None) -> None:
    d = make()
    onapi = Recorder({"ok": True})
    d.onapi = onapi
    err = error_of(await d.handle("i", OWNER, text), "bad-request")
    assert (err.id, err.to) == ("i", OWNER)
    assert onapi.calls == []


async def test_iq_get_is_refused_not_run_even_for_the_owner() -> None:
    d = make()
    onapi = Recorder({"ok": True})
    d.onapi = onapi
    d.fallbacks["ping"] = ping
    err = error_of(await d.handle("g", OWNER, req("ping"), "get"), "bad-request")
    assert (err.id, err.to, err.condition) == ("g", OWNER, "bad-request")
    assert "IQ of type 'set'" in err.message
    assert onapi.calls == []
    assert (d.stats.received, d.stats.failed, d.stats.answered) == (1, 1, 0)
    assert result_of(await d.handle("s", OWNER, req("ping"), "set")) == {"ok": True}


async def test_expired_deadline_is_not_run() -> None:
    d = make()
    onapi = Recorder({"ok": True})
    d.onapi = onapi
    err = error_of(await d.handle("i", OWNER, req("x", deadline_ms=now_ms() - 1)), "expired")
    assert err.condition == "remote-server-timeout"
    assert onapi.calls == []
    assert d.stats.expired == 1


async def test_handler_running_past_deadline_is_cancelled() -> None:
    d = make()
    started = asyncio.Event()
    cancelled = False

    async def forever(specs: APISpecs) -> dict[str, Any]:
        nonlocal cancelled
        started.set()
        try:
            await asyncio.Event().wait()  # never set: only the deadline can end this
        except asyncio.CancelledError:
            cancelled = True
            raise
        return {"never": True}

    d.onapi = forever
    err = error_of(await d.handle("i", OWNER, req("slow", deadline_ms=now_ms() + 30)), "expired")
    assert started.is_set()
    assert cancelled
    assert "while it ran" in err.message
    assert d.stats.expired == 1
    assert d.stats.in_flight == 0


async def test_deadline_in_future_lets_handler_finish() -> None:
    d = make()
    onapi = Recorder({"ok": True})
    d.onapi = onapi
    answer = await d.handle("i", OWNER, req("x", deadline_ms=now_ms() + 3_600_000))
    assert result_of(answer) == {"ok": True}


async def test_handler_own_timeout_error_is_handler_error_not_expired() -> None:
    d = make()

    async def times_out(specs: APISpecs) -> dict[str, Any]:
        raise TimeoutError("upstream did not answer")

    d.onapi = times_out
    err = error_of(await d.handle("i", OWNER, req("x")), "handler-error")
    assert "TimeoutError" in err.message


class CountTimeouts:
    """Counts the deadline timers the dispatcher arms (``asyncio.timeout``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = 0
        real = asyncio.timeout

        def counting(delay: float | None) -> asyncio.Timeout:
            self.armed += 1
            return real(delay)

        monkeypatch.setattr(asyncio, "timeout", counting)


async def test_handler_that_does_not_wait_gets_no_deadline_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    timers = CountTimeouts(monkeypatch)
    d = make()
    d.onapi = Recorder({"ok": True})
    answer = await d.handle("i", OWNER, req("x", deadline_ms=now_ms() + 60_000))
    assert result_of(answer) == {"ok": True}
    assert result_of(await d.handle("j", OWNER, req("ping", deadline_ms=now_ms() + 60_000))) == {"ok": True}
    assert timers.armed == 0


async def test_handler_that_waits_runs_on_under_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    timers = CountTimeouts(monkeypatch)
    d = make()
    trail: list[str] = []

    async def waits(specs: APISpecs) -> dict[str, Any]:
        trail.append("first step")
        for n in range(3):
            await asyncio.sleep(0.001)
            trail.append(f"step {n + 2}")
        return {"steps": len(trail)}

    d.onapi = waits
    answer = await d.handle("i", OWNER, req("x", deadline_ms=now_ms() + 60_000))
    assert result_of(answer) == {"steps": 4}
    assert timers.armed == 1


async def test_first_step_that_overruns_the_deadline_then_waits_is_expired() -> None:
    d = make()

    async def busy_then_wait(specs: APISpecs) -> dict[str, Any]:
        time.sleep(0.4)  # blocks the loop past the deadline before its first wait
        await asyncio.sleep(5)
        return {"never": True}

    d.onapi = busy_then_wait
    started = time.monotonic()
    err = error_of(await d.handle("i", OWNER, req("x", deadline_ms=now_ms() + 200)), "expired")
    assert "while it ran" in err.message
    assert time.monotonic() - started < 2


async def test_first_step_that_overruns_the_deadline_but_returns_keeps_its_result() -> None:
    d = make()

    async def busy(specs: APISpecs) -> dict[str, Any]:
        time.sleep(0.4)  # as before: a deadline cannot interrupt code that does not wait
        return {"done": True}

    d.onapi = busy
    assert result_of(await d.handle("i", OWNER, req("x", deadline_ms=now_ms() + 200))) == {"done": True}


async def test_without_a_deadline_a_waiting_handler_is_not_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    timers = CountTimeouts(monkeypatch)
    d = make()

    async def waits(specs: APISpecs) -> dict[str, Any]:
        await asyncio.sleep(0.001)
        return {"ok": True}

    d.onapi = waits
    assert result_of(await d.handle("i", OWNER, req("x"))) == {"ok": True}
    assert timers.armed == 1  # asyncio.timeout(None): no timer, same code path


async def test_errors_after_a_wait_are_answered_like_errors_before_it() -> None:
    d = make()

    async def refuses(specs: APISpecs) -> dict[str, Any]:
        await asyncio.sleep(0)
        raise ProtocolError("not-found", "no such job")

    async def times_out(specs: APISpecs) -> dict[str, Any]:
        await asyncio.sleep(0)
        raise TimeoutError("upstream")

    async def fails(specs: APISpecs) -> dict[str, Any]:
        await asyncio.sleep(0)
        raise KeyError("k")

    for name, handler in {"refuses": refuses, "times_out": times_out, "fails": fails}.items():
        d.commands.register(name, handler)
    deadline = now_ms() + 60_000
    assert error_of(await d.handle("1", OWNER, req("refuses", deadline_ms=deadline)), "not-found").message == "no such job"
    assert "TimeoutError: upstream" in error_of(await d.handle("2", OWNER, req("times_out", deadline_ms=deadline)),
                                                "handler-error").message
    assert "KeyError" in error_of(await d.handle("3", OWNER, req("fails", deadline_ms=deadline)), "handler-error").message


async def test_fallback_after_onapi_waited_and_returned_none() -> None:
    d = make()

    async def not_mine(specs: APISpecs) -> None:
        await asyncio.sleep(0)
        return None

    d.onapi = not_mine
    d.fallbacks["ping"] = ping
    assert result_of(await d.handle("i", OWNER, req("ping"))) == {"pong": True}


async def test_handler_returning_another_awaitable() -> None:
    d = make()
    loop = asyncio.get_running_loop()

    def future_handler(specs: APISpecs) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        loop.call_later(0.001, fut.set_result, {"from": "future"})
        return fut

    def stuck_handler(specs: APISpecs) -> asyncio.Future[dict[str, Any]]:
        return loop.create_future()

    for name, handler in {"f": future_handler, "stuck": stuck_handler}.items():  # not async: set in, not registered
        d.commands._specs[name] = CommandSpec(name, handler, "", Role.USER, False, None, {"type": "object"})
    assert result_of(await d.handle("1", OWNER, req("f", deadline_ms=now_ms() + 60_000))) == {"from": "future"}
    error_of(await d.handle("2", OWNER, req("stuck", deadline_ms=now_ms() + 20)), "expired")


async def test_cancelling_the_caller_reaches_a_waiting_handler() -> None:
    d = make()
    started = asyncio.Event()
    cleaned = asyncio.Event()

    async def waits(specs: APISpecs) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()
        return {}

    d.onapi = waits
    task = asyncio.ensure_future(d.handle("i", OWNER, req("x", deadline_ms=now_ms() + 60_000)))
    await asyncio.wait_for(started.wait(), 5)
    assert d.stats.in_flight == 1 and not task.done()  # the handler is waiting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()
    assert d.stats.in_flight == 0 and d._per_caller == {}


# -- what a handler raises cannot end the worker or speak for it ----------------------------


def raising(exc: BaseException, *, wait: bool) -> Any:
    """A handler that raises ``exc``, at once or after a real wait (the dispatcher runs the
    first step itself and hands the rest to asyncio: both paths must answer alike)."""

    async def handler(specs: APISpecs) -> dict[str, Any]:
        if wait:
            await asyncio.sleep(0.001)
        raise exc

    return handler


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "libs.bridge.dispatch" and r.levelno >= logging.ERROR]


@pytest.mark.parametrize("wait", [False, True], ids=["at-once", "after-a-wait"])
@pytest.mark.parametrize("exc", [SystemExit(3), SystemExit("bye"), KeyboardInterrupt()],
                         ids=["exit-3", "exit-text", "keyboard-interrupt"])
async def test_system_exit_and_keyboard_interrupt_from_a_handler_are_handler_errors(
        exc: BaseException, wait: bool, caplog: pytest.LogCaptureFixture) -> None:
    d = make(public=True)
    d.commands.register("work", raising(exc, wait=wait))
    with caplog.at_level(logging.ERROR, logger="libs.bridge.dispatch"):
        err = error_of(await d.handle("i", OWNER, req("work", deadline_ms=now_ms() + 60_000)), "handler-error")
        stranger = error_of(await d.handle("j", STRANGER, req("work")), "handler-error")
    name = type(exc).__name__
    assert err.message == f"'work' failed: {name}: {exc}"
    assert stranger.message == f"'work' failed: {name}"  # the type, never the text, for strangers
    logged = errors_logged(caplog)
    assert len(logged) == 2  # once per request
    assert "'work'" in logged[0].getMessage() and name in logged[0].getMessage()
    assert "App.stop()" in logged[0].getMessage()
    assert logged[0].exc_info is not None and logged[0].exc_info[1] is exc
    assert (d.stats.failed, d.stats.in_flight, d._per_caller) == (2, 0, {})


@pytest.mark.parametrize("wait", [False, True], ids=["at-once", "after-a-wait"])
@pytest.mark.parametrize("deadline", [None, 60_000], ids=["no-deadline", "deadline"])
async def test_a_handlers_own_cancelled_error_is_handler_error_not_unavailable_or_expired(
        wait: bool, deadline: int | None, caplog: pytest.LogCaptureFixture) -> None:
    d = make()
    d.commands.register("work", raising(asyncio.CancelledError("secret"), wait=wait))
    with caplog.at_level(logging.ERROR, logger="libs.bridge.dispatch"):
        err = error_of(await d.handle("i", OWNER, req("work", deadline_ms=deadline and now_ms() + deadline)),
                       "handler-error")
    assert err.message == "'work' failed: the handler was cancelled (CancelledError)"
    assert err.condition == "internal-server-error"
    (logged,) = errors_logged(caplog)
    assert "'work'" in logged.getMessage() and "not by the worker" in logged.getMessage()
    assert (d.stats.failed, d.stats.expired, d.stats.in_flight) == (1, 0, 0)


async def test_awaiting_a_future_someone_else_cancelled_is_handler_error() -> None:
    """The usual way a handler meets a CancelledError that is not ours: it awaits a task or
    future that other code cancelled."""
    d = make()

    async def awaits_a_cancelled_task(specs: APISpecs) -> dict[str, Any]:
        other = asyncio.ensure_future(asyncio.sleep(10))
        asyncio.get_running_loop().call_soon(other.cancel)
        await other
        return {}

    d.commands.register("work", awaits_a_cancelled_task)
    err = error_of(await d.handle("i", OWNER, req("work", deadline_ms=now_ms() + 60_000)), "handler-error")
    assert "the handler was cancelled" in err.message


async def test_cancelling_the_task_still_propagates_even_if_the_handler_raises_a_new_cancelled_error() -> None:
    """Cancellation from outside (the worker's shutdown, a stopped scheduled job) must reach
    whoever awaits the dispatcher, also when the handler swaps the CancelledError for its own."""
    d = make()
    waiting = asyncio.Event()

    async def swaps(specs: APISpecs) -> dict[str, Any]:
        waiting.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise asyncio.CancelledError("the handler's own words") from None
        return {}

    d.commands.register("work", swaps)
    task = asyncio.ensure_future(d.handle("i", OWNER, req("work", deadline_ms=now_ms() + 60_000)))
    await asyncio.wait_for(waiting.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert (d.stats.failed, d.stats.in_flight, d._per_caller) == (0, 0, {})


async def test_deadline_is_still_expired_when_the_handler_swaps_the_cancelled_error() -> None:
    d = make()

    async def swaps(specs: APISpecs) -> dict[str, Any]:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise asyncio.CancelledError("the handler's own words") from None
        return {}

    d.commands.register("work", swaps)
    error_of(await d.handle("i", OWNER, req("work", deadline_ms=now_ms() + 30)), "expired")


@pytest.mark.parametrize("exc", [SystemExit(1), KeyboardInterrupt(), asyncio.CancelledError()],
                         ids=["exit", "keyboard-interrupt", "cancelled"])
async def test_scheduled_runs_contain_what_the_handler_raises_too(exc: BaseException) -> None:
    """``execute()`` (scheduled jobs) runs the same user code: same answers."""
    from libs.bridge.protocol import ApiRequest

    d = make()
    d.commands.register("work", raising(exc, wait=True))
    answer = await d.execute(ApiRequest(id="job-1", sender=OWNER, cmd="work", body={}), Role.OWNER)
    error_of(answer, "handler-error")


async def test_closing_the_dispatchers_coroutine_is_not_answered(caplog: pytest.LogCaptureFixture) -> None:
    """A coroutine being closed (GeneratorExit: a pending task garbage-collected, a loop
    closed under it) must just end: it is not the handler failing, and nobody is there to
    take an answer."""
    d = make()
    d.commands.register("work", raising(RuntimeError("never"), wait=True))
    coro = d.handle("i", OWNER, req("work", deadline_ms=now_ms() + 60_000))
    coro.send(None)  # up to the handler's sleep
    with caplog.at_level(logging.ERROR, logger="libs.bridge.dispatch"):
        coro.close()
    assert errors_logged(caplog) == []
    assert (d.stats.failed, d.stats.in_flight) == (0, 0)


async def test_not_accepting_is_unavailable() -> None:
    d = make()
    onapi = Recorder({"ok": True})
    d.onapi = onapi
    d.accepting = False
    err = error_of(await d.handle("i", OWNER, req("ping")), "unavailable")
    assert err.condition == "service-unavailable"
    assert onapi.calls == []


@pytest.mark.parametrize("value", [{"s": {1, 2}}, {"n": float("nan")}, ["not", "a", "dict"], "text"])
async def test_bad_result(value: Any) -> None:
    d = make()
    d.onapi = Recorder(value)
    error_of(await d.handle("i", OWNER, req("x")), "bad-result")


async def test_too_large_result() -> None:
    d = Dispatcher(AccessPolicy.create(OWN_FULL, public=False), max_payload=2048)
    d.onapi = Recorder({"blob": "x" * 4096})
    error_of(await d.handle("i", OWNER, req("x")), "too-large")


async def test_request_over_dispatcher_max_payload_is_too_large() -> None:
    d = Dispatcher(AccessPolicy.create(OWN_FULL, public=False), max_payload=1024)
    error_of(await d.handle("i", OWNER, json.dumps({"cmd": "x", "body": {"b": "y" * 2000}})), "too-large")


async def test_handle_never_raises_on_huge_integer_deadline() -> None:
    d = make()
    d.onapi = Recorder({"ok": True})
    error_of(await d.handle("i", OWNER, '{"cmd": "x", "deadline": 1%s}' % ("0" * 400)), "bad-request")


async def test_handle_never_raises_on_lone_surrogate_echo() -> None:
    d = make()

    async def echo(specs: APISpecs) -> dict[str, Any]:
        return specs.body

    d.onapi = echo
    answer = await d.handle("i", OWNER, '{"cmd": "echo", "body": {"s": "\\ud800"}}')
    assert isinstance(answer, ApiResult) and answer.payload == '{"s":"\\ud800"}'


# -- stats ---------------------------------------------------------------------------------


async def test_stats_counters() -> None:
    d = make()
    seen_in_flight: list[int] = []

    async def onapi(specs: APISpecs) -> dict[str, Any] | None:
        seen_in_flight.append(d.stats.in_flight)
        if specs.cmd == "fail":
            raise RuntimeError("x")
        return {"ok": True} if specs.cmd == "ok" else None

    d.onapi = onapi
    assert d.stats == DispatchStats()
    await d.handle("1", OWNER, req("ok"))
    await d.handle("2", OWNER, req("ok"))
    await d.handle("3", OWNER, "{bad")
    await d.handle("4", STRANGER, req("ok"))
    await d.handle("5", OWNER, req("ok", deadline_ms=now_ms() - 1))
    await d.handle("6", OWNER, req("fail"))
    await d.handle("7", OWNER, req("nothing"))  # onapi took it: answered {}
    d.accepting = False
    await d.handle("8", OWNER, req("ok"))
    # every received request is counted in exactly one outcome
    assert d.stats == DispatchStats(received=8, answered=3, failed=3, forbidden=1, expired=1, in_flight=0)
    assert seen_in_flight == [1, 1, 1, 1]


async def test_in_flight_counts_concurrent_requests() -> None:
    d = make()
    release = asyncio.Event()
    entered = 0
    both_in = asyncio.Event()

    async def onapi(specs: APISpecs) -> dict[str, Any]:
        nonlocal entered
        entered += 1
        if entered == 2:
            both_in.set()
        await release.wait()
        return {"ok": True}

    d.onapi = onapi
    tasks = [asyncio.create_task(d.handle(str(i), OWNER, req("x"))) for i in range(2)]
    await both_in.wait()
    assert d.stats.in_flight == 2
    release.set()
    answers = await asyncio.gather(*tasks)
    assert all(isinstance(a, ApiResult) for a in answers)
    assert d.stats.in_flight == 0
    assert d.stats.answered == 2


# -- APISpecs --------------------------------------------------------------------------------


async def test_api_specs_fields() -> None:
    d = make()
    onapi = Recorder({"ok": True})
    d.onapi = onapi
    deadline = now_ms() + 3_600_000
    await d.handle("iq-42", FRIEND, req("do", {"a": [1, {"b": None}]}, deadline_ms=deadline))
    (specs,) = onapi.calls
    assert specs.cmd == "do"
    assert specs.body == {"a": [1, {"b": None}]}
    assert specs.role == "partner"
    assert type(specs.role) is str
    assert specs.jid == FRIEND
    assert specs.id == "iq-42"
    assert specs.uid == "friend@other.net"
    assert specs.resource == "Phone"
    assert specs.deadline_ms == deadline
    assert (specs.app, specs.servid, specs.servsecret) == (None, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        specs.cmd = "other"  # type: ignore[misc]


async def test_api_specs_owner_role_and_no_deadline() -> None:
    d = make()
    onapi = Recorder({"ok": True})
    d.onapi = onapi
    await d.handle("i", OWNER, req("x"))
    assert onapi.calls[0].role == "owner"
    assert onapi.calls[0].deadline_ms is None
    assert onapi.calls[0].resource == "laptop"


# -- message() -----------------------------------------------------------------------------


def no_reply(to: str, body: str | dict[str, Any]) -> None:
    raise AssertionError("reply must not be called")


@pytest.mark.parametrize(("text", "body"), [
    ('{"a": 1, "b": [true]}', {"a": 1, "b": [True]}),
    ("{}", {}),
    ("hello", "hello"),
    ("{not json", "{not json"),
    ("[1, 2]", [1, 2]),  # QE: bodies are a dict or a list
    ("[1, 2", "[1, 2"),
    ("42", "42"),
    ("", ""),
])
def test_message_body(text: str, body: Any) -> None:
    specs = make().message(OWNER, OWN_FULL, text, no_reply)
    assert specs is not None
    assert specs.body == body
    assert type(specs.body) is type(body)


def test_message_deeply_nested_json_stays_text() -> None:
    text = '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"
    specs = make().message(OWNER, OWN_FULL, text, no_reply)
    assert specs is not None and specs.body == text


def test_message_from_stranger() -> None:
    assert make(public=False).message(STRANGER, OWN_FULL, "hi", no_reply) is None
    specs = make(public=True).message(STRANGER, OWN_FULL, "hi", no_reply)
    assert specs is not None
    assert specs.role == "user"
    assert (specs.itsme, specs.itsbro) == (False, False)


@pytest.mark.parametrize(("sender", "itsme", "itsbro", "role"), [
    (OWN_FULL, True, True, "owner"),
    ("Worker@Example.org/other", False, True, "owner"),
    (FRIEND, False, False, "partner"),
])
def test_message_itsme_itsbro(sender: str, itsme: bool, itsbro: bool, role: str) -> None:
    specs = make().message(sender, OWN_FULL, "x", no_reply)
    assert specs is not None
    assert (specs.itsme, specs.itsbro, specs.role) == (itsme, itsbro, role)


def test_message_fields_and_reply() -> None:
    sent: list[tuple[str, Any]] = []
    specs = make().message(FRIEND, OWN_FULL, '{"q": 1}', lambda to, body: sent.append((to, body)))
    assert isinstance(specs, MessageSpecs)
    assert specs.fromjid == FRIEND
    assert specs.uid == "friend@other.net"
    assert specs.resource == "Phone"
    assert specs.channel is None
    specs.reply({"answer": 2})
    specs.reply("plain")
    assert sent == [(FRIEND, {"answer": 2}), (FRIEND, "plain")]


def test_message_specs_without_reply_function() -> None:
    specs = MessageSpecs(fromjid=FRIEND, body="x", role="partner", uid="friend@other.net",
                         resource="Phone", itsme=False, itsbro=False)
    with pytest.raises(RuntimeError):
        specs.reply("hi")


async def test_per_caller_limit_answers_busy_but_never_limits_the_owner() -> None:
    d = Dispatcher(AccessPolicy.create(OWNER, public=True), max_per_caller=2)
    gate = asyncio.Event()
    started: list[str] = []
    changed = asyncio.Condition()

    async def onapi(specs: APISpecs) -> dict[str, Any]:
        async with changed:
            started.append(specs.id)
            changed.notify_all()
        await gate.wait()
        return {"ok": True}

    async def until_started(n: int) -> None:
        async with asyncio.timeout(5), changed:
            await changed.wait_for(lambda: len(started) == n)

    d.onapi = onapi
    flood = [asyncio.ensure_future(d.handle(str(i), STRANGER, req("work"))) for i in range(2)]
    await until_started(2)  # both run, held at the gate
    error_of(await d.handle("3", STRANGER, req("work")), "busy")
    owner = [asyncio.ensure_future(d.handle(f"o{i}", OWNER, req("work"))) for i in range(5)]
    await until_started(7)
    assert d.stats.in_flight == 7  # the owner's five run beside the stranger's two
    gate.set()
    answers = await asyncio.gather(*flood, *owner)
    assert all(isinstance(a, ApiResult) for a in answers)
    # the limit is per caller and released after the runs: the stranger may call again
    assert isinstance(await d.handle("4", STRANGER, req("work")), ApiResult)
    assert d._per_caller == {}
