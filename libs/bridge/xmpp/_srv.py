"""Which servers to try for a domain: DNS SRV ``_xmpp-client._tcp`` (RFC 6120 §3.2).

Why not slixmpp's own lookup (``slixmpp.xmlstream.resolver``): it tries every record inside
one ``connect()`` with its own retry loop (the session table decides retries here, one
server per attempt), it cannot be pointed at another DNS server per client, and its weighted
choice draws ``randint(0, sum + 1)`` (one past the range RFC 2782 gives) from the global
random generator, so the order cannot be reproduced in a test. Here the ordering is a pure
function with the random draw injected (``order``), and the lookup is one aiodns query
(aiodns comes with slixmpp) behind a plain callable that tests replace.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

__all__ = ["SERVICE", "Lookup", "SrvRecord", "aiodns_lookup", "order", "servers_for"]

log = logging.getLogger(__name__)

SERVICE = "_xmpp-client._tcp"


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


Lookup = Callable[[str], Awaitable[Sequence[SrvRecord]]]
"""Answers the SRV records of a name; raises ``LookupError`` (or ``OSError``) when there are none
or the lookup failed."""


def order(records: Sequence[SrvRecord], rand: Callable[[int, int], int] = random.randint) -> list[tuple[str, int]]:
    """The servers in the order RFC 2782 says to try them: lowest priority first; within a
    priority, a weighted random choice (weight 0 first, then ``rand(0, total)`` inclusive picks
    the first record whose running sum of weights reaches it), repeated without the chosen one.
    An empty list when the only record's target is ``.`` (the domain offers no XMPP service)."""
    usable = [r for r in records if r.target.rstrip(".")]
    out: list[tuple[str, int]] = []
    for priority in sorted({r.priority for r in usable}):
        group = sorted((r for r in usable if r.priority == priority), key=lambda r: r.weight != 0)  # stable
        while group:
            pick = rand(0, sum(r.weight for r in group))
            running, index = 0, 0
            while index < len(group) - 1:
                running += group[index].weight
                if running >= pick:
                    break
                index += 1
            chosen = group.pop(index)
            out.append((chosen.target.rstrip("."), chosen.port))
    return out


async def servers_for(domain: str, lookup: Lookup,
                      rand: Callable[[int, int], int] = random.randint) -> list[tuple[str, int]] | None:
    """The servers for ``domain`` from its SRV records, in order; ``[]`` when they say there is
    no XMPP service; None when there are none or the lookup failed (RFC 6120 §3.2.2: then the
    domain itself, on the configured port)."""
    name = f"{SERVICE}.{domain}"
    try:
        records = list(await lookup(name))
    except (LookupError, OSError) as exc:
        log.debug("no SRV records for %s (%s): connecting to the domain itself", name, exc)
        return None
    if not records:
        return None
    return order(records, rand)


def aiodns_lookup(nameserver: str | None = None, timeout: float = 3.0) -> Lookup:
    """A ``Lookup`` with aiodns: the system's resolver configuration, or ``nameserver``
    (``IP`` or ``IP:PORT``, ``QE_DNS_SERVER``). A new resolver per lookup: lookups are rare
    (once per round of connection attempts) and a resolver holds sockets."""

    async def lookup(name: str) -> Sequence[SrvRecord]:
        import aiodns  # slixmpp's dependency (with pycares); imported here, where it is used
        import aiodns.error
        import pycares

        resolver = aiodns.DNSResolver(nameservers=[nameserver] if nameserver else None, tries=2, timeout=timeout)
        try:
            result = await resolver.query_dns(name, "SRV")
        except aiodns.error.DNSError as exc:
            raise LookupError(exc.args[-1] if exc.args else "DNS error") from None
        finally:
            await resolver.close()
        return [SrvRecord(a.data.priority, a.data.weight, a.data.port, a.data.target)
                for a in result.answer if isinstance(a.data, pycares.SRVRecordData)]

    return lookup
