"""How one call ended, for tests that make many and count the outcomes.

Why: a reliability test must show that every call ends once, with a result or a *clear*
error, and never hangs; so each call is bounded by its own timeout plus a margin, and any
other way of ending is recorded (and then failed on) instead of aborting the whole run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from libs.bridge import App, CallError, Client

__all__ = ["Ended", "call_once", "found_all"]


@dataclass(frozen=True)
class Ended:
    """``kind``: ``result``, a ``CallError`` code (``timeout``, ``not-connected``,
    ``unavailable``, ...), ``hung`` (still running at timeout + margin) or ``unexpected ...``
    (any other exception). ``answer`` is the result's dict; ``at`` the loop time it ended."""

    kind: str
    answer: dict[str, Any] | None
    at: float


async def call_once(client: Client, jid: str, cmd: str, body: dict[str, Any], *, timeout: float,
                    margin: float) -> Ended:
    """``client.call(...)`` bounded by ``timeout + margin``; never raises (but cancellation)."""
    loop = asyncio.get_running_loop()
    bound = asyncio.timeout(timeout + margin)
    answer = None
    try:
        async with bound:
            answer = await client.call(jid, cmd, body, timeout=timeout)
        kind = "result"
    except CallError as exc:
        kind = exc.code
    except TimeoutError:
        kind = "hung" if bound.expired() else "unexpected TimeoutError"
    except Exception as exc:  # recorded: the test fails on it with the whole picture
        kind = f"unexpected {type(exc).__name__}: {exc}"
    return Ended(kind, answer, loop.time())


async def found_all(app: App, service: str, expected: list[str], timeout: float = 15) -> list[str]:
    """``app``'s ``find`` of ``service``, sorted, once it lists exactly ``expected`` (or
    whatever it lists after ``timeout`` s, for the caller's assert to show).

    Why not one ``find``: a worker knows it is in its service's room when its own join comes
    back; a caller on another node of a cluster hears of that join a moment later."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        found = sorted((await app.find(app=service, timeout=timeout))["jids"])
        if found == sorted(expected) or loop.time() >= end:
            return found
        await asyncio.sleep(0.05)  # the pace of the re-reads; the room's presence arrives meanwhile
