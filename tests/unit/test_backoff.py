"""Unit tests for ``libs.bridge.transport.Backoff`` with an injected random source."""

from __future__ import annotations

import random

import pytest

from libs.bridge.transport import Backoff


def delays(backoff: Backoff, n: int) -> list[float]:
    return [backoff.next_delay() for _ in range(n)]


def test_lowest_draw_is_half_the_ceiling_and_doubles_to_the_cap() -> None:
    b = Backoff(base=0.2, cap=30.0, rand=lambda: 0.0)
    got = delays(b, 12)
    expected = [min(30.0, 0.2 * 2**n) / 2 for n in range(12)]
    assert got == pytest.approx(expected)
    assert got[:3] == pytest.approx([0.1, 0.2, 0.4])
    assert got[-1] == pytest.approx(15.0)
    assert b.attempts == 12


def test_highest_draw_reaches_the_ceiling_and_stops_at_cap() -> None:
    b = Backoff(base=1.0, cap=10.0, rand=lambda: 1.0)
    assert delays(b, 7) == pytest.approx([1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0])


def test_growth_is_exponential_until_capped() -> None:
    b = Backoff(base=0.5, cap=1000.0, rand=lambda: 0.5)
    got = delays(b, 8)
    for previous, current in zip(got, got[1:]):
        assert current == pytest.approx(previous * 2)


def test_jitter_uses_the_injected_random_source() -> None:
    draws = iter([0.0, 1.0, 0.5])
    b = Backoff(base=4.0, cap=100.0, rand=lambda: next(draws))
    # ceilings 4, 8, 16 -> [2, 4], [4, 8], [8, 16]
    assert delays(b, 3) == pytest.approx([2.0, 8.0, 12.0])


@pytest.mark.parametrize("seed", range(5))
def test_never_zero_never_above_cap(seed: int) -> None:
    rng = random.Random(seed)
    b = Backoff(base=0.2, cap=5.0, rand=rng.random)
    for d in delays(b, 200):
        assert 0 < d <= 5.0
        assert d >= 0.1  # at least half the first ceiling


def test_many_attempts_do_not_overflow() -> None:
    b = Backoff(base=0.2, cap=30.0, rand=lambda: 0.999)
    got = delays(b, 5000)
    assert all(15.0 <= d <= 30.0 for d in got[-100:])
    assert b.attempts == 5000


def test_reset_restarts_from_the_base() -> None:
    b = Backoff(base=0.2, cap=30.0, rand=lambda: 0.0)
    first = delays(b, 6)
    b.reset()
    assert b.attempts == 0
    assert delays(b, 6) == first


def test_default_random_source_stays_in_bounds() -> None:
    b = Backoff(base=1.0, cap=4.0)
    got = delays(b, 50)
    assert all(0.5 <= d <= 4.0 for d in got)
    assert all(2.0 <= d <= 4.0 for d in got[2:])


def test_defaults_start_at_a_tenth_of_a_second_and_cap_at_thirty() -> None:
    b = Backoff(rand=lambda: 1.0)  # the highest draw: each delay is its ceiling
    assert (b.base, b.cap) == (0.2, 30.0)
    got = delays(b, 10)
    assert got[:4] == pytest.approx([0.2, 0.4, 0.8, 1.6])
    assert max(got) == 30.0 and got[-1] == 30.0


@pytest.mark.parametrize("event", ["_on_session_start", "_on_session_resumed"])
async def test_a_session_or_a_resumption_resets_the_backoff(event: str) -> None:
    """A link that came back is good news: the next outage starts again from the base delay
    (not from the long delays an earlier outage had reached)."""
    from libs.bridge.config import load_config
    from libs.bridge.xmpp import XmppTransport
    from tests.support.offline import attach, detach

    config = load_config({"QE_JID": "w@localhost", "QE_PASSWORD": "x", "QE_HOST": "127.0.0.1", "QE_TLS": "off"})
    transport = XmppTransport(config, "r", keepalive=0)
    transport._client = client = transport._make_client()
    attach(client)
    try:
        delays(transport.backoff, 7)
        getattr(transport, event)(None)
        assert transport.backoff.attempts == 0
        assert transport.online
    finally:
        await detach(client)
