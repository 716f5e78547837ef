"""The one module that touches slixmpp internals (``libs.bridge.xmpp._compat``): the
installed slixmpp is one it was verified with, it changes nothing in slixmpp for other
clients, and what it writes is what slixmpp itself would write."""

from __future__ import annotations

import importlib
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import slixmpp
from hypothesis import given
from hypothesis import strategies as st
from slixmpp.xmlstream import tostring

from libs.bridge.protocol import NS, wire_size
from libs.bridge.xmpp import _compat

ROOT = Path(__file__).resolve().parents[2]
_tostring_module = importlib.import_module("slixmpp.xmlstream.tostring")
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from("&<>\"'"))


def test_the_installed_slixmpp_is_a_verified_one() -> None:
    """Fails loudly on a slixmpp outside the range the fast paths were verified with: run
    tests/unit/test_xmpp_fast_path.py and the stock-server latency test on it, then widen
    _compat.VERIFIED and the pin in pyproject.toml together."""
    assert _compat.version_verified(slixmpp.__version__), (
        f"slixmpp {slixmpp.__version__} is outside the verified range {_compat.VERIFIED}")


def test_the_pin_in_pyproject_is_the_verified_range() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if re.match(r"slixmpp\b", d)]
    assert pin.replace(" ", "") == f"slixmpp>={_compat.VERIFIED[0]},<{_compat.VERIFIED[1]}"


def test_version_range_is_compared_numerically() -> None:
    assert _compat.version_verified("1.17.0") and _compat.version_verified("1.17.9")
    assert not _compat.version_verified("1.18.0") and not _compat.version_verified("1.9.1")
    assert not _compat.version_verified("1.16.0")


def test_slixmpp_itself_is_not_patched() -> None:
    from libs.bridge import App  # noqa: F401  (importing everything changes nothing in slixmpp)

    assert _tostring_module.escape is _compat._slow_escape
    assert _tostring_module.escape("a&b") == "a&amp;b"


@given(_TEXT)
def test_fast_escape_matches_slixmpp(text: str) -> None:
    assert _compat.escape(text) == _compat._slow_escape(text)
    assert wire_size(text) == len(_compat.escape(text).encode("utf-8"))


@given(attrs=st.dictionaries(st.sampled_from(["id", "to", "type", "from"]), _TEXT, max_size=4),
       text=st.none() | _TEXT)
def test_our_iqs_are_written_as_slixmpp_writes_them(attrs: dict[str, str], text: str | None) -> None:
    xml = ET.Element("{jabber:client}iq", attrs)
    ET.SubElement(xml, f"{{{NS}}}api").text = text
    assert _compat.flat_iq_text(xml, "jabber:client") == tostring(xml, xmlns="jabber:client", top_level=True)


def test_other_shapes_are_left_to_slixmpp() -> None:
    lang = ET.Element("{jabber:client}iq", {"{http://www.w3.org/XML/1998/namespace}lang": "en"})
    ET.SubElement(lang, f"{{{NS}}}api").text = "{}"
    nested = ET.Element("{jabber:client}iq", {"type": "error"})
    ET.SubElement(ET.SubElement(nested, "{jabber:client}error"), "{urn:ietf:params:xml:ns:xmpp-stanzas}bad-request")
    two = ET.Element("{jabber:client}iq")
    ET.SubElement(two, f"{{{NS}}}api")
    ET.SubElement(two, f"{{{NS}}}api")
    for xml in (lang, nested, two, ET.Element("{jabber:client}message")):
        assert _compat.flat_iq_text(xml, "jabber:client") is None
