"""Stored or resent: the ``<delay/>`` stamps of the servers we run on, as measured
(libs/bridge/xmpp/_delay.py), and the stamp rule for the others."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import pytest

from libs.bridge.xmpp._delay import stored
from libs.bridge.xmpp._rooms import RoomMessage, parse_message

OWN = "worker@localhost"
SINCE = datetime(2026, 12, 4, 9, 49, 21, 700_000, tzinfo=timezone.utc).timestamp()  # session began


def message(delay: str = "", kind: str = "chat", sender: str = "worker@localhost/c") -> ET.Element:
    return ET.fromstring(f"<message xmlns='jabber:client' type='{kind}' from='{sender}' to='{OWN}/w'>"
                         f"<body>hi</body>{delay}</message>")


def delay(origin: str, stamp: str, text: str = "") -> str:
    return f"<delay xmlns='urn:xmpp:delay' from='{origin}' stamp='{stamp}'>{text}</delay>"


@pytest.mark.parametrize(("case", "xml"), [
    ("no stamp: live", message()),
    ("Prosody's resent copy: from our bare JID", message(delay(OWN, "2026-12-04T09:40:00Z"))),
    ("... whatever the case of the JID", message(delay("Worker@LocalHost", "2026-12-04T09:40:00Z"))),
    ("ejabberd's resent copy, even stamped before the session (a clock behind ours)",
     message(delay("localhost", "2026-12-04T09:40:00.208357Z", "Resent"))),
    ("another server's stamp from within the session", message(delay("example.org", "2026-12-04T09:50:00Z"))),
    ("stamped in the second the session began (whole-second stamps)",
     message(delay("localhost", "2026-12-04T09:49:21Z"))),
])
def test_live(case: str, xml: ET.Element) -> None:
    assert not stored(xml, OWN, SINCE), case


@pytest.mark.parametrize(("case", "xml"), [
    ("Prosody's offline storage", message(delay("localhost", "2026-12-04T09:49:20Z"))),
    ("ejabberd's offline storage", message(delay("localhost", "2026-12-04T09:10:00.5Z", "Offline Storage"))),
    ("room history", message(delay("room@conference.localhost", "2026-12-03T22:00:00Z"), "groupchat",
                             "room@conference.localhost/b")),
    ("a stamp we cannot read", message(delay("localhost", "yesterday"))),
])
def test_stored(case: str, xml: ET.Element) -> None:
    assert stored(xml, OWN, SINCE), case


def test_before_any_session_only_the_marks_say_resent() -> None:
    assert stored(message(delay("localhost", "2026-12-04T09:50:00Z")), OWN, None)
    assert not stored(message(delay(OWN, "2026-12-04T09:50:00Z")), OWN, None)
    assert not stored(message(delay("localhost", "2026-12-04T09:50:00Z", "Resent")), OWN, None)


def test_a_room_message_resent_on_resumption_is_live() -> None:
    room = "room@conference.localhost"
    resent = message(delay(OWN, "2026-12-04T09:55:00Z"), "groupchat", f"{room}/b")
    assert parse_message(resent, own_jid=OWN, session_since=SINCE) == RoomMessage(room, "b", "groupchat", body="hi")
    history = message(delay(room, "2026-12-04T09:00:00Z"), "groupchat", f"{room}/b")
    assert parse_message(history, own_jid=OWN, session_since=SINCE) == RoomMessage(
        room, "b", "groupchat", body="hi", delayed=True)


def test_our_full_jid_does_as_well_as_the_bare_one() -> None:
    assert not stored(message(delay(OWN, "2026-12-04T09:40:00Z")), f"{OWN}/w", SINCE)
    assert stored(message(delay("localhost", "2026-12-04T09:40:00Z")), f"{OWN}/w", SINCE)
