"""Unit tests for ``libs.startup``: secret redaction, logging set-up and ``startup()``.

``startup()`` changes process-wide state (current event loop, signal handlers, root logger,
``libs._runtime``); the ``process_state`` fixture puts all of it back.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import warnings
from collections.abc import Iterator

import pytest

from libs import _runtime
from libs.startup import RedactSecrets, configure_logging, startup
from tests.support.runtime import restored_process

PASSWORD = "hunter2-Secret"
GOOD_ENV = {"QE_JID": "worker@example.org", "QE_PASSWORD": PASSWORD, "QE_LOG_LEVEL": "info"}


# -- RedactSecrets -------------------------------------------------------------------------


def redact(msg: str, *args: object, secrets: tuple[str, ...] = ()) -> logging.LogRecord:
    record = logging.LogRecord("slixmpp.xmlstream", logging.DEBUG, __file__, 1, msg, args or None, None)
    assert RedactSecrets(secrets).filter(record) is True  # never drops a record
    return record


@pytest.mark.parametrize("stanza", [
    '<auth mechanism="PLAIN">c2VjcmV0</auth>',
    '<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="SCRAM-SHA-1">c2VjcmV0</auth>',
    '<response xmlns="urn:ietf:params:xml:ns:xmpp-sasl">c2VjcmV0</response>',
    '<challenge xmlns="urn:ietf:params:xml:ns:xmpp-sasl">c2VjcmV0</challenge>',
    '<success xmlns="urn:ietf:params:xml:ns:xmpp-sasl">c2VjcmV0</success>',
])
def test_sasl_payloads_are_blanked(stanza: str) -> None:
    message = redact("SEND: %s", stanza).getMessage()
    assert "c2VjcmV0" not in message
    assert "***" in message
    assert message.startswith("SEND: <")
    tag = stanza[1:stanza.index(" ")]
    assert message.endswith(f"</{tag}>")


def test_sasl_payload_in_the_message_itself() -> None:
    record = redact('SEND: <auth mechanism="PLAIN">c2VjcmV0</auth> and more')
    assert record.getMessage() == 'SEND: <auth mechanism="PLAIN">***</auth> and more'


def test_literal_secret_is_blanked_in_args_and_message() -> None:
    assert redact("login as %s with %s", "w@x.org", PASSWORD,
                  secrets=(PASSWORD,)).getMessage() == "login as w@x.org with ***"
    assert PASSWORD not in redact(f"pw={PASSWORD}", secrets=(PASSWORD,)).getMessage()


def test_clean_records_are_left_alone() -> None:
    record = redact("sent %d stanzas to %s", 3, "x@y.org", secrets=(PASSWORD,))
    assert record.msg == "sent %d stanzas to %s"
    assert record.args == (3, "x@y.org")
    assert record.getMessage() == "sent 3 stanzas to x@y.org"


def test_other_elements_are_not_touched() -> None:
    text = '<message to="a@b"><body>c2VjcmV0</body></message><authx>keep</authx>'
    assert redact(text).getMessage() == text


def test_empty_secret_is_ignored() -> None:
    assert redact("abc", secrets=("",)).getMessage() == "abc"


def test_filter_on_a_handler_redacts_what_it_emits() -> None:
    seen: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(self.format(record))

    handler = ListHandler()
    handler.addFilter(RedactSecrets((PASSWORD,)))
    logger = logging.getLogger("tests.unit.startup.redact")
    logger.addHandler(handler)
    logger.propagate = False
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("SEND: %s", '<auth mechanism="PLAIN">c2VjcmV0</auth>')
        logger.debug("RECV: %s", '<response xmlns="urn:ietf:params:xml:ns:xmpp-sasl">cj1maW5h</response>')
        logger.info("password is %s", PASSWORD)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(old_level)
    assert seen == [
        'SEND: <auth mechanism="PLAIN">***</auth>',
        'RECV: <response xmlns="urn:ietf:params:xml:ns:xmpp-sasl">***</response>',
        "password is ***",
    ]


# -- process state -------------------------------------------------------------------------


@pytest.fixture
def process_state() -> Iterator[None]:
    with restored_process():
        yield


def our_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "_qe_worker", False)]


def test_configure_logging_installs_one_redacting_handler(process_state: None,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", (PASSWORD,))
    configure_logging("WARNING", (PASSWORD,))  # again: replaces, does not add
    assert len(our_handlers()) == 1
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger("slixmpp").level == logging.WARNING
    logging.getLogger("tests.unit.startup").warning("pw %s", PASSWORD)
    err = capsys.readouterr().err
    assert "pw ***" in err
    assert PASSWORD not in err


def test_configure_logging_debug_opens_slixmpp(process_state: None) -> None:
    configure_logging("DEBUG")
    assert logging.getLogger("slixmpp").level == logging.DEBUG
    assert logging.getLogger().level == logging.DEBUG


@pytest.mark.parametrize(("environ", "variable"), [
    ({"QE_PASSWORD": PASSWORD}, "QE_JID"),
    ({"QE_JID": "worker@example.org"}, "QE_PASSWORD"),
    ({**GOOD_ENV, "QE_PORT": "eighty"}, "QE_PORT"),
    ({**GOOD_ENV, "QE_TLS": "off"}, "QE_TLS"),
])
def test_startup_bad_environ_exits_2_with_one_line(process_state: None, capsys: pytest.CaptureFixture[str],
                                                   environ: dict[str, str], variable: str) -> None:
    loop_before = _runtime._RT.loop
    with pytest.raises(SystemExit) as info:
        startup(environ)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"qe-worker: {variable}: ")
    assert PASSWORD not in captured.err
    assert "Traceback" not in captured.err
    # nothing was set up
    assert _runtime._RT.loop is loop_before
    assert our_handlers() == []


def test_startup_good_environ_sets_up_the_loop(process_state: None, capsys: pytest.CaptureFixture[str]) -> None:
    config = startup(dict(GOOD_ENV))
    assert config.jid == "worker@example.org"
    assert config.password == PASSWORD
    assert _runtime.current_config() is config

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loop = asyncio.get_event_loop()
    assert loop is _runtime.main_loop()
    assert not loop.is_closed()

    async def inside() -> asyncio.AbstractEventLoop:
        return _runtime.main_loop()

    assert loop.run_until_complete(inside()) is loop

    # startup installed SIGINT/SIGTERM handlers on that loop (remove returns True only then)
    assert loop.remove_signal_handler(signal.SIGINT) is True
    assert loop.remove_signal_handler(signal.SIGTERM) is True

    # logging goes through the redacting handler, with the password as a known secret
    assert len(our_handlers()) == 1
    logging.getLogger("tests.unit.startup").warning("connecting with %s", PASSWORD)
    err = capsys.readouterr().err
    assert "connecting with ***" in err
    assert PASSWORD not in err


def test_request_stop_does_what_sigterm_does_but_only_on_a_loop_whose_signals_we_handle(process_state: None) -> None:
    """``App.stop()`` rests on this: shutdown hooks, then the loop stops, so the script's
    ``run_forever()`` returns. A loop someone else runs is left alone (False)."""
    startup(dict(GOOD_ENV))
    loop = asyncio.get_event_loop()
    ran: list[float] = []

    async def hook(timeout: float) -> None:
        ran.append(timeout)

    _runtime.add_shutdown_hook(hook)
    other = asyncio.new_event_loop()
    try:
        assert _runtime.request_stop(other, 1.0, "test") is False
    finally:
        other.close()
    assert not _runtime._RT.shutting_down and ran == []
    timed_out = False

    def bound() -> None:
        nonlocal timed_out
        timed_out = True
        loop.stop()

    loop.call_soon(_runtime.request_stop, loop, 1.0, "test")
    handle = loop.call_later(10, bound)
    loop.run_forever()  # returns when the requested shutdown stops the loop
    handle.cancel()
    assert not timed_out
    assert len(ran) == 1


def test_startup_twice_keeps_its_loop_and_its_signal_handlers(process_state: None) -> None:
    """``qe-worker run SCRIPT`` calls ``startup()`` and so may the script: one loop, which the
    signal handlers are on (a second loop would leave the first one's handlers behind)."""
    startup(dict(GOOD_ENV))
    loop = asyncio.get_event_loop()
    config = startup({**GOOD_ENV, "QE_LOG_LEVEL": "warning"})
    assert asyncio.get_event_loop() is loop is _runtime.main_loop()
    assert _runtime.current_config() is config and config.log_level == "WARNING"
    assert loop.remove_signal_handler(signal.SIGTERM) is True
    loop.close()
    startup(dict(GOOD_ENV))  # a closed loop is not reused
    assert asyncio.get_event_loop() is not loop and not _runtime.main_loop().is_closed()
