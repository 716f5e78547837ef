"""Unit tests for ``libs.bridge.access``: who may call a worker, from the JID alone."""

from __future__ import annotations

import pytest

from libs.bridge.access import AccessPolicy, Role, bare_jid, resource_of

OWN = "worker@example.org"
FRIEND = "friend@other.net"


def policy(public: bool) -> AccessPolicy:
    return AccessPolicy.create("Worker@Example.org/python", public=public, allow=[FRIEND, "", "Pal@Other.NET/phone"])


# -- bare_jid / resource_of ----------------------------------------------------------------


@pytest.mark.parametrize(("jid", "bare", "resource"), [
    ("user@example.org/res", "user@example.org", "res"),
    ("User@Example.ORG/Res", "user@example.org", "Res"),
    ("user@example.org", "user@example.org", ""),
    ("example.org", "example.org", ""),
    ("example.org/admin", "example.org", "admin"),
    ("user@example.org/a/b@c", "user@example.org", "a/b@c"),  # only the first '/' splits
    ("user@example.org/", "user@example.org", ""),
    ("", "", ""),
])
def test_bare_jid_and_resource_of(jid: str, bare: str, resource: str) -> None:
    assert bare_jid(jid) == bare
    assert resource_of(jid) == resource


def test_create_normalises_own_and_allow() -> None:
    p = policy(public=False)
    assert p.own == OWN
    assert p.allow == frozenset({FRIEND, "pal@other.net"})  # empty entry dropped, resources dropped
    assert p.public is False


# -- role_of ---------------------------------------------------------------------------------


@pytest.mark.parametrize("public", [False, True])
@pytest.mark.parametrize("sender", [
    "worker@example.org/python", "worker@example.org/other-resource", "WORKER@EXAMPLE.ORG/Python",
    "Worker@example.org", "worker@example.org/",
])
def test_owner_any_resource_any_case(sender: str, public: bool) -> None:
    assert policy(public).role_of(sender) is Role.OWNER


@pytest.mark.parametrize("public", [False, True])
@pytest.mark.parametrize("sender", ["friend@other.net/x", "FRIEND@OTHER.NET", "pal@other.net/laptop"])
def test_allowlisted(sender: str, public: bool) -> None:
    assert policy(public).role_of(sender) is Role.ALLOWED


@pytest.mark.parametrize("sender", [
    "stranger@example.org/x",
    "worker@example.org.evil.com/x",  # suffix tricks do not make an owner
    "worker@evil.com/worker@example.org",  # the resource means nothing
    "friend@other.net.evil/x",
    "xworker@example.org/python",
])
def test_stranger(sender: str) -> None:
    assert policy(public=False).role_of(sender) is None
    assert policy(public=True).role_of(sender) is Role.PUBLIC


@pytest.mark.parametrize("sender", ["example.org", "example.org/admin", "other.net", "pubsub.example.org"])
def test_server_jids_without_node(sender: str) -> None:
    # the worker's own domain (or the allowlist's) is neither the owner nor allowed
    assert policy(public=False).role_of(sender) is None
    assert policy(public=True).role_of(sender) is Role.PUBLIC
    assert not policy(public=True).may_subscribe(sender)


def test_empty_sender_is_refused_even_when_public() -> None:
    assert policy(public=True).role_of("") is None
    assert policy(public=False).role_of("") is None


def test_role_string_values_are_qe_names() -> None:
    assert (Role.OWNER.value, Role.PARTNER.value, Role.USER.value) == ("owner", "partner", "user")
    assert str(Role.OWNER) == "owner"
    assert Role.PARTNER == "partner"  # str enum compares with plain strings
    assert list(Role) == [Role.OWNER, Role.PARTNER, Role.USER]


def test_old_role_names_are_aliases() -> None:
    assert Role.ALLOWED is Role.PARTNER and Role.PUBLIC is Role.USER
    assert Role("partner") is Role.ALLOWED


# -- may_subscribe -------------------------------------------------------------------------


@pytest.mark.parametrize("public", [False, True])
def test_may_subscribe_only_owner_and_allowlist(public: bool) -> None:
    p = policy(public)
    assert p.may_subscribe("worker@example.org/other")
    assert p.may_subscribe("WORKER@example.org")
    assert p.may_subscribe("friend@other.net/phone")
    assert p.may_subscribe("Pal@other.net")
    assert not p.may_subscribe("stranger@example.org/x")
    assert not p.may_subscribe("")


def test_default_policy_is_private_with_empty_allowlist() -> None:
    p = AccessPolicy(OWN)
    assert p.role_of("worker@example.org/r") is Role.OWNER
    assert p.role_of(FRIEND) is None
    assert not p.may_subscribe(FRIEND)
