"""XEP-0030 disco of a worker: the answers (``_disco``, pure) and the adapter taking queries in
its incoming filter, on a slixmpp client fed by hand (no server)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest

from libs.bridge.access import AccessPolicy, Role
from libs.bridge.protocol import NS
from libs.bridge.xmpp import _disco
from tests.support.offline import Offline, detach, feed

INFO, ITEMS = _disco.INFO_NS, _disco.ITEMS_NS
WORKER = "worker@localhost/python"
COMMANDS = [
    {"name": "echo", "description": "the body, unchanged", "access": "user", "schema": {"type": "object"}},
    {"name": "ping", "description": "", "access": "user", "schema": {}},
]
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def query(kind: str, node: str | None = None) -> _disco.Query:
    return _disco.Query(kind, node)  # type: ignore[arg-type]


# -- the answers ---------------------------------------------------------------------------------


def test_info_of_the_worker_is_a_bot_speaking_our_protocol() -> None:
    result = _disco.answer(query("info"), WORKER, COMMANDS)
    assert isinstance(result, ET.Element) and result.tag == f"{{{INFO}}}query" and result.get("node") is None
    (identity,) = result.findall(f"{{{INFO}}}identity")
    assert identity.attrib == {"category": "client", "type": "bot", "name": "qe-worker"}
    assert [f.get("var") for f in result.findall(f"{{{INFO}}}feature")] == [INFO, ITEMS, NS]


def test_info_is_the_same_whatever_commands_the_requester_sees() -> None:
    assert ET.tostring(_disco.answer(query("info"), WORKER, [])) == \
        ET.tostring(_disco.answer(query("info"), WORKER, COMMANDS))  # type: ignore[arg-type]


def test_items_are_the_commands_with_their_descriptions() -> None:
    result = _disco.answer(query("items"), WORKER, COMMANDS)
    assert isinstance(result, ET.Element) and result.tag == f"{{{ITEMS}}}query"
    assert [i.attrib for i in result] == [
        {"jid": WORKER, "node": "echo", "name": "the body, unchanged"},
        {"jid": WORKER, "node": "ping"},  # no description: no name
    ]


def test_a_command_node_has_its_own_identity_and_no_items() -> None:
    info = _disco.answer(query("info", "echo"), WORKER, COMMANDS)
    assert isinstance(info, ET.Element) and info.get("node") == "echo"
    assert [i.attrib for i in info.findall(f"{{{INFO}}}identity")] == [
        {"category": "automation", "type": "command-node", "name": "the body, unchanged"}]
    assert [f.get("var") for f in info.findall(f"{{{INFO}}}feature")] == [INFO, NS]
    items = _disco.answer(query("items", "ping"), WORKER, COMMANDS)
    assert isinstance(items, ET.Element) and items.get("node") == "ping" and len(items) == 0


@pytest.mark.parametrize("kind", ["info", "items"])
def test_a_node_not_listed_is_item_not_found(kind: str) -> None:
    assert _disco.answer(query(kind, "secret"), WORKER, COMMANDS) == _disco.Refused("item-not-found")


@pytest.mark.parametrize("kind", ["info", "items"])
@pytest.mark.parametrize("node", [None, "echo"])
def test_a_requester_who_may_not_call_gets_service_unavailable(kind: str, node: str | None) -> None:
    assert _disco.answer(query(kind, node), WORKER, None) == _disco.Refused("service-unavailable")


@pytest.mark.parametrize(("xml", "expected"), [
    (f"<iq><query xmlns='{INFO}'/></iq>", _disco.Query("info")),
    (f"<iq><query xmlns='{ITEMS}' node='echo'/></iq>", _disco.Query("items", "echo")),
    (f"<iq><query xmlns='{INFO}' node=''/></iq>", _disco.Query("info")),
    ("<iq><query xmlns='jabber:iq:version'/></iq>", None),
    (f"<iq><query xmlns='{INFO}'/><query xmlns='{ITEMS}'/></iq>", None),
    ("<iq/>", None),
])
def test_parse_query(xml: str, expected: _disco.Query | None) -> None:
    assert _disco.parse_query(ET.fromstring(xml)) == expected


# -- the adapter -----------------------------------------------------------------------------------


class Describer:
    """``Transport.describe`` as App gives it: the policy decides, then the role's commands."""

    def __init__(self, public: bool = False) -> None:
        self.policy = AccessPolicy.create(WORKER, public=public, allow=["friend@localhost"])
        self.asked: list[str] = []

    def __call__(self, sender: str) -> list[dict[str, Any]] | None:
        self.asked.append(sender)
        role = self.policy.role_of(sender)
        if role is None:
            return None
        return COMMANDS + ([{"name": "secret", "description": "owner only", "access": "owner", "schema": {}}]
                           if role is Role.OWNER else [])


@pytest.fixture
async def offline() -> AsyncIterator[Offline]:
    o = Offline()
    o.transport.describe = Describer()
    yield o
    await detach(o.client)


def disco_iq(kind: str, sender: str, node: str | None = None, iq_id: str = "d1", iq_type: str = "get") -> str:
    ns = INFO if kind == "info" else ITEMS
    node_attr = f" node='{node}'" if node else ""
    return f"<iq type='{iq_type}' id='{iq_id}' from='{sender}' to='{WORKER}'><query xmlns='{ns}'{node_attr}/></iq>"


async def test_disco_info_is_answered_before_slixmpps_handlers(offline: Offline) -> None:
    feed(offline.client, disco_iq("info", "friend@localhost/phone"))
    (reply,) = await offline.sock.wait_for(1)
    assert (reply.get("type"), reply.get("id"), reply.get("to")) == ("result", "d1", "friend@localhost/phone")
    features = [f.get("var") for f in reply.findall(f"{{{INFO}}}query/{{{INFO}}}feature")]
    assert NS in features
    assert offline.seen_by_handlers == []


async def test_disco_items_list_what_the_requester_may_run(offline: Offline) -> None:
    feed(offline.client, disco_iq("items", "friend@localhost/phone", iq_id="f"))
    feed(offline.client, disco_iq("items", "worker@localhost/laptop", iq_id="o"))
    friend, owner = await offline.sock.wait_for(2)
    assert [i.get("node") for i in friend.iter(f"{{{ITEMS}}}item")] == ["echo", "ping"]
    assert [i.get("node") for i in owner.iter(f"{{{ITEMS}}}item")] == ["echo", "ping", "secret"]
    feed(offline.client, disco_iq("info", "friend@localhost/phone", node="secret", iq_id="s"))
    replies = await offline.sock.wait_for(3)
    assert replies[2].get("type") == "error"
    assert replies[2].find(f"error/{{{STANZAS}}}item-not-found") is not None


@pytest.mark.parametrize("kind", ["info", "items"])
async def test_a_stranger_of_a_private_worker_gets_service_unavailable(offline: Offline, kind: str) -> None:
    feed(offline.client, disco_iq(kind, "stranger@elsewhere/x"))
    (reply,) = await offline.sock.wait_for(1)
    assert reply.get("type") == "error" and reply.get("to") == "stranger@elsewhere/x"
    error = reply.find("error")
    assert error is not None and error.get("type") == "cancel"
    assert error.find(f"{{{STANZAS}}}service-unavailable") is not None
    assert len(error) == 1  # no text, no <api/>: nothing but the condition
    assert offline.transport.describe.asked == ["stranger@elsewhere/x"]  # type: ignore[union-attr]


async def test_a_public_worker_answers_strangers(offline: Offline) -> None:
    offline.transport.describe = Describer(public=True)
    feed(offline.client, disco_iq("items", "stranger@elsewhere/x"))
    (reply,) = await offline.sock.wait_for(1)
    assert [i.get("node") for i in reply.iter(f"{{{ITEMS}}}item")] == ["echo", "ping"]


async def test_without_describe_slixmpp_answers_disco_as_before(offline: Offline) -> None:
    offline.transport.describe = None
    feed(offline.client, disco_iq("info", "friend@localhost/phone"))
    (reply,) = await offline.sock.wait_for(1)
    assert reply.find(f"error/{{{STANZAS}}}feature-not-implemented") is not None
    assert len(offline.seen_by_handlers) == 1


async def test_a_disco_set_or_another_query_goes_through_slixmpp(offline: Offline) -> None:
    feed(offline.client, disco_iq("info", "friend@localhost/phone", iq_type="set", iq_id="s"))
    feed(offline.client, "<iq type='get' id='v' from='friend@localhost/phone'><query xmlns='jabber:iq:version'/></iq>")
    replies = await offline.sock.wait_for(2)
    assert [r.get("id") for r in replies] == ["s", "v"]
    assert all(r.find(f"error/{{{STANZAS}}}feature-not-implemented") is not None for r in replies)
    assert offline.transport.describe.asked == []  # type: ignore[union-attr]


async def test_a_failing_describe_gets_an_error_reply_and_the_stream_goes_on(offline: Offline) -> None:
    def broken(sender: str) -> list[dict[str, Any]] | None:
        raise RuntimeError("bug")

    offline.transport.describe = broken
    feed(offline.client, disco_iq("info", "friend@localhost/phone", iq_id="bad"))
    (reply,) = await offline.sock.wait_for(1)
    assert reply.get("id") == "bad" and reply.get("type") == "error"
    offline.transport.describe = Describer()
    feed(offline.client, disco_iq("info", "friend@localhost/phone", iq_id="good"))
    replies = await offline.sock.wait_for(2)
    assert replies[1].get("type") == "result"


def test_with_adhoc_the_worker_lists_the_commands_node_and_each_node_the_xep_0050_features() -> None:
    commands_ns = _disco.COMMANDS_NODE
    info = _disco.answer(query("info"), WORKER, COMMANDS, adhoc=True)
    assert isinstance(info, ET.Element)
    assert [f.get("var") for f in info.findall(f"{{{INFO}}}feature")] == [INFO, ITEMS, NS, commands_ns]
    items = _disco.answer(query("items", commands_ns), WORKER, COMMANDS, adhoc=True)
    assert isinstance(items, ET.Element) and items.get("node") == commands_ns
    assert [i.attrib for i in items.findall(f"{{{ITEMS}}}item")] == [
        {"jid": WORKER, "node": "echo", "name": "the body, unchanged"}, {"jid": WORKER, "node": "ping", "name": "ping"}]
    listing = _disco.answer(query("info", commands_ns), WORKER, COMMANDS, adhoc=True)
    assert isinstance(listing, ET.Element)
    assert listing.find(f"{{{INFO}}}identity").attrib["type"] == "command-list"  # type: ignore[union-attr]
    node = _disco.answer(query("info", "echo"), WORKER, COMMANDS, adhoc=True)
    assert isinstance(node, ET.Element)
    assert [f.get("var") for f in node.findall(f"{{{INFO}}}feature")] == [INFO, NS, commands_ns, "jabber:x:data"]
    assert _disco.answer(query("items", commands_ns), WORKER, None, adhoc=True) == _disco.Refused("service-unavailable")
    without = _disco.answer(query("items", commands_ns), WORKER, COMMANDS)  # no ad-hoc: no such node
    assert without == _disco.Refused("item-not-found")
