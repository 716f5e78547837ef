"""Hostile callers on the live server: a flood from one caller does not starve the owner; a
stranger cannot use, schedule on, or watch a worker it is not allowed on; and callers of a
public worker cannot reach each other's jobs, notifications or answers.

Covered elsewhere, not repeated here:
- a stranger's call to a non-public worker is ``forbidden`` and never reaches the handler:
  tests/integration/test_bridge.py::test_access_owner_allowed_stranger;
- a stranger cannot ``schedule``; an allowed caller cannot cancel the owner's job:
  tests/integration/test_scheduling.py::test_access_rules_for_scheduling;
- a spoofed ``from`` (owner, allowed user, the worker itself, the server) is rewritten by
  Prosody and refused: tests/reliability/test_hostile_input.py (10,000-stanza run).
"""

from __future__ import annotations

import asyncio
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from libs.bridge import App, Client, RemoteError, load_config
from libs.bridge.access import bare_jid
from libs.bridge.protocol import NS, decode_result, encode_request
from libs.scheduling import JobScheduler, JobStore, RemoteWorker
from tests.support.accounts import Account, account_env, logged_in, new_account, xmpp_of


@pytest.mark.timeout(30)
async def test_flood_from_one_caller_does_not_starve_the_owner(prosody, accounts, login):
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_MAX_PER_CALLER": "8"}
    app = App(resource="flooded", public=True, config=load_config(env), exit_on_fatal=False, keepalive=0)
    release = asyncio.Event()

    async def onapi(specs):
        if specs.cmd == "hold":
            await release.wait()  # each flood call occupies a slot until released
        return {"ok": specs.cmd}

    app.xmpp.onapi = onapi
    try:
        await app.wait_online(10)
        stranger = await login("stranger")
        flood = [asyncio.ensure_future(stranger.call(app.jid, "hold", timeout=20)) for _ in range(200)]
        busy = 0
        for done in asyncio.as_completed(flood[:]):
            try:
                await asyncio.wait_for(done, 10)
            except RemoteError as exc:
                assert exc.code == "busy"
                busy += 1
            if busy == 192:  # every call beyond the 8 running ones was refused at once
                break
        assert app.dispatcher.stats.in_flight == 8
        owner = await login("worker")
        answers = await asyncio.gather(*(owner.call(app.jid, "work", timeout=5) for _ in range(20)))
        assert answers == [{"ok": "work"}] * 20  # served while the stranger's 8 still hold
        release.set()
        held = [f for f in flood if not f.done()]
        assert [await f for f in held] == [{"ok": "hold"}] * 8
    finally:
        release.set()
        await app.close(2)


# -- helpers ---------------------------------------------------------------------------------


class Inbox:
    """Stanzas of one tag that reach ``client``, in arrival order, filtered by ``keep``;
    ``wait(predicate)`` awaits one (bounded) instead of sleeping."""

    def __init__(self, client: Client, tag: str, keep: Callable[[Any], Any]) -> None:
        self.items: list[Any] = []
        self._keep = keep
        self._changed = asyncio.Event()
        xmpp_of(client).register_handler(
            Callback(f"inbox-{tag}-{id(self)}", MatchXPath(f"{{jabber:client}}{tag}"), self._on_stanza))

    def _on_stanza(self, stanza: Any) -> None:
        item = self._keep(stanza)
        if item is not None:
            self.items.append(item)
            self._changed.set()

    async def wait(self, predicate: Callable[[list[Any]], bool], timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.items):
                self._changed.clear()
                await self._changed.wait()


def presences_from(client: Client, account: str) -> Inbox:
    """``(type, status)`` of each presence from ``account`` (any resource); type ``available``
    when the stanza has none."""
    return Inbox(client, "presence", lambda p: (p.xml.get("type") or "available", p["status"])
                 if str(p["from"].bare) == account else None)


def notes_from(client: Client, worker: str) -> Inbox:
    """The job notifications (JSON chat messages) ``worker`` sends to ``client``."""
    return Inbox(client, "message", lambda m: json.loads(m["body"]) if str(m["from"]) == worker else None)


def answers_to(client: Client) -> Inbox:
    """``(id, type, <api/> text, sender)`` of each IQ result or error ``client`` receives."""
    def keep(iq: Any) -> tuple[str, str, str | None, str] | None:
        if iq.xml.get("type") not in ("result", "error"):
            return None
        api = iq.xml.find(f"{{{NS}}}api")
        return iq.xml.get("id"), iq.xml.get("type"), None if api is None else api.text, str(iq["from"])
    return Inbox(client, "iq", keep)


def send_iq(client: Client, to: str, iq_id: str, text: str, *, iq_type: str = "set", claim_from: str = "") -> None:
    """An IQ with an id of our choosing (the hostile part), through slixmpp's normal send path."""
    xmpp = xmpp_of(client)
    iq = xmpp.Iq(stype=iq_type, sto=to)
    iq["id"] = iq_id
    if claim_from:
        iq["from"] = claim_from  # Prosody overwrites it; sent anyway, as an attacker would
    api = ET.Element(f"{{{NS}}}api")
    api.text = text
    iq.xml.append(api)
    xmpp.send(iq)


async def roster(peer: Client | App) -> dict[str, tuple[str, str]]:
    """The account's roster as the server keeps it: bare JID -> (subscription, ask).

    Asked without a roster version (slixmpp's ``get_roster`` sends one, and the server then
    answers "unchanged" with no items)."""
    answer = await xmpp_of(peer).make_iq_get(queryxmlns="jabber:iq:roster").send(timeout=5)
    return {str(jid): (item.get("subscription") or "none", item.get("ask") or "")
            for jid, item in answer["roster"]["items"].items()}


def shared(accounts: dict[str, tuple[str, str]], name: str) -> Account:
    return Account(*accounts[name])


@dataclass
class Gate:
    """A command that holds every call until the test opens the gate, so that requests of
    several callers are in flight at once; ``entered`` gets each caller's bare JID."""

    entered: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    async def handler(self, specs: Any) -> dict[str, Any]:
        await self.entered.put(specs.uid)
        await self.opened.wait()
        return {"for": specs.uid}

    async def wait_entered(self, count: int) -> list[str]:
        return [await asyncio.wait_for(self.entered.get(), 5) for _ in range(count)]


@asynccontextmanager
async def worker_with_jobs(prosody, accounts, tmp_path, *, public: bool,
                           allow: str = "") -> AsyncIterator[tuple[App, Gate]]:
    """The ``worker`` account as ``/jobs`` (``allow``: QE_ALLOW) with a job scheduler, a
    ``tick`` command answering ``{"for": caller}`` and a ``gated`` one (the ``Gate``)."""
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_ALLOW": allow}
    app = App(resource="jobs", public=public, config=load_config(env), exit_on_fatal=False, keepalive=0)
    JobScheduler(app, JobStore(tmp_path / "jobs.sqlite3"))
    gate = Gate()

    @app.command("tick")
    async def tick(specs: Any) -> dict[str, Any]:
        return {"for": specs.uid}

    app.command("gated")(gate.handler)
    try:
        await app.wait_online(10)
        yield app, gate
    finally:
        gate.opened.set()
        await app.close(2)


# -- a stranger against a non-public worker ---------------------------------------------------


@pytest.mark.timeout(30)
async def test_a_stranger_cannot_list_or_cancel_jobs_even_with_a_real_job_id(prosody, accounts, tmp_path):
    async with (
        worker_with_jobs(prosody, accounts, tmp_path, public=False, allow=accounts["client"][0]) as (app, _gate),
        logged_in(prosody, shared(accounts, "client")) as client,
        logged_in(prosody, shared(accounts, "stranger")) as stranger,
    ):
        job = await RemoteWorker(client, app.jid).every("10s").call("tick")
        remote = RemoteWorker(stranger, app.jid)
        attempts: dict[str, Callable[[], Awaitable[object]]] = {
            "jobs": remote.jobs,
            "cancel a real id": lambda: remote.cancel(job.id),  # as if leaked or guessed right
            "cancel a guessed id": lambda: remote.cancel("AAAAAAAAAAAA"),
        }
        for what, attempt in attempts.items():
            with pytest.raises(RemoteError) as info:
                await attempt()
            # the same answer whether the id exists or not: a stranger learns nothing
            assert info.value.code == "forbidden", what
        assert [(j["job"], j["status"]) for j in await RemoteWorker(client, app.jid).jobs()] == [(job.id, "active")]
        await job.cancel()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("public", [False, True])
async def test_a_stranger_cannot_subscribe_to_the_workers_presence(prosody, public):
    """The allowed account's subscription is accepted and it gets the worker's presence; the
    stranger's is refused, its roster says so, and it never sees the worker online, not even
    when the worker announces a new presence to its subscribers (a public worker too)."""
    worker, friend, snoop = (new_account(prosody, name) for name in ("watched", "friend", "snoop"))
    config = load_config(account_env(prosody, worker, QE_ALLOW=friend.jid))
    app = App(resource="watched", public=public, config=config, exit_on_fatal=False, keepalive=0)
    try:
        await app.wait_online(10)
        async with logged_in(prosody, friend) as friend_client, logged_in(prosody, snoop) as stranger:
            seen_by_friend = presences_from(friend_client, worker.jid)
            seen_by_stranger = presences_from(stranger, worker.jid)
            for client in (friend_client, stranger):  # an "interested resource": gets subscription answers
                await roster(client)

            xmpp_of(stranger).send_presence(pto=worker.jid, ptype="subscribe")
            await seen_by_stranger.wait(lambda items: ("unsubscribed", "") in items)  # the worker refused
            xmpp_of(stranger).send_presence(pto=worker.jid, ptype="probe")

            xmpp_of(friend_client).send_presence(pto=worker.jid, ptype="subscribe")
            await seen_by_friend.wait(lambda items: ("subscribed", "") in items)
            await seen_by_friend.wait(lambda items: any(kind == "available" for kind, _ in items))
            # positive control: a new presence of the worker reaches its subscriber...
            xmpp_of(app).send_presence(pstatus="busy now")
            await seen_by_friend.wait(lambda items: ("available", "busy now") in items)
            # ...and a round trip on the stranger's stream after it: had Prosody sent the
            # stranger that presence too, it would be ahead of this answer
            stranger_roster = await roster(stranger)

            assert stranger_roster[worker.jid] == ("none", "")  # not subscribed, nothing pending
            assert {kind for kind, _ in seen_by_stranger.items} <= {"unsubscribed", "unavailable"}, seen_by_stranger.items
            assert (await roster(friend_client))[worker.jid] == ("to", "")
            # the worker's own roster on the server grants the stranger nothing
            worker_roster = await roster(app)
            assert worker_roster[friend.jid] == ("from", "")
            assert snoop.jid not in worker_roster
    finally:
        await app.close(2)


# -- callers of a public worker against each other ---------------------------------------------


@pytest.mark.timeout(30)
async def test_callers_cannot_list_cancel_or_receive_each_others_jobs(prosody, accounts, tmp_path):
    async with (
        worker_with_jobs(prosody, accounts, tmp_path, public=True) as (app, _gate),
        logged_in(prosody, shared(accounts, "client")) as alice,
        logged_in(prosody, shared(accounts, "stranger")) as bob,
    ):
        alice_notes, bob_notes = notes_from(alice, app.jid), notes_from(bob, app.jid)
        alices = await RemoteWorker(alice, app.jid).every("200ms").call("tick", notify=True)
        bobs = await RemoteWorker(bob, app.jid).every("200ms").call("tick", notify=True)
        as_bob = RemoteWorker(bob, app.jid)
        assert [job["job"] for job in await as_bob.jobs()] == [bobs.id]
        with pytest.raises(RemoteError) as info:
            await as_bob.cancel(alices.id)
        assert info.value.code == "not-found"  # the same answer as for an id that never existed

        await alice_notes.wait(lambda notes: len(notes) >= 3)
        # Bob's next note leaves the worker after Alice's third: had any of hers gone to Bob,
        # it would have reached him before this one
        seen = len(bob_notes.items)
        await bob_notes.wait(lambda notes: len(notes) > seen)
        alice_jid, bob_jid = bare_jid(alice.transport.jid), bare_jid(bob.transport.jid)
        assert {(n["job"], n["result"]["for"]) for n in alice_notes.items} == {(alices.id, alice_jid)}
        assert {(n["job"], n["result"]["for"]) for n in bob_notes.items} == {(bobs.id, bob_jid)}
        assert (await alices.info())["status"] == "active"  # Bob's cancel changed nothing
        await alices.cancel()
        await bobs.cancel()


@pytest.mark.timeout(30)
async def test_a_duplicated_request_id_gets_each_caller_only_its_own_answer(prosody, accounts, tmp_path):
    async with (
        worker_with_jobs(prosody, accounts, tmp_path, public=True) as (app, gate),
        logged_in(prosody, shared(accounts, "client")) as alice,
        logged_in(prosody, shared(accounts, "stranger")) as bob,
    ):
        alice_got, bob_got = answers_to(alice), answers_to(bob)
        send_iq(alice, app.jid, "req-1", encode_request("gated"))
        assert await gate.wait_entered(1) == [bare_jid(alice.transport.jid)]
        send_iq(bob, app.jid, "req-1", encode_request("gated"))  # Bob guessed Alice's id
        assert await gate.wait_entered(1) == [bare_jid(bob.transport.jid)]  # both in flight now
        gate.opened.set()
        await alice_got.wait(lambda items: any(i[0] == "req-1" for i in items))
        await bob_got.wait(lambda items: any(i[0] == "req-1" for i in items))
        # a round trip on each stream after both answers: a second answer would be ahead of it
        assert await bob.call(app.jid, "ping", timeout=5) == {"pong": True, "environment": "python"}
        assert await alice.call(app.jid, "ping", timeout=5) == {"pong": True, "environment": "python"}
        for client, got in ((alice, alice_got), (bob, bob_got)):
            answers = [(kind, decode_result(text), sender) for iq_id, kind, text, sender in got.items if iq_id == "req-1"]
            assert answers == [("result", {"for": bare_jid(client.transport.jid)}, app.jid)]


@pytest.mark.timeout(30)
@pytest.mark.prosody_only("Prosody stamps the sender's JID on a forged 'from'; ejabberd closes the forger's stream (invalid-from)")
async def test_a_forged_answer_with_the_right_id_does_not_reach_the_caller(prosody, accounts, tmp_path):
    """Bob knows the id of Alice's call in flight and answers it himself, claiming to be the
    worker: Alice's client takes only the worker's answer (Prosody stamps Bob's JID on his).

    Alice's transport takes answers to her calls before any other handler sees them, so the
    forgeries are observed through the line it logs for each one it ignores."""
    ignored = _IgnoredAnswers()
    xmpp_log = logging.getLogger("libs.bridge.xmpp")
    xmpp_log.addHandler(ignored)
    try:
        async with (
            worker_with_jobs(prosody, accounts, tmp_path, public=True) as (app, gate),
            logged_in(prosody, shared(accounts, "client")) as alice,
            logged_in(prosody, shared(accounts, "stranger")) as bob,
        ):
            call = asyncio.ensure_future(alice.call(app.jid, "gated", timeout=10))
            try:
                await gate.wait_entered(1)
                (call_id,) = alice.transport._pending  # the one call in flight
                forged = json.dumps({"for": "bob says hi"})
                send_iq(bob, alice.transport.jid, call_id, forged, iq_type="result", claim_from=app.jid)
                send_iq(bob, alice.transport.jid, call_id, forged, iq_type="error", claim_from=app.jid)
                lines = await ignored.wait_for(f"ignored an answer to {call_id} ", 2)
                assert all(f" from {bob.transport.jid} " in line for line in lines)  # Prosody stamped Bob
                assert not call.done()  # neither forgery ended the call
                gate.opened.set()
                assert await asyncio.wait_for(call, 5) == {"for": bare_jid(alice.transport.jid)}
            finally:
                call.cancel()
    finally:
        xmpp_log.removeHandler(ignored)


class _IgnoredAnswers(logging.Handler):
    """Collects the adapter's log lines, so a test can await one instead of sleeping."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self._changed.set()

    async def wait_for(self, prefix: str, count: int, timeout: float = 5) -> list[str]:
        async with asyncio.timeout(timeout):
            while len(found := [line for line in self.lines if line.startswith(prefix)]) < count:
                self._changed.clear()
                await self._changed.wait()
        return found
