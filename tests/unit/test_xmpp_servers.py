"""Several servers: the rounds of the session table (``_session``) and the DNS SRV order
(``_srv``), without a server or a DNS server (the integration tests in
tests/integration/test_failover.py do both for real)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from libs.bridge.errors import NotConnected
from libs.bridge.transport import Backoff
from libs.bridge.xmpp._session import Connect, Event, Fail, Log, Offline, Online, Resolve, Retry, Session, State
from libs.bridge.xmpp._srv import SrvRecord, order, servers_for

A, B, C = ("a.example.org", 5222), ("b.example.org", 5223), ("::1", 5224)


def session(*servers: tuple[str, int], **kwargs: object) -> Session:
    return Session(server="the servers", account="w@example.org", servers=servers,  # type: ignore[arg-type]
                   backoff=Backoff(rand=lambda: 0.0), **kwargs)


def test_a_failed_server_is_followed_by_the_next_at_once_and_the_backoff_comes_after_the_round() -> None:
    s = session(A, B, C)
    assert s.handle(Event.START) == [Connect(*A)]
    assert s.handle(Event.CONNECT_FAILED, detail="refused") == [
        Log(logging.INFO, "cannot reach a.example.org:5222 (refused); trying b.example.org:5223"), Connect(*B)]
    assert s.handle(Event.CONNECT_FAILED, detail="timed out") == [
        Log(logging.INFO, "cannot reach b.example.org:5223 (timed out); trying [::1]:5224"), Connect(*C)]
    assert s.state is State.CONNECTING and s.backoff.attempts == 0  # no delay inside a round
    actions = s.handle(Event.CONNECT_FAILED, detail="refused")
    assert actions == [Offline(), Retry(0.1, "cannot reach a.example.org:5222 (refused), b.example.org:5223 "
                                             "(timed out), [::1]:5224 (refused)")]
    assert s.state is State.WAITING and s.backoff.attempts == 1 and s.unreachable == 1
    assert s.handle(Event.RETRY_DUE) == [Connect(*A)]  # no session yet: the list's order again


def test_after_a_drop_the_round_starts_at_the_server_of_the_session_and_goes_on_to_the_others() -> None:
    s = session(A, B)
    s.handle(Event.START)
    s.handle(Event.CONNECT_FAILED, detail="refused")
    assert s.handle(Event.SESSION_STARTED, encrypted=True) == [Online(resumed=False)]
    assert s.current == B and s.unreachable == 0
    assert s.handle(Event.DISCONNECTED, detail="killed") == [Offline(), Retry(0.1, "disconnected (killed)")]
    assert s.handle(Event.RETRY_DUE) == [Connect(*B)]  # a blip: resume where the session is
    assert s.handle(Event.CONNECT_FAILED, detail="refused")[-1] == Connect(*A)  # the node died: the next
    assert s.handle(Event.SESSION_RESUMED) == [Online(resumed=True)]  # a cluster: the session goes on
    assert (s.sessions, s.resumptions, s.current, s.home) == (1, 1, A, A)
    s.handle(Event.DISCONNECTED)
    assert s.handle(Event.RETRY_DUE) == [Connect(*A)]


def test_a_failed_round_after_a_drop_starts_again_at_the_server_of_the_last_session() -> None:
    s = session(A, B, C)
    s.handle(Event.START)
    s.handle(Event.CONNECT_FAILED, detail="refused")
    s.handle(Event.SESSION_STARTED, encrypted=True)  # on B
    s.handle(Event.DISCONNECTED)
    assert [s.handle(Event.RETRY_DUE)[-1]] + [s.handle(Event.CONNECT_FAILED, detail="refused")[-1]
                                              for _ in range(2)] == [Connect(*B), Connect(*C), Connect(*A)]
    [_offline, retry] = s.handle(Event.CONNECT_FAILED, detail="refused")
    assert isinstance(retry, Retry) and retry.why.startswith("cannot reach b.example.org:5223 (refused), [::1]")
    assert s.handle(Event.RETRY_DUE) == [Connect(*B)]


def test_a_server_that_ends_the_stream_before_a_session_is_followed_by_the_next() -> None:
    s = session(A, B)
    s.handle(Event.START)
    assert s.handle(Event.DISCONNECTED, detail="stream closed") == [
        Log(logging.INFO, "a.example.org:5222 disconnected (stream closed); trying b.example.org:5223"), Connect(*B)]
    assert s.handle(Event.DISCONNECTED, detail="stream closed") == [
        Offline(), Retry(0.1, "disconnected (stream closed)")]  # the round is over


def test_a_client_gives_up_only_when_every_server_failed() -> None:
    s = session(A, B, fail_fast=True)
    s.handle(Event.START)
    assert s.handle(Event.CONNECT_FAILED, detail="refused")[-1] == Connect(*B)
    actions = s.handle(Event.CONNECT_FAILED, detail="refused")
    reason = "cannot reach a.example.org:5222 (refused), b.example.org:5223 (refused)"
    assert actions == [Offline(), Fail(reason, NotConnected)] and s.state is State.FAILED


def test_the_unreachable_warning_counts_rounds_and_names_every_server() -> None:
    s = session(A, B)
    s.handle(Event.START)
    levels = []
    for attempt in range(4):
        s.handle(Event.CONNECT_FAILED, now=10.0 * attempt, detail="refused")
        [_offline, retry] = s.handle(Event.CONNECT_FAILED, now=10.0 * attempt + 1, detail="refused")
        assert isinstance(retry, Retry)
        levels.append(retry.level)
        s.handle(Event.RETRY_DUE)
    assert levels == [logging.INFO] * 3 + [logging.WARNING]
    assert retry.why == ("cannot reach a.example.org:5222 (refused), b.example.org:5223 (refused); "
                         "attempt 4 failed, unreachable for 30 s")


def test_with_srv_each_round_starts_with_a_lookup() -> None:
    s = session(("example.org", 5222), srv=True)
    assert s.handle(Event.START) == [Resolve()]
    assert s.handle(Event.RESOLVED, servers=[A, B]) == [Connect(*A)]
    assert s.handle(Event.RESOLVED, servers=[B]) == []  # not asked for
    assert s.handle(Event.CONNECT_FAILED, detail="refused")[-1] == Connect(*B)
    s.handle(Event.CONNECT_FAILED, detail="refused")
    assert s.handle(Event.RETRY_DUE) == [Resolve()]  # looked up again: DNS may have changed
    assert s.handle(Event.RESOLVED, servers=None) == [Connect("example.org", 5222)]  # no SRV: the domain


def test_srv_saying_no_service_is_a_failed_round() -> None:
    s = session(("example.org", 5222), srv=True, fail_fast=True)
    s.handle(Event.START)
    [_offline, fail] = s.handle(Event.RESOLVED, servers=[])
    assert isinstance(fail, Fail) and "example.org (its DNS SRV record says it has no XMPP service)" in fail.reason


def test_close_during_a_lookup_ignores_its_answer() -> None:
    s = session(("example.org", 5222), srv=True)
    s.handle(Event.START)
    s.handle(Event.CLOSE)
    assert s.handle(Event.RESOLVED, servers=[A]) == []


def test_a_session_needs_a_server() -> None:
    with pytest.raises(ValueError, match="at least one server"):
        Session(server="x", account="w@example.org")


# -- DNS SRV order (RFC 2782) -----------------------------------------------------------------


def rec(priority: int, weight: int, target: str, port: int = 5222) -> SrvRecord:
    return SrvRecord(priority, weight, port, target)


def test_lower_priority_first_whatever_the_order_of_the_answer() -> None:
    records = [rec(20, 0, "c.example.org."), rec(10, 0, "a.example.org.", 5269), rec(15, 0, "b.example.org")]
    assert order(records, lambda lo, hi: lo) == [("a.example.org", 5269), ("b.example.org", 5222),
                                                 ("c.example.org", 5222)]


def test_weights_pick_by_running_sum_and_zero_weight_goes_first() -> None:
    records = [rec(10, 60, "heavy"), rec(10, 0, "zero"), rec(10, 40, "light")]
    draws: list[tuple[int, int]] = []

    def rand(lo: int, hi: int) -> int:
        draws.append((lo, hi))
        return hi  # the last running sum reached: the last record in the list
    assert order(records, rand) == [("light", 5222), ("heavy", 5222), ("zero", 5222)]
    assert draws == [(0, 100), (0, 60), (0, 0)]
    assert order(records, lambda lo, hi: 0) == [("zero", 5222), ("heavy", 5222), ("light", 5222)]
    assert order(records, lambda lo, hi: 61 if hi == 100 else 0)[0] == ("light", 5222)  # 0+60 < 61 <= 100


def test_weighted_choice_follows_the_weights() -> None:
    import random
    rng = random.Random(7)
    records = [rec(0, 90, "big"), rec(0, 10, "small")]
    firsts = [order(records, rng.randint)[0][0] for _ in range(2000)]
    assert 0.85 < firsts.count("big") / len(firsts) < 0.95


def test_a_dot_target_means_no_service() -> None:
    assert order([rec(0, 0, ".")]) == []


class _Lookup:
    def __init__(self, answer: Sequence[SrvRecord] | Exception) -> None:
        self.answer = answer
        self.names: list[str] = []

    async def __call__(self, name: str) -> Sequence[SrvRecord]:
        self.names.append(name)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_servers_for_a_domain() -> None:
    lookup = _Lookup([rec(1, 0, "b.example.org.", 5299), rec(0, 0, "a.example.org.")])
    assert asyncio.run(servers_for("example.org", lookup)) == [("a.example.org", 5222), ("b.example.org", 5299)]
    assert lookup.names == ["_xmpp-client._tcp.example.org"]
    assert asyncio.run(servers_for("example.org", _Lookup(LookupError("NXDOMAIN")))) is None
    assert asyncio.run(servers_for("example.org", _Lookup(OSError("unreachable")))) is None
    assert asyncio.run(servers_for("example.org", _Lookup([]))) is None
    assert asyncio.run(servers_for("example.org", _Lookup([rec(0, 0, ".")]))) == []


@pytest.mark.parametrize(("tls", "host", "plain"), [
    ("optional", "127.0.0.1", True), ("optional", "xmpp.example.org", False), ("optional", "::1", True),
    ("required", "127.0.0.1", False), ("off", "localhost", True),
])
def test_plain_scram_is_decided_per_server(tls: str, host: str, plain: bool) -> None:
    from libs.bridge.xmpp import _plain_scram
    assert _plain_scram(tls, host) is plain


async def test_an_attempt_without_an_answer_is_given_up_for_the_next_server(caplog: pytest.LogCaptureFixture) -> None:
    """The adapter's attempt timer: a server that neither accepts nor refuses (a dead machine,
    a dropping firewall) is given up after ``attempt_timeout``, for the next one at once."""
    from libs.bridge import load_config
    from libs.bridge.xmpp import XmppTransport

    config = load_config({"QE_JID": "w@localhost", "QE_PASSWORD": "x", "QE_TLS": "off",
                          "QE_HOST": "127.0.0.1:5301,127.0.0.1:5302"})
    transport = XmppTransport(config, "r", keepalive=0, attempt_timeout=0.05)
    attempts: list[tuple[str, int]] = []
    second = asyncio.Event()

    def connect(host: str, port: int) -> None:  # never connects, never fails: a black hole
        attempts.append((host, port))
        if len(attempts) == 2:
            second.set()

    transport.start()
    assert transport._client is not None
    transport._client.connect = connect  # type: ignore[assignment,method-assign]
    try:
        with caplog.at_level(logging.INFO, logger="libs.bridge.xmpp"):
            await asyncio.wait_for(second.wait(), 5)
        assert attempts == [("127.0.0.1", 5301), ("127.0.0.1", 5302)]
        assert transport.backoff.attempts == 0
        assert any("cannot reach 127.0.0.1:5301 (no session within 0.05 s); trying 127.0.0.1:5302"
                   in r.getMessage() for r in caplog.records)
    finally:
        await transport.close(1)


def test_only_a_prosody_conflict_is_taken_for_a_takeover() -> None:
    """The loser's farewell login (telling the newcomer) only where a conflict cannot mean
    "over the session limit": there, one more login would push out another session."""
    from libs.bridge.xmpp import conflict_means_takeover

    assert conflict_means_takeover("http://prosody.im")
    assert not conflict_means_takeover(None)  # ejabberd 23.01 sends no caps in its features
    assert not conflict_means_takeover("https://www.process-one.net/en/ejabberd/")
