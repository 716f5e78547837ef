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


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    """A throwaway CA and a certificate for 'localhost' signed by it (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("certs")
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    for args in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=qe-worker test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "server.pem", "-days", "2", "-extfile", str(ext)],
    ):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


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
            assert await client.call(app.jid, "ping", timeout=5) == {"pong": True}
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
