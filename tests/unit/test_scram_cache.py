"""SCRAM's salted password computed once per process (``xmpp._shared``, RFC 5802 §5.1), and
the shared TLS context: the cache only ever answers what computing would answer."""

from __future__ import annotations

import hashlib
import ssl

import slixmpp
from slixmpp.util.sasl.mechanisms import SCRAM

from libs.bridge.xmpp import _compat, _shared


def slow_hi(hash_name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
    """slixmpp's own pure-Python ``Hi``, on a mechanism object that only has what it reads."""
    mech = SCRAM.__new__(SCRAM)
    mech.hash = getattr(hashlib, hash_name)
    return bytes(SCRAM.Hi(mech, password, salt, iterations))


def test_the_cached_value_is_slixmpps_hi() -> None:
    cache = _shared.ScramCache()
    for name in ("sha1", "sha256"):
        expected = slow_hi(name, b"s3cret", b"salt-1", 4096)
        assert cache.salted_password(name, b"s3cret", b"salt-1", 4096) == expected
        assert cache.salted_password(name, b"s3cret", b"salt-1", 4096) == expected  # from the cache
    assert (cache.misses, cache.hits) == (2, 2)


def test_a_different_password_salt_iterations_or_hash_is_computed_not_taken() -> None:
    cache = _shared.ScramCache()
    base = ("sha1", b"pw", b"salt", 4096)
    first = cache.salted_password(*base)
    variants = [("sha1", b"pw2", b"salt", 4096), ("sha1", b"pw", b"salt2", 4096), ("sha1", b"pw", b"salt", 4097),
                ("sha256", b"pw", b"salt", 4096)]
    for variant in variants:
        got = cache.salted_password(*variant)
        assert got != first[: len(got)]
        assert got == slow_hi(*variant)
    assert (cache.misses, cache.hits) == (5, 0)


def test_the_oldest_entry_goes_when_full() -> None:
    cache = _shared.ScramCache(size=2)
    for salt in (b"a", b"b", b"c"):
        cache.salted_password("sha1", b"pw", salt, 10)
    cache.salted_password("sha1", b"pw", b"c", 10)
    cache.salted_password("sha1", b"pw", b"a", 10)  # evicted: computed again
    assert (cache.misses, cache.hits) == (4, 1)


async def test_a_clients_scram_login_takes_hi_from_the_cache() -> None:
    cache = _shared.ScramCache()
    client = slixmpp.ClientXMPP("w@localhost/x", "pw")
    mechanisms = client.plugin["feature_mechanisms"]
    mechanisms.unencrypted_scram = True
    _compat.cache_scram(client, cache.salted_password)
    mechanisms.mech_list = {"SCRAM-SHA-1"}
    mechanisms._send_auth()  # slixmpp picks the mechanism and sends its first message
    mech = mechanisms.mech
    assert type(mech).__name__ == "SCRAM"
    assert mech.Hi(b"pw", b"salt", 4096) == slow_hi("sha1", b"pw", b"salt", 4096)
    assert mech.Hi("pw", b"salt", 4096) == slow_hi("sha1", b"pw", b"salt", 4096)
    assert (cache.misses, cache.hits) == (1, 1)
    client.abort()


def test_one_tls_context_per_ca_file_as_strict_as_slixmpps() -> None:
    context = _shared.tls_context(None)
    assert _shared.tls_context(None) is context
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
