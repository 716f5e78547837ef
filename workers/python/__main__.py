"""``python -m workers.python``: run the default worker until Ctrl+C / SIGTERM (the same as
``qe-worker run``, with the same options)."""

from __future__ import annotations

import argparse

from libs.cli import RunOptions, add_run_arguments
from workers.python import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.python",
        description="Run the default qe-worker (ping, info, echo, stats, health, schedule, cancel, jobs) "
                    "as QE_JID/RESOURCE until Ctrl+C or SIGTERM.",
    )
    add_run_arguments(parser)
    return run(RunOptions.from_args(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
