"""Unit tests for ``libs.bridge.config.load_config``, always with an explicit environ dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from libs.bridge.config import ConfigError, WorkerConfig, is_loopback, load_config
from libs.bridge.protocol import DEFAULT_MAX_PAYLOAD

PASSWORD = "s3cret-Pa55word"
MINIMAL = {"QE_JID": "worker@example.org", "QE_PASSWORD": PASSWORD}


def env(**overrides: str) -> dict[str, str]:
    return {**MINIMAL, **overrides}


def config_error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(environ)
    return info.value


def assert_names(environ: dict[str, str], variable: str) -> ConfigError:
    err = config_error(environ)
    assert err.variable == variable
    assert str(err).startswith(f"{variable}: ")
    assert "\n" not in str(err)
    assert isinstance(err, ValueError)
    return err


def test_minimal_valid_config_and_defaults() -> None:
    config = load_config(dict(MINIMAL))
    assert config == WorkerConfig(jid="worker@example.org", password=PASSWORD, host="example.org", srv=True)
    assert config.port == 5222
    assert config.tls == "required"
    assert config.ca_file is None
    assert config.allow == frozenset()
    assert config.log_level == "INFO"
    assert config.resource is None
    assert config.shutdown_timeout == 10.0
    assert config.max_payload == DEFAULT_MAX_PAYLOAD
    assert config.state_dir is None
    assert config.domain == "example.org"


def test_unrelated_variables_are_ignored() -> None:
    config = load_config(env(PATH="/bin", HOME="/root", QE_UNUSED="x"))
    assert config.jid == "worker@example.org"


def test_jid_is_normalised_to_lower_case() -> None:
    assert load_config(env(QE_JID="  Worker@Example.ORG ")).jid == "worker@example.org"


def test_full_valid_config() -> None:
    config = load_config(env(
        QE_HOST="xmpp.internal", QE_PORT="5223", QE_TLS="Optional", QE_ALLOW="a@x.org",
        QE_LOG_LEVEL="debug", RESOURCE="py1", QE_SHUTDOWN_TIMEOUT="2.5",
        QE_MAX_PAYLOAD="4096", QE_STATE_DIR="/var/lib/w",
    ))
    assert (config.host, config.port, config.tls, config.log_level) == ("xmpp.internal", 5223, "optional", "DEBUG")
    assert config.resource == "py1"
    assert config.shutdown_timeout == 2.5
    assert config.max_payload == 4096
    assert config.state_dir == "/var/lib/w"


# -- QE_JID --------------------------------------------------------------------------------


@pytest.mark.parametrize("environ", [{"QE_PASSWORD": "p"}, {"QE_JID": "", "QE_PASSWORD": "p"},
                                     {"QE_JID": "   ", "QE_PASSWORD": "p"}])
def test_jid_missing(environ: dict[str, str]) -> None:
    assert "not set" in str(assert_names(environ, "QE_JID"))


@pytest.mark.parametrize("jid", ["worker@example.org/res", "worker.example.org", "@example.org",
                                 "worker@", "a b@example.org", "a@b@example.org"])
def test_jid_invalid(jid: str) -> None:
    err = assert_names(env(QE_JID=jid), "QE_JID")
    assert repr(jid) in str(err)


# -- QE_PASSWORD / QE_PASSWORD_FILE ----------------------------------------------------------


def test_password_missing() -> None:
    assert_names({"QE_JID": "worker@example.org"}, "QE_PASSWORD")
    assert_names(env(QE_PASSWORD=""), "QE_PASSWORD")


def test_password_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    config = load_config({"QE_JID": "worker@example.org", "QE_PASSWORD_FILE": str(secret)})
    assert config.password == "from-file"


def test_password_env_wins_over_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file")
    assert load_config(env(QE_PASSWORD_FILE=str(secret))).password == PASSWORD


def test_password_file_unreadable(tmp_path: Path) -> None:
    assert_names({"QE_JID": "worker@example.org", "QE_PASSWORD_FILE": str(tmp_path / "nope")},
                 "QE_PASSWORD_FILE")


def test_password_file_empty_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("\n")
    err = assert_names({"QE_JID": "worker@example.org", "QE_PASSWORD_FILE": str(secret)}, "QE_PASSWORD_FILE")
    assert "empty" in str(err)


# -- QE_PORT and other numbers ---------------------------------------------------------------


@pytest.mark.parametrize("port", ["abc", "52 22", "5222.0", "0x1"])
def test_port_not_a_number(port: str) -> None:
    assert "not a whole number" in str(assert_names(env(QE_PORT=port), "QE_PORT"))


@pytest.mark.parametrize("port", ["0", "-1", "65536", "100000"])
def test_port_out_of_range(port: str) -> None:
    assert "out of range" in str(assert_names(env(QE_PORT=port), "QE_PORT"))


@pytest.mark.parametrize(("port", "expected"), [("1", 1), ("65535", 65535), (" 5269 ", 5269), ("", 5222)])
def test_port_valid(port: str, expected: int) -> None:
    assert load_config(env(QE_PORT=port)).port == expected


@pytest.mark.parametrize(("var", "value"), [("QE_SHUTDOWN_TIMEOUT", "soon"), ("QE_SHUTDOWN_TIMEOUT", "-1"),
                                            ("QE_SHUTDOWN_TIMEOUT", "3601"), ("QE_MAX_PAYLOAD", "1023"),
                                            ("QE_MAX_PAYLOAD", "big")])
def test_other_numbers_invalid(var: str, value: str) -> None:
    assert_names(env(**{var: value}), var)


# -- QE_TLS ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["yes", "true", "starttls", "none"])
def test_tls_invalid(tls: str) -> None:
    assert_names(env(QE_TLS=tls), "QE_TLS")


@pytest.mark.parametrize(("tls", "expected"), [("required", "required"), ("OPTIONAL", "optional"),
                                               ("", "required"), (" required ", "required")])
def test_tls_valid(tls: str, expected: str) -> None:
    assert load_config(env(QE_TLS=tls)).tls == expected


@pytest.mark.parametrize("host", ["example.org", "10.0.0.1", "192.168.1.2", "::2", "localhost.example.org"])
def test_tls_off_refused_for_non_loopback_host(host: str) -> None:
    err = assert_names(env(QE_TLS="off", QE_HOST=host), "QE_TLS")
    assert "loopback" in str(err)


def test_tls_off_refused_for_default_host_from_jid() -> None:
    assert_names(env(QE_TLS="off"), "QE_TLS")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LocalHost", "::1", "[::1]", "127.0.0.2"])
def test_tls_off_accepted_for_loopback(host: str) -> None:
    config = load_config(env(QE_TLS="Off", QE_HOST=host))
    assert config.tls == "off"
    assert config.host == host.strip("[]")


@pytest.mark.parametrize(("host", "loop"), [("localhost", True), ("127.0.0.1", True), ("::1", True),
                                            ("example.org", False), ("10.1.1.1", False), ("", False)])
def test_is_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


# -- QE_CA_FILE ------------------------------------------------------------------------------


def test_ca_file_missing(tmp_path: Path) -> None:
    assert_names(env(QE_CA_FILE=str(tmp_path / "ca.pem")), "QE_CA_FILE")


def test_ca_file_directory_is_not_a_file(tmp_path: Path) -> None:
    assert_names(env(QE_CA_FILE=str(tmp_path)), "QE_CA_FILE")


def test_ca_file_present(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert load_config(env(QE_CA_FILE=str(ca))).ca_file == str(ca)


# -- QE_ALLOW --------------------------------------------------------------------------------


def test_allow_parsing_with_spaces_and_empty_items() -> None:
    config = load_config(env(QE_ALLOW=" a@x.org ,B@Y.org,, ,c@z.org"))
    assert config.allow == frozenset({"a@x.org", "b@y.org", "c@z.org"})


@pytest.mark.parametrize("allow", ["a@x.org,nobody", "a@x.org, c@z.org/res", "a@x.org,@x.org"])
def test_allow_bad_entry(allow: str) -> None:
    assert_names(env(QE_ALLOW=allow), "QE_ALLOW")


# -- QE_LOG_LEVEL / RESOURCE -----------------------------------------------------------------


@pytest.mark.parametrize(("level", "expected"), [("debug", "DEBUG"), ("Warning", "WARNING"), ("", "INFO"),
                                                 ("CRITICAL", "CRITICAL")])
def test_log_level_valid(level: str, expected: str) -> None:
    assert load_config(env(QE_LOG_LEVEL=level)).log_level == expected


@pytest.mark.parametrize("level", ["verbose", "WARN", "10"])
def test_log_level_invalid(level: str) -> None:
    assert_names(env(QE_LOG_LEVEL=level), "QE_LOG_LEVEL")


def test_resource_override() -> None:
    assert load_config(env(RESOURCE=" python-2 ")).resource == "python-2"
    assert load_config(env(RESOURCE="")).resource is None


@pytest.mark.parametrize("resource", ["a/b", "a@b"])
def test_resource_invalid(resource: str) -> None:
    assert_names(env(RESOURCE=resource), "RESOURCE")


# -- QE_CONFIG (TOML) ------------------------------------------------------------------------


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "worker.toml"
    path.write_text(text)
    return str(path)


def test_toml_file_with_env_override(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '\n'.join([
        'jid = "filer@example.org"',
        'password = "file-password"',
        'host = "file.host"',
        'port = 5269',
        'allow = ["a@x.org", "b@y.org"]',
        'log_level = "warning"',
        'shutdown_timeout = 1.5',
    ]))
    config = load_config({"QE_CONFIG": path, "QE_PORT": "6000", "QE_PASSWORD": "env-password"})
    assert config.jid == "filer@example.org"
    assert config.password == "env-password"  # env wins
    assert config.host == "file.host"
    assert config.port == 6000  # env wins
    assert config.allow == frozenset({"a@x.org", "b@y.org"})
    assert config.log_level == "WARNING"
    assert config.shutdown_timeout == 1.5


def test_toml_unknown_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'jid = "w@example.org"\npasword = "typo"\n')
    err = assert_names({"QE_CONFIG": path}, "QE_CONFIG")
    assert "'pasword'" in str(err)


def test_toml_invalid(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'jid = "unterminated\n')
    err = assert_names({"QE_CONFIG": path}, "QE_CONFIG")
    assert "not valid TOML" in str(err)


def test_toml_missing_file(tmp_path: Path) -> None:
    assert_names({"QE_CONFIG": str(tmp_path / "absent.toml")}, "QE_CONFIG")


def test_toml_value_error_names_the_variable(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'jid = "w@example.org"\npassword = "p"\nport = "http"\n')
    assert_names({"QE_CONFIG": path}, "QE_PORT")


# -- secrets -------------------------------------------------------------------------------


def test_password_not_in_repr_or_str() -> None:
    config = load_config(dict(MINIMAL))
    assert config.password == PASSWORD
    assert PASSWORD not in repr(config)
    assert PASSWORD not in str(config)
    assert "password" not in repr(config)


def test_config_is_frozen() -> None:
    config = load_config(dict(MINIMAL))
    with pytest.raises(AttributeError):
        config.password = "other"  # type: ignore[misc]


def test_errors_never_echo_the_password(tmp_path: Path) -> None:
    bad: list[dict[str, Any]] = [env(QE_PORT="x"), env(QE_TLS="x"), env(QE_ALLOW="bad"), env(QE_LOG_LEVEL="x")]
    for environ in bad:
        assert PASSWORD not in str(config_error(environ))


# -- every variable ---------------------------------------------------------------------------

INVALID = {  # one invalid value per variable; the test below fails when a variable is missing here
    "QE_JID": "not-a-jid",
    "QE_PASSWORD": "",
    "QE_PASSWORD_FILE": "/nonexistent/pw",
    "QE_HOST": "two words",
    "QE_PORT": "http",
    "QE_DNS_SERVER": "dns.example.org",
    "QE_TLS": "maybe",
    "QE_CA_FILE": "/nonexistent/ca.pem",
    "QE_ALLOW": "friend-without-domain",
    "QE_LOG_LEVEL": "loud",
    "QE_SHUTDOWN_TIMEOUT": "-1",
    "QE_MAX_PAYLOAD": "1",
    "QE_STATE_DIR": __file__,  # a file, not a directory
    "QE_STREAM_MANAGEMENT": "sometimes",
    "QE_KEEPALIVE": "often",
    "QE_MAX_PER_CALLER": "1.5",
    "QE_AUTH_GRACE": "-3",
    "QE_APP": "two words",
    "QE_MUC_DOMAIN": "rooms@example.org",
    "QE_WIRE": "xml",
    "QE_ACCEPT_DELAYED": "perhaps",
    "QE_REST_HOST": "a b",
    "QE_REST_TOKEN": "short",
    "QE_REST_CORS": "ui.example",
    "QE_METRICS_PORT": "65536",
    "QE_METRICS_HOST": "two words",
    "QE_METRICS": "sometimes",
    "QE_REQUEST_LOG": "sometimes",
    "QE_LOG_FORMAT": "xml",
    "QE_BLOCKED_MS": "slow",
    "RESOURCE": "a/b",
}


def test_a_list_of_servers_is_kept_in_order_with_default_ports() -> None:
    config = load_config(env(QE_HOST=" node1.example.org:5223, [::1]:5300 ,Node3.example.org,[2001:db8::1]",
                             QE_PORT="5290"))
    assert config.servers == (("node1.example.org", 5223), ("::1", 5300), ("Node3.example.org", 5290),
                              ("2001:db8::1", 5290))
    assert config.addresses == config.servers
    assert (config.host, config.port, config.srv) == ("node1.example.org", 5223, False)
    assert config.server_names == "node1.example.org:5223, [::1]:5300, Node3.example.org:5290, [2001:db8::1]:5290"


def test_one_server_or_none() -> None:
    one = load_config(env(QE_HOST="[::1]:5299"))
    assert (one.host, one.port, one.servers, one.addresses, one.srv) == ("::1", 5299, (), (("::1", 5299),), False)
    none = load_config(dict(MINIMAL))  # RFC 6120 §3.2: SRV of the domain, else the domain on QE_PORT
    assert (none.srv, none.addresses) == (True, (("example.org", 5222),))
    assert none.server_names == "_xmpp-client._tcp.example.org (DNS SRV, else example.org:5222)"
    assert load_config(env(QE_JID="w@localhost", QE_TLS="off")).srv is False  # off: loopback, no DNS


def test_a_toml_list_of_servers(tmp_path: Path) -> None:
    path = tmp_path / "worker.toml"
    path.write_text('host = ["a.example.org:5222", "b.example.org:5223"]\n')
    config = load_config(env(QE_CONFIG=str(path)))
    assert config.servers == (("a.example.org", 5222), ("b.example.org", 5223))


@pytest.mark.parametrize(("value", "words"), [
    ("a.example.org:5222,,b.example.org", "empty entry"),
    ("a.example.org,", "empty entry"),
    ("a.example.org:0", "port '0'"),
    ("a.example.org:65536", "port '65536'"),
    ("a.example.org:http", "port 'http'"),
    ("a.example.org:", "port ''"),
    ("fe80::1::5222", "needs brackets"),
    ("[::1", "not HOST"),
    ("[::1]5222", "not HOST"),
    ("[example.org]:5222", "not an IPv6 address"),
    ("a.example.org:5222, A.example.org:5222", "listed twice"),
    ("a.example.org, a.example.org:5222", "listed twice"),  # 5222 is the default port
    ("user@a.example.org", "not a host name"),
])
def test_bad_server_lists_get_one_line_that_says_what_is_wrong(value: str, words: str) -> None:
    assert words in str(assert_names(env(QE_HOST=value), "QE_HOST"))


def test_tls_off_needs_every_server_on_loopback() -> None:
    assert load_config(env(QE_HOST="127.0.0.1:5222,[::1]:5222,localhost:5223", QE_TLS="off")).tls == "off"
    err = assert_names(env(QE_HOST="127.0.0.1:5222,xmpp.example.org", QE_TLS="off"), "QE_TLS")
    assert "xmpp.example.org" in str(err)


def test_dns_server() -> None:
    assert load_config(dict(MINIMAL)).dns_server is None
    assert load_config(env(QE_DNS_SERVER="192.0.2.53")).dns_server == "192.0.2.53:53"
    assert load_config(env(QE_DNS_SERVER=" 127.0.0.1:5353 ")).dns_server == "127.0.0.1:5353"
    assert load_config(env(QE_DNS_SERVER="[::1]:5353")).dns_server == "[::1]:5353"
    assert_names(env(QE_DNS_SERVER="127.0.0.1:99999"), "QE_DNS_SERVER")


def test_rest_settings_and_tokens_stay_secret() -> None:
    token = "t" * 20
    config = load_config(env(QE_REST_HOST="0.0.0.0", QE_REST_TOKEN=f"{token}, {'u' * 20}:user",
                             QE_REST_CORS="https://ui.example"))
    assert config.rest_host == "0.0.0.0" and config.rest_cors == ("https://ui.example",)
    assert config.rest_tokens == ((token, "owner"), ("u" * 20, "user"))
    assert token not in repr(config) and token in config.secrets and config.password in config.secrets
    assert_names(env(QE_REST_TOKEN=f"{token}:admin"), "QE_REST_TOKEN")
    default = load_config(dict(MINIMAL))
    assert (default.rest_host, default.rest_tokens, default.rest_cors) == ("127.0.0.1", (), ())


def test_service_settings() -> None:
    config = load_config(env(QE_APP="resize", QE_WIRE="QE", QE_ACCEPT_DELAYED="on"))
    assert (config.app, config.wire, config.accept_delayed) == ("resize", "qe", True)
    assert config.rooms_domain == "conference." + config.domain  # the default
    assert load_config(env(QE_MUC_DOMAIN="Rooms.Example.org")).rooms_domain == "rooms.example.org"
    default = load_config(dict(MINIMAL))
    assert (default.app, default.wire, default.accept_delayed) == (None, "api", False)


def test_every_variable_has_an_invalid_case() -> None:
    from libs.bridge.config import _FILE_KEYS

    assert set(INVALID) == {*_FILE_KEYS.values(), "RESOURCE"}


@pytest.mark.parametrize(("var", "value"), INVALID.items())
def test_every_variable_with_a_bad_value_gets_one_line_naming_it(var: str, value: str) -> None:
    environ = env(**{var: value})
    if var == "QE_PASSWORD_FILE":
        del environ["QE_PASSWORD"]  # the file is read only without a password
    assert_names(environ, var)


@pytest.mark.parametrize(("var", "value", "field", "expected"), [
    ("QE_KEEPALIVE", "0.5", "keepalive", 0.5),
    ("QE_STREAM_MANAGEMENT", "off", "stream_management", False),
    ("QE_MAX_PER_CALLER", "0", "max_per_caller", 0),
    ("QE_AUTH_GRACE", "2.5", "auth_grace", 2.5),
    ("QE_REQUEST_LOG", "off", "request_log", 0.0),
    ("QE_REQUEST_LOG", "on", "request_log", 1.0),
    ("QE_REQUEST_LOG", "0.1", "request_log", 0.1),
    ("QE_LOG_FORMAT", "JSON", "log_format", "json"),
    ("QE_BLOCKED_MS", "0", "blocked_ms", 0),
    ("QE_METRICS", "off", "metrics", False),
    ("QE_METRICS", "on", "metrics", True),
])
def test_the_newer_variables_are_read(var: str, value: str, field: str, expected: Any) -> None:
    assert getattr(load_config(env(**{var: value})), field) == expected
