"""``libs.devserver`` without starting anything: the ejabberd config we generate, the node
placement of accounts, and the ``qe-worker server`` options (engine, nodes) and their errors.

ejabberd's executables are faked on PATH (only their presence is checked at construction),
so these run where ejabberd is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path

import pytest

from libs.devserver import (
    DevServer,
    EjabberdCluster,
    EjabberdNotInstalled,
    ServerNotInstalled,
    XmppDevServer,
    add_arguments,
    make_server,
    serve,
)


@pytest.fixture
def fake_ejabberd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``erl``/``epmd`` on PATH and an ejabberd code dir, none of them real."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("erl", "epmd", "prosody", "prosodyctl"):
        exe = bin_dir / name
        exe.write_text("#!/bin/sh\nexit 1\n")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    libs = tmp_path / "erlang-libs"
    (libs / "ejabberd-99.1" / "ebin").mkdir(parents=True)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("QE_EJABBERD_LIBS", str(libs))
    return tmp_path


def _config(cluster: EjabberdCluster, node: int = 1) -> dict:
    """The file as ejabberd reads it: a comment line, then JSON (which is YAML)."""
    comment, _, body = cluster.config_text(node).partition("\n")
    assert comment.startswith("# ")
    return json.loads(body)


def test_config_is_loopback_plain_unthrottled_with_the_rooms_workers_need(fake_ejabberd: Path) -> None:
    cluster = EjabberdCluster(nodes=2, workdir=fake_ejabberd / "w", domain="Example.TEST", stanza_size_limit=12345)
    one, two = _config(cluster, 1), _config(cluster, 2)
    assert one["hosts"] == ["example.test"]
    (listener,) = one["listen"]
    assert listener["ip"] == "127.0.0.1" and listener["module"] == "ejabberd_c2s"
    assert listener["port"] == cluster.ports[0] and two["listen"][0]["port"] == cluster.ports[1]
    assert cluster.ports[0] != cluster.ports[1]
    assert listener["shaper"] == "none" and listener["starttls_required"] is False
    assert listener["max_stanza_size"] == 12345
    assert one["shaper_rules"]["max_user_sessions"] >= 1000  # many resources per account
    assert one["s2s_access"] == "none" and one["auth_password_format"] == "scram"
    assert {"mod_stream_mgmt", "mod_disco", "mod_ping", "mod_roster", "mod_adhoc"} <= set(one["modules"])
    muc = one["modules"]["mod_muc"]
    assert muc["host"] == "conference.example.test" and muc["history_size"] == 0
    assert muc["access_create"] == "local"
    assert muc["default_room_options"] == {"anonymous": False, "persistent": False, "mam": False}
    assert "mod_muc" not in _config(EjabberdCluster(workdir=fake_ejabberd / "x", muc=False))["modules"]


def test_odd_paths_and_domains_cannot_inject_into_the_config(fake_ejabberd: Path) -> None:
    with pytest.raises(ValueError, match="invalid XMPP domain"):
        EjabberdCluster(workdir=fake_ejabberd / "w", domain='x"\nlisten: []')
    cluster = EjabberdCluster(workdir=fake_ejabberd / 'odd "dir"\nhosts: [evil]')
    assert _config(cluster)["hosts"] == ["localhost"]


def test_accounts_are_spread_round_robin_over_the_nodes(fake_ejabberd: Path) -> None:
    cluster = EjabberdCluster(nodes=2, workdir=fake_ejabberd / "w")
    cluster._placement.update({"worker": 1, "client": 2})  # what register() records, in order
    assert cluster.env("worker", "pw")["QE_PORT"] == str(cluster.ports[0])
    assert cluster.env("client", "pw")["QE_PORT"] == str(cluster.ports[1])
    assert cluster.env("client", "pw", node=1)["QE_PORT"] == str(cluster.ports[0])
    assert cluster.env("Client@localhost", "pw")["QE_JID"] == "Client@localhost"
    env = cluster.env("worker", "p w")
    assert env == {"QE_JID": "worker@localhost", "QE_PASSWORD": "p w", "QE_HOST": "127.0.0.1",
                   "QE_PORT": str(cluster.ports[0]), "QE_TLS": "off"}
    assert cluster.node_of("someone-else") in (1, 2)  # not registered here: a stable hash
    assert cluster.node_of("someone-else") == cluster.node_of("Someone-Else@localhost")
    with pytest.raises(ValueError, match="no node 3"):
        cluster.env("worker", "pw", node=3)
    with pytest.raises(ValueError, match="no node 0"):
        cluster.kill_node(0)


def test_register_checks_input_and_needs_a_running_node(fake_ejabberd: Path) -> None:
    cluster = EjabberdCluster(workdir=fake_ejabberd / "w")
    with pytest.raises(ValueError, match="invalid username"):
        cluster.register("a b", "pw")
    with pytest.raises(ValueError, match="must not be empty"):
        cluster.register("alice", "")
    with pytest.raises(RuntimeError, match="not running"):
        cluster.register("alice", "pw")


@pytest.mark.parametrize("nodes", [0, 6])
def test_node_count_is_bounded(fake_ejabberd: Path, nodes: int) -> None:
    with pytest.raises(ValueError, match="nodes must be between 1 and 5"):
        EjabberdCluster(nodes=nodes, workdir=fake_ejabberd / "w")


def test_both_engines_offer_the_same_interface(fake_ejabberd: Path) -> None:
    assert isinstance(EjabberdCluster(workdir=fake_ejabberd / "e"), XmppDevServer)
    assert isinstance(DevServer(workdir=fake_ejabberd / "p"), XmppDevServer)


def test_missing_ejabberd_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EjabberdNotInstalled, match="apt-get install -y --no-install-recommends ejabberd"):
        EjabberdCluster()
    assert issubclass(EjabberdNotInstalled, ServerNotInstalled)
    assert serve(["--engine", "ejabberd"]) == 3
    assert "ejabberd not found" in capsys.readouterr().err


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_server_options_choose_the_engine_and_nodes(fake_ejabberd: Path) -> None:
    server = make_server(_args("--engine", "ejabberd", "--nodes", "3", "--port", "5999",
                               "--dir", str(fake_ejabberd / "w")))
    assert isinstance(server, EjabberdCluster) and server.nodes == 3 and server.port == 5999
    assert isinstance(make_server(_args("--dir", str(fake_ejabberd / "p"))), DevServer)
    assert isinstance(make_server(_args("--nodes", "1", "--dir", str(fake_ejabberd / "p"))), DevServer)


def test_nodes_with_prosody_is_a_usage_error(fake_ejabberd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert serve(["--nodes", "2", "--dir", str(fake_ejabberd / "p")]) == 2
    assert "--nodes needs --engine ejabberd" in capsys.readouterr().err
    assert not (fake_ejabberd / "p").exists() or not any((fake_ejabberd / "p").iterdir())


@pytest.mark.parametrize("argv, message", [
    (["--engine", "openfire"], "invalid choice: 'openfire'"),
    (["--engine", "ejabberd", "--nodes", "0"], "nodes must be between 1 and 5"),
    (["--engine", "ejabberd", "--nodes", "two"], "not a number"),
])
def test_bad_server_options_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        serve(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_cookie_is_private_and_not_on_a_command_line(fake_ejabberd: Path) -> None:
    cluster = EjabberdCluster(nodes=2, workdir=fake_ejabberd / "w")
    cluster._prepare()
    cookie = cluster.workdir / ".erlang.cookie"
    assert stat.S_IMODE(cookie.stat().st_mode) == 0o400
    secret = cookie.read_text()
    assert len(secret) >= 32
    argv = " ".join(cluster._erl_prefix("ej1@localhost"))
    assert secret not in argv and "-setcookie" not in argv
    env = cluster._erl_env(1)
    assert env["HOME"] == str(cluster.workdir) and env["ERL_EPMD_PORT"] == str(cluster.epmd_port)
    assert "{127,0,0,1}" in argv and "-start_epmd false" in argv
    assert os.fspath(cluster.config_path(2)).startswith(os.fspath(cluster.workdir))


def test_free_ports_come_from_below_the_ephemeral_range_and_are_never_repeated() -> None:
    """Not the kernel's pick: that range is where outgoing connections and other listeners on
    port 0 (an ejabberd node's distribution port) take theirs, racing our server's bind."""
    from libs.devserver._common import _ephemeral_range, free_port

    low, _high = _ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(10000 <= p < low for p in ports)
