"""The operator's log lines: one per finished request, JSON lines, bad results, retries."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from libs.bridge._requestlog import RequestLog
from libs.bridge.access import AccessPolicy
from libs.bridge.dispatch import Dispatcher
from libs.bridge.protocol import encode_request
from libs.bridge.xmpp._session import Event, Retry, Session
from libs.startup import JsonFormatter, RedactSecrets

OWNER = "worker@example.org"


def request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "libs.bridge.requests"]


def dispatcher(rate: float = 1.0) -> Dispatcher:
    d = Dispatcher(AccessPolicy.create(OWNER, public=False))
    d.request_log = RequestLog(rate)

    async def echo(specs: Any) -> Any:
        kind = specs.body.get("kind")
        if kind == "unsendable":
            return {"x": {1, 2}}
        if kind == "big":
            return {"x": "y" * 5000}
        return {"ok": True}

    d.onapi = echo
    return d


def call(d: Dispatcher, sender: str, cmd: str = "echo", body: Any = None) -> Any:
    return asyncio.run(d.handle("1", sender, encode_request(cmd, body or {})))


def test_one_info_line_per_request_with_bare_caller(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    call(dispatcher(), f"{OWNER}/secret-resource", body={"password": "hunter2"})
    [line] = request_lines(caplog)
    assert line.levelno == logging.INFO
    fields = line.request  # type: ignore[attr-defined]
    assert (fields["cmd"], fields["caller"], fields["outcome"]) == ("echo", OWNER, "ok")
    assert fields["ms"] >= 0
    assert "secret-resource" not in line.getMessage() and "hunter2" not in line.getMessage()


def test_off_logs_nothing_and_rate_samples(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    call(dispatcher(0.0), f"{OWNER}/r")
    assert request_lines(caplog) == []
    draws = iter([0.05, 0.5])
    log = RequestLog(0.1, sample=lambda: next(draws))
    log.finished("a", f"{OWNER}/r", "ok", 0)
    log.finished("b", f"{OWNER}/r", "ok", 0)
    assert [r.request["cmd"] for r in request_lines(caplog)] == ["a"]  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        RequestLog(1.5)


def test_outcome_codes_and_stranger_lines_are_capped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    d = dispatcher()
    for _ in range(50):
        call(d, "stranger@evil.example/x")
    refused = [r for r in request_lines(caplog) if r.request["outcome"] == "forbidden"]  # type: ignore[attr-defined]
    assert 1 <= len(refused) <= 20
    asyncio.run(d.handle("2", f"{OWNER}/r", "not json"))
    assert request_lines(caplog)[-1].request["outcome"] == "bad-request"  # type: ignore[attr-defined]


def test_bad_result_is_a_worker_side_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    d = dispatcher()
    answer = call(d, f"{OWNER}/r", body={"kind": "unsendable"})
    assert answer.code == "bad-result"
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "'echo'" in warning.getMessage() and "bad-result" in warning.getMessage()
    assert request_lines(caplog)[-1].request["outcome"] == "bad-result"  # type: ignore[attr-defined]
    d.max_payload = 1024
    assert call(d, f"{OWNER}/r", body={"kind": "big"}).code == "too-large"
    assert "too-large" in [r for r in caplog.records if r.levelno == logging.WARNING][-1].getMessage()


def test_json_lines_carry_request_fields_and_stay_redacted() -> None:
    record = logging.LogRecord("libs.bridge.requests", logging.INFO, __file__, 1, "pw %s", ("hunter2",), None)
    record.request = {"cmd": "ping", "caller": OWNER, "outcome": "ok", "ms": 1.5}
    RedactSecrets(("hunter2",)).filter(record)
    doc = json.loads(JsonFormatter().format(record))
    assert doc["message"] == "pw ***" and doc["level"] == "INFO" and doc["logger"] == "libs.bridge.requests"
    assert (doc["cmd"], doc["caller"], doc["outcome"], doc["ms"]) == ("ping", OWNER, "ok", 1.5)
    assert doc["time"].endswith("+00:00")
    plain = json.loads(JsonFormatter().format(logging.LogRecord("x", logging.ERROR, __file__, 1, "m", None, None)))
    assert set(plain) == {"time", "level", "logger", "message"}


def test_unreachable_server_escalates_to_warning_after_three_attempts() -> None:
    s = Session(server="127.0.0.1:5222", account=OWNER, servers=(("127.0.0.1", 5222),))
    s.handle(Event.START)
    levels = []
    for attempt in range(5):
        [_offline, retry] = s.handle(Event.CONNECT_FAILED, now=10.0 * attempt, detail="refused")
        assert isinstance(retry, Retry)
        levels.append(retry.level)
        s.handle(Event.RETRY_DUE)
    assert levels == [logging.INFO] * 3 + [logging.WARNING] * 2
    assert "attempt 5 failed, unreachable for 40 s" in retry.why
    s.handle(Event.SESSION_STARTED, encrypted=True)
    assert s.unreachable == 0
    s.handle(Event.DISCONNECTED)
    s.handle(Event.RETRY_DUE)
    [_offline, retry] = s.handle(Event.CONNECT_FAILED, now=100.0, detail="refused")
    assert isinstance(retry, Retry) and retry.level == logging.INFO  # counted afresh after a session


def test_the_metrics_and_the_log_line_share_one_reading_of_the_clock(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    d = dispatcher()
    seen: list[float] = []
    d.observer = lambda cmd, answer, seconds: seen.append(seconds)
    call(d, f"{OWNER}/r")
    [line] = request_lines(caplog)
    assert len(seen) == 1 and line.request["ms"] == round(seen[0] * 1000, 3)  # type: ignore[attr-defined]
