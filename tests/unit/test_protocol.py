"""Unit tests for ``libs.bridge.protocol``: the wire format as plain objects, no server."""

from __future__ import annotations

import json
import time
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


@pytest.mark.parametrize("odd", ["\ud800", "\ufffe", "\uffff", "é", "日本", "\x00"])
def test_encoded_text_is_ascii_so_always_valid_in_xml(odd: str) -> None:
    # characters XML forbids (U+FFFE, lone surrogates) would make the server drop our
    # stream; as JSON escapes they travel safely and decode to the same string
    text = encode_request("x", {"s": odd})
    assert text.isascii()
    assert json.loads(text)["body"]["s"] == odd


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


@pytest.mark.parametrize("deadline", ["true", "false", '"123"', "[1]", "{}", "NaN", "Infinity",
                                      "-Infinity", "1e400", "-1e400"])
def test_decode_request_bad_deadline(deadline: str) -> None:
    # json.loads accepts the NaN/Infinity literals (and 1e400 overflows to inf)
    with pytest.raises(ProtocolError, match="'deadline'") as info:
        decode('{"cmd": "x", "deadline": %s}' % deadline)
    assert info.value.code == "bad-request"


def test_decode_request_huge_integer_deadline_is_bad_request() -> None:
    assert decode_code('{"cmd": "x", "deadline": 1%s}' % ("0" * 400)) == "bad-request"


def test_decode_request_deadline_null_float_and_int() -> None:
    assert decode('{"cmd": "x", "deadline": null}').deadline_ms is None
    assert decode('{"cmd": "x", "deadline": 1700000000000}').deadline_ms == 1_700_000_000_000
    req = decode('{"cmd": "x", "deadline": 1700000000000.9}')
    assert req.deadline_ms == 1_700_000_000_000
    assert isinstance(req.deadline_ms, int)


def test_decode_request_depth_limit_is_exact() -> None:
    assert decode(nested_request(MAX_DEPTH)).cmd == "x"
    with pytest.raises(ProtocolError, match=f"deeper than {MAX_DEPTH}") as info:
        decode(nested_request(MAX_DEPTH + 1))
    assert info.value.code == "bad-request"


def test_decode_request_depth_counts_lists() -> None:
    # root (1) + body (2) + n nested lists (3 .. n+2)
    lists = lambda n: "[" * n + "]" * n  # noqa: E731
    assert decode('{"cmd": "x", "body": {"a": %s}}' % lists(MAX_DEPTH - 2)).cmd == "x"
    assert decode_code('{"cmd": "x", "body": {"a": %s}}' % lists(MAX_DEPTH - 1)) == "bad-request"


def test_decode_request_recursion_bomb_is_bad_request() -> None:
    n = 50_000
    text = '{"cmd": "x", "body": {"a": ' + "[" * n + "]" * n + "}}"
    assert wire_size(text) < DEFAULT_MAX_PAYLOAD
    with pytest.raises(ProtocolError, match="nested") as info:
        decode(text)
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
    answer = encode_result(REQ, {"s": "\ud800"})
    assert isinstance(answer, ApiResult)
    assert answer.payload.isascii() and decode_result(answer.payload) == {"s": "\ud800"}


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
    ("recipient-unavailable", "unavailable"),
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
    from libs.bridge.protocol import xml_safe

    assert xml_safe("a\x00b\ufffe\ud800\x1f") == "a\ufffdb\ufffd\ufffd\ufffd"
    keep = "tab\t nl\n cr\r é 日本 \U0001f600 \ud7ff \ue000 \ufffd"
    assert xml_safe(keep) == keep
