"""Unit tests for ``libs.bridge.protocol``: the wire format as plain objects, no server."""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from slixmpp.xmlstream.tostring import escape

from libs.bridge.protocol import (
    CONDITIONS,
    DEFAULT_MAX_PAYLOAD,
    MAX_DEPTH,
    ApiError,
    ApiRequest,
    ApiResult,
    ProtocolError,
    decode_error,
    decode_request,
    decode_result,
    encode_error,
    encode_request,
    encode_result,
    now_ms,
    wire_size,
    xml_safe,
)

SENDER = "client@example.org/laptop"

# RFC 6120 section 8.3.3: the defined stanza error conditions.
RFC6120_STANZA_CONDITIONS = frozenset({
    "bad-request", "conflict", "feature-not-implemented", "forbidden", "gone",
    "internal-server-error", "item-not-found", "jid-malformed", "not-acceptable",
    "not-allowed", "not-authorized", "policy-violation", "recipient-unavailable",
    "redirect", "registration-required", "remote-server-not-found",
    "remote-server-timeout", "resource-constraint", "service-unavailable",
    "subscription-required", "undefined-condition", "unexpected-request",
})


def decode(text: str | None, **kw: Any) -> ApiRequest:
    return decode_request("iq-1", SENDER, text, **kw)


def decode_code(text: str | None, **kw: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        decode(text, **kw)
    return info.value.code


def nested_request(depth: int) -> str:
    """A request whose JSON nesting depth (root object = 1) is exactly ``depth``."""
    inner: dict[str, Any] = {}
    for _ in range(depth - 2):
        inner = {"a": inner}
    return json.dumps({"cmd": "x", "body": inner})


# -- encode_request / decode_request ---------------------------------------------------------


def test_round_trip_keeps_types_and_fields() -> None:
    body = {"n": 1, "f": 2.5, "t": True, "z": None, "l": [1, "two", {"three": 3}],
            "s": "quotes \" ' < > & and non-ASCII é 漢字 🎉"}
    text = encode_request("echo", body, deadline_ms=1_700_000_000_123)
    req = decode_request("iq-7", SENDER, text)
    assert req == ApiRequest(id="iq-7", sender=SENDER, cmd="echo", body=body, deadline_ms=1_700_000_000_123)


def test_round_trip_without_body_or_deadline() -> None:
    text = encode_request("ping")
    assert "deadline" not in json.loads(text)
    req = decode(text)
    assert req.cmd == "ping"
    assert req.body == {}
    assert req.deadline_ms is None


def test_encode_request_truncates_float_deadline_to_int() -> None:
    doc = json.loads(encode_request("x", {}, deadline_ms=1234.9))  # type: ignore[arg-type]
    assert doc["deadline"] == 1234


@pytest.mark.parametrize("cmd", ["", None, 5, b"ping", ["ping"]])
def test_encode_request_rejects_bad_cmd(cmd: Any) -> None:
    with pytest.raises(ValueError, match="cmd"):
        encode_request(cmd, {})


@pytest.mark.parametrize("body", [[1, 2], "text", 3, ("a",), True])
def test_encode_request_rejects_non_dict_body(body: Any) -> None:
    with pytest.raises(ValueError, match="body"):
        encode_request("x", body)


@pytest.mark.parametrize("body", [{"s": {1, 2}}, {"o": object()}, {"n": float("nan")},
                                  {"i": float("inf")}, {1j: 1}])
def test_encode_request_rejects_non_json_body(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="JSON"):
        encode_request("x", body)


@pytest.mark.parametrize(("odd", "sent_as"), [
    # characters XML 1.0 forbids would make the server drop our stream: JSON escapes
    ("\ud800", "\\ud800"), ("\udfff", "\\udfff"), ("\ufffe", "\\ufffe"), ("\uffff", "\\uffff"),
    ("\x00", "\\u0000"), ("\x1f", "\\u001f"), ("\n", "\\n"),
    # everything else travels as UTF-8, including what XML 1.0 allows but rarely sees
    ("é", "é"), ("日本", "日本"), ("€", "€"), ("\U0001f600", "\U0001f600"), ("\x7f", "\x7f"), ("\x85", "\x85"),
    ("\ufffd", "\ufffd"), ("\U0001fffe", "\U0001fffe"), ("\u2028", "\u2028"),
])
def test_encoded_text_is_utf8_with_only_what_xml_forbids_escaped(odd: str, sent_as: str) -> None:
    text = encode_request("x", {"s": odd})
    assert text == '{"cmd":"x","body":{"s":"%s"}}' % sent_as
    assert xml_safe(text) == text
    assert json.loads(text)["body"]["s"] == odd


def test_keys_are_escaped_like_values() -> None:
    answer = encode_result(ApiRequest("i", SENDER, "x"), {"\ufffe€": 1})
    assert isinstance(answer, ApiResult)
    assert answer.payload == '{"\\ufffe€":1}'
    assert decode_result(answer.payload) == {"\ufffe€": 1}


# any code point, surrogates included, with the ones that need care drawn often
_any_char = st.one_of(st.sampled_from("\ud800\udbff\udc00\udfff\ufffe\uffff\x00\x1f\x7f\x85\"'<>&\\€"),
                      st.characters(codec=None, exclude_categories=()))
_json_text_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              st.text(_any_char, max_size=30)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(_any_char, max_size=8), children,
                                                                       max_size=4),
    max_leaves=12,
)
_NOT_IN_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")


@given(_json_text_values)
def test_any_json_value_encodes_to_xml_text_that_round_trips(value: Any) -> None:
    """Nothing that is JSON is refused; the text is XML 1.0, an XML parser gives it back
    unchanged, it decodes to the value, and only the characters XML forbids were escaped
    (each one character -> six); ``wire_size`` is what slixmpp writes."""
    answer = encode_result(ApiRequest("i", SENDER, "x"), {"v": value})
    assert isinstance(answer, ApiResult), answer
    text = answer.payload
    assert xml_safe(text) == text
    assert ET.fromstring(f"<api>{escape(text)}</api>").text == text
    # as JSON has it (and json.dumps' ASCII output too): a high and a low surrogate side by side,
    # each escaped, read back as the one character they encode
    assert decode_result(text) == json.loads(json.dumps({"v": value}))
    plain = json.dumps({"v": value}, ensure_ascii=False, separators=(",", ":"))
    assert len(text) == len(plain) + 5 * len(_NOT_IN_XML.findall(plain))
    assert wire_size(text) == len(escape(text).encode("utf-8")) <= 6 * len(text)  # _check_size's shortcut


def test_encode_request_too_large_counts_escapes_and_boundary_is_inclusive() -> None:
    body = {"q": '"' * 100}
    text = encode_request("x", body)
    size = wire_size(text)
    assert size > len(text.encode())  # the quotes are counted as &quot;
    assert encode_request("x", body, max_payload=size) == text
    with pytest.raises(ProtocolError) as info:
        encode_request("x", body, max_payload=size - 1)
    assert info.value.code == "too-large"
    assert info.value.condition == "not-acceptable"
    # raw UTF-8 length alone would have fitted
    assert len(text.encode()) <= size - 1


def test_size_counts_utf8_bytes_not_escapes() -> None:
    # 75,000 x "€" is 225,000 bytes as UTF-8 (450,000 as \\u20ac escapes): it fits both ways
    body = {"text": "€" * 75_000}
    text = encode_request("echo", body, deadline_ms=now_ms() + 5000)
    assert wire_size(text) == 225_000 + wire_size(text.replace("€", ""))
    assert wire_size(text) < DEFAULT_MAX_PAYLOAD
    request = decode_request("i", SENDER, text)
    answer = encode_result(request, request.body)
    assert isinstance(answer, ApiResult)
    assert wire_size(answer.payload) == 225_000 + len('{"text":""}') + 5 * 4
    # the boundary is exact in UTF-8 bytes: one more "€" than fits is refused
    limit = wire_size(answer.payload)
    assert isinstance(encode_result(request, request.body, max_payload=limit), ApiResult)
    over = encode_result(request, {"text": "€" * 75_001}, max_payload=limit + 2)
    assert isinstance(over, ApiError) and over.code == "too-large"


def test_encode_request_default_limit() -> None:
    with pytest.raises(ProtocolError) as info:
        encode_request("x", {"blob": "a" * DEFAULT_MAX_PAYLOAD})
    assert info.value.code == "too-large"


def test_decode_request_needs_iq_id() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_request("", SENDER, encode_request("x"))
    assert info.value.code == "bad-request"


@pytest.mark.parametrize("text", [None, ""])
def test_decode_request_empty(text: str | None) -> None:
    assert decode_code(text) == "bad-request"


@pytest.mark.parametrize("text", ["{cmd", "hello", "{'cmd': 'x'}", '{"cmd": "x",}', "\x00"])
def test_decode_request_not_json(text: str) -> None:
    with pytest.raises(ProtocolError, match="not valid JSON") as info:
        decode(text)
    assert info.value.code == "bad-request"


@pytest.mark.parametrize("text", ['["cmd", "x"]', '"x"', "42", "null", "true"])
def test_decode_request_not_an_object(text: str) -> None:
    with pytest.raises(ProtocolError, match="JSON object") as info:
        decode(text)
    assert info.value.code == "bad-request"


@pytest.mark.parametrize("doc", [{}, {"body": {}}, {"cmd": ""}, {"cmd": None}, {"cmd": 5},
                                 {"cmd": ["x"]}, {"cmd": {"x": 1}}, {"cmd": "x" * 201}])
def test_decode_request_bad_cmd(doc: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="'cmd'") as info:
        decode(json.dumps(doc))
    assert info.value.code == "bad-request"


def test_decode_request_cmd_of_200_chars_is_accepted() -> None:
    assert decode(json.dumps({"cmd": "x" * 200})).cmd == "x" * 200


@pytest.mark.parametrize("body", [[], [1], "s", 0, 1.5, True, False])
def test_decode_request_body_not_an_object(body: Any) -> None:
    with pytest.raises(ProtocolError, match="'body'") as info:
        decode(json.dumps({"cmd": "x", "body": body}))
    assert info.value.code == "bad-request"


def test_decode_request_body_null_or_missing_is_empty_dict() -> None:
    assert decode('{"cmd": "x", "body": null}').body == {}
    assert decode('{"cmd": "x"}').body == {}


@pytest.mark.parametrize("deadline", ["true", "false", '"123"', "[1]", "{}", "1700000000000.5", "0.001",
                                      "1.5e0", str(2**53 + 1), str(-(2**53) - 1)])
def test_decode_request_bad_deadline(deadline: str) -> None:
    # an integer only: a fraction, a bool or a string is refused, not rounded or guessed at
    with pytest.raises(ProtocolError, match="'deadline' must be an integer") as info:
        decode('{"cmd": "x", "deadline": %s}' % deadline)
    assert info.value.code == "bad-request"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ['{"cmd": "x", "deadline": %s}', '{"cmd": "ping", "body": {"x": %s}}',
                                   '{"cmd": "x", "body": {"a": [1, {"b": %s}]}}', '{"cmd": "x", "extra": %s}'])
def test_nan_and_infinity_are_not_json(literal: str, where: str) -> None:
    # Python's json reads them; RFC 8259 has no such literals, so a request with one anywhere is bad
    with pytest.raises(ProtocolError, match=f"not valid JSON: {literal} is not JSON") as info:
        decode(where % literal)
    assert info.value.code == "bad-request"
    with pytest.raises(ProtocolError) as info:
        decode_result('{"v": %s}' % literal)
    assert info.value.code == "bad-result"  # nor does a caller accept them in a result


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1.5e309"])
def test_numbers_beyond_a_double_are_bad_request(number: str) -> None:
    # Python would read them as inf; a handler echoing one would fail later, as bad-result
    with pytest.raises(ProtocolError, match="beyond the range of a double") as info:
        decode('{"cmd": "x", "body": {"n": %s}}' % number)
    assert info.value.code == "bad-request"


def test_big_and_tiny_numbers_that_json_allows_are_kept() -> None:
    body = decode('{"cmd": "x", "body": {"big": 1%s, "tiny": 1e-400, "max": 1.7976931348623157e308}}'
                  % ("0" * 400)).body
    assert body == {"big": 10**400, "tiny": 0.0, "max": 1.7976931348623157e308}


def test_decode_request_huge_integer_deadline_is_bad_request() -> None:
    assert decode_code('{"cmd": "x", "deadline": 1%s}' % ("0" * 400)) == "bad-request"


@pytest.mark.parametrize("deadline", ["1700000000000", "1700000000000.0", "1.7e12", "17e11"])
def test_decode_request_integer_deadline_in_any_notation(deadline: str) -> None:
    # an integer is a number without a fraction (as JSON Schema has it), however it is written
    req = decode('{"cmd": "x", "deadline": %s}' % deadline)
    assert req.deadline_ms == 1_700_000_000_000
    assert type(req.deadline_ms) is int


def test_decode_request_deadline_null_is_none() -> None:
    assert decode('{"cmd": "x", "deadline": null}').deadline_ms is None


@pytest.mark.parametrize("iq_type", ["get", "result", "error", ""])
def test_only_an_iq_set_is_a_request(iq_type: str) -> None:
    with pytest.raises(ProtocolError, match="requests are IQ of type 'set'") as info:
        decode_request("i", SENDER, encode_request("ping"), iq_type=iq_type)
    assert info.value.code == "bad-request"
    assert decode_request("i", SENDER, encode_request("ping"), iq_type="set").cmd == "ping"


def test_decode_request_depth_limit_is_exact() -> None:
    assert decode(nested_request(MAX_DEPTH)).cmd == "x"
    with pytest.raises(ProtocolError, match=f"deeper than {MAX_DEPTH}") as info:
        decode(nested_request(MAX_DEPTH + 1))
    assert info.value.code == "bad-request"


def nested_objects(depth: int, innermost: str = "1", note: str | None = None) -> str:
    """``depth`` nested objects (the root included), the innermost holding ``{"v": innermost}``,
    and a shallow ``note`` string beside ``cmd`` when given."""
    text = '{"v": %s}' % innermost
    for _ in range(depth - 2):
        text = '{"a": %s}' % text
    extra = "" if note is None else ', "note": %s' % json.dumps(note)
    return '{"cmd": "x"%s, "body": %s}' % (extra, text)


@pytest.mark.parametrize("innermost", ["1", '"s"', "null", "true", "[]", "{}"])
def test_depth_limit_counts_objects_and_arrays_not_scalars(innermost: str) -> None:
    container = innermost in ("[]", "{}")
    # MAX_DEPTH objects, plus one more level when the innermost value is itself a container
    at_limit = nested_objects(MAX_DEPTH - container, innermost)
    over = nested_objects(MAX_DEPTH + 1 - container, innermost)
    assert decode(at_limit).cmd == "x"
    with pytest.raises(ProtocolError, match=f"deeper than {MAX_DEPTH} levels") as info:
        decode(over)
    assert info.value.code == "bad-request"


@pytest.mark.parametrize("note", ["{", "[", "{" * 500 + "[" * 500, "}]", "\\{\"["])
def test_depth_verdict_ignores_brackets_inside_strings(note: str) -> None:
    # the probe's case: 64 nested objects accepted, and still accepted beside a shallow "{"
    assert decode(nested_objects(MAX_DEPTH, note=note)).body
    assert decode_code(nested_objects(MAX_DEPTH + 1, note=note)) == "bad-request"
    assert decode_code(nested_objects(MAX_DEPTH + 1)) == "bad-request"


def test_decode_request_depth_counts_lists() -> None:
    # root (1) + body (2) + n nested lists (3 .. n+2)
    lists = lambda n: "[" * n + "]" * n  # noqa: E731
    assert decode('{"cmd": "x", "body": {"a": %s}}' % lists(MAX_DEPTH - 2)).cmd == "x"
    assert decode_code('{"cmd": "x", "body": {"a": %s}}' % lists(MAX_DEPTH - 1)) == "bad-request"


def test_decode_request_recursion_bomb_is_bad_request() -> None:
    n = 50_000
    text = '{"cmd": "x", "body": {"a": ' + "[" * n + "]" * n + "}}"
    assert wire_size(text) < DEFAULT_MAX_PAYLOAD
    with pytest.raises(ProtocolError, match=f"nested deeper than {MAX_DEPTH} levels") as info:
        decode(text)  # the decoder's own recursion guard: the same answer as a depth of 65
    assert info.value.code == "bad-request"


def test_decode_request_oversize_uses_wire_size() -> None:
    text = json.dumps({"cmd": "x", "body": {"q": '"' * 50}}, ensure_ascii=False)
    size = wire_size(text)
    assert decode(text, max_payload=size).cmd == "x"
    with pytest.raises(ProtocolError) as info:
        decode(text, max_payload=size - 1)
    assert info.value.code == "too-large"
    assert len(text.encode()) < size - 1


def test_decode_request_oversize_checked_before_parsing() -> None:
    # too large *and* invalid JSON: the size verdict comes first (nothing is parsed)
    assert decode_code("x" * (DEFAULT_MAX_PAYLOAD + 1)) == "too-large"


# -- wire_size ----------------------------------------------------------------------------


def slixmpp_size(text: str) -> int:
    return len(escape(text).encode("utf-8"))


@pytest.mark.parametrize("text", ["", "plain", '"', "'", "<", ">", "&", "&amp;", "é", "漢字🎉",
                                  '{"cmd":"x","body":{"a":"<b>\'&\'</b>"}}'])
def test_wire_size_matches_slixmpp_escape_samples(text: str) -> None:
    assert wire_size(text) == slixmpp_size(text)


@pytest.mark.parametrize(("text", "size"), [
    # the examples in docs/protocol.md (Sizes)
    ('{"cmd":"ping"}', 34), ('{"s":"€"}', 31), ("\\n", 2), ("\\u20ac", 6), ('\\"', 7), ("€" * 75_000, 225_000),
    ("&", 5), ("<", 4), (">", 4), ("'", 6), ("é", 2), ("\U0001f600", 4), ("\x7f", 1),
])
def test_wire_size_as_documented(text: str, size: int) -> None:
    assert wire_size(text) == size


_special_heavy_text = st.text(alphabet=st.one_of(st.sampled_from("\"'<>&"), st.characters(codec="utf-8")), max_size=200)


@given(_special_heavy_text)
def test_wire_size_matches_slixmpp_escape_property(text: str) -> None:
    assert wire_size(text) == slixmpp_size(text)


# -- ApiRequest.expired / remaining_s -------------------------------------------------------


def test_no_deadline_never_expires() -> None:
    req = ApiRequest("i", SENDER, "x")
    assert req.expired() is False
    assert req.expired(at_ms=10**15) is False
    assert req.remaining_s() is None
    assert req.remaining_s(at_ms=0) is None


def test_expired_and_remaining_with_explicit_clock() -> None:
    req = ApiRequest("i", SENDER, "x", deadline_ms=10_000)
    assert not req.expired(at_ms=9_999)
    assert req.expired(at_ms=10_000)
    assert req.expired(at_ms=10_001)
    assert req.remaining_s(at_ms=9_500) == pytest.approx(0.5)
    assert req.remaining_s(at_ms=10_000) == 0
    assert req.remaining_s(at_ms=11_500) == pytest.approx(-1.5)


def test_expired_and_remaining_with_wall_clock() -> None:
    future = ApiRequest("i", SENDER, "x", deadline_ms=now_ms() + 3_600_000)
    past = ApiRequest("i", SENDER, "x", deadline_ms=now_ms() - 1)
    assert not future.expired()
    assert 0 < future.remaining_s() <= 3600  # type: ignore[operator]
    assert past.expired()
    assert past.remaining_s() < 0  # type: ignore[operator]


def test_now_ms_is_epoch_milliseconds() -> None:
    assert isinstance(now_ms(), int)
    assert abs(now_ms() - time.time() * 1000) < 60_000


# -- encode_result -------------------------------------------------------------------------

REQ = ApiRequest("iq-9", SENDER, "work")


@pytest.mark.parametrize("result", [None, [1], "ok", 0, True, ("a",)])
def test_encode_result_non_dict_is_bad_result(result: Any) -> None:
    answer = encode_result(REQ, result)
    assert isinstance(answer, ApiError)
    assert (answer.id, answer.to, answer.code) == ("iq-9", SENDER, "bad-result")
    assert type(result).__name__ in answer.message
    assert answer.condition == "internal-server-error"


@pytest.mark.parametrize("result", [{"s": {1}}, {"o": object()}, {"n": float("nan")},
                                    {"i": float("-inf")}, {"b": b"bytes"}])
def test_encode_result_not_json_is_bad_result(result: dict[str, Any]) -> None:
    answer = encode_result(REQ, result)
    assert isinstance(answer, ApiError)
    assert answer.code == "bad-result"
    assert "JSON" in answer.message


def test_encode_result_lone_surrogate_travels_as_escape() -> None:
    answer = encode_result(REQ, {"s": "\ud800 é"})
    assert isinstance(answer, ApiResult)
    assert answer.payload == '{"s":"\\ud800 é"}'
    assert decode_result(answer.payload) == {"s": "\ud800 é"}


def test_encode_result_too_large() -> None:
    answer = encode_result(REQ, {"blob": "a" * DEFAULT_MAX_PAYLOAD})
    assert isinstance(answer, ApiError)
    assert answer.code == "too-large"
    assert answer.condition == "not-acceptable"

    quoted = {"q": '"' * 100}
    limit = wire_size(json.dumps(quoted, separators=(",", ":"))) - 1
    small = encode_result(REQ, quoted, max_payload=limit)
    assert isinstance(small, ApiError) and small.code == "too-large"


def test_encode_result_ok() -> None:
    result = {"code": 0, "items": [1, 2.5, None], "name": "é<&>"}
    answer = encode_result(REQ, result)
    assert isinstance(answer, ApiResult)
    assert (answer.id, answer.to) == ("iq-9", SENDER)
    assert json.loads(answer.payload) == result
    assert decode_result(answer.payload) == result


# -- errors --------------------------------------------------------------------------------


def test_conditions_are_rfc6120_stanza_conditions() -> None:
    assert set(CONDITIONS.values()) <= RFC6120_STANZA_CONDITIONS


def test_protocol_error_rejects_unknown_code() -> None:
    with pytest.raises(ValueError, match="unknown error code"):
        ProtocolError("oops", "message")


@pytest.mark.parametrize("code", sorted(CONDITIONS))
def test_protocol_error_and_api_error_for_every_code(code: str) -> None:
    exc = ProtocolError(code, "why")
    assert exc.code == code and exc.message == "why"
    assert exc.condition == CONDITIONS[code]
    assert str(exc) == f"{code}: why"
    err = ApiError("i", SENDER, code, "why")
    assert err.condition == CONDITIONS[code]
    assert json.loads(err.payload) == {"error": {"code": code, "message": "why"}}
    # an error payload travels back through decode_error unchanged
    back = decode_error(err.condition, err.payload)
    assert (back.code, back.message) == (code, "why")


def test_encode_error_truncates_long_messages() -> None:
    doc = json.loads(encode_error("handler-error", "m" * 5000))
    assert doc["error"]["message"] == "m" * 1000


def test_decode_error_our_payload_wins_over_condition() -> None:
    err = decode_error("service-unavailable", encode_error("busy", "too many calls"))
    assert (err.code, err.message) == ("busy", "too many calls")


@pytest.mark.parametrize(("condition", "code"), [
    ("service-unavailable", "unavailable"),
    ("item-not-found", "unavailable"),
    ("recipient-unavailable", "interrupted"),
    ("forbidden", "forbidden"),
    ("not-authorized", "forbidden"),
    ("remote-server-timeout", "expired"),
    ("resource-constraint", "busy"),
    ("bad-request", "bad-request"),
    ("feature-not-implemented", "unknown-command"),
])
@pytest.mark.parametrize("text", [None, ""])
def test_decode_error_maps_server_conditions(condition: str, code: str, text: str | None) -> None:
    err = decode_error(condition, text)
    assert err.code == code
    assert err.message


def test_decode_error_unknown_condition_is_handler_error() -> None:
    err = decode_error("undefined-condition", None)
    assert err.code == "handler-error"
    assert "undefined-condition" in err.message


@pytest.mark.parametrize("garbage", [
    "not json", "[1, 2]", '"string"', "null", "42", "{}", '{"error": "boom"}', '{"error": null}',
    '{"error": [1]}', '{"error": {"code": "nonsense", "message": "x"}}', '{"error": {}}',
    "[" * 100_000 + "]" * 100_000,  # fixed: used to raise RecursionError
])
def test_decode_error_garbage_payload_falls_back_to_condition(garbage: str) -> None:
    err = decode_error("service-unavailable", garbage)
    assert err.code == "unavailable"


# -- decode_result -------------------------------------------------------------------------


@pytest.mark.parametrize("text", [None, ""])
def test_decode_result_empty_is_empty_dict(text: str | None) -> None:
    assert decode_result(text) == {}


@pytest.mark.parametrize("text", ["[1]", '"s"', "null", "3"])
def test_decode_result_non_object_is_bad_result(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_result(text)
    assert info.value.code == "bad-result"


def test_decode_result_has_no_depth_limit_but_survives_a_bomb() -> None:
    # MAX_DEPTH guards the worker; a caller takes what its worker sends, up to the decoder's guard
    assert decode_result('{"a": %s}' % ("[" * 200 + "]" * 200))
    with pytest.raises(ProtocolError, match="nested too deeply") as info:
        decode_result('{"a": %s}' % ("[" * 100_000 + "]" * 100_000))
    assert info.value.code == "bad-result"


def test_decode_result_invalid_json_is_bad_result() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_result("{not json")
    assert info.value.code == "bad-result"


# -- property: decode_request never raises anything but ProtocolError ------------------------

_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                          st.text(max_size=20))
_json_values = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
_request_like = st.fixed_dictionaries(
    {},
    optional={"cmd": st.one_of(st.text(max_size=210), _json_values),
              "body": _json_values,
              "deadline": _json_values},
)


def _check_decode_contract(text: str) -> None:
    try:
        req = decode_request("iq", SENDER, text)
    except ProtocolError as exc:
        assert exc.code in CONDITIONS
    else:
        assert isinstance(req.cmd, str) and req.cmd
        assert isinstance(req.body, dict)
        assert req.deadline_ms is None or isinstance(req.deadline_ms, int)


@given(st.text())
def test_decode_request_arbitrary_text(text: str) -> None:
    _check_decode_contract(text)


@given(_json_values)
def test_decode_request_arbitrary_json(value: Any) -> None:
    _check_decode_contract(json.dumps(value))


@given(_request_like)
def test_decode_request_request_shaped_json(value: dict[str, Any]) -> None:
    _check_decode_contract(json.dumps(value, ensure_ascii=False))


def test_xml_safe_replaces_only_characters_xml_forbids() -> None:
    assert xml_safe("a\x00b\ufffe\ud800\x1f") == "a\ufffdb\ufffd\ufffd\ufffd"
    keep = "tab\t nl\n cr\r é 日本 \U0001f600 \ud7ff \ue000 \ufffd"
    assert xml_safe(keep) == keep
