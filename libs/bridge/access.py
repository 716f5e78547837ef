"""Who may call a worker, decided from the caller's JID alone.

Why a separate module: the rule is security-critical and must be testable without a server.
XMPP servers stamp ``from`` on every stanza a client sends, so the bare JID is the caller's
authenticated account; the resource part is chosen by the caller and means nothing for trust.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

__all__ = ["AccessPolicy", "Role", "bare_jid", "check_resource", "resource_of"]


class Role(str, Enum):
    """What ``APISpecs.role`` says about the caller, in QE's words.

    ``ALLOWED`` and ``PUBLIC`` are aliases of ``PARTNER`` and ``USER`` (the names qe-worker
    used before it took QE's): ``Role.ALLOWED is Role.PARTNER``, and the value a handler sees
    is always QE's (``"partner"``, ``"user"``).
    """

    OWNER = "owner"      # the worker's own account (any resource)
    PARTNER = "partner"  # listed in QE_ALLOW
    USER = "user"        # anyone else, only answered by a public worker
    ALLOWED = "partner"  # alias of PARTNER
    PUBLIC = "user"      # alias of USER

    def __str__(self) -> str:
        return self.value

    def at_least(self, required: Role) -> bool:
        """Whether a caller of this role may do what needs ``required``: the owner may do
        everything, a partner what partners and users may, a user what users may."""
        return _TRUST[self.value] >= _TRUST[required.value]

    @classmethod
    def parse(cls, name: str | Role) -> Role:
        """``"owner"``, ``"partner"``, ``"user"`` (or the aliases ``"allowed"``, ``"public"``,
        any case) as a ``Role``; ``ValueError`` for anything else."""
        if isinstance(name, Role):
            return name
        if isinstance(name, str):
            found = cls.__members__.get(name.upper())
            if found is not None:
                return found
        raise ValueError(f"{name!r} is not a role (owner, partner or user)")


_TRUST = {"owner": 3, "partner": 2, "user": 1}  # Role.at_least: who may do what


def bare_jid(jid: str) -> str:
    """``user@domain/res`` -> ``user@domain``, lower-cased (node and domain are
    case-insensitive in XMPP; resources are not, and are dropped here)."""
    return jid.split("/", 1)[0].lower()


def check_resource(resource: str) -> str:
    """``resource`` if it can be a worker's resource, else ``ValueError`` saying why."""
    if not resource or "/" in resource or "@" in resource:
        raise ValueError(f"{resource!r} is not a valid resource (non-empty, no '/' or '@')")
    return resource


def resource_of(jid: str) -> str:
    return jid.split("/", 1)[1] if "/" in jid else ""


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """``public=False`` answers only ``own`` (bare JID) and ``allow``; ``public=True`` anyone."""

    own: str
    public: bool = False
    allow: frozenset[str] = frozenset()

    @classmethod
    def create(cls, own: str, *, public: bool, allow: Iterable[str] = ()) -> AccessPolicy:
        return cls(bare_jid(own), public, frozenset(bare_jid(j) for j in allow if j))

    def role_of(self, sender: str) -> Role | None:
        """The caller's role, or None when it must be refused."""
        bare = bare_jid(sender)
        if bare == self.own:
            return Role.OWNER
        if bare in self.allow:
            return Role.PARTNER
        return Role.USER if self.public and bare else None

    def may_subscribe(self, sender: str) -> bool:
        """Presence subscriptions are accepted from our own account and the allowlist only,
        even for a public worker: presence leaks when the worker is up, and strangers need
        none of it to call a public worker."""
        bare = bare_jid(sender)
        return bare == self.own or bare in self.allow
