"""QE's chat wire format (``libs.bridge.qewire``): base64 of zlib-deflated JSON, calls
``{"mid", "api", ...body}`` and replies ``{...result, "mid"}``. Plain chat must come out as
"not QE" (None), QE-looking junk as a ``ProtocolError``, and a zlib bomb must cost nothing."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import string
import time
import tracemalloc
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.bridge.protocol import CONDITIONS, DEFAULT_MAX_PAYLOAD, MAX_DEPTH, ProtocolError
from libs.bridge.qewire import (
    MAX_API,
    MAX_MID,
    QE_CODES,
    QeCall,
    QeWireError,
    decode,
    decode_doc,
    encode,
    encode_error,
    encode_reply,
)

MID = "a1B2c3D4e5"


def wire(data: bytes | str, **compress: Any) -> str:
    """``data`` as QE sends it: deflated (zlib format), then base64."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(zlib.compress(raw, **compress)).decode("ascii")


def bad(text: str, **kwargs: Any) -> QeWireError:
    with pytest.raises(QeWireError) as info:
        decode(text, **kwargs)
    return info.value


# -- round trips ------------------------------------------------------------------------------

# any code point, surrogates included, with the ones that need care drawn often
_any_char = st.one_of(st.sampled_from("\ud800\udbff\udc00\udfff\ufffe\uffff\x00\x1f\x7f\"\\€"),
                      st.characters(codec=None, exclude_categories=()))
_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              st.text(_any_char, max_size=30)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(_any_char, max_size=8), children,
                                                                       max_size=4),
    max_leaves=12,
)
_bodies = st.dictionaries(st.text(_any_char, max_size=8).filter(lambda k: k not in ("mid", "api")), _json_values,
                          max_size=5)
_mids = st.text(_any_char, min_size=1, max_size=MAX_MID)
_cmds = st.text(_any_char, min_size=1, max_size=MAX_API)


def as_json(value: Any) -> Any:
    """``value`` as any JSON decoder reads it back (two escaped surrogates side by side are
    the one character they encode, as in protocol.py)."""
    return json.loads(json.dumps(value))


@given(_mids, _cmds, _bodies)
def test_any_call_round_trips(mid: str, cmd: str, body: dict[str, Any]) -> None:
    text = encode({"mid": mid, "api": cmd, **body})
    assert text.isascii() and "\n" not in text
    call = decode(text)
    assert call == QeCall(as_json(mid), as_json(cmd), as_json(body))


@given(_mids, st.dictionaries(st.text(_any_char, max_size=8), _json_values, max_size=5))
def test_any_reply_round_trips_with_its_mid(mid: str, result: dict[str, Any]) -> None:
    assert decode_doc(encode_reply(mid, result)) == as_json({**result, "mid": mid})


@given(st.dictionaries(st.text(_any_char, max_size=8), _json_values, max_size=5))
def test_any_json_object_round_trips(doc: dict[str, Any]) -> None:
    assert decode_doc(encode(doc)) == as_json(doc)


def test_what_qe_sends_is_read() -> None:
    """As QE's clients write it (pako/zlib at any level, key order as they come, spaces)."""
    for level in (0, 1, 6, 9):
        text = wire(f'{{"api": "add", "x": 2, "mid": "{MID}", "y": [3, {{"z": null}}]}}', level=level)
        assert decode(text) == QeCall(MID, "add", {"x": 2, "y": [3, {"z": None}]})
    assert decode(wire(f'{{"mid":"{MID}","api":"ping"}}') + "\n") == QeCall(MID, "ping", {})  # around: ignored


def test_the_reply_is_the_result_with_the_mid() -> None:
    reply = decode_doc(encode_reply(MID, {"code": 0, "sum": 5, "mid": "someone else's"}))
    assert reply == {"code": 0, "sum": 5, "mid": MID}
    assert encode(reply) == encode_reply(MID, {"code": 0, "sum": 5})  # compact JSON, in order


# -- errors as QE answers them --------------------------------------------------------------------


def test_every_error_code_has_a_distinct_negative_qe_code() -> None:
    assert set(QE_CODES) == set(CONDITIONS)
    assert all(code < 0 for code in QE_CODES.values())
    assert len(set(QE_CODES.values())) == len(QE_CODES)
    assert QE_CODES["unknown-command"] == -1000  # QE's own "no api handler"


@pytest.mark.parametrize("code", sorted(QE_CODES))
def test_an_error_reply_is_qe_style(code: str) -> None:
    assert decode_doc(encode_error(MID, code, "why")) == {"code": QE_CODES[code], "msg": "why", "mid": MID}


def test_an_error_reply_always_fits() -> None:
    reply = decode_doc(encode_error("m" * MAX_MID, "handler-error", "\ud800" * 10_000))
    assert reply is not None and len(reply["msg"]) == 1000
    with pytest.raises(ValueError, match="unknown error code"):
        encode_error(MID, "oops", "x")
    with pytest.raises(ValueError, match="mid"):
        encode_error("", "forbidden", "x")


@pytest.mark.parametrize("result, code", [
    ([1, 2], "bad-result"),
    ("text", "bad-result"),
    (None, "bad-result"),
    ({"n": float("nan")}, "bad-result"),
    ({"s": {1, 2}}, "bad-result"),
    ({"big": "x" * DEFAULT_MAX_PAYLOAD}, "too-large"),
])
def test_a_reply_that_cannot_travel_is_an_error_to_answer_with_its_mid(result: Any, code: str) -> None:
    with pytest.raises(QeWireError) as info:
        encode_reply(MID, result)
    assert (info.value.code, info.value.mid) == (code, MID)


def test_encode_checks_the_json_and_the_encoded_size() -> None:
    fits = {"s": "x" * 990}
    json_size = len(json.dumps(fits, separators=(",", ":")))
    assert decode_doc(encode(fits, max_payload=json_size)) == fits
    with pytest.raises(QeWireError, match="bytes of JSON") as info:
        encode(fits, max_payload=json_size - 1)
    assert info.value.code == "too-large"
    # hardly compressible (random printable ASCII): the JSON fits, base64 of its deflated form does not
    rng = random.Random(7)
    alphabet = "".join(ch for ch in string.printable[:94] if ch not in '"\\')
    noise = {"s": "".join(rng.choice(alphabet) for _ in range(3000))}
    json_size = len(json.dumps(noise, separators=(",", ":")))
    with pytest.raises(QeWireError, match="encoded") as info:
        encode(noise, max_payload=json_size)
    assert info.value.code == "too-large"
    for not_an_object in ([1], "x", None):
        with pytest.raises(ValueError, match="dict"):
            encode(not_an_object)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="JSON"):
        encode({"inf": float("inf")})


def test_qe_call_is_validated_and_frozen() -> None:
    call = QeCall(MID, "ping")
    assert call.body == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.cmd = "other"  # type: ignore[misc]
    for args in (("", "x"), ("m" * (MAX_MID + 1), "x"), (MID, ""), (MID, "c" * (MAX_API + 1)),
                 (MID, "x", {"mid": 1}), (MID, "x", {"api": 1}), (MID, "x", [1])):
        with pytest.raises(ValueError):
            QeCall(*args)  # type: ignore[arg-type]


# -- not QE's format: None, so that the text reaches msgreceiver ---------------------------------


@pytest.mark.parametrize("text", [
    "", "   ", "hello", "====", "AAAA====", "AAAAA===", "eJyrrgUAAXUA+Q=A", "hello world", "test", "okay", "Hellohellohe", "ok, see you at 10",
    f'{{"mid": "{MID}", "api": "ping"}}',                            # JSON, but not deflated
    base64.b64encode(f'{{"mid": "{MID}", "api": "ping"}}'.encode()).decode(),  # base64 of plain JSON
    base64.b64encode(b"hello world!").decode(),
    "eJzz",                                                          # a zlib header, nothing after it
    wire("{}")[:-4],                                                 # cut short
    wire("{}").rstrip("="),                                          # padding missing
    wire("{}")[:8] + "\n" + wire("{}")[8:],                          # a line break inside
    base64.b64encode(zlib.compress(b"{}")[:-1] + b"\0").decode(),   # checksum wrong
    base64.b64encode(zlib.compress(b"{}") + b"tail").decode(),      # followed by other bytes
    base64.b64encode(zlib.compressobj(wbits=-15).compress(b"{}") + b"\3\0" * 4).decode(),  # raw deflate
    base64.b64encode(__import__("gzip").compress(b"{}", mtime=0)).decode(),  # gzip, not zlib
])
def test_text_that_is_not_qe_wire_is_none(text: str) -> None:
    assert decode(text) is None and decode_doc(text) is None


@given(st.text(max_size=200))
def test_any_text_is_none_a_call_or_a_protocol_error(text: str) -> None:
    try:
        result = decode(text)
    except QeWireError as exc:
        assert exc.code in ("bad-request", "too-large")
    else:
        assert result is None or isinstance(result, QeCall)
    if any(ch not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=" for ch in text.strip()):
        assert decode(text) is None  # a character base64 does not have: plain text


# -- QE's format, but not a valid call: ProtocolError ---------------------------------------------


@pytest.mark.parametrize("payload, words", [
    (b"\xff\xfe{}", "not UTF-8"),
    ("{mid", "not valid JSON"),
    ("", "not valid JSON"),
    (f'{{"mid": "{MID}", "api": "x", "n": NaN}}', "NaN"),
    (f'{{"mid": "{MID}", "api": "x", "n": -Infinity}}', "NaN or Infinity"),
    (f'{{"mid": "{MID}", "api": "x", "n": 1e400}}', "beyond the range"),
    (f'["{MID}", "x"]', "JSON object"),
    ('"text"', "JSON object"),
    ("null", "JSON object"),
    ("[" * 100_000 + "]" * 100_000, "nested"),
])
def test_bad_json_inside_is_bad_request(payload: bytes | str, words: str) -> None:
    error = bad(wire(payload))
    assert isinstance(error, ProtocolError)
    assert error.code == "bad-request" and words in error.message and error.mid is None


@pytest.mark.parametrize("doc", [{"api": "x"}, {"mid": "", "api": "x"}, {"mid": None, "api": "x"},
                                 {"mid": 1234567890, "api": "x"}, {"mid": ["m"], "api": "x"},
                                 {"mid": "m" * (MAX_MID + 1), "api": "x"}])
def test_a_missing_or_bad_mid_is_bad_request_without_a_mid(doc: dict[str, Any]) -> None:
    error = bad(encode(doc))
    assert (error.code, error.mid) == ("bad-request", None) and "'mid'" in error.message


@pytest.mark.parametrize("api", [None, "", 5, ["ping"], {"cmd": "x"}, "c" * (MAX_API + 1)])
def test_a_missing_or_bad_api_is_bad_request_with_the_mid_to_answer(api: Any) -> None:
    doc = {"mid": MID} if api is None else {"mid": MID, "api": api}
    error = bad(encode(doc))
    assert (error.code, error.mid) == ("bad-request", MID) and "'api'" in error.message
    # what the worker answers then
    assert decode_doc(encode_error(error.mid, error.code, error.message))["code"] == QE_CODES["bad-request"]


def test_depth_is_limited_as_in_our_protocol() -> None:
    def nested(depth: int) -> str:  # the top-level object is depth 1
        return f'{{"mid": "{MID}", "api": "x", "a": ' + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "}"

    assert decode(wire(nested(MAX_DEPTH))) is not None
    assert "deeper than 64" in bad(wire(nested(MAX_DEPTH + 1))).message
    # brackets in strings do not count
    assert decode(wire(f'{{"mid": "{MID}", "api": "x", "s": "{"[" * 500}"}}')) is not None


# -- size and decompression bombs ---------------------------------------------------------------


def test_the_size_limit_counts_the_inflated_json_and_the_boundary_is_inclusive() -> None:
    doc = f'{{"mid": "{MID}", "api": "x", "pad": "' + " " * 1000 + '"}'
    size = len(doc.encode())
    assert decode(wire(doc), max_payload=size) is not None
    error = bad(wire(doc), max_payload=size - 1)
    assert error.code == "too-large" and f"more than {size - 1} bytes" in error.message


def _bomb(megabytes: int) -> str:
    """base64 of zlib of ``megabytes`` MB of spaces inside a JSON string, made without
    holding them."""
    deflater = zlib.compressobj(9)
    chunk = b" " * (1 << 20)
    parts = [deflater.compress(f'{{"mid": "{MID}", "api": "x", "pad": "'.encode())]
    parts += [deflater.compress(chunk) for _ in range(megabytes)]
    parts += [deflater.compress(b'"}'), deflater.flush()]
    return base64.b64encode(b"".join(parts)).decode()


def test_a_decompression_bomb_is_refused_without_inflating_it() -> None:
    bomb = _bomb(64)  # 64 MiB of JSON in about 90 kB of text
    assert len(bomb) < 150_000
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        error = bad(bomb, max_payload=100_000)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.code == "too-large" and error.mid is None
    assert peak < 2 * len(bomb) + 5 * 100_000, peak  # the text's bytes and max_payload of output, not 64 MiB
    assert elapsed < 1.0, elapsed
