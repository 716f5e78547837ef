"""Raw stanzas for tests that send what our API never would, and a way to await the answer.

Why raw: ``Client.call`` only ever sends a well-formed IQ ``set`` with JSON our encoder wrote;
probing the worker (an IQ ``get``, a payload in another namespace, ``NaN`` in the JSON) needs
the bytes written by hand. Send them from a client logged in with ``QE_STREAM_MANAGEMENT=off``:
raw stanzas bypass slixmpp's XEP-0198 counters.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher.base import MatcherBase

from libs.bridge import Client
from libs.bridge.protocol import NS

from .accounts import xmpp_of

__all__ = ["answer_to", "api_iq", "foreign_iq"]


def api_iq(text: str, iq_id: str | None, to: str, *, iq_type: str = "set", sender: str | None = None) -> str:
    """An IQ carrying ``<api/>`` with ``text``; ``iq_id=None`` leaves the id out and
    ``sender`` writes a ``from`` of our choosing (a spoofing attempt)."""
    attrs = f"type={quoteattr(iq_type)} to={quoteattr(to)}"
    if iq_id is not None:
        attrs += f" id={quoteattr(iq_id)}"
    if sender is not None:
        attrs += f" from={quoteattr(sender)}"
    return f'<iq {attrs}><api xmlns="{NS}">{escape(text)}</api></iq>'


def foreign_iq(iq_id: str, to: str, iq_type: str = "set") -> str:
    """An IQ in a namespace nobody on the worker handles."""
    return f'<iq type="{iq_type}" id="{iq_id}" to={quoteattr(to)}><query xmlns="urn:evil"/></iq>'


class _AnswerTo(MatcherBase):
    def __init__(self, iq_id: str) -> None:
        super().__init__(iq_id)
        self._id = iq_id

    def match(self, stanza: Any) -> bool:
        xml = stanza.xml
        return (xml.tag == "{jabber:client}iq" and xml.get("id") == self._id
                and xml.get("type") in ("result", "error"))


async def answer_to(client: Client, stanza: str, iq_id: str, timeout: float) -> ET.Element:
    """Send the raw IQ ``stanza`` and return the XML of the answer with id ``iq_id``;
    ``TimeoutError`` after ``timeout`` s."""
    xmpp = xmpp_of(client)
    answer: asyncio.Future[ET.Element] = asyncio.get_running_loop().create_future()
    name = f"answer-to-{iq_id}"

    def take(iq: Any) -> None:
        if not answer.done():
            answer.set_result(iq.xml)

    xmpp.register_handler(Callback(name, _AnswerTo(iq_id), take))
    try:
        xmpp.send_raw(stanza)
        return await asyncio.wait_for(answer, timeout)
    finally:
        xmpp.remove_handler(name)
