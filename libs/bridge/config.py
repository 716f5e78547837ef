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

__all__ = [
    "LOG_FORMATS", "TLS_MODES", "WIRE_MODES", "ConfigError", "WorkerConfig", "format_address", "is_loopback",
    "load_config", "parse_servers",
]

TLS_MODES: Final = ("required", "optional", "off")

_FILE_KEYS: Final = {
    "jid": "QE_JID",
    "password": "QE_PASSWORD",
    "password_file": "QE_PASSWORD_FILE",
    "host": "QE_HOST",
    "port": "QE_PORT",
    "dns_server": "QE_DNS_SERVER",
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
    host: str  # the first server (or the domain when ``srv``)
    port: int = 5222
    servers: tuple[tuple[str, int], ...] = ()  # QE_HOST's list, in order; () means just (host, port)
    srv: bool = False  # no QE_HOST: the servers come from DNS SRV (_xmpp-client._tcp.<domain>)
    dns_server: str | None = None  # QE_DNS_SERVER: "IP" or "IP:PORT" for the SRV lookup; None: the system's
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
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """The servers to try, in order (with ``srv``: the fallback when DNS has no SRV record)."""
        return self.servers or ((self.host, self.port),)

    @property
    def server_names(self) -> str:
        """The servers for a log line or an error: ``h1:5222, [::1]:5222`` or the SRV name."""
        if self.srv:
            return f"_xmpp-client._tcp.{self.domain} (DNS SRV, else {format_address(self.host, self.port)})"
        return ", ".join(format_address(h, p) for h, p in self.addresses)

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


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets (``[::1]:5222``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bad_host(host: str) -> bool:
    return not host or any(c.isspace() or c in "/@[]" for c in host)


def _server(entry: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> ``(host, port)``; ValueError says why."""
    if entry.startswith("["):
        address, bracket, rest = entry[1:].partition("]")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IPv6 address in brackets like [::1]:5222") from None
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r} is not HOST, HOST:PORT or [IPv6]:PORT")
        host, port_text = address, rest[1:] if rest else None
    elif entry.count(":") > 1:
        try:  # a bare IPv6 address: no port (as before lists); [v6]:PORT is the documented form
            return str(ipaddress.IPv6Address(entry)), default_port
        except ValueError:
            pass
        raise ValueError(f"{entry!r}: an IPv6 address needs brackets, e.g. [::1]:5222")
    else:
        host, colon, port_text = entry.partition(":")
        if not colon:
            port_text = None
        if _bad_host(host):
            raise ValueError(f"{entry!r} is not a host name or IP address")
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{entry!r}: the port {port_text!r} is not a number between 1 and 65535")
    return host, int(port_text)


def parse_servers(raw: str, default_port: int = 5222) -> tuple[tuple[str, int], ...]:
    """``QE_HOST``: a comma-separated list of servers tried in order; an entry without a port
    gets ``default_port``. ``ValueError`` (one line) for an empty entry, a bad host or port, or
    a server listed twice (a typo more likely than a wish to try it twice in a row)."""
    servers: list[tuple[str, int]] = []
    seen: set[tuple[str, int]] = set()
    for item in raw.split(","):
        entry = item.strip()
        if not entry:
            raise ValueError(f"{raw.strip()!r} has an empty entry (a comma-separated list of HOST[:PORT])")
        server = _server(entry, default_port)
        if (server[0].lower(), server[1]) in seen:
            raise ValueError(f"{format_address(*server)} is listed twice")
        seen.add((server[0].lower(), server[1]))
        servers.append(server)
    return tuple(servers)


def _dns_server(values: Mapping[str, str]) -> str | None:
    """``QE_DNS_SERVER``: ``IP`` or ``IP:PORT`` (``[v6]:PORT``) of the server for the SRV lookup."""
    raw = values.get("QE_DNS_SERVER", "").strip()
    if not raw:
        return None
    try:
        host, port = _server(raw, 53)
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError("QE_DNS_SERVER", f"{raw!r} is not an IP address with an optional port, "
                                           "e.g. 192.0.2.53 or 127.0.0.1:5353") from None
    return format_address(host, port)


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

    port = _number(values, "QE_PORT", 5222, 1, 65535, int)
    servers: tuple[tuple[str, int], ...] = ()
    if values.get("QE_HOST", "").strip():
        try:
            servers = parse_servers(values["QE_HOST"], port)
        except ValueError as exc:
            raise ConfigError("QE_HOST", str(exc)) from None
        host, port = servers[0]
    else:
        host = jid.split("@", 1)[1]

    tls = values.get("QE_TLS", "required").strip().lower() or "required"
    if tls not in TLS_MODES:
        raise ConfigError("QE_TLS", f"{tls!r} is not one of {', '.join(TLS_MODES)}")
    remote = [h for h, _ in servers or ((host, port),) if not is_loopback(h)]
    if tls == "off" and remote:
        raise ConfigError("QE_TLS", f"'off' is only accepted for a loopback host, not {remote[0]!r} (use 'required')")

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
        servers=servers if len(servers) > 1 else (),
        srv=not servers and tls != "off",  # off: loopback only, so the domain itself (no DNS to trust)
        dns_server=_dns_server(values),
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
