"""Typed commands and discovery on a real Prosody (issue #14, points 1 and 2): a typed command
called over XMPP, a bad body answered ``bad-request`` naming the field, ``commands`` listed per
caller role, and XEP-0030 disco#info/items asked by a plain slixmpp client (its ``xep_0030``
plugin), strangers of a private worker refused as the docs say."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from libs.bridge import APISpecs, App, Client, RemoteError, load_config
from libs.bridge.protocol import NS
from tests.support.plain import PlainClient, plain_clients

pytestmark = pytest.mark.core  # runs on every server (./run test-ejabberd: a 2-node ejabberd cluster)

DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
BUILT_INS = ["commands", "info", "ping"]  # for everyone; "metrics" too for owner and partners
BUILT_INS_DESCRIPTIONS = {
    "metrics": "this worker's Prometheus metrics: {\"text\": <text exposition>}; with {\"format\": \"json\"} "
               "the same numbers as JSON (owner and partners only)",
    "commands": "the commands you may run here, with their descriptions and arguments (JSON Schema)",
    "info": "this worker's JID, version, uptime, commands and request counters",
    "ping": "QE's liveness check: {\"pong\": true, \"environment\": \"python\"}",
}


def install(app: App) -> None:
    @app.command("resize", description="change the size")
    async def resize(width: int, height: int = 100, *, specs: APISpecs) -> dict[str, Any]:
        return {"w": width, "h": height, "role": specs.role}

    @app.command("shared", description="for partners", access="partner")
    async def shared(n: int) -> dict[str, Any]:
        return {"n": n}

    @app.command("secret", description="owner only", access="owner")
    async def secret(specs):  # type: ignore[no-untyped-def]  # QE's legacy shape
        return {"body": specs.body}


@pytest.fixture
async def workers(prosody, accounts) -> AsyncIterator[tuple[App, App]]:
    """A private worker (allows ``client``) and a public one, both with the same commands."""
    apps = []
    for resource, public in (("typed", False), ("typed-public", True)):
        env = {**prosody.env("worker", accounts["worker"][1]), "QE_ALLOW": accounts["client"][0]}
        app = App(resource=resource, public=public, config=load_config(env), exit_on_fatal=False, keepalive=0)
        install(app)
        apps.append(app)
    for app in apps:
        await app.wait_online(10)
    yield apps[0], apps[1]
    for app in apps:
        await app.close(2)


class DiscoClient(PlainClient):
    """A plain slixmpp client with slixmpp's own XEP-0030 plugin, as any XMPP tool would ask."""

    def __init__(self, jid: str, password: str, host: str, port: int) -> None:
        super().__init__(jid, password, host, port, resource="disco", plugins=("xep_0030",))

    async def info(self, jid: str, node: str | None = None) -> Any:
        return (await self.xmpp.plugin["xep_0030"].get_info(jid=jid, node=node, timeout=5))["disco_info"]

    async def items(self, jid: str, node: str | None = None) -> Any:
        return (await self.xmpp.plugin["xep_0030"].get_items(jid=jid, node=node, timeout=5))["disco_items"]


@pytest.fixture
async def disco(prosody, accounts) -> AsyncIterator[Callable[[str], Awaitable[DiscoClient]]]:
    async with plain_clients(DiscoClient, prosody, accounts) as connect:
        yield connect


async def test_a_typed_command_over_xmpp(workers, login) -> None:
    private, _public = workers
    client: Client = await login("client")
    assert await client.call(private.jid, "resize", {"width": 3}, timeout=5) == {"w": 3, "h": 100, "role": "partner"}
    assert await client.call(private.jid, "resize", {"width": "4", "height": 5}, timeout=5) == {
        "w": 4, "h": 5, "role": "partner"}
    with pytest.raises(RemoteError) as err:
        await client.call(private.jid, "resize", {"height": 5}, timeout=5)
    assert (err.value.code, err.value.remote_message) == ("bad-request", "width: Field required")
    with pytest.raises(RemoteError) as err:
        await client.call(private.jid, "resize", {"width": 2.5, "colour": "red"}, timeout=5)
    assert err.value.code == "bad-request"
    assert err.value.remote_message == ("width: Input should be a valid integer, got a number with a fractional "
                                        "part; colour: Extra inputs are not permitted")
    with pytest.raises(RemoteError) as err:
        await client.call(private.jid, "secret", timeout=5)
    assert err.value.code == "forbidden"
    assert private.dispatcher.stats.failed == 2 and private.dispatcher.stats.forbidden == 1


async def test_commands_lists_what_each_caller_may_run(workers, login) -> None:
    private, public = workers
    owner, client, stranger = [await login(name) for name in ("worker", "client", "stranger")]

    async def names(caller: Client, app: App) -> list[str]:
        return [c["name"] for c in (await caller.call(app.jid, "commands", timeout=5))["commands"]]

    assert await names(owner, private) == sorted([*BUILT_INS, "metrics", "resize", "secret", "shared"])
    assert await names(client, private) == sorted([*BUILT_INS, "metrics", "resize", "shared"])
    assert await names(stranger, public) == sorted([*BUILT_INS, "resize"])
    with pytest.raises(RemoteError) as err:
        await stranger.call(private.jid, "commands", timeout=5)
    assert err.value.code == "forbidden"  # as any call of a stranger to a private worker
    (resize,) = [c for c in (await client.call(private.jid, "commands", timeout=5))["commands"]
                 if c["name"] == "resize"]
    assert resize["description"] == "change the size" and resize["access"] == "user"
    assert resize["schema"]["properties"]["width"] == {"title": "Width", "type": "integer"}
    assert resize["schema"]["required"] == ["width"] and resize["schema"]["additionalProperties"] is False


async def test_disco_info_and_items_per_requester(workers, disco) -> None:
    private, public = workers
    owner, client, stranger = [await disco(name) for name in ("worker", "client", "stranger")]

    info = await client.info(private.jid)  # identities are (category, type, xml:lang, name)
    assert ("client", "bot", None, "qe-worker") in {tuple(i) for i in info["identities"]}
    assert {DISCO_INFO, DISCO_ITEMS, NS} <= set(info["features"])

    async def items(requester: DiscoClient, app: App) -> dict[str, str | None]:
        found = (await requester.items(app.jid))["items"]
        assert {jid for jid, _node, _name in found} == {app.jid}
        return {node: name for _jid, node, name in found}

    assert await items(owner, private) == {"commands": BUILT_INS_DESCRIPTIONS["commands"],
                                           "info": BUILT_INS_DESCRIPTIONS["info"],
                                           "ping": BUILT_INS_DESCRIPTIONS["ping"],
                                           "metrics": BUILT_INS_DESCRIPTIONS["metrics"],
                                           "resize": "change the size", "secret": "owner only",
                                           "shared": "for partners"}
    assert set(await items(client, private)) == {*BUILT_INS, "metrics", "resize", "shared"}
    assert set(await items(stranger, public)) == {*BUILT_INS, "resize"}

    node = await client.info(private.jid, node="resize")
    assert ("automation", "command-node", None, "change the size") in {tuple(i) for i in node["identities"]}
    assert NS in node["features"]
    for requester, node_name in ((client, "secret"), (stranger, "shared")):
        with pytest.raises(IqError) as refused:
            await requester.info(private.jid if requester is client else public.jid, node=node_name)
        assert refused.value.iq["error"]["condition"] == "item-not-found"


@pytest.mark.parametrize("kind", ["info", "items"])
async def test_a_stranger_of_a_private_worker_gets_service_unavailable(workers, disco, kind: str) -> None:
    private, _public = workers
    stranger = await disco("stranger")
    with pytest.raises(IqError) as refused:
        await (stranger.info if kind == "info" else stranger.items)(private.jid)
    assert refused.value.iq["error"]["condition"] == "service-unavailable"
    assert refused.value.iq["error"]["type"] == "cancel"
    # what the server answers for a full JID that is not online: the same condition
    with pytest.raises(IqError) as offline:
        await (stranger.info if kind == "info" else stranger.items)(private.jid + "-not-online")
    assert offline.value.iq["error"]["condition"] == "service-unavailable"

