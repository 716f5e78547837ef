"""``python -m tests.support.probe_worker``: the default worker (``workers.python``) in a process
of its own, plus what a test needs to look inside it from outside.

Why a separate process: the hostile-input test measures the worker's memory, and only a
process of its own has a resident size that is the worker's alone (in the test's process it
would include the attacking clients and their buffers). psutil reads it from outside, as an
operator would.

What it adds to the default worker, all invisible to anyone but the owner:

- ``onapi`` records ``(cmd, role, caller's bare JID)`` of every call routed to a handler and
  returns None, so the built-in ``ping``/``info`` still answer; a request that never reaches
  a handler leaves no trace there;
- ``msgreceiver`` records ``(role, sender's bare JID)`` of every chat message delivered;
- ``probe`` (owner only) collects garbage and reports those records, the dispatcher's
  counters, the interpreter's live objects and memory blocks, and what could pile up per
  stanza elsewhere: asyncio tasks, our calls awaiting answers, slixmpp's roster items.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections import Counter
from typing import Any

from libs.bridge import APISpecs, MessageSpecs
from libs.bridge.protocol import ProtocolError
from libs.startup import startup


def main() -> None:
    startup()
    from workers.python.worker import build

    app = build(resource="probe")  # RESOURCE in the environment wins
    handled: Counter[tuple[str, str, str]] = Counter()
    delivered: Counter[tuple[str, str]] = Counter()

    async def record_call(specs: APISpecs) -> None:
        handled[specs.cmd, specs.role, specs.uid] += 1
        return None  # not ours: the built-ins answer

    async def record_message(specs: MessageSpecs) -> None:
        delivered[specs.role, specs.uid] += 1

    @app.command("probe")
    async def probe(specs: APISpecs) -> dict[str, Any]:
        if specs.role != "owner":
            raise ProtocolError("forbidden", "owner only")
        gc.collect()  # count what is alive, not garbage waiting for the next collection
        transport = app.transport
        session = transport._client if transport else None
        roster = session.roster if session else {}
        return {
            "handled": [[*key, n] for key, n in sorted(handled.items())],
            "messages": [[*key, n] for key, n in sorted(delivered.items())],
            "requests": dict(vars(app.dispatcher.stats)),
            "gc_objects": len(gc.get_objects()),
            "allocated_blocks": sys.getallocatedblocks(),
            "tasks": len(asyncio.all_tasks()),
            "pending_calls": len(transport._pending) if transport else 0,
            # slixmpp keeps an in-memory roster item per account that sent us presence
            "roster_items": sum(len(roster[jid]) for jid in roster.keys()),
        }

    app.xmpp.onapi = record_call
    app.xmpp.msgreceiver = record_message
    asyncio.get_event_loop().run_forever()


if __name__ == "__main__":
    main()
