"""What every XMPP session of a process can share: the TLS context and SCRAM's salted passwords.

Why: a slixmpp client builds its own ``ssl.SSLContext`` at construction and loads the system's
CA bundle into it (~33 ms, even with TLS off), and its SCRAM login computes PBKDF2 in pure
Python (~18 ms at 4096 iterations). For one worker per process that is start-up noise; for a
``WorkerGroup`` of 1,000 sessions it is most of the start-up. Both results depend only on
their inputs, so one copy per process serves every session:

- ``tls_context(ca_file)``: one context per CA file (None: the system's CAs), configured as
  slixmpp configures its own (hostname checked, certificate required). ``SSLContext`` is meant
  to be shared by connections; the server name is given per connection. The CA file is read
  once per process: a CA file changed on disk takes effect at the next start.
- ``ScramCache``: SCRAM's ``SaltedPassword = Hi(password, salt, iterations)`` per (hash,
  password, salt, iterations), as RFC 5802 §5.1 allows clients to cache it. It lives in this
  process's memory only, never on disk or in logs; it holds what the process already holds
  (the password it logs in with). ``Hi`` is computed by ``hashlib.pbkdf2_hmac`` (C), which
  gives the same bytes as slixmpp's loop.

Thread affinity: both may be used from any thread (the cache is guarded by a lock).
"""

from __future__ import annotations

import functools
import hashlib
import ssl
import threading
from collections import OrderedDict
from typing import Final

__all__ = ["SCRAM_CACHE", "ScramCache", "tls_context"]


@functools.lru_cache(maxsize=8)
def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The process's TLS context for servers trusted by the system's CAs plus ``ca_file``."""
    context = ssl.create_default_context()
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_default_verify_paths()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


class ScramCache:
    """SCRAM salted passwords, computed once per (hash, password, salt, iterations).

    A different password, salt, iteration count or hash is a different entry: the cache can
    only ever answer what computing would answer. At most ``size`` entries (the oldest goes).
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, bytes, bytes, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def salted_password(self, hash_name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
        """``Hi(password, salt, iterations)`` of RFC 5802 with ``hash_name`` (a hashlib name:
        ``sha1``, ``sha256``, ...)."""
        key = (hash_name, password, salt, iterations)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
        value = hashlib.pbkdf2_hmac(hash_name, password, salt, iterations)
        with self._lock:
            self.misses += 1
            self._entries[key] = value
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


SCRAM_CACHE: Final = ScramCache()
"""The process's cache, used by every ``XmppTransport``."""
