"""Worker answers to ``metrics {"format": "json"}`` as the dashboard receives them, for the
dashboard's unit tests (model and web)."""

from __future__ import annotations

from typing import Any

from libs.observability.metrics import BUCKETS

__all__ = ["ONE", "counts", "doc"]

ONE = "worker@localhost/one"


def doc(*, time: float, calls: dict[str, dict[str, int]] | None = None,
        hist: dict[str, list[int]] | None = None, started_at: float = 5.0, **extra: Any) -> dict[str, Any]:
    """A ``metrics {"format": "json"}`` answer as a worker gives it."""
    return {"format": "json", "version": 1, "jid": ONE, "service": "one", "worker_version": "0.1.0",
            "started_at": started_at, "time": time, "online": True,
            "requests": {"received": 0, "answered": 0, "failed": 0, "forbidden": 0, "expired": 0, "in_flight": 1},
            "calls": calls or {}, "transport": {}, "timers": [],
            "latency": {"buckets": list(BUCKETS),
                        "commands": {cmd: {"counts": counts, "sum": 0.0} for cmd, counts in (hist or {}).items()}},
            **extra}


def counts(**at: int) -> list[int]:
    """A histogram's counts with ``at`` observations per bucket index (``b3=5``)."""
    out = [0] * (len(BUCKETS) + 1)
    for key, n in at.items():
        out[int(key[1:])] = n
    return out
