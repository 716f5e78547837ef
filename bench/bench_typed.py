"""What a typed command's validation costs per call, against ``onapi`` and a legacy command.

No network: ``Dispatcher.handle`` on the same request text, the way the XMPP adapter calls it
(decode, access, routing, the handler, encode). Three rows, interleaved rounds, min of rounds:
``onapi`` answering ``add``, a registered ``async def add(specs)``, and a typed ``async def
add(x: int, y: int = 0)`` whose body pydantic checks before it runs.

    python bench/bench_typed.py [--calls 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libs.bridge.access import AccessPolicy  # noqa: E402
from libs.bridge.dispatch import Dispatcher  # noqa: E402
from libs.bridge.protocol import encode_request  # noqa: E402
from libs.bridge.specs import APISpecs  # noqa: E402

OWNER = "worker@localhost/caller"
TEXT = encode_request("add", {"x": 2, "y": 3})


def dispatchers() -> dict[str, Dispatcher]:
    policy = AccessPolicy.create("worker@localhost", public=False)
    by_onapi, legacy, typed = (Dispatcher(policy) for _ in range(3))

    async def onapi(specs: APISpecs) -> dict[str, Any]:
        return {"sum": specs.body["x"] + specs.body["y"]}

    async def add_specs(specs: APISpecs) -> dict[str, Any]:
        return {"sum": specs.body["x"] + specs.body["y"]}

    async def add(x: int, y: int = 0) -> dict[str, Any]:
        return {"sum": x + y}

    by_onapi.onapi = onapi
    legacy.commands.register("add", add_specs)
    typed.commands.register("add", add)
    return {"onapi": by_onapi, "registered add(specs)": legacy, "typed add(x: int, y: int = 0)": typed}


async def per_call_us(dispatcher: Dispatcher, calls: int) -> float:
    handle = dispatcher.handle
    t = time.perf_counter()
    for i in range(calls):
        await handle(str(i), OWNER, TEXT, "set")
    return (time.perf_counter() - t) / calls * 1e6


async def main(args: argparse.Namespace) -> None:
    rows = dispatchers()
    for dispatcher in rows.values():  # warm-up, and each answers what the others answer
        assert (await dispatcher.handle("w", OWNER, TEXT, "set")).payload == '{"sum":5}'
        await per_call_us(dispatcher, 2000)
    best = {name: float("inf") for name in rows}
    for _ in range(args.rounds):
        for name, dispatcher in rows.items():
            best[name] = min(best[name], await per_call_us(dispatcher, args.calls))
    print(f"# bench_typed  {time.strftime('%Y-%m-%d %H:%M')}  Python {platform.python_version()}  "
          f"{args.calls} calls x {args.rounds} rounds, min")
    base = best["onapi"]
    for name, us in best.items():
        print(f"{name:32} {us:7.2f} us/call  {us / base:5.2f}x onapi  {us - base:+6.2f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    asyncio.run(main(parser.parse_args()))
