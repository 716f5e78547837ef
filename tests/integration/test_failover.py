"""Several servers for real (issue #16): a list in ``QE_HOST`` whose first server is down, a
worker whose server is killed and that goes on on the other one, and DNS SRV answered by a
DNS server of the test's own (``QE_DNS_SERVER``)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from libs.bridge import App, Client, load_config
from libs.devserver import DevServer
from tests.support.workers import ROOT


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def other_prosody() -> Iterator[DevServer]:
    """A second private Prosody for the same domain (``localhost``), unclustered: it shares
    nothing with ``fresh_prosody`` but the accounts registered on both."""
    server = DevServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


async def test_a_list_whose_first_server_is_down_connects_to_the_next(prosody, accounts, caplog):
    closed, port = _closed_port(), prosody.port
    jid, password = accounts["worker"]
    env = {**prosody.env("worker", password), "QE_HOST": f"127.0.0.1:{closed}, 127.0.0.1:{port}"}
    app = App(resource="failover-list", public=True, config=load_config(env), exit_on_fatal=False, keepalive=0)
    try:
        with caplog.at_level(logging.INFO, logger="libs.bridge.xmpp"):
            await app.wait_online(10)
        assert app.transport.session.current == ("127.0.0.1", port)
        assert any(f"cannot reach 127.0.0.1:{closed} (" in r.getMessage()
                   and f"trying 127.0.0.1:{port}" in r.getMessage() for r in caplog.records)
        assert app.transport.backoff.attempts == 0  # the second server came at once, not after a backoff
        async with Client(load_config(prosody.env("client", accounts["client"][1])), connect_timeout=10) as client:
            assert (await client.call(app.jid, "ping", timeout=5))["pong"] is True
    finally:
        await app.close(2)


async def test_the_cli_takes_the_same_list(prosody, accounts):
    app = App(resource="failover-cli", public=True, config=load_config(prosody.env("worker", accounts["worker"][1])),
              exit_on_fatal=False, keepalive=0)
    env = {**os.environ, **prosody.env("client", accounts["client"][1]),
           "QE_HOST": f"127.0.0.1:{_closed_port()},127.0.0.1:{prosody.port}"}
    try:
        await app.wait_online(10)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "libs.cli", "call", app.jid, "ping", env=env, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert '"pong": true' in out.decode()
    finally:
        await app.close(2)


async def test_a_worker_whose_server_dies_goes_on_on_the_other(fresh_prosody, other_prosody, caplog):
    """kill -9 of the server the worker is on: the worker tries XEP-0198 resumption on the
    other one first, which refuses it (it never knew the session), and starts a fresh session
    there at once; a caller on that server reaches it again."""
    servers = {("127.0.0.1", s.port): s for s in (fresh_prosody, other_prosody)}
    for server in servers.values():
        server.register("worker", "wpw")
        server.register("client", "cpw")
    env = {**fresh_prosody.env("worker", "wpw"), "QE_HOST": ",".join(f"{h}:{p}" for h, p in servers)}
    app = App(resource="python", public=True, config=load_config(env), exit_on_fatal=False, keepalive=0)
    try:
        await app.wait_online(10)
        transport = app.transport
        await transport.wait_state(lambda t: t.resumable, 10)  # XEP-0198 on: a resumption will be tried
        first = transport.session.current
        assert first in servers
        [survivor] = [s for a, s in servers.items() if a != first]
        with caplog.at_level(logging.DEBUG, logger="slixmpp.plugins.xep_0198.stream_management"):
            await asyncio.to_thread(servers[first].kill)
            await transport.wait_sessions(2, 20)
        assert transport.session.current == ("127.0.0.1", survivor.port)
        assert transport.resumptions == 0  # the other server refused to resume: a fresh session
        resume_tried = [r for r in caplog.records if r.getMessage() == "resuming SM"]
        assert resume_tried, "XEP-0198 resumption was not tried before the fresh session"
        async with Client(load_config(survivor.env("client", "cpw")), connect_timeout=10) as client:
            assert await client.call(app.jid, "ping", timeout=5) == {"pong": True, "environment": "python"}
    finally:
        await app.close(2)


# -- DNS SRV --------------------------------------------------------------------------------


class _SrvServer:
    """A DNS server on 127.0.0.1 that answers ``_xmpp-client._tcp.<domain>`` with ``records``
    ``(priority, weight, port, target)`` and nothing else; ``names`` are the names asked for."""

    def __init__(self, records: list[tuple[int, int, int, str]]) -> None:
        from dnslib import QTYPE, RR, SRV
        from dnslib.server import BaseResolver, DNSServer

        outer = self

        class Resolver(BaseResolver):  # type: ignore[misc]
            def resolve(self, request: Any, handler: Any) -> Any:
                reply = request.reply()
                name = str(request.q.qname)
                outer.names.append(name)
                if request.q.qtype == QTYPE.SRV and name.startswith("_xmpp-client._tcp."):
                    for priority, weight, port, target in records:
                        reply.add_answer(RR(request.q.qname, QTYPE.SRV, ttl=60,
                                            rdata=SRV(priority, weight, port, target)))
                return reply

        class Quiet:  # dnslib's default logger prints every query to stdout
            def __getattr__(self, _name: str) -> Any:
                return lambda *_args: None

        self.names: list[str] = []
        self._server = DNSServer(Resolver(), address="127.0.0.1", port=0, logger=Quiet())
        self.port: int = self._server.server.server_address[1]

    def __enter__(self) -> _SrvServer:
        self._server.start_thread()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.stop()
        self._server.server.server_close()


async def test_without_qe_host_the_servers_come_from_dns_srv_in_priority_order(prosody, accounts):
    closed = _closed_port()
    jid, password = accounts["worker"]
    env = {**prosody.env("worker", password), "QE_TLS": "optional"}  # off would mean no DNS at all
    del env["QE_HOST"], env["QE_PORT"]
    # priority 0: a closed port (tried first, fails); priority 10: the server
    with _SrvServer([(10, 5, prosody.port, "localhost."), (0, 5, closed, "localhost.")]) as dns:
        config = load_config({**env, "QE_DNS_SERVER": f"127.0.0.1:{dns.port}"})
        assert config.srv
        app = App(resource="failover-srv", public=True, config=config, exit_on_fatal=False, keepalive=0)
        try:
            await app.wait_online(10)
            assert app.transport.session.current == ("localhost", prosody.port)
            assert "_xmpp-client._tcp.localhost." in dns.names
        finally:
            await app.close(2)


async def test_a_server_that_accepts_and_says_nothing_is_given_up_for_the_next(prosody, accounts):
    """A hung node (it takes the TCP connection, never answers the stream) holds the attempt
    only for ``attempt_timeout``; then the next server of the list."""
    from libs.bridge.xmpp import XmppTransport

    jid, password = accounts["worker"]
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody reads or writes
        hung = silent.getsockname()[1]
        env = {**prosody.env("worker", password), "QE_HOST": f"127.0.0.1:{hung},127.0.0.1:{prosody.port}"}
        transport = XmppTransport(load_config(env), "failover-hung", keepalive=0, attempt_timeout=0.5)
        transport.start()
        try:
            await transport.wait_online(10)
            assert transport.session.current == ("127.0.0.1", prosody.port)
            assert transport.backoff.attempts == 0
        finally:
            await transport.close(2)
