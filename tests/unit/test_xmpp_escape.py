"""Our fast XML text escape must produce exactly what slixmpp's own escape produces."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from libs.bridge import xmpp
from libs.bridge.protocol import wire_size


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from("&<>\"'")))
def test_fast_escape_matches_slixmpp(text: str) -> None:
    assert xmpp._escape(text) == xmpp._slow_escape(text)
    assert wire_size(text) == len(xmpp._escape(text).encode("utf-8"))


def test_cdata_mode_is_delegated() -> None:
    assert xmpp._escape("a<b", use_cdata=True) == xmpp._slow_escape("a<b", use_cdata=True)


def test_installed_into_slixmpp() -> None:
    import xml.etree.ElementTree as ET

    from slixmpp.xmlstream.tostring import tostring  # the function, which looks up escape globally

    el = ET.Element("x")
    el.text = '{"a":"<&>\'"}'
    assert tostring(el) == '<x>{&quot;a&quot;:&quot;&lt;&amp;&gt;&apos;&quot;}</x>'
