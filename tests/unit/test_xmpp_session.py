"""The XMPP session's life as a table (``libs.bridge.xmpp._session``): every state and event,
without a server. The integration and reliability suites check that the adapter carries the
actions out on a real Prosody; this checks the rules themselves, pair by pair."""

from __future__ import annotations

import itertools

import pytest

from libs.bridge.errors import AuthenticationFailed, NotConnected
from libs.bridge.transport import Backoff
from libs.bridge.xmpp._session import Abort, Connect, Event, Fail, Log, Offline, Online, Retry, Session, State

STATES = list(State)
EVENTS = list(Event)


def session(state: State = State.IDLE, *, sessions: int = 0, **kwargs: object) -> Session:
    s = Session(server="127.0.0.1:5222", account="w@localhost", servers=(("127.0.0.1", 5222),), backoff=Backoff(rand=lambda: 0.0), **kwargs)  # type: ignore[arg-type]
    s.state, s.sessions = state, sessions
    return s


def kinds(actions: list[object]) -> list[type]:
    return [type(a) for a in actions]


@pytest.mark.parametrize(("state", "event"), list(itertools.product([State.CLOSED, State.FAILED], EVENTS)))
def test_nothing_moves_a_closed_or_failed_session(state: State, event: Event) -> None:
    s = session(state, sessions=1)
    assert s.handle(event, now=100.0, detail="x", encrypted=True) == []
    assert s.state is state


@pytest.mark.parametrize("state", [State.IDLE, State.CONNECTING, State.ONLINE, State.WAITING])
def test_close_from_any_live_state(state: State) -> None:
    s = session(state)
    assert s.handle(Event.CLOSE) == [Offline()]
    assert s.state is State.CLOSED


@pytest.mark.parametrize("state", STATES)
def test_start_connects_only_from_idle(state: State) -> None:
    s = session(state)
    actions = s.handle(Event.START)
    if state is State.IDLE:
        assert actions == [Connect("127.0.0.1", 5222)] and s.state is State.CONNECTING
    else:
        assert actions == [] and s.state is state


@pytest.mark.parametrize("state", STATES)
def test_a_retry_connects_only_while_waiting(state: State) -> None:
    s = session(state)
    actions = s.handle(Event.RETRY_DUE)
    if state is State.WAITING:
        assert actions == [Connect("127.0.0.1", 5222)] and s.state is State.CONNECTING
    else:
        assert actions == [] and s.state is state


def test_a_new_session_counts_resets_the_backoff_and_the_refusal_clock() -> None:
    s = session(State.CONNECTING)
    s.backoff.attempts = 5
    s._refused_since = 3.0
    assert s.handle(Event.SESSION_STARTED, encrypted=False) == [Online(resumed=False)]
    assert (s.state, s.sessions, s.resumptions, s.backoff.attempts, s._refused_since) == (State.ONLINE, 1, 0, 0, None)
    assert s.handle(Event.SESSION_RESUMED) == [Online(resumed=True)]
    assert (s.sessions, s.resumptions) == (1, 1)


def test_required_tls_without_it_is_fatal() -> None:
    s = session(State.CONNECTING, require_tls=True)
    actions = s.handle(Event.SESSION_STARTED, encrypted=False)
    assert kinds(actions) == [Offline, Fail] and s.state is State.FAILED and s.sessions == 0
    assert "QE_TLS=required" in actions[1].reason and s.fatal_kind is AuthenticationFailed
    ok = session(State.CONNECTING, require_tls=True)
    assert ok.handle(Event.SESSION_STARTED, encrypted=True) == [Online(resumed=False)]


@pytest.mark.parametrize("state", [State.CONNECTING, State.ONLINE])
def test_a_lost_link_schedules_one_retry_with_the_backoff(state: State) -> None:
    s = session(state, sessions=1)
    assert s.handle(Event.DISCONNECTED, detail="reset") == [Offline(), Retry(0.1, "disconnected (reset)")]
    assert s.state is State.WAITING
    assert s.handle(Event.DISCONNECTED) == []  # one retry at a time
    assert s.handle(Event.RETRY_DUE) == [Connect("127.0.0.1", 5222)]
    assert s.handle(Event.CONNECT_FAILED, detail="refused") == [
        Offline(), Retry(0.2, "cannot reach 127.0.0.1:5222 (refused)")]  # the next delay doubles


@pytest.mark.parametrize(("fail_fast", "sessions", "fatal"), [(True, 0, True), (True, 1, False),
                                                               (False, 0, False)])
def test_an_unreachable_server_is_fatal_only_for_a_client_before_its_first_session(
        fail_fast: bool, sessions: int, fatal: bool) -> None:
    s = session(State.CONNECTING, sessions=sessions, fail_fast=fail_fast)
    actions = s.handle(Event.CONNECT_FAILED, detail="refused")
    if fatal:
        assert kinds(actions) == [Offline, Fail] and s.fatal_kind is NotConnected
    else:
        assert kinds(actions) == [Offline, Retry] and s.state is State.WAITING


@pytest.mark.parametrize(("refused", "words"), [(True, "refused the password for w@localhost"),
                                                 (False, "no login method we accept")])
def test_a_refused_login_at_first_is_fatal_and_says_why(refused: bool, words: str) -> None:
    s = session(State.CONNECTING)
    if refused:
        assert s.handle(Event.MECHANISM_REFUSED) == []
    actions = s.handle(Event.AUTH_FAILED)
    assert kinds(actions) == [Offline, Fail] and words in actions[1].reason


def test_a_refused_login_on_reconnect_gets_the_grace_then_is_fatal() -> None:
    s = session(State.CONNECTING, sessions=1, auth_grace=10.0)
    s.handle(Event.MECHANISM_REFUSED)
    first = s.handle(Event.AUTH_FAILED, now=100.0)
    assert kinds(first) == [Log, Abort] and "QE_AUTH_GRACE" in first[0].message  # said once
    s.handle(Event.MECHANISM_REFUSED)
    assert s.handle(Event.AUTH_FAILED, now=109.9) == [Abort()]  # within the grace: quietly again
    s.handle(Event.MECHANISM_REFUSED)
    last = s.handle(Event.AUTH_FAILED, now=110.0)
    assert kinds(last) == [Offline, Fail] and "refused at every reconnect for 10 s" in last[1].reason
    assert "refused the password" in last[1].reason and s.state is State.FAILED


def test_a_session_in_between_restarts_the_grace() -> None:
    s = session(State.CONNECTING, sessions=1, auth_grace=10.0)
    s.handle(Event.AUTH_FAILED, now=100.0)
    s.handle(Event.SESSION_STARTED, encrypted=True)  # the server took us back
    s.state = State.CONNECTING
    assert kinds(s.handle(Event.AUTH_FAILED, now=200.0)) == [Log, Abort]  # a new first refusal


def test_the_password_refusal_is_decided_per_attempt() -> None:
    s = session(State.CONNECTING, sessions=1, auth_grace=0.0)
    s.handle(Event.MECHANISM_REFUSED)
    s.handle(Event.AUTH_FAILED, now=1.0)
    last = s.handle(Event.AUTH_FAILED, now=2.0)  # no mechanism refused this time
    assert "no login method" in last[1].reason


@pytest.mark.parametrize("sessions", [0, 1])
def test_an_untrusted_certificate_is_fatal_at_first_and_retried_loudly_after(sessions: int) -> None:
    s = session(State.CONNECTING, sessions=sessions)
    actions = s.handle(Event.CERT_UNTRUSTED, detail="self signed")
    if sessions == 0:
        assert kinds(actions) == [Offline, Fail] and s.fatal_kind is NotConnected
        assert "not trusted (self signed)" in actions[1].reason and "QE_CA_FILE" in actions[1].reason
    else:
        assert kinds(actions) == [Log, Abort] and actions[0].level == 40 and s.state is State.CONNECTING


@pytest.mark.parametrize("state", [State.CONNECTING, State.ONLINE, State.WAITING])
def test_a_conflict_is_fatal_from_any_live_state(state: State) -> None:
    s = session(state, sessions=1)
    actions = s.handle(Event.CONFLICT, detail="w@localhost/python")
    assert kinds(actions) == [Offline, Fail] and s.state is State.FAILED
    assert actions[1].reason == "another client logged in as w@localhost/python and took over this resource"


@pytest.mark.parametrize(("state", "event"), list(itertools.product(STATES, EVENTS)))
def test_every_pair_has_an_answer_and_fails_at_most_once(state: State, event: Event) -> None:
    """The whole table: no pair raises, a failure always comes with Offline first, and a
    session that failed reports it once, never again."""
    s = session(state, sessions=1)
    actions = s.handle(event, now=50.0, detail="d", encrypted=True)
    fails = [a for a in actions if isinstance(a, Fail)]
    assert len(fails) <= 1
    if fails:
        assert actions[0] == Offline() and s.state is State.FAILED and s.fatal == fails[0].reason
        assert all(s.handle(e, now=60.0) == [] for e in EVENTS)
