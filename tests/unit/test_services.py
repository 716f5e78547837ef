"""Services without a network: the directory of a service room's workers, the announcement a
worker puts in its presence there, room names, and the rule for trying another worker
(only when the first provably never started the request)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from libs.bridge.errors import CallTimeout, NotConnected, RemoteError
from libs.bridge.services import (
    _REFILL_GRACE,
    RETRY_ELSEWHERE,
    SERVICE_ROOM_PREFIX,
    Announcement,
    ServiceDirectory,
    ServiceFinder,
    channel_room,
    check_service,
    service_room,
)
from libs.bridge.transport import Transport

ROOM = "qe-service.resize@conference.localhost"
A, B, C = "w@localhost/a", "w@localhost/b", "w@localhost/c"


def worker(directory: ServiceDirectory, nick: str, jid: str | None, load: int, room: str = ROOM) -> None:
    directory.occupant(room, nick, jid, Announcement("resize", load).encode(), True)


# -- Announcement ----------------------------------------------------------------------


def test_an_announcement_round_trips() -> None:
    assert Announcement.decode(Announcement("resize", 3).encode()) == Announcement("resize", 3)
    assert Announcement.decode('{"app": "resize", "load": 0, "extra": 1}') == Announcement("resize", 0)


@pytest.mark.parametrize("payload", [
    None, "", "not json", "[1, 2]", '"text"', "{}", '{"app": "resize"}', '{"load": 1}',
    '{"app": 3, "load": 1}', '{"app": "resize", "load": -1}', '{"app": "resize", "load": 1.0}',
    '{"app": "resize", "load": "1"}', '{"app": "resize", "load": true}', '{"app": "resize", "load": false}',
    '{"app": "resize", "load": null}', "[" * 100_000,
])
def test_anything_else_announces_nothing(payload: str | None) -> None:
    assert Announcement.decode(payload) is None


# -- ServiceDirectory --------------------------------------------------------------------


def test_least_loaded_first() -> None:
    directory = ServiceDirectory()
    worker(directory, "a", A, 5)
    worker(directory, "b", B, 0)
    worker(directory, "c", C, 2)
    assert directory.workers(ROOM) == [B, C, A]
    worker(directory, "b", B, 9)  # a new announcement replaces the old load
    assert directory.workers(ROOM) == [C, A, B]
    assert directory.workers(ROOM, exclude={C}) == [A, B]
    assert directory.workers("qe-service.other@conference.localhost") == []


def test_ties_are_broken_by_the_injected_random() -> None:
    ticks = itertools.cycle([0.9, 0.1])  # a (first asked) draws 0.9, b draws 0.1
    directory = ServiceDirectory(rand=lambda: next(ticks))
    worker(directory, "a", A, 1)
    worker(directory, "b", B, 1)
    assert directory.workers(ROOM) == [B, A]
    ticks = itertools.cycle([0.1, 0.9])
    assert directory.workers(ROOM) == [A, B]
    worker(directory, "c", C, 0)  # a lower load beats any tie-break
    ticks = itertools.cycle([0.9, 0.9, 0.0])
    assert directory.workers(ROOM)[0] == C


def test_our_own_calls_in_flight_count_until_done() -> None:
    directory = ServiceDirectory(rand=lambda: 0.5)
    worker(directory, "a", A, 0)
    worker(directory, "b", B, 1)
    assert directory.workers(ROOM) == [A, B]
    first = directory.sending(A)
    second = directory.sending(A)  # A: 0 announced + 2 of ours
    assert directory.workers(ROOM) == [B, A]
    first()
    assert directory.workers(ROOM) == [A, B]  # 1 vs 1: a tie, broken by the JID (rand is constant)
    second()
    assert directory.workers(ROOM) == [A, B]
    assert directory._sent == {}  # nothing left behind for a worker we stopped calling


def test_occupants_that_are_not_workers_are_ignored() -> None:
    directory = ServiceDirectory()
    worker(directory, "a", A, 0)
    directory.occupant(ROOM, "caller", "caller@localhost/x", None, True)  # a caller: no announcement
    directory.occupant(ROOM, "junk", "junk@localhost/x", "hello", True)
    worker(directory, "anon", None, 0)  # a room that hides real JIDs
    worker(directory, "bare", "bare@localhost", 0)  # no resource: cannot be called
    assert directory.workers(ROOM) == [A]


def test_a_worker_that_leaves_or_stops_announcing_is_gone() -> None:
    directory = ServiceDirectory()
    worker(directory, "a", A, 0)
    worker(directory, "b", B, 0)
    directory.occupant(ROOM, "a", A, Announcement("resize", 0).encode(), False)  # left (payload is stale)
    assert directory.workers(ROOM) == [B]
    directory.occupant(ROOM, "b", B, None, True)  # still there, no longer a worker
    assert directory.workers(ROOM) == []
    worker(directory, "a", A, 0)
    directory.forget(ROOM)
    assert directory.workers(ROOM) == []


def test_a_worker_that_did_not_answer_waits_at_the_back_until_it_speaks_again() -> None:
    directory = ServiceDirectory(rand=lambda: 0.5)
    worker(directory, "a", A, 0)
    worker(directory, "b", B, 3)
    directory.answered(A, False)  # timed out (or the server said it is offline)
    assert directory.workers(ROOM) == [B, A]  # idle as it looks, it comes last
    directory.answered(A, True)
    assert directory.workers(ROOM) == [A, B]
    directory.answered(A, False)
    worker(directory, "a", A, 0)  # it announced itself again: a live session (a rejoin)
    assert directory.workers(ROOM) == [A, B]
    directory.answered(B, False)
    directory.occupant(ROOM, "b", B, None, False)  # left: nothing of it is kept
    worker(directory, "b", B, 0)
    assert directory.workers(ROOM) == [A, B]


# -- names -------------------------------------------------------------------------------


def test_service_names() -> None:
    assert check_service("resize") == "resize"
    assert service_room("Resize.v2", "conference.example.org") == "qe-service.resize.v2@conference.example.org"
    assert service_room("a_b+c=d-e", "muc.x") == f"{SERVICE_ROOM_PREFIX}a_b+c=d-e@muc.x"
    check_service("x" * 63)
    for bad in ("", ".hidden", "-x", "+x", "a b", "a/b", "a@b", "x" * 64, "é", None, 3):
        with pytest.raises(ValueError):
            check_service(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            service_room(bad, "muc.x")  # type: ignore[arg-type]


def test_channel_rooms() -> None:
    assert channel_room("news", "conference.localhost") == "news@conference.localhost"
    assert channel_room("News", "conference.localhost") == "news@conference.localhost"
    assert channel_room("Lobby@Rooms.Example.org", "conference.localhost") == "lobby@rooms.example.org"
    for bad in ("", "a b", "a/b", "tab\there", None):
        with pytest.raises(ValueError, match="not a channel name"):
            channel_room(bad, "conference.localhost")  # type: ignore[arg-type]


def test_channel_names_cannot_take_a_service_room() -> None:
    with pytest.raises(ValueError, match="reserved for services"):
        channel_room("qe-service.resize", "conference.localhost")
    with pytest.raises(ValueError, match="reserved for services"):
        channel_room("QE-Service.resize", "conference.localhost")
    # given as a room JID it is the same room: subscribing would turn the service's worker
    # into a silent occupant (its announcement replaced) and chat would go to the service room
    with pytest.raises(ValueError, match="reserved for services"):
        channel_room("qe-service.resize@conference.localhost", "conference.localhost")


@pytest.mark.parametrize("bad", ["@conference.localhost", "news@", "a@b@c"])
def test_a_room_jid_needs_a_name_and_a_domain(bad: str) -> None:
    with pytest.raises(ValueError, match="not a channel name"):
        channel_room(bad, "conference.localhost")


# -- ServiceFinder.call --------------------------------------------------------------------


class RoomsOnly(Transport):
    """Just enough transport for ServiceFinder: joining is instant, nothing else is used."""

    jid = "caller@localhost/c"

    def __init__(self) -> None:
        self.joined: dict[str, str | None] = {}
        self.left: list[str] = []

    def join(self, room: str, nick: str, payload: str | None = None) -> None:
        self.joined[room] = payload

    async def wait_joined(self, room: str, timeout: float) -> None:
        if room not in self.joined:
            raise NotConnected(f"not joining {room}")

    def leave(self, room: str) -> None:
        self.joined.pop(room, None)
        self.left.append(room)

    def start(self) -> None: ...
    async def wait_online(self, timeout: float) -> None: ...
    @property
    def online(self) -> bool:
        return True
    def send_answer(self, answer: Any) -> None: ...
    async def request(self, to: str, text: str, timeout: float, on_progress: Any = None) -> str | None: ...
    def send_progress(self, to: str, iq_id: str, payload: str) -> None: ...
    def send_message(self, to: str, body: str) -> None: ...
    def send_group(self, room: str, body: str) -> None: ...
    async def close(self, timeout: float) -> None: ...
    def stats(self) -> dict[str, int]:
        return {}
    def watch_available(self, jid: str, callback: Any) -> Any: ...


def finder_with(*loads: tuple[str, int]) -> ServiceFinder:
    finder = ServiceFinder(RoomsOnly(), "conference.localhost", "caller@localhost/c")
    finder.directory._rand = lambda: 0.5  # ties by JID, for readable tests
    for jid, load in loads:
        worker(finder.directory, jid, jid, load)
    return finder


class Calls:
    """A fake call function: answers or raises per JID, records who was asked and what our
    directory counted as in flight to that worker meanwhile."""

    def __init__(self, finder: ServiceFinder, outcomes: dict[str, Any]) -> None:
        self.finder = finder
        self.outcomes = outcomes
        self.asked: list[str] = []
        self.in_flight: list[int] = []
        self.time_left: list[float] = []

    async def __call__(self, jid: str, time_left: float) -> dict[str, Any]:
        self.asked.append(jid)
        self.time_left.append(time_left)
        self.in_flight.append(self.finder.directory._sent.get(jid, 0))
        outcome = self.outcomes[jid]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[no-any-return]


async def test_the_least_loaded_worker_answers_and_is_counted_while_it_runs() -> None:
    finder = finder_with((A, 2), (B, 0))
    calls = Calls(finder, {A: {"from": "a"}, B: {"from": "b"}})
    assert await finder.call("resize", calls, 1.0) == {"from": "b"}
    assert calls.asked == [B] and calls.in_flight == [1]
    assert finder.directory._sent == {}
    assert ROOM in finder.transport.joined  # type: ignore[attr-defined]
    assert finder.transport.joined[ROOM] is None  # type: ignore[attr-defined]  # a caller, not a worker


@pytest.mark.parametrize("code", sorted(RETRY_ELSEWHERE))
async def test_a_worker_that_never_started_it_passes_it_on(code: str) -> None:
    assert RETRY_ELSEWHERE == {"unavailable", "busy"}
    finder = finder_with((A, 0), (B, 1), (C, 2))
    calls = Calls(finder, {A: RemoteError(code, "no"), B: RemoteError(code, "no"), C: {"ok": 1}})
    assert await finder.call("resize", calls, 1.0) == {"ok": 1}
    assert calls.asked == [A, B, C]
    assert finder.directory._sent == {}


async def test_when_every_worker_refused_the_last_refusal_is_raised() -> None:
    finder = finder_with((A, 0), (B, 1))
    calls = Calls(finder, {A: RemoteError("busy", "a"), B: RemoteError("unavailable", "b")})
    with pytest.raises(RemoteError) as err:
        await finder.call("resize", calls, 1.0)
    assert (err.value.code, calls.asked) == ("unavailable", [A, B])


async def test_a_ghost_the_server_finds_offline_is_not_asked_first_again() -> None:
    """ejabberd: an occupant whose node was killed stays in rooms hosted elsewhere, and a
    call to it gets ``unavailable`` at once. After one such answer it goes to the back; a
    worker that refused as ``busy`` is alive and keeps its place."""
    finder = finder_with((A, 0), (B, 1), (C, 2))
    calls = Calls(finder, {A: RemoteError("unavailable", "gone"), B: RemoteError("busy", "full"), C: {"ok": 1}})
    assert await finder.call("resize", calls, 1.0) == {"ok": 1}
    assert calls.asked == [A, B, C]
    assert finder.directory.workers(ROOM) == [B, C, A]
    calls.outcomes[B] = {"ok": 2}
    assert await finder.call("resize", calls, 1.0) == {"ok": 2}
    assert calls.asked == [A, B, C, B]  # the ghost was not asked first this time


@pytest.mark.parametrize("error", [
    RemoteError("interrupted", "the worker shut down"),
    RemoteError("handler-error", "boom"),
    RemoteError("expired", "late"),
    RemoteError("forbidden", "no"),
    CallTimeout("no answer"),
    NotConnected("we are offline"),
], ids=lambda e: getattr(e, "code", type(e).__name__))
async def test_a_request_that_may_have_run_is_never_sent_again(error: Exception) -> None:
    finder = finder_with((A, 0), (B, 1))
    calls = Calls(finder, {A: error, B: {"ok": 1}})
    with pytest.raises(type(error)) as err:
        await finder.call("resize", calls, 1.0)
    assert err.value is error
    assert calls.asked == [A]
    assert finder.directory._sent == {}


async def test_no_worker_is_a_lookup_error() -> None:
    finder = finder_with()
    calls = Calls(finder, {})
    with pytest.raises(LookupError, match="no worker of service 'resize'"):
        await finder.call("resize", calls, 1.0)
    assert calls.asked == []


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_directory_knows_since_when_a_room_has_no_worker() -> None:
    clock = Clock()
    directory = ServiceDirectory(clock=clock)
    assert directory.emptied_since(ROOM) is None  # never had one
    worker(directory, "a", A, 0)
    worker(directory, "b", B, 0)
    directory.occupant(ROOM, "a", A, None, False)
    assert directory.emptied_since(ROOM) is None  # b is still there
    directory.occupant(ROOM, "b", B, None, False)
    clock.now += 2.5
    assert directory.emptied_since(ROOM) == 2.5
    directory.occupant(ROOM, "caller", "c@localhost/x", None, True)  # a caller is no worker
    assert directory.emptied_since(ROOM) == 2.5
    worker(directory, "b", B, 0)
    assert directory.emptied_since(ROOM) is None
    directory.occupant(ROOM, "b", B, None, False)
    directory.forget(ROOM)
    assert directory.emptied_since(ROOM) is None


async def test_a_pool_that_just_lost_every_worker_is_waited_for_within_the_timeout() -> None:
    """Failover: our session is new and the rejoined room listed nobody yet (or the only
    worker restarts); the call goes to the first worker that comes back."""
    finder = finder_with((A, 0))
    finder.occupant(ROOM, A, A, None, False)  # gone, with every other one
    calls = Calls(finder, {B: {"from": "b"}})
    call = asyncio.create_task(finder.call("resize", calls, 5.0))
    for _ in range(100):  # let the call look, find nobody and start waiting (no clock involved)
        if ROOM in finder._arrivals:
            break
        await asyncio.sleep(0)
    assert ROOM in finder._arrivals and not call.done() and calls.asked == []
    finder.occupant(ROOM, B, B, Announcement("resize", 0).encode(), True)
    assert await asyncio.wait_for(call, 1.0) == {"from": "b"}
    assert calls.asked == [B]


async def test_the_wait_is_bounded_by_the_timeout_and_the_grace_and_an_old_loss_fails_at_once() -> None:
    clock = Clock()
    finder = finder_with((A, 0))
    finder.directory._clock = clock
    waits: list[float] = []

    async def nobody_comes(room: str, timeout: float) -> None:
        assert room == ROOM
        waits.append(timeout)

    finder._worker_arrives = nobody_comes  # type: ignore[method-assign]
    finder.occupant(ROOM, A, A, None, False)
    with pytest.raises(LookupError):
        await finder.call("resize", Calls(finder, {}), 0.05)
    assert len(waits) == 1 and 0 < waits[0] <= 0.05  # never past the call's own timeout
    clock.now += 3.0
    with pytest.raises(LookupError):
        await finder.call("resize", Calls(finder, {}), 30.0)
    assert waits[1] == pytest.approx(_REFILL_GRACE - 3.0)  # what is left of the grace, once
    clock.now += 60  # the pool has been empty for a minute: not a failover
    with pytest.raises(LookupError):
        await finder.call("resize", Calls(finder, {}), 30.0)
    assert len(waits) == 2


async def test_resource_picks_the_worker_with_that_resource() -> None:
    finder = finder_with((A, 0), (B, 5))
    calls = Calls(finder, {A: {"from": "a"}, B: {"from": "b"}})
    assert await finder.call("resize", calls, 1.0, resource="b") == {"from": "b"}
    assert calls.asked == [B]
    with pytest.raises(LookupError):
        await finder.call("resize", calls, 1.0, resource="zzz")
    calls.outcomes[B] = RemoteError("unavailable", "gone")  # no other worker has that resource
    with pytest.raises(RemoteError):
        await finder.call("resize", calls, 1.0, resource="b")
    assert calls.asked == [B, B]


async def test_announce_and_withdraw_join_and_leave_the_room() -> None:
    finder = finder_with((A, 0))
    transport: RoomsOnly = finder.transport  # type: ignore[assignment]
    finder.announce("resize", 4)
    assert Announcement.decode(transport.joined[ROOM]) == Announcement("resize", 4)
    finder.withdraw("resize")
    assert ROOM not in transport.joined and transport.left == [ROOM]
    assert finder.directory.workers(ROOM) == []  # what we knew of the room is dropped
    assert await asyncio.wait_for(finder.find("resize", 1.0), 1) == []  # joined again to watch
    assert transport.joined[ROOM] is None
