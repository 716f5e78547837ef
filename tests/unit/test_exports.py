"""The public homes of the names users import, and one definition behind each."""

from __future__ import annotations

import subprocess
import sys

import libs.bridge
import libs.scheduling
import libs.timers
from libs._enums import JobStatus, MisfirePolicy, RunState


def test_qe_scripts_import_the_timers_from_libs_bridge() -> None:
    names = set(libs.timers.__all__) - {"MisfirePolicy"}
    assert {"SetInterval", "SetIntervalSafe", "SetTimeout", "SetTimeoutSafe", "timer_stats"} <= names
    for name in names:
        assert name in libs.bridge.__all__
        assert getattr(libs.bridge, name) is getattr(libs.timers, name)


def test_every_exported_name_exists() -> None:
    for module in (libs.bridge, libs.scheduling, libs.timers):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_what_users_need_is_exported() -> None:
    from libs.bridge import ProtocolError
    from libs.bridge.protocol import ProtocolError as Defined
    from libs.scheduling import JobScheduler, RemoteWorker
    from libs.scheduling.client import RemoteWorker as DefinedClient
    from libs.scheduling.remote import JobScheduler as DefinedScheduler

    assert (ProtocolError, RemoteWorker, JobScheduler) == (Defined, DefinedClient, DefinedScheduler)


def test_one_misfire_policy_everywhere_and_strings_still_work() -> None:
    assert libs.scheduling.MisfirePolicy is libs.timers.MisfirePolicy is MisfirePolicy
    assert MisfirePolicy.COALESCE == "coalesce" and MisfirePolicy.SKIP == "skip"
    assert MisfirePolicy.parse("skip") is MisfirePolicy.SKIP
    assert [str(state) for state in RunState] == ["new", "running", "stopped", "finished"]
    assert [str(status) for status in JobStatus] == ["active", "finished", "cancelled"]


def test_period_comes_from_libs_bridge_lazily_in_either_import_order() -> None:
    """Seed 002 imports PERIOD beside App (daffi: ``from daffi import Global, PERIOD``); it
    lives in libs.scheduling, which builds on libs.bridge: loaded when first asked for, so
    ``import libs.bridge`` alone does not load the scheduler, and no order makes a cycle."""
    bridge_first = ("import sys, libs.bridge\n"
                    "assert 'libs.scheduling' not in sys.modules\n"
                    "from libs.bridge import PERIOD, ScheduledTask\n"
                    "import libs.scheduling\n"
                    "assert (PERIOD, ScheduledTask) == (libs.scheduling.PERIOD, libs.scheduling.JobHandle)\n")
    scheduling_first = ("from libs.scheduling import PERIOD as P, ScheduledTask as S\n"
                        "from libs.bridge import *\n"
                        "assert (PERIOD, ScheduledTask) == (P, S)\n")
    for code in (bridge_first, scheduling_first):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert libs.bridge.PERIOD is libs.scheduling.PERIOD
    assert libs.bridge.ScheduledTask is libs.scheduling.ScheduledTask is libs.scheduling.JobHandle
