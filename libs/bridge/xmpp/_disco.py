"""XEP-0030 service discovery of a worker as plain XML: a query in, the answer out. No slixmpp.

What a worker publishes at its full JID (the server answers for the bare JID itself):

- ``disco#info``: one identity, ``client``/``bot`` (XEP-0030's registry: "an automated client
  that is not controlled by a human user", which a worker is; ``automation``/``command-list``
  is registered for XEP-0050's commands node only, and is given there), and the features
  ``disco#info``, ``disco#items`` and ``urn:qe:worker:api:1`` (our protocol: a caller that
  sees it may send ``<api/>`` requests), plus ``http://jabber.org/protocol/commands`` when the
  worker runs its commands as XEP-0050 ad-hoc commands (``adhoc``: XEP-0050 §2.1 announces
  support by that feature, and its commands node lists the same commands, §2.2);
- ``disco#items``: one item per command the requester may run (``jid`` = the worker, ``node``
  = the command's name, ``name`` = its description); ``disco#info`` on such a node gives the
  identity ``automation``/``command-node`` ("a node for a specific command") and our
  protocol's feature (with ``adhoc``, also ``http://jabber.org/protocol/commands`` and
  ``jabber:x:data``, which XEP-0050 §2.3 requires of a command's node); ``disco#items`` on
  it, no items.

Who may ask: whoever may call the worker. A requester the worker refuses (a stranger, on a
worker that is not public) gets ``service-unavailable``: what XEP-0030's security
considerations have a server answer about an account that does not share its presence with the
requester, and what the server itself answers for a full JID that is offline: disco tells it
nothing (an API request still gets ``forbidden``, as before disco). A node
the requester may not see is ``item-not-found``, as one that does not exist.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Final, Literal

from ..protocol import NS, xml_safe

__all__ = ["ADHOC_FEATURES", "COMMANDS_NODE", "COMMAND_IDENTITY", "COMMAND_LIST_IDENTITY", "FEATURES", "IDENTITY", "INFO_NS", "ITEMS_NS", "Query", "Refused", "answer",
           "parse_query"]

INFO_NS: Final = "http://jabber.org/protocol/disco#info"
ITEMS_NS: Final = "http://jabber.org/protocol/disco#items"
FEATURES: Final = (INFO_NS, ITEMS_NS, NS)
IDENTITY: Final = {"category": "client", "type": "bot", "name": "qe-worker"}
COMMAND_IDENTITY: Final = {"category": "automation", "type": "command-node"}
COMMANDS_NODE: Final = "http://jabber.org/protocol/commands"  # XEP-0050's node and feature
COMMAND_LIST_IDENTITY: Final = {"category": "automation", "type": "command-list", "name": "commands"}
ADHOC_FEATURES: Final = (COMMANDS_NODE, "jabber:x:data")  # XEP-0050 §2.3: on each command's node
_INFO_TAG: Final = f"{{{INFO_NS}}}query"
_ITEMS_TAG: Final = f"{{{ITEMS_NS}}}query"


@dataclass(frozen=True, slots=True)
class Query:
    """A disco query: ``kind`` ``info`` or ``items``, about ``node`` (None: the worker)."""

    kind: Literal["info", "items"]
    node: str | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """Answer with this stanza error (RFC 6120 condition and type)."""

    condition: str
    type: str = "cancel"


def parse_query(iq: ET.Element) -> Query | None:
    """The disco query an IQ ``get`` carries as its one child, or None (not disco)."""
    if len(iq) != 1:
        return None
    child = iq[0]
    if child.tag == _INFO_TAG:
        return Query("info", child.get("node") or None)
    if child.tag == _ITEMS_TAG:
        return Query("items", child.get("node") or None)
    return None


def answer(query: Query, own_jid: str, commands: list[dict[str, Any]] | None, *,
           adhoc: bool = False) -> ET.Element | Refused:
    """The ``<query/>`` element of the result, or why not. ``commands`` is what the requester
    may run (``Transport.describe``), None when it may not call the worker at all. ``adhoc``:
    the worker also runs them as XEP-0050 ad-hoc commands (its feature, the commands node,
    and that node's features on each command)."""
    if commands is None:
        return Refused("service-unavailable")
    tag = _INFO_TAG if query.kind == "info" else _ITEMS_TAG
    result = ET.Element(tag)
    if query.node is None:
        if query.kind == "info":
            ET.SubElement(result, f"{{{INFO_NS}}}identity", IDENTITY)
            for feature in FEATURES + ((COMMANDS_NODE,) if adhoc else ()):
                ET.SubElement(result, f"{{{INFO_NS}}}feature", {"var": feature})
        else:
            for command in commands:
                item = {"jid": own_jid, "node": xml_safe(command["name"])}
                if command.get("description"):
                    item["name"] = xml_safe(command["description"])
                ET.SubElement(result, f"{{{ITEMS_NS}}}item", item)
        return result
    if adhoc and query.node == COMMANDS_NODE:  # XEP-0050 §2.2: the commands the requester may run
        result.set("node", COMMANDS_NODE)
        if query.kind == "info":
            ET.SubElement(result, f"{{{INFO_NS}}}identity", COMMAND_LIST_IDENTITY)
            ET.SubElement(result, f"{{{INFO_NS}}}feature", {"var": INFO_NS})
        else:
            for command in commands:
                name = xml_safe(command.get("description") or command["name"])
                ET.SubElement(result, f"{{{ITEMS_NS}}}item", {"jid": own_jid, "node": xml_safe(command["name"]),
                                                              "name": name})
        return result
    found = [c for c in commands if c["name"] == query.node]
    if not found:
        return Refused("item-not-found")
    command = found[0]
    result.set("node", xml_safe(query.node))
    if query.kind == "info":
        identity = dict(COMMAND_IDENTITY, name=xml_safe(command.get("description") or command["name"]))
        ET.SubElement(result, f"{{{INFO_NS}}}identity", identity)
        for feature in (INFO_NS, NS) + (ADHOC_FEATURES if adhoc else ()):
            ET.SubElement(result, f"{{{INFO_NS}}}feature", {"var": feature})
    return result
