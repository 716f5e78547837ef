"""Worker configuration from ``QE_*`` environment variables and an optional TOML file.

Why plain parsing with one error type: a user who mistypes a variable must get one line that
names it, never a traceback; and the parser takes a mapping, so it is tested without touching
the real environment. The environment wins over the file so deployments can override one
value without editing files.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .access import bare_jid, check_resource
from .protocol import DEFAULT_MAX_PAYLOAD
from .services import check_service

__all__ = ["LOG_FORMATS", "TLS_MODES", "WIRE_MODES", "ConfigError", "WorkerConfig", "is_loopback", "load_config"]

TLS_MODES: Final = ("required", "optional", "off")

_FILE_KEYS: Final = {
    "jid": "QE_JID",
    "password": "QE_PASSWORD",
    "password_file": "QE_PASSWORD_FILE",
    "host": "QE_HOST",
    "port": "QE_PORT",
    "tls": "QE_TLS",
    "ca_file": "QE_CA_FILE",
    "allow": "QE_ALLOW",
    "log_level": "QE_LOG_LEVEL",
    "shutdown_timeout": "QE_SHUTDOWN_TIMEOUT",
    "max_payload": "QE_MAX_PAYLOAD",
    "state_dir": "QE_STATE_DIR",
    "stream_management": "QE_STREAM_MANAGEMENT",
    "keepalive": "QE_KEEPALIVE",
    "max_per_caller": "QE_MAX_PER_CALLER",
    "auth_grace": "QE_AUTH_GRACE",
    "app": "QE_APP",
    "muc_domain": "QE_MUC_DOMAIN",
    "wire": "QE_WIRE",
    "accept_delayed": "QE_ACCEPT_DELAYED",
    "rest_host": "QE_REST_HOST",
    "rest_token": "QE_REST_TOKEN",
    "rest_cors": "QE_REST_CORS",
    "metrics_port": "QE_METRICS_PORT",
    "metrics_host": "QE_METRICS_HOST",
    "metrics": "QE_METRICS",
    "request_log": "QE_REQUEST_LOG",
    "log_format": "QE_LOG_FORMAT",
    "blocked_ms": "QE_BLOCKED_MS",
}
_ROLE_NAMES: Final = ("owner", "partner", "user")
WIRE_MODES: Final = ("api", "qe")
_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS: Final = ("text", "json")


class ConfigError(ValueError):
    """A missing or invalid setting; ``str()`` is the one line to show the user."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything a worker or client needs to log in. ``password`` never appears in repr."""

    jid: str
    password: str = field(repr=False)
    host: str
    port: int = 5222
    tls: str = "required"
    ca_file: str | None = None
    allow: frozenset[str] = frozenset()
    log_level: str = "INFO"
    resource: str | None = None
    shutdown_timeout: float = 10.0
    max_payload: int = DEFAULT_MAX_PAYLOAD
    state_dir: str | None = None
    stream_management: bool = True
    keepalive: float = 30.0
    max_per_caller: int = 64
    auth_grace: float = 10.0
    app: str | None = None
    muc_domain: str | None = None
    wire: str = "api"
    accept_delayed: bool = False
    rest_host: str = "127.0.0.1"
    rest_tokens: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (token, role)
    rest_cors: tuple[str, ...] = ()
    metrics_port: int = 0  # 0: no metrics port of its own (App.rest serves /metrics when there is one)
    metrics_host: str = "127.0.0.1"
    metrics: bool = True  # False: no per-request metrics (calls by command, latency)
    request_log: float = 1.0  # share of finished requests logged at INFO (0: off, 1: all)
    log_format: str = "text"
    blocked_ms: int = 100  # 0: no loop-blocked detector

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never reach a log line: the password and the HTTP tokens."""
        return (self.password, *(token for token, _role in self.rest_tokens))

    @property
    def domain(self) -> str:
        return self.jid.split("@", 1)[1]

    @property
    def rooms_domain(self) -> str:
        """Where channels and service rooms live: ``QE_MUC_DOMAIN``, else ``conference.<domain>``."""
        return self.muc_domain or f"conference.{self.domain}"


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _read_file(path: str) -> dict[str, str]:
    try:
        with open(path, "rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError("QE_CONFIG", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("QE_CONFIG", f"{path} is not valid TOML: {exc}") from None
    out: dict[str, str] = {}
    for key, value in data.items():
        var = _FILE_KEYS.get(key)
        if var is None:
            raise ConfigError("QE_CONFIG", f"{path}: unknown key {key!r} (known: {', '.join(_FILE_KEYS)})")
        out[var] = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return out


def _number(values: Mapping[str, str], var: str, default: float, lo: float, hi: float, kind: type) -> Any:
    raw = values.get(var, "").strip()
    if not raw:
        return kind(default)
    try:
        number = kind(raw)
    except ValueError:
        raise ConfigError(var, f"{raw!r} is not a {'whole ' if kind is int else ''}number") from None
    if not lo <= number <= hi:
        raise ConfigError(var, f"{raw} is out of range ({kind(lo)}..{kind(hi)})")
    return number


def _flag(values: Mapping[str, str], var: str, default: bool) -> bool:
    raw = values.get(var, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "on", "true", "yes"):
        return True
    if raw in ("0", "off", "false", "no"):
        return False
    raise ConfigError(var, f"{raw!r} is not on/off")


def _request_log(values: Mapping[str, str]) -> float:
    """``on`` (every request), ``off`` (none) or a sample rate between 0 and 1."""
    raw = values.get("QE_REQUEST_LOG", "").strip().lower()
    if not raw or raw in ("1", "on", "true", "yes"):
        return 1.0
    if raw in ("0", "off", "false", "no"):
        return 0.0
    try:
        rate = float(raw)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise ConfigError("QE_REQUEST_LOG", f"{raw!r} is not on, off or a sample rate between 0 and 1 (e.g. 0.1)")
    return rate


def _state_dir(values: Mapping[str, str]) -> str | None:
    path = values.get("QE_STATE_DIR", "").strip() or None
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise ConfigError("QE_STATE_DIR", f"{path!r} exists and is not a directory")
    return path


def _valid_jid(var: str, raw: str) -> str:
    jid = raw.strip()
    node, _, domain = jid.partition("@")
    if not node or not domain or "/" in jid or " " in jid or "@" in domain:
        raise ConfigError(var, f"{raw!r} is not a bare JID like worker@example.org")
    return bare_jid(jid)


def load_config(environ: Mapping[str, str] | None = None) -> WorkerConfig:
    """Build the configuration; raises ``ConfigError`` naming the first bad variable.

    ``QE_CONFIG`` may name a TOML file with the same settings in lower case without the
    ``QE_`` prefix (``jid = "w@example.org"``); environment variables override it.
    """
    env = dict(os.environ if environ is None else environ)
    values: dict[str, str] = {}
    if env.get("QE_CONFIG"):
        values.update(_read_file(env["QE_CONFIG"]))
    values.update({k: v for k, v in env.items() if k.startswith("QE_") or k == "RESOURCE"})

    if not values.get("QE_JID", "").strip():
        raise ConfigError("QE_JID", "not set: the bare JID of the worker's XMPP account, e.g. worker@example.org")
    jid = _valid_jid("QE_JID", values["QE_JID"])

    password = values.get("QE_PASSWORD", "")
    if not password and values.get("QE_PASSWORD_FILE"):
        try:
            password = Path(values["QE_PASSWORD_FILE"]).read_text().strip()
        except OSError as exc:
            raise ConfigError("QE_PASSWORD_FILE", f"cannot read it: {exc.strerror}") from None
        if not password:
            raise ConfigError("QE_PASSWORD_FILE", f"{values['QE_PASSWORD_FILE']} is empty")
    if not password:
        raise ConfigError("QE_PASSWORD", "not set: the password of the account in QE_JID (or use QE_PASSWORD_FILE)")

    host = values.get("QE_HOST", "").strip() or jid.split("@", 1)[1]
    if any(c.isspace() or c in "/@" for c in host):
        raise ConfigError("QE_HOST", f"{host!r} is not a host name or IP address")
    port = _number(values, "QE_PORT", 5222, 1, 65535, int)

    tls = values.get("QE_TLS", "required").strip().lower() or "required"
    if tls not in TLS_MODES:
        raise ConfigError("QE_TLS", f"{tls!r} is not one of {', '.join(TLS_MODES)}")
    if tls == "off" and not is_loopback(host):
        raise ConfigError("QE_TLS", f"'off' is only accepted for a loopback host, not {host!r} (use 'required')")

    ca_file = values.get("QE_CA_FILE", "").strip() or None
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError("QE_CA_FILE", f"{ca_file!r} is not a readable file")

    allow = frozenset(
        _valid_jid("QE_ALLOW", item) for item in values.get("QE_ALLOW", "").split(",") if item.strip()
    )

    level = values.get("QE_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in _LOG_LEVELS:
        raise ConfigError("QE_LOG_LEVEL", f"{level!r} is not one of {', '.join(_LOG_LEVELS)}")

    resource = values.get("RESOURCE", "").strip() or None
    if resource is not None:
        try:
            check_resource(resource)
        except ValueError as exc:
            raise ConfigError("RESOURCE", str(exc)) from None

    app = values.get("QE_APP", "").strip() or None
    if app is not None:
        try:
            check_service(app)
        except ValueError as exc:
            raise ConfigError("QE_APP", str(exc)) from None
    muc_domain = values.get("QE_MUC_DOMAIN", "").strip().lower() or None
    if muc_domain is not None and any(c.isspace() or c in "/@" for c in muc_domain):
        raise ConfigError("QE_MUC_DOMAIN", f"{muc_domain!r} is not a domain, e.g. conference.example.org")
    wire = values.get("QE_WIRE", "api").strip().lower() or "api"
    if wire not in WIRE_MODES:
        raise ConfigError("QE_WIRE", f"{wire!r} is not one of {', '.join(WIRE_MODES)} (qe: also accept QE's "
                                     "chat-message calls)")

    rest_host = values.get("QE_REST_HOST", "").strip() or "127.0.0.1"
    if any(c.isspace() or c in "/@" for c in rest_host):
        raise ConfigError("QE_REST_HOST", f"{rest_host!r} is not a host name or IP address")
    rest_tokens = []
    for item in values.get("QE_REST_TOKEN", "").split(","):
        token, _, role = item.strip().partition(":")
        if not token:
            continue
        role = role.strip().lower() or "owner"
        if role not in _ROLE_NAMES:
            raise ConfigError("QE_REST_TOKEN", f"a token's role must be one of {', '.join(_ROLE_NAMES)} "
                                               "(TOKEN or TOKEN:ROLE, comma-separated)")
        if len(token) < 16:
            raise ConfigError("QE_REST_TOKEN", "a token must have at least 16 characters (e.g. from "
                                               "`python -c 'import secrets; print(secrets.token_urlsafe())'`)")
        rest_tokens.append((token, role))
    rest_cors = tuple(o.strip() for o in values.get("QE_REST_CORS", "").split(",") if o.strip())
    for origin in rest_cors:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ConfigError("QE_REST_CORS", f"{origin!r} is not an origin like https://example.org")

    metrics_host = values.get("QE_METRICS_HOST", "").strip() or "127.0.0.1"
    if any(c.isspace() or c in "/@" for c in metrics_host):
        raise ConfigError("QE_METRICS_HOST", f"{metrics_host!r} is not a host name or IP address")
    log_format = values.get("QE_LOG_FORMAT", "").strip().lower() or "text"
    if log_format not in LOG_FORMATS:
        raise ConfigError("QE_LOG_FORMAT", f"{log_format!r} is not one of {', '.join(LOG_FORMATS)}")

    return WorkerConfig(
        jid=jid,
        password=password,
        host=host,
        port=port,
        tls=tls,
        ca_file=ca_file,
        allow=allow,
        log_level=level,
        resource=resource,
        shutdown_timeout=_number(values, "QE_SHUTDOWN_TIMEOUT", 10.0, 0.0, 3600.0, float),
        max_payload=_number(values, "QE_MAX_PAYLOAD", DEFAULT_MAX_PAYLOAD, 1024, 64 * 1024 * 1024, int),
        state_dir=_state_dir(values),
        stream_management=_flag(values, "QE_STREAM_MANAGEMENT", True),
        keepalive=_number(values, "QE_KEEPALIVE", 30.0, 0.0, 3600.0, float),
        max_per_caller=_number(values, "QE_MAX_PER_CALLER", 64, 0, 1_000_000, int),
        auth_grace=_number(values, "QE_AUTH_GRACE", 10.0, 0.0, 3600.0, float),
        app=app,
        muc_domain=muc_domain,
        wire=wire,
        accept_delayed=_flag(values, "QE_ACCEPT_DELAYED", False),
        rest_host=rest_host,
        rest_tokens=tuple(rest_tokens),
        rest_cors=rest_cors,
        metrics_port=_number(values, "QE_METRICS_PORT", 0, 0, 65535, int),
        metrics_host=metrics_host,
        metrics=_flag(values, "QE_METRICS", True),
        request_log=_request_log(values),
        log_format=log_format,
        blocked_ms=_number(values, "QE_BLOCKED_MS", 100, 0, 600_000, int),
    )
