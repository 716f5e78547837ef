"""``qe-worker run SCRIPT`` (``libs._script``): QE scripts with top-level ``await`` *and* their
own ``run_forever()``, run statement by statement, as ``python SCRIPT`` would run them
otherwise. No server: the scripts here use the loop, not XMPP (tests/integration/test_cli.py
runs one with an ``App``)."""

from __future__ import annotations

import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from libs import _runtime, cli
from libs._script import ScriptError, load_script, run_script
from tests.support.runtime import restored_process

ENV = {"QE_JID": "worker@example.org", "QE_PASSWORD": "pw-unit", "QE_LOG_LEVEL": "WARNING"}


@pytest.fixture
def process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The QE_* configuration, and everything ``startup()`` changes put back afterwards
    (current loop, signal handlers, root logger, ``libs._runtime``)."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    with restored_process():
        yield


def script(tmp_path: Path, source: str, name: str = "worker.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def run(path: str, *args: str) -> int:
    return run_script(path, args)


# -- top-level await and the script's own loop calls ---------------------------------------


def test_top_level_await_then_the_scripts_own_run_until_complete_and_run_forever(
        process, tmp_path, capsys) -> None:
    """QE's docs: ``await`` at top level, synchronous helpers that run the loop at module
    level, ``run_forever()`` at the end. The loop runs only while a statement awaits."""
    path = script(tmp_path, """\
        import asyncio
        loop = asyncio.get_event_loop()
        print("sync, running:", loop.is_running())
        await asyncio.sleep(0)
        print("await, running:", await asyncio.sleep(0, asyncio.get_running_loop() is loop))
        async def helper():
            return "helped"
        print(loop.run_until_complete(helper()))        # what App.find() does inside
        value = await helper()
        print("awaited", value)
        async def stop_soon():
            await asyncio.sleep(0)
            loop.stop()
        loop.create_task(stop_soon())
        loop.run_forever()
        print("after run_forever")
    """)
    assert run(path) == 0
    assert capsys.readouterr().out.splitlines() == [
        "sync, running: False", "await, running: True", "helped", "awaited helped", "after run_forever"]


def test_the_loop_is_the_main_loop_startup_set_up_and_a_second_startup_keeps_it(process, tmp_path, capsys) -> None:
    """Seed scripts call ``startup()`` themselves: under ``qe-worker run`` that is the second
    call, and must not make a second loop (signal handlers live on the first)."""
    path = script(tmp_path, """\
        import asyncio
        from libs import _runtime
        before = asyncio.get_event_loop()
        from libs.startup import startup
        startup()
        print(asyncio.get_event_loop() is before is _runtime.main_loop())
        print(await asyncio.sleep(0, "same") if asyncio.get_event_loop() is before else "other")
        print(asyncio.get_event_loop() is before)
    """)
    assert run(path) == 0
    assert capsys.readouterr().out.splitlines() == ["True", "same", "True"]
    loop = _runtime.main_loop()
    assert loop.remove_signal_handler(signal.SIGTERM) is True  # installed on the one loop


def test_main_module_argv_and_path_as_python_sets_them_and_put_back(process, tmp_path, capsys) -> None:
    (tmp_path / "helper_mod_for_script.py").write_text("VALUE = 'from the script folder'\n")
    path = script(tmp_path, '''\
        """The docstring."""
        import sys
        import helper_mod_for_script
        print(__name__, __doc__, __file__)
        print(sys.argv)
        print(sys.modules["__main__"].__dict__ is globals())
        print(helper_mod_for_script.VALUE)
    ''')
    argv, main_module, path_before = sys.argv, sys.modules["__main__"], list(sys.path)
    try:
        assert run(path, "one", "--two") == 0
    finally:
        sys.modules.pop("helper_mod_for_script", None)
    assert capsys.readouterr().out.splitlines() == [
        f"__main__ The docstring. {path}", str([path, "one", "--two"]), "True", "from the script folder"]
    assert (sys.argv, sys.modules["__main__"], sys.path) == (argv, main_module, path_before)


def test_future_imports_reach_later_statements_and_ours_do_not_reach_the_script(process, tmp_path, capsys) -> None:
    # this test module has `from __future__ import annotations`: the script must not inherit it
    plain = script(tmp_path, "x: int = 1\nprint(__annotations__)\n", "plain.py")
    future = script(tmp_path, '"""doc"""\nfrom __future__ import annotations\nx: int = 1\nprint(__annotations__)\n',
                    "future.py")
    assert run(plain) == 0 and run(future) == 0
    assert capsys.readouterr().out.splitlines() == ["{'x': <class 'int'>}", "{'x': 'int'}"]


def test_load_script_compiles_one_code_object_per_statement(tmp_path) -> None:
    import inspect

    path = script(tmp_path, """\
        import asyncio
        x = 1
        await asyncio.sleep(0)
        async with asyncio.timeout(1):
            pass
        def f():
            return 1
        result = [await asyncio.sleep(0) for _ in range(2)]
    """)
    loaded = load_script(path)
    assert loaded.filename == path and loaded.path == path
    awaits = [bool(code.co_flags & inspect.CO_COROUTINE) for code in loaded.statements]
    assert awaits == [False, False, True, True, False, True]
    # each keeps its own line numbers (tracebacks name the script's lines)
    for code, line in zip(loaded.statements, [1, 2, 3, 4, 6, 8], strict=True):
        assert line in {line for *_, line in code.co_lines()}


# -- what cannot run: exit 2, one line, nothing ran ----------------------------------------


@pytest.mark.parametrize("source, line, words", [
    ("print('ran')\ndef f(:\n    pass\n", 2, "SyntaxError: "),
    ("print('ran')\ndef f():\n    await g()\n", 3, "SyntaxError: 'await' outside async function"),
    ("print('ran')\nfrom __future__ import annotations\n", 2, "SyntaxError: from __future__ imports must occur"),
    ("print('ran')\nif True:\nprint('x')\n", 3, "IndentationError: "),
])
def test_a_syntax_error_is_one_line_with_file_and_line_exit_2_and_nothing_runs(
        process, tmp_path, capsys, source, line, words) -> None:
    path = script(tmp_path, source)
    assert run(path) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"qe-worker: {path}:{line}: {words}") and err.count("\n") == 1, err
    assert _runtime.shutting_down() is False and "Traceback" not in err


def test_a_syntax_error_needs_no_configuration(tmp_path, capsys, monkeypatch) -> None:
    for name in ("QE_JID", "QE_PASSWORD", "QE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert run(script(tmp_path, "def f(:\n")) == 2
    assert "SyntaxError" in capsys.readouterr().err


@pytest.mark.parametrize("make, words", [
    (lambda tmp: str(tmp / "missing.py"), "No such file or directory"),
    (lambda tmp: str(tmp), "Is a directory"),
])
def test_a_script_that_cannot_be_read_is_exit_2(tmp_path, capsys, make, words) -> None:
    path = make(tmp_path)
    assert run(path) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"qe-worker: cannot run {path!r}: {words}\n"
    with pytest.raises(ScriptError):
        load_script(path)


def test_a_configuration_error_is_exit_2_before_the_script_runs(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("QE_CONFIG", raising=False)
    monkeypatch.setenv("QE_JID", "")
    monkeypatch.setenv("QE_PASSWORD", "pw")
    assert run(script(tmp_path, "print('ran')\n")) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("qe-worker: QE_JID") and err.count("\n") == 1


# -- how a script ends ------------------------------------------------------------------------


@pytest.mark.parametrize("statement", ["fail()", "await async_fail()"])
def test_an_uncaught_exception_prints_the_scripts_traceback_and_exits_1(process, tmp_path, capsys,
                                                                        statement) -> None:
    path = script(tmp_path, f"""\
        import asyncio
        def fail():
            raise ValueError("the user's bug")
        async def async_fail():
            await asyncio.sleep(0)
            fail()
        print("before")
        {statement}
        print("after")
    """)
    assert run(path) == 1
    out, err = capsys.readouterr()
    assert out == "before\n"
    lines = err.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1] == f'  File "{path}", line 8, in <module>'  # the script's frame first: not ours
    assert "_script.py" not in err and "base_events.py" not in err
    assert lines[-1] == "ValueError: the user's bug"


@pytest.mark.parametrize("source, status, err", [
    ("import sys\nsys.exit(7)\nprint('after')\n", 7, ""),
    ("import sys\nsys.exit()\n", 0, ""),
    ("import sys\nsys.exit('a reason')\n", 1, "a reason\n"),
    ("import asyncio, sys\nasync def f():\n    sys.exit(5)\nawait f()\nprint('after')\n", 5, ""),
    ("raise SystemExit(3)\n", 3, ""),
])
def test_system_exit_ends_the_script_with_its_status(process, tmp_path, capsys, source, status, err) -> None:
    assert run(script(tmp_path, source)) == status
    assert capsys.readouterr() == ("", err)


def test_a_block_that_awaits_and_runs_the_loop_gets_a_note(process, tmp_path, capsys) -> None:
    path = script(tmp_path, """\
        import asyncio
        if True:
            await asyncio.sleep(0)
            asyncio.get_event_loop().run_forever()
    """)
    assert run(path) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: This event loop is already running" in err
    assert "call run_forever()/run_until_complete() in a statement of its own" in err


# -- stopping: SIGTERM / App.stop() / a fatal login, as for the default worker ----------------


_WORKER = """\
    import asyncio, os, signal
    from libs import _runtime

    async def leave(timeout):              # what a started App registers
        print("left the server", flush=True)
    _runtime.add_shutdown_hook(leave)
"""


def test_sigterm_while_a_statement_awaits_shuts_down_and_exits_0(process, tmp_path, capsys) -> None:
    path = script(tmp_path, _WORKER + """\
    asyncio.get_event_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(asyncio.Event().wait(), 10)   # stopped long before
    print("not reached")
    """)
    assert run(path) == 0
    assert capsys.readouterr().out == "left the server\n"


def test_sigterm_during_the_scripts_run_forever_exits_0(process, tmp_path, capsys) -> None:
    path = script(tmp_path, _WORKER + """\
    loop = asyncio.get_event_loop()
    loop.call_soon(os.kill, os.getpid(), signal.SIGTERM)
    timeout = loop.call_later(10, loop.stop)
    loop.run_forever()
    print("run_forever returned, timed out:", timeout.cancelled() is False and loop.time() >= timeout.when())
    """)
    assert run(path) == 0
    assert capsys.readouterr().out == "left the server\nrun_forever returned, timed out: False\n"


def test_app_stop_while_a_statement_awaits_exits_0(process, tmp_path, capsys) -> None:
    path = script(tmp_path, _WORKER + """\
    loop = asyncio.get_event_loop()
    loop.call_soon(_runtime.request_stop, loop, 5.0, "App.stop() called")   # what App.stop() does
    await asyncio.wait_for(asyncio.Event().wait(), 10)
    print("not reached")
    """)
    assert run(path) == 0
    assert capsys.readouterr().out == "left the server\n"


def test_a_script_that_ends_with_its_worker_running_shuts_it_down(process, tmp_path, capsys) -> None:
    """No run_forever(): the worker leaves the server cleanly, once, before the process ends."""
    assert run(script(tmp_path, _WORKER + "    print('the end')\n")) == 0
    assert capsys.readouterr().out == "the end\nleft the server\n"
    assert not _runtime.has_shutdown_hooks()


def test_a_script_that_raises_with_its_worker_running_shuts_it_down_too(process, tmp_path, capsys) -> None:
    assert run(script(tmp_path, _WORKER + "    raise KeyError('x')\n")) == 1
    out, err = capsys.readouterr()
    assert out == "left the server\n" and err.endswith("KeyError: 'x'\n")


@pytest.mark.parametrize("then", ["await asyncio.wait_for(asyncio.Event().wait(), 10)", "print('the end')"])
def test_a_fatal_login_exits_1_with_its_reason(process, tmp_path, capsys, then) -> None:
    """As a wrong password does (``_runtime.fail``): while a statement awaits, and when the
    script ends while that shutdown still runs."""
    path = script(tmp_path, _WORKER + f"""\
    async def login():
        _runtime.fail("the server refused the password")
    await login()
    {then}
    """)
    assert run(path) == 1
    out, err = capsys.readouterr()
    # the shutdown may finish before or after a last statement that does not wait (it does
    # on 3.12+ at times): the worker left the server either way
    assert sorted(out.splitlines()) in (["left the server"], ["left the server", "the end"])
    assert err.endswith("qe-worker: the server refused the password\n")


# -- the command line ---------------------------------------------------------------------------


def test_qe_worker_run_script_passes_the_arguments_options_included(process, tmp_path, capsys) -> None:
    path = script(tmp_path, "import sys\nprint(sys.argv[1:])\nawait __import__('asyncio').sleep(0)\n")
    assert cli.main(["run", path, "a", "--public", "-h"]) == 0
    assert capsys.readouterr().out == "['a', '--public', '-h']\n"


@pytest.mark.parametrize("options", [["--public"], ["--maintenance"], ["--resource", "r1"],
                                     ["--resource", "python"]])
def test_default_worker_options_with_a_script_are_refused(tmp_path, capsys, options) -> None:
    path = script(tmp_path, "print('ran')\n")
    assert cli.main(["run", *options, path]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"qe-worker: {options[0]}: options of the default worker") \
        and err.count("\n") == 1
