"""``qe-worker run SCRIPT``: run a worker script as ``__main__``, with top-level ``await``.

Why statement by statement: QE's docs write worker scripts that ``await`` at top level *and*
end with ``asyncio.get_event_loop().run_forever()``, and that call synchronous helpers at
module level which run the loop themselves (``found = App.find(app="x")``). Compiled as one
coroutine, the whole script would run inside a running loop, where ``run_forever()`` and
``run_until_complete()`` raise. So, as IPython does per cell, each top-level statement is
compiled on its own (``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT``): a statement that awaits runs with
``loop.run_until_complete()`` on the main loop, any other with plain ``exec``, with no loop
running. The limit that follows: one statement is the unit, so a block that awaits (``if``,
``with``, ``for`` at top level) must not also call ``run_forever()``.

The rest is what ``python script.py`` does: the whole file is compiled before anything runs
(a syntax error anywhere runs nothing), ``sys.argv`` is ``[SCRIPT, ARGS...]``, the script's
directory comes first on ``sys.path``, ``__name__`` is ``"__main__"``, and an uncaught
exception prints its traceback from the script's own frames (exit 1). Before the script runs,
``startup()`` sets up the configuration, logging and the main loop, so scripts that do not call
it (QE's newer docs) run as configured as those that do.

Exit status (:func:`run_script`): 0 when the script ends, or is stopped by SIGINT/SIGTERM or
``App.stop()``; ``n`` for ``SystemExit(n)``; 1 for an uncaught exception or a fatal login;
2 when the script cannot be read or compiled, or the configuration is bad. Call on the main
thread, once per process.
"""

from __future__ import annotations
import __future__

import ast
import asyncio
import builtins
import contextlib
import importlib.machinery
import inspect
import logging
import os
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from . import _runtime

__all__ = ["Script", "ScriptError", "load_script", "run_script"]

log = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2

_STOPPED_MESSAGE: Final = "Event loop stopped before Future completed."  # asyncio's, for loop.stop()
_DRAIN_S: Final = 2.0
"""Seconds a statement's task cancelled by a shutdown gets to unwind."""


class ScriptError(Exception):
    """A script that cannot run: not readable, or not valid Python. ``str()`` is the one line
    to show (``path:line: SyntaxError: message``)."""


@dataclass(frozen=True, slots=True)
class Script:
    """A compiled script: ``statements`` in file order, one code object per top-level
    statement, each with ``CO_COROUTINE`` set if it awaits."""

    path: str
    """The path as given (``sys.argv[0]``)."""
    filename: str
    """The absolute path (``__file__``, and the file tracebacks name)."""
    statements: tuple[types.CodeType, ...]


def load_script(path: str) -> Script:
    """Read and compile ``path``; ``ScriptError`` if it cannot be read or is not valid Python
    (top-level ``await`` allowed). Runs nothing."""
    filename = os.path.abspath(path)
    try:
        with open(filename, "rb") as file:
            source = file.read()
    except OSError as exc:
        raise ScriptError(f"cannot run {path!r}: {exc.strerror or exc}") from None
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    try:
        # The whole file first, as Python compiles it: every syntax error, including those
        # only the whole file shows (a `from __future__` import after other statements).
        compile(source, filename, "exec", flags, dont_inherit=True)
        tree = ast.parse(source, filename)
    except SyntaxError as exc:
        raise ScriptError(_syntax_message(path, exc)) from None
    except ValueError as exc:  # NUL bytes in the source (Python 3.11)
        raise ScriptError(f"{path}: cannot compile: {exc}") from None
    # `from __future__ import x` changes how the rest of the file compiles: carry it over.
    # dont_inherit: this module's own future imports must not reach the script.
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            for alias in node.names:
                flags |= getattr(__future__, alias.name).compiler_flag
    statements = tuple(compile(ast.Module([node], type_ignores=[]), filename, "exec", flags, dont_inherit=True)
                       for node in tree.body)
    return Script(path=path, filename=filename, statements=statements)


def _syntax_message(path: str, exc: SyntaxError) -> str:
    where = f"{path}:{exc.lineno}" if exc.lineno else path
    return f"{where}: {type(exc).__name__}: {exc.msg}"


def run_script(path: str, args: Sequence[str] = ()) -> int:
    """Run the script at ``path`` with ``args`` as ``__main__``; the exit status (module
    docstring). Ends with the worker's shutdown (``App`` leaves the server) if the script
    ended without one, e.g. without ``run_forever()``."""
    try:
        script = load_script(path)
    except ScriptError as exc:
        print(f"qe-worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from .startup import startup

    try:
        config = startup()
    except SystemExit as exc:  # a bad QE_* value: startup() said which
        return _exit_status(exc)
    with _as_main(script, args) as namespace:
        status = _execute(script, namespace)
        try:
            _finish(_runtime.main_loop(), config.shutdown_timeout)
        except SystemExit as exc:  # a fatal login (wrong password) whose shutdown was still running
            status = _exit_status(exc)
    return status


@contextlib.contextmanager
def _as_main(script: Script, args: Sequence[str]) -> Iterator[dict[str, Any]]:
    """A fresh ``__main__`` module for ``script`` with ``sys.argv`` and ``sys.path`` as
    ``python SCRIPT ARGS...`` sets them; yields its namespace. All three are put back
    afterwards (for callers in the same process, e.g. tests)."""
    module = types.ModuleType("__main__")
    namespace: dict[str, Any] = module.__dict__
    namespace.update(__file__=script.filename, __cached__=None, __package__=None, __spec__=None,
                     __builtins__=builtins,
                     __loader__=importlib.machinery.SourceFileLoader("__main__", script.filename))
    saved = sys.modules.get("__main__"), sys.argv, list(sys.path)
    sys.modules["__main__"] = module
    sys.argv = [script.path, *args]
    sys.path.insert(0, os.path.dirname(os.path.realpath(script.filename)))  # as Python: symlinks resolved
    try:
        yield namespace
    finally:
        if saved[0] is not None:
            sys.modules["__main__"] = saved[0]
        sys.argv = saved[1]
        sys.path[:] = saved[2]


class _Stopped(Exception):
    """A shutdown (signal, ``App.stop()``) stopped the loop while a statement awaited."""


def _execute(script: Script, namespace: dict[str, Any]) -> int:
    for code in script.statements:
        awaits = bool(code.co_flags & inspect.CO_COROUTINE)
        try:
            if awaits:
                _await_statement(_runtime.main_loop(), eval(code, namespace))
            else:
                exec(code, namespace)
        except _Stopped:
            return EXIT_OK
        except SystemExit as exc:
            return _exit_status(exc)
        except Exception as exc:
            if _runtime.shutting_down() and isinstance(exc, RuntimeError) and str(exc) == _STOPPED_MESSAGE:
                return EXIT_OK  # the shutdown stopped a loop the statement ran itself (run_until_complete)
            if awaits and isinstance(exc, RuntimeError) and "already running" in str(exc):
                exc.add_note("qe-worker: a top-level statement that awaits runs with the event loop running; "
                             "call run_forever()/run_until_complete() in a statement of its own")
            _report(script, exc)
            return EXIT_ERROR
    return EXIT_OK


def _await_statement(loop: asyncio.AbstractEventLoop, coro: Any) -> None:
    """Run one awaiting statement to its end on ``loop``; ``_Stopped`` if a shutdown stopped
    the loop first. A statement left unfinished (that, or ``SystemExit`` from a fatal login)
    is cancelled and given ``_DRAIN_S`` to unwind."""
    task = loop.create_task(coro)
    try:
        loop.run_until_complete(task)
    except RuntimeError:
        if task.done() or not _runtime.shutting_down():
            raise  # the statement's own error, or the script stopped the loop itself
        raise _Stopped from None
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(RuntimeError):  # a second signal stops this wait too
                loop.run_until_complete(asyncio.wait({task}, timeout=_DRAIN_S))
        elif not task.cancelled():
            task.exception()  # seen: a SystemExit the loop re-raised must not be logged again when the task is freed


def _finish(loop: asyncio.AbstractEventLoop, timeout: float) -> None:
    """End as the default worker ends, if the script ended (or raised) with its worker still
    running: let a shutdown in progress finish (a fatal login raises ``SystemExit`` from it),
    or else run the shutdown hooks as SIGTERM would (a started ``App`` leaves the server)."""
    if loop.is_closed() or loop.is_running():
        return
    if _runtime.stop_pending():
        loop.run_forever()  # returns when that shutdown stops the loop
        return
    if _runtime.shutting_down() or not _runtime.has_shutdown_hooks():
        return
    log.info("the script ended: shutting down")
    with contextlib.suppress(RuntimeError):  # a signal meanwhile stops the loop: nothing left to wait for
        loop.run_until_complete(_runtime.shutdown(timeout))


def _exit_status(exc: SystemExit) -> int:
    """What the interpreter would exit with for ``exc`` (it prints a non-int code)."""
    if exc.code is None:
        return EXIT_OK
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return EXIT_ERROR


def _report(script: Script, exc: BaseException) -> None:
    """Print ``exc`` as Python would for the script (``sys.excepthook``), from the script's
    first frame: the frames of this runner and of asyncio above it are not the user's."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != script.filename:
        tb = tb.tb_next
    if tb is not None:
        exc.__traceback__ = tb  # the default hook prints the exception's own traceback, not its argument
    sys.excepthook(type(exc), exc, exc.__traceback__)
