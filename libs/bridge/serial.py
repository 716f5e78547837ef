"""``serial_generator``: QE's random id helper."""

from __future__ import annotations

import secrets
import string

__all__ = ["serial_generator"]

_ALPHABET = string.ascii_letters + string.digits


def serial_generator(length: int = 10) -> str:
    """A random string of ``length`` letters and digits, from ``secrets`` (unguessable, so
    it is safe for ids that act as capabilities)."""
    if length < 0:
        raise ValueError("length must be >= 0")
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))
