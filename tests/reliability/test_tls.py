"""TLS is verified by default: a certificate from an unknown CA is refused with a clear
error; QE_CA_FILE trusts a private CA; QE_TLS=required refuses a server without TLS."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from libs.bridge import App, Client, NotConnected, load_config
from libs.devserver import DevServer

ROOT = Path(__file__).resolve().parents[2]


def _openssl(d: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> None:
    _openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
             "-days", "2", "-subj", f"/CN=qe-worker test {name}")


def _signed(d: Path, ca: str, name: str, dns: str) -> None:
    ext = d / f"{name}.cnf"
    ext.write_text(f"subjectAltName=DNS:{dns}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    _openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={dns}")
    _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", str(ext))


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    """Throwaway certificates (openssl CLI): a CA with a certificate for 'localhost' and one
    for another name, and a second, untrusted CA with its own 'localhost' certificate."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("certs")
    _ca(d, "ca")
    _signed(d, "ca", "server", "localhost")
    _signed(d, "ca", "other", "other.example")
    _ca(d, "rogue-ca")
    _signed(d, "rogue-ca", "rogue", "localhost")
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key",
            "other_cert": d / "other.pem", "other_key": d / "other.key",
            "rogue_cert": d / "rogue.pem", "rogue_key": d / "rogue.key"}


@pytest.fixture(scope="module")
def tls_server(certs):
    with DevServer(tls=(certs["cert"], certs["key"])) as server:
        server.register("worker", "wpw")
        yield server


async def test_private_ca_is_trusted_only_when_configured(tls_server, certs):
    env = {**tls_server.env("worker", "wpw"), "QE_TLS": "required"}
    trusted = load_config({**env, "QE_CA_FILE": str(certs["ca"])})
    async with Client(trusted) as client:
        assert client.transport._encrypted()
        app = App(resource="tls", config=trusted, exit_on_fatal=False, keepalive=0)
        try:
            await app.wait_online(10)
            assert await client.call(app.jid, "ping", timeout=5) == {"pong": True, "environment": "python"}
        finally:
            await app.close(2)
    with pytest.raises(NotConnected, match="not trusted.*QE_CA_FILE"):
        async with Client(load_config(env), connect_timeout=10):
            pass


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "libs.cli", *args, cwd=ROOT,
                                                env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, err.decode()


async def test_cli_says_why_in_one_line(tls_server, prosody, accounts):
    code, err = await _cli({**tls_server.env("worker", "wpw"), "QE_TLS": "required"}, "ping", "worker@localhost/x")
    assert code == 5 and "not trusted" in err and err.count("\n") == 1
    # a server without TLS, and QE_TLS=required: refused, not silently downgraded
    plain = {**prosody.env("worker", accounts["worker"][1]), "QE_TLS": "required"}
    code, err = await _cli(plain, "ping", "worker@localhost/x")
    assert code == 5 and "STARTTLS" in err and err.count("\n") == 1


# -- QE_TLS=optional: TLS when offered, verified; plain SCRAM only without TLS and on loopback ---


async def test_optional_uses_tls_when_offered_and_verifies_it(tls_server, certs):
    env = {**tls_server.env("worker", "wpw"), "QE_TLS": "optional"}
    async with Client(load_config({**env, "QE_CA_FILE": str(certs["ca"])}), connect_timeout=10) as client:
        assert client.transport._encrypted()
    # an untrusted certificate is refused: no fallback to plain text that an attacker could force
    with pytest.raises(NotConnected, match="not trusted"):
        async with Client(load_config(env), connect_timeout=10):
            pass


async def test_optional_without_tls_offered_logs_in_in_plain_text_on_loopback(prosody, accounts):
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_TLS": "optional"}
    async with Client(load_config(env), connect_timeout=10) as client:
        assert not client.transport._encrypted()
        assert client.transport._client.plugin["feature_mechanisms"].unencrypted_scram


@pytest.mark.parametrize(("tls", "host", "plain_scram"), [
    ("optional", "xmpp.example.org", False),
    ("optional", "10.1.2.3", False),
    ("optional", "127.0.0.1", True),
    ("required", "127.0.0.1", False),
    ("off", "localhost", True),
])
def test_plain_scram_is_allowed_only_without_tls_to_a_loopback_host(tls, host, plain_scram):
    """The decision behind the test above, for hosts this machine cannot reach: to a remote
    host, "optional" without TLS offered means no login method, not a downgrade."""
    from libs.bridge.xmpp import XmppTransport

    config = load_config({"QE_JID": "w@example.org", "QE_PASSWORD": "x", "QE_TLS": tls, "QE_HOST": host})
    client = XmppTransport(config, "r", keepalive=0)._make_client()
    assert client.plugin["feature_mechanisms"].unencrypted_scram is plain_scram


# -- hostname checking and a certificate that changes ------------------------------------------


async def test_a_trusted_certificate_for_another_name_is_refused(certs):
    with DevServer(tls=(certs["other_cert"], certs["other_key"])) as server:
        server.register("worker", "wpw")
        env = {**server.env("worker", "wpw"), "QE_TLS": "required", "QE_CA_FILE": str(certs["ca"])}
        with pytest.raises(NotConnected, match="not trusted"):
            async with Client(load_config(env), connect_timeout=10):
                pass


async def test_a_certificate_that_stops_being_trusted_is_retried_loudly_until_it_is_again(certs, caplog):
    """The rotation path: a worker that was online sees an untrusted certificate after a
    server restart. It refuses it (never falls back), logs why at ERROR, keeps retrying, and
    comes back once the server shows a trusted certificate again."""
    with DevServer(tls=(certs["cert"], certs["key"])) as server:
        server.register("worker", "wpw")
        env = {**server.env("worker", "wpw"), "QE_TLS": "required", "QE_CA_FILE": str(certs["ca"])}
        app = App(resource="rotation", config=load_config(env), exit_on_fatal=False, keepalive=0)
        try:
            await app.wait_online(10)
            transport = app.transport
            server.tls = (certs["rogue_cert"], certs["rogue_key"])
            await asyncio.to_thread(server.restart)
            async with asyncio.timeout(20):
                while "not trusted" not in caplog.text:
                    await asyncio.sleep(0.05)  # a log line: nothing else to await
            assert not app.online and transport.fatal is None  # refused, and still trying
            assert transport.sessions == 1
            server.tls = (certs["cert"], certs["key"])
            await asyncio.to_thread(server.restart)
            await transport.wait_sessions(2, 40)
            assert transport._encrypted()
        finally:
            await app.close(2)
    refusals = [r for r in caplog.records if "not trusted" in r.getMessage()]
    assert refusals and all(r.levelname == "ERROR" for r in refusals)
