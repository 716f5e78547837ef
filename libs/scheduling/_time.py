"""Instants: the one check that a datetime is aware, and the one ISO 8601 format we write.

The format: every time ``libs.scheduling`` writes -- trigger specs and descriptions,
periodic-task statistics and log lines, the answers of the ``schedule`` and ``jobs``
commands, result notifications, health reports -- is ISO 8601 in UTC with a ``Z``:
``2024-05-01T12:00:00Z``, with ``.ffffff`` only when there are microseconds. Why ``Z``:
trigger specs are stored with it in job files, so it is the one form that cannot change,
and ``datetime.fromisoformat`` reads it (Python 3.11+).

Pure functions; any thread.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

__all__ = ["aware_utc", "iso"]


def aware_utc(value: datetime, what: str = "time") -> datetime:
    """``value`` converted to UTC. ``ValueError`` naming ``what`` if it is not a datetime, or
    is a naive one (a wall-clock time without a zone is ambiguous)."""
    if not isinstance(value, datetime):
        raise ValueError(f"bad {what} {value!r}: expected an aware datetime")  # noqa: TRY004
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"naive datetime {value.isoformat()!r} as {what} is ambiguous: give it a time zone (e.g. UTC)"
        )
    return value.astimezone(UTC)


@overload
def iso(value: datetime | float) -> str: ...
@overload
def iso(value: None) -> None: ...
def iso(value: datetime | float | None) -> str | None:
    """An aware datetime or a UNIX timestamp in the one format (see the module doc); None
    stays None."""
    if value is None:
        return None
    instant = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    text = instant.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text
