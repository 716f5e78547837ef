"""``startup()``: the first line of every QE worker script.

QE's version syncs library files from its cloud; ours prepares the process instead:
configuration from ``QE_*`` variables (a bad one ends the script with one clear line, exit 2),
logging with secrets redacted, and the worker's event loop, created and set as current so the
script's later ``asyncio.get_event_loop().run_forever()`` runs it on Python 3.11-3.14 without
deprecation warnings. SIGINT/SIGTERM then shut the worker down cleanly (exit 0).
Called again (a script that ``qe-worker run SCRIPT`` already set up calls it too), it reloads
the configuration and keeps the loop it made (unless that loop is running or closed).
In a hosted module (``_runtime.hosting()``: the test kit runs the script inside a test) it
only returns the host's configuration: the loop, logging and signals are the host's.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import re
import sys
from collections.abc import Mapping

from . import _runtime
from .bridge.config import ConfigError, WorkerConfig, load_config

__all__ = ["JsonFormatter", "RedactSecrets", "configure_logging", "startup"]

_SASL = re.compile(r"(<(auth|response|success|challenge)\b[^>]*>)[^<]+(</\2>)")


class RedactSecrets(logging.Filter):
    """Blank SASL payloads (base64 credentials in slixmpp's DEBUG stanza dumps) and any
    literal secret we were told about, in every record that reaches our handler."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SASL.sub(r"\1***\3", message)
        for secret in self.secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (``QE_LOG_FORMAT=json``): ``time`` (ISO 8601, UTC), ``level``,
    ``logger``, ``message``, the fields of a request line (``cmd``, ``caller``, ``outcome``,
    ``ms``) when the record has them, and ``exc`` with the traceback when there is one. The
    message is the redacted one: ``RedactSecrets`` runs before any formatter."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "request", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, default=str)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds")


def configure_logging(level: str = "INFO", secrets: tuple[str, ...] = (), log_format: str = "text") -> None:
    """One stderr handler with redaction, as text lines or (``log_format="json"``) one JSON
    object per line. slixmpp is kept at WARNING unless DEBUG is asked for: its INFO lines
    repeat what our adapter already logs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_qe_worker", False)]:
        root.removeHandler(old)
    handler._qe_worker = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    numeric = logging.getLevelName(level)
    logging.getLogger("slixmpp").setLevel(numeric if level == "DEBUG" else max(logging.WARNING, numeric))
    # says "No appropriate login method" for a wrong password too; our adapter says which
    logging.getLogger("slixmpp.features.feature_mechanisms").setLevel(
        logging.DEBUG if level == "DEBUG" else logging.CRITICAL)


def startup(environ: Mapping[str, str] | None = None) -> WorkerConfig:
    """Load the configuration, set up logging and the main loop; return the configuration."""
    host = _runtime.host()
    if host is not None:
        return host.config  # type: ignore[no-any-return]
    try:
        config = load_config(environ)
    except ConfigError as exc:
        print(f"qe-worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(config.log_level, config.secrets, config.log_format)
    loop = _runtime.startup_loop() or asyncio.new_event_loop()  # called twice: one loop
    asyncio.set_event_loop(loop)
    _runtime.set_main_loop(loop, from_startup=True)
    _runtime.set_config(config)
    _runtime.install_signal_handlers(loop, lambda: config.shutdown_timeout)
    return config
