"""The test kit for users' own workers (libs.testing, its pytest plugin): a QE-style script
loaded into the test's loop on a MemoryNetwork, run as ``qe-worker run`` runs it up to
``run_forever()``, and everything it started undone afterwards. The real-server fixtures and
the plugin as a user installs it: tests/integration/test_testkit.py."""

from __future__ import annotations

import importlib.metadata
import logging
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from libs import _runtime
from libs._script import ScriptError
from libs.bridge import App, MemoryNetwork, RemoteError
from libs.testing import VirtualClock, WorkerModule, worker_module
from libs.timers.virtual import live_timers

LEGACY = """\
from libs.startup import startup
startup()
import asyncio
from libs.bridge import APISpecs, App as app, SetInterval

App = app(resource="python")
beats = []

async def api(specs: APISpecs):
    if specs.cmd == "add":
        return {"sum": specs.body["x"] + specs.body["y"]}

App.xmpp.onapi = api
SetInterval(lambda: beats.append(1), 3_600_000).start()
loop = asyncio.get_event_loop()
loop.run_forever()
after_run_forever = True
"""

NEXUS = """\
import asyncio
from libs.bridge import App as AppClass, NexusAPISpecs

App = AppClass(public=True, app="calc")

@App.nexus.API("double")
async def double(specs: NexusAPISpecs):
    return {"code": 0, "value": 2 * specs.body["x"]}

res = await App.api(app="calc", cmd="double", body={"x": 21})   # top-level await, as in QE's docs
main_ran = False
if __name__ == "__main__":
    main_ran = True
try:
    asyncio.get_event_loop().run_forever()
finally:
    print("stopped")
"""


def script(tmp_path: Path, source: str, name: str = "worker_script.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


async def test_a_legacy_script_loads_up_to_run_forever_and_answers(qe_worker_module, tmp_path: Path) -> None:
    worker: WorkerModule = await qe_worker_module(script(tmp_path, LEGACY))
    assert worker.jid == "worker@localhost/python" and worker.app is worker.module.App
    assert await worker.call("add", {"x": 2, "y": 3}) == {"sum": 5}
    assert await worker.call("ping") == {"pong": True, "environment": "python"}  # the built-in still answers
    assert not hasattr(worker.module, "after_run_forever")  # loading ends at run_forever()


async def test_a_nexus_script_with_top_level_await(qe_worker_module, tmp_path: Path) -> None:
    worker = await qe_worker_module(script(tmp_path, NEXUS))
    assert worker.module.res == {"code": 0, "value": 42}  # awaited on the test's loop, through the service
    assert worker.module.main_ran is False  # __name__ is the module's own, not "__main__"
    assert worker.module.__name__ == "worker_script"
    assert await worker.call("double", {"x": 4}) == {"code": 0, "value": 8}


async def test_unloading_undoes_what_the_script_did(tmp_path: Path) -> None:
    net = MemoryNetwork()
    path = script(tmp_path, LEGACY)
    modules, sys_path = dict(sys.modules), list(sys.path)
    async with worker_module(path, network=net) as worker:
        assert sys.modules["worker_script"] is worker.module
        assert sys.path[0] == str(tmp_path)  # as `python script.py`: its folder first, for its imports
        timer = next(t for t in live_timers() if t.name == "<lambda>")
        assert net.online() == [worker.caller.transport.jid, "worker@localhost/python"]
    assert not timer.is_running
    assert net.online() == []
    assert sys.path == sys_path and "worker_script" not in sys.modules
    assert all(sys.modules[name] is module for name, module in modules.items())


async def test_each_load_imports_the_scripts_helpers_afresh(tmp_path: Path) -> None:
    script(tmp_path, "calls = []\n", "helper.py")
    path = script(tmp_path, "import helper\nfrom libs.bridge import App\nApp = App()\nhelper.calls.append(1)\n")
    async with worker_module(path) as worker:
        assert worker.module.helper.calls == [1]
    async with worker_module(path) as worker:
        assert worker.module.helper.calls == [1]  # a new process would import it afresh: so does the kit
    assert "helper" not in sys.modules


async def test_startup_in_a_loaded_script_sets_nothing_up(tmp_path: Path) -> None:
    root = logging.getLogger()
    before = (_runtime._RT.loop, _runtime._RT.config, list(root.handlers), root.level,
              signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    async with worker_module(script(tmp_path, LEGACY)) as worker:
        assert worker.app.loop.is_running()  # the test's loop serves it
        assert (_runtime._RT.loop, _runtime._RT.config, list(root.handlers), root.level,
                signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert _runtime.host() is None and _runtime.hosted_transport("python") is None  # only while loading


async def test_access_follows_allow_and_the_resource_can_be_overridden(qe_worker_module, qe_caller,
                                                                       tmp_path: Path) -> None:
    worker = await qe_worker_module(script(tmp_path, LEGACY), jid="calc@example.org", allow=[],
                                    resource="calc-1")
    assert worker.jid == "calc@example.org/calc-1"
    with pytest.raises(RemoteError) as error:
        await worker.call("add", {"x": 1, "y": 1})  # client@localhost is not allowed now
    assert error.value.code == "forbidden"
    owner = await qe_caller("calc@example.org")  # its own account always is
    assert await owner.call(worker.jid, "add", {"x": 1, "y": 1}) == {"sum": 2}


async def test_two_workers_of_one_script_and_a_module_name(qe_worker_module, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    script(tmp_path, NEXUS, "calc_worker.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = await qe_worker_module("calc_worker")  # a module name, found on sys.path and not imported
    second = await qe_worker_module("calc_worker", resource="second")
    assert first.module is not second.module and first.app is not second.app
    assert await second.caller.call(first.jid, "double", {"x": 1}) == {"code": 0, "value": 2}
    with pytest.raises(ValueError, match="worker@localhost/python is taken on this network"):
        await qe_worker_module("calc_worker")  # would take over the first one's session
    other = await qe_worker_module(script(tmp_path, LEGACY.replace('resource="python"', 'resource="legacy"')))
    assert other.jid == "worker@localhost/legacy"
    assert await first.call("double", {"x": 2}) == {"code": 0, "value": 4}


async def test_a_relative_path_is_taken_from_the_test_files_folder(qe_worker_module) -> None:
    with pytest.raises(FileNotFoundError, match=str(Path(__file__).parent / "no_such_worker.py")):
        await qe_worker_module("no_such_worker.py")


async def test_scripts_that_cannot_be_loaded_say_why(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match="bad.py:2: SyntaxError"):
        async with worker_module(script(tmp_path, "x = 1\nif\n", "bad.py")):
            pass
    with pytest.raises(LookupError, match="made no App at module level"):
        async with worker_module(script(tmp_path, "def main():\n    pass\n", "no_app.py")):
            pass
    with pytest.raises(RuntimeError) as error:
        async with worker_module(script(tmp_path, """\
                import asyncio
                from libs.bridge import App
                App = App()
                asyncio.get_event_loop().run_until_complete(asyncio.gather())
                """, "runs_the_loop.py")):
            pass
    assert "use top-level await instead" in "".join(error.value.__notes__)
    with pytest.raises(TimeoutError) as timeout:
        async with worker_module(script(tmp_path, "import asyncio\nawait asyncio.Event().wait()\n", "hangs.py"),
                                 timeout=0.05):
            pass
    assert "hangs.py:2 did not finish within 0.05 s" in "".join(timeout.value.__notes__)


async def test_an_exception_at_import_comes_out_as_it_is_and_the_app_made_before_leaves(tmp_path: Path) -> None:
    net = MemoryNetwork()
    before = set(live_timers())
    with pytest.raises(ZeroDivisionError):
        async with worker_module(script(tmp_path, """\
                from libs.bridge import App, SetInterval
                App = App()
                SetInterval(print, 3_600_000).start()
                1 / 0
                """), network=net):
            pass
    assert net.online() == [] and set(live_timers()) == before


async def test_the_clock_drives_a_loaded_scripts_timers(qe_clock: VirtualClock, qe_worker_module,
                                                        tmp_path: Path) -> None:
    worker = await qe_worker_module(script(tmp_path, LEGACY.replace("3_600_000", "1000")))
    assert await qe_clock.advance(3.0) == 3
    assert worker.module.beats == [1, 1, 1]


async def test_an_app_made_outside_a_loaded_script_is_not_hosted(qe_worker_module, tmp_path: Path) -> None:
    await qe_worker_module(script(tmp_path, LEGACY))
    with pytest.raises(SystemExit):  # no QE_* configuration: App() says so, as in any script
        App()


def test_the_plugin_is_installed_as_an_entry_point(pytestconfig: pytest.Config) -> None:
    points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert points.get("qe_worker") == "libs.testing.plugin"
    assert pytestconfig.pluginmanager.has_plugin("qe_worker")


def test_loading_the_plugin_imports_nothing_of_the_library() -> None:
    # pytest loads it in every project where qe-worker is installed: it must cost nothing there
    code = ("import sys, libs.testing.plugin, libs.testing\n"
            "assert not {'libs.bridge', 'slixmpp', 'libs.testing._module'} & set(sys.modules), sorted(sys.modules)\n"
            "assert set(libs.testing.__all__) <= set(dir(libs.testing))\n"
            "assert libs.testing.worker_module.__module__ == 'libs.testing._module'\n")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr == ""
