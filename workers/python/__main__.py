"""``python -m workers.python``: run the default worker until Ctrl+C / SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import sys

from libs.cli import resource_arg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.python",
        description="Run the default qe-worker (ping, info, echo, stats, health, schedule, cancel, jobs) "
                    "as QE_JID/RESOURCE until Ctrl+C or SIGTERM.",
    )
    parser.add_argument("--resource", default="python", type=resource_arg,
                        help="XMPP resource (default: python; env RESOURCE wins)")
    parser.add_argument("--public", action="store_true", help="answer any caller, not only the own account and QE_ALLOW")
    parser.add_argument("--maintenance", action="store_true",
                        help="run the maintenance tasks: health check (5 min), statistics log (15 min), "
                             "job-history cleanup (1 h)")
    args = parser.parse_args(argv)

    from libs.startup import startup

    startup()
    from libs.scheduling.store import StoreVersionError
    from workers.python.worker import build

    try:
        build(resource=args.resource, public=args.public, maintenance=args.maintenance)
    except StoreVersionError as exc:  # a job file from a newer qe-worker: say so, touch nothing
        print(f"qe-worker: {exc}", file=sys.stderr)
        return 2
    asyncio.get_event_loop().run_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
