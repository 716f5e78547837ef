"""Passwords and SASL exchanges never reach the logs, even at DEBUG."""

from __future__ import annotations

import io
import logging
import sys

from libs.bridge import Client, load_config
from libs.startup import configure_logging


async def test_debug_logs_of_a_login_hold_no_secret(prosody, accounts, monkeypatch):
    _jid, password = accounts["client"]
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)  # configure_logging's handler writes here
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("DEBUG", (password,))
    try:
        async with Client(load_config(prosody.env("client", password))):
            logging.getLogger("test").debug("the password is %s", password)  # even if code slips
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name in ("slixmpp", "slixmpp.features.feature_mechanisms"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    text = captured.getvalue()
    assert "mechanism=\"SCRAM-SHA-1\">***</auth>" in text  # the SASL exchange was dumped, blanked
    assert "<response" in text and "***</response>" in text
    assert password not in text
    assert "the password is ***" in text
