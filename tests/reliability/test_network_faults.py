"""Network faults between a worker and its server: each dead link is noticed (by the
keepalive when nothing else can tell, even while requests keep arriving), rebuilt, the
session is resumed with XEP-0198 when the server still has it, and the worker answers
again; a slow or congested but alive link is kept.

The worker (``App``) reaches Prosody through ``tests.support.proxy.FaultyProxy``, which
injects the fault; the caller talks to Prosody directly. The time to recover (from the
fault to the first answer a caller gets after it) is measured for each fault and printed in
pytest's terminal summary; it is reported, never asserted (the machine is shared), and the
bounds below are generous functional ones.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from libs.bridge import APISpecs, App, Client, load_config
from libs.bridge.xmpp import XmppTransport
from tests.support.proxy import TO_CLIENT, TO_SERVER, FaultyProxy

KEEPALIVE = 0.3  # s between pings to the server: short, so a dead link is noticed in seconds
KEEPALIVE_TIMEOUT = 2.0  # s for an answer; well above the slow link's round trip (~0.4-0.7 s)
STEP = 15.0  # s: bound of each wait for an event (detection, reconnect); generous under load
CALL_TIMEOUT = 20.0  # s: a call made during the fault must outlive the recovery
PING_TIMEOUT_LOG = "did not answer a ping"
SLOW_LATENCY = 0.2  # s each way
SLOW_BANDWIDTH = 64_000  # bytes/s each way
BIG_BODY = {"blob": "x" * 16_000}  # 0.25 s on the wire each way at SLOW_BANDWIDTH
BACKGROUND_PER_S = 20  # calls/s to the worker while a fault is injected
CONGESTED_BANDWIDTH = 12_000  # bytes/s each way: less than TRAFFIC_PER_S offers, so a queue builds
TRAFFIC_PER_S = 100

StartWorker = Callable[..., Awaitable[App]]


@pytest.fixture
async def proxy(prosody) -> AsyncIterator[FaultyProxy]:
    p = await FaultyProxy(prosody.host, prosody.port).start()
    yield p
    await p.close()


@pytest.fixture
async def caller(login) -> Client:
    return await login("client")


async def _echo(specs: APISpecs) -> dict[str, Any]:
    return dict(specs.body)


@pytest.fixture
async def start_worker(prosody, accounts, proxy) -> AsyncIterator[StartWorker]:
    """``await start_worker(resource, keepalive=..., **QE_env)``: an online, public ``App``
    (``ping`` and ``echo``) connected through the proxy, closed at the end of the test.
    With XEP-0198 on, it also waits until the session is resumable."""
    apps: list[App] = []

    async def _start(resource: str, *, keepalive: float = KEEPALIVE, **env: str) -> App:
        config = load_config({**prosody.env("worker", accounts["worker"][1]), "QE_PORT": str(proxy.port), **env})
        app = App(resource=resource, public=True, config=config, exit_on_fatal=False, keepalive=keepalive)
        app.command("echo")(_echo)
        apps.append(app)
        await app.wait_online(10)
        transport = _transport(app)
        transport.keepalive_timeout = KEEPALIVE_TIMEOUT
        if config.stream_management:
            await transport.wait_state(lambda t: t.resumable, 10)
        return app

    yield _start
    for app in apps:
        await app.close(2)


def _transport(app: App) -> XmppTransport:
    assert app.transport is not None
    return app.transport


async def _ping(caller: Client, app: App, timeout: float) -> float:
    """Call ``ping``; return the loop time the answer arrived."""
    assert await caller.call(app.jid, "ping", timeout=timeout) == {"pong": True, "environment": "python"}
    return asyncio.get_running_loop().time()


class Traffic:
    """``async with Traffic(caller, app, per_s) as t``: calls to the worker at a steady rate
    (open loop: the rate is kept whatever the answers do) until the block ends; ``t.calls``
    holds them. A worker under load: inbound requests flow all the time."""

    def __init__(self, caller: Client, app: App, per_s: float) -> None:
        self.caller, self.app, self.per_s = caller, app, per_s
        self.calls: list[asyncio.Future[dict[str, Any]]] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            body = {"n": len(self.calls)}
            self.calls.append(asyncio.ensure_future(self.caller.call(self.app.jid, "echo", body, timeout=CALL_TIMEOUT)))
            await asyncio.sleep(1 / self.per_s)  # pacing the load (not a synchronisation)

    async def __aenter__(self) -> Traffic:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def abandon(self) -> None:
        """Give up on the calls still waiting and collect the rest (background load: what
        became of each call is not what the test is about)."""
        for call in self.calls:
            call.cancel()
        await asyncio.gather(*self.calls, return_exceptions=True)


@dataclass
class Recovery:
    dropped_s: float  # fault -> the worker's old connection closed (by the worker, or cut)
    back_s: float  # fault -> session resumed (or a new one started)
    answered_s: float  # fault -> first answer a caller got after the fault


async def break_and_recover(app: App, proxy: FaultyProxy, caller: Client, inject: Callable[[], None], *,
                            resumed: bool) -> Recovery:
    """Inject a fault on the worker's connection and wait until it is answered again.

    With ``resumed`` a call is made right after the fault: the server keeps it for the
    resumed session (XEP-0198), so it must be answered, and it is the first answer. Without,
    the server has dropped the session: the first answer is a call after the new login.
    """
    transport = _transport(app)
    sessions, resumptions = transport.sessions, transport.resumptions
    link = proxy.current
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    inject()
    in_flight = asyncio.ensure_future(_ping(caller, app, CALL_TIMEOUT)) if resumed else None
    try:
        await asyncio.wait_for(link.client_closed.wait(), STEP)
        assert link.client_closed_at is not None
        if resumed:
            await transport.wait_state(lambda t: t.resumptions > resumptions and t.online, STEP)
        else:
            await transport.wait_sessions(sessions + 1, STEP)
        back = loop.time()
        first = await asyncio.wait_for(in_flight, CALL_TIMEOUT + 5) if in_flight else None
        fresh = await _ping(caller, app, 5)  # and it answers new calls
    finally:
        if in_flight is not None and not in_flight.done():
            in_flight.cancel()
    return Recovery(link.client_closed_at - t0, back - t0, (first or fresh) - t0)


def _report(report: Callable[[str], None], fault: str, r: Recovery, how: str) -> None:
    report(f"{fault}: link dropped {r.dropped_s:.2f} s, session back {r.back_s:.2f} s, first answer "
           f"{r.answered_s:.2f} s after the fault ({how}; keepalive every {KEEPALIVE} s, answer within "
           f"{KEEPALIVE_TIMEOUT} s)")


def _keepalive_fired(caplog: pytest.LogCaptureFixture) -> bool:
    return any(PING_TIMEOUT_LOG in r.getMessage() for r in caplog.records if r.name == "libs.bridge.xmpp")


@pytest.mark.timeout(60)
async def test_stalled_link_is_detected_and_session_resumed(start_worker, proxy, caller, report, caplog):
    caplog.set_level(logging.WARNING, "libs.bridge.xmpp")
    app = await start_worker("faulty")
    # packets vanish; no FIN, no RST: only a keepalive can tell
    async with Traffic(caller, app, BACKGROUND_PER_S) as traffic:
        r = await break_and_recover(app, proxy, caller, proxy.stall, resumed=True)
    await traffic.abandon()
    assert _keepalive_fired(caplog)
    assert proxy.connections == 2
    assert _transport(app).resumptions == 1 and _transport(app).sessions == 1  # resumed, not a new session
    _report(report, "stall (nothing flows either way)", r, "keepalive; resumed (XEP-0198)")


@pytest.mark.timeout(60)
async def test_cut_link_without_stream_management_gets_a_new_session(start_worker, proxy, caller, report):
    app = await start_worker("faulty2", keepalive=0, QE_STREAM_MANAGEMENT="off")
    r = await break_and_recover(app, proxy, caller, proxy.cut, resumed=False)  # a reset needs no keepalive
    assert _transport(app).resumptions == 0 and _transport(app).sessions == 2
    _report(report, "cut (reset), XEP-0198 off", r, "reset seen; new session")


@pytest.mark.timeout(60)
async def test_cut_link_is_resumed_and_a_call_made_meanwhile_answered(start_worker, proxy, caller, report):
    app = await start_worker("faulty-cut", keepalive=0)
    r = await break_and_recover(app, proxy, caller, proxy.cut, resumed=True)
    assert proxy.connections == 2
    assert _transport(app).resumptions == 1 and _transport(app).sessions == 1
    _report(report, "cut (reset)", r, "reset seen; resumed (XEP-0198)")


HALF_OPEN: dict[str, Callable[[FaultyProxy], None]] = {
    "server-to-worker dropped": lambda p: p.drop(TO_CLIENT),
    "worker-to-server dropped": lambda p: p.drop(TO_SERVER),
    "server side closed, worker side open": FaultyProxy.close_server_side,
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", list(HALF_OPEN))
async def test_half_open_link_is_detected_and_session_resumed(start_worker, proxy, caller, report, caplog, fault):
    """No FIN or RST reaches the worker; one direction (or the server's side) is gone. The
    keepalive notices, and the server still has the session (live, or hibernating after it
    saw its side close), so it is resumed; the call made meanwhile is answered (the server
    resends it, or the worker resends its answer)."""
    caplog.set_level(logging.WARNING, "libs.bridge.xmpp")
    app = await start_worker("half-open")
    async with Traffic(caller, app, BACKGROUND_PER_S) as traffic:  # requests keep arriving: not a proof of life
        r = await break_and_recover(app, proxy, caller, lambda: HALF_OPEN[fault](proxy), resumed=True)
    await traffic.abandon()
    assert _keepalive_fired(caplog)
    assert proxy.connections == 2
    assert _transport(app).resumptions == 1 and _transport(app).sessions == 1
    _report(report, f"half-open: {fault}", r, "keepalive; resumed (XEP-0198)")


@pytest.mark.timeout(60)
async def test_slow_link_is_kept_and_calls_succeed(start_worker, proxy, caller, report, caplog):
    """200 ms each way and 64 KB/s: slower, not dead. Calls (small, large, many at once)
    succeed, and the keepalive keeps getting answers over the slow link, so the worker never
    drops it."""
    caplog.set_level(logging.WARNING, "libs.bridge.xmpp")
    app = await start_worker("slow")
    transport = _transport(app)
    proxy.slow(SLOW_LATENCY, SLOW_BANDWIDTH)
    pings = transport.pings_answered
    loop = asyncio.get_running_loop()
    small: list[float] = []
    for _ in range(3):
        t0 = loop.time()
        assert await caller.call(app.jid, "ping", timeout=10) == {"pong": True, "environment": "python"}
        small.append(loop.time() - t0)
    t0 = loop.time()
    assert await caller.call(app.jid, "echo", BIG_BODY, timeout=10) == BIG_BODY
    big = loop.time() - t0
    t0 = loop.time()
    answers = await asyncio.gather(*(caller.call(app.jid, "echo", {"n": n}, timeout=10) for n in range(50)))
    assert answers == [{"n": n} for n in range(50)]
    burst = loop.time() - t0
    # the keepalive judged the slow link at least twice (a ping sent before slow() may count once)
    await transport.wait_state(lambda t: t.pings_answered >= pings + 3, STEP)
    assert not _keepalive_fired(caplog)
    assert proxy.connections == 1 and transport.sessions == 1 and transport.resumptions == 0
    report(f"slow ({SLOW_LATENCY * 1000:.0f} ms each way, {SLOW_BANDWIDTH // 1000} KB/s): kept; ping "
           f"{statistics.median(small):.2f} s, 16 KB echo {big:.2f} s, 50 at once {burst:.2f} s")


@pytest.mark.timeout(60)
async def test_congested_link_is_kept_while_the_server_acknowledges(start_worker, proxy, caller, report, caplog):
    """More traffic than the link carries: a queue builds and a ping waits behind it longer
    than the keepalive allows, while stanzas still flow and the server keeps acknowledging
    ours (XEP-0198). Alive, only congested: the worker must not drop the link (a reconnect
    would resend the whole backlog and make the congestion worse; bench/soak.py saw that
    turn into minutes of reconnects on a loaded machine)."""
    caplog.set_level(logging.WARNING, "libs.bridge.xmpp")
    app = await start_worker("congested")
    transport = _transport(app)
    proxy.slow(latency=0.0, bandwidth=CONGESTED_BANDWIDTH)
    loop = asyncio.get_running_loop()
    late = transport.pings_late
    t0 = loop.time()
    async with Traffic(caller, app, TRAFFIC_PER_S) as traffic:
        # a ping stuck in the queue beyond the keepalive timeout, judged alive by the acks
        await transport.wait_state(lambda t: t.pings_late > late, STEP)
        congested = loop.time() - t0
    proxy.heal()  # the queue drains
    calls = traffic.calls
    answers = await asyncio.wait_for(asyncio.gather(*calls), CALL_TIMEOUT + 5)
    assert answers == [{"n": n} for n in range(len(calls))]
    pings = transport.pings_answered
    await transport.wait_state(lambda t: t.pings_answered > pings, STEP)
    assert not _keepalive_fired(caplog)
    assert proxy.connections == 1 and transport.sessions == 1 and transport.resumptions == 0
    report(f"congested ({CONGESTED_BANDWIDTH // 1000} KB/s, {TRAFFIC_PER_S} calls/s offered): kept; a ping late "
           f"after {congested:.1f} s, {len(calls)} calls all answered")
