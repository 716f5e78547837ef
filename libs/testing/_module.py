"""``worker_module()``: a QE-style worker script, loaded into the running loop on a ``MemoryNetwork``.

Why not ``import``: a QE script does its work at import time and then blocks. It calls
``startup()`` (which wants ``QE_*`` variables and makes an event loop of its own), creates
``App`` (which would log in over XMPP), starts timers, and ends with
``asyncio.get_event_loop().run_forever()``, which never returns and cannot run inside the
loop a test runs on. So the script is run the way ``qe-worker run`` runs it, statement by
statement (``libs._script``), but *hosted* (``_runtime.hosting``): ``startup()`` only returns
a configuration, each ``App`` created without a transport gets one on the test's
``MemoryNetwork``, a statement that awaits is awaited on the test's loop, and the statement
that would serve forever (the first top-level statement calling ``run_forever``, e.g. the
last line, or a ``try:`` around it) is where loading ends: neither it nor what follows runs,
as in a real run nothing after it runs until the worker stops. The test's loop serves the
worker from then on.

What differs from a real run, by construction: the module's ``__name__`` is its own name,
not ``"__main__"`` (an ``if __name__ == "__main__":`` block does not run); code that runs the
loop itself at module level (``loop.run_until_complete(...)``) cannot, as the loop is
running (use top-level ``await``); and ``App.find(...)`` at module level answers what is
known at once, which is nothing yet (``await App.find(...)`` waits).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import types
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, Final

from .. import _runtime
from .._script import Script, load_script
from ..bridge import App, Client, MemoryNetwork, MemoryTransport
from ..bridge.access import bare_jid
from ..bridge.transport import Message
from ..timers.virtual import live_timers

__all__ = ["DEFAULT_CALLER", "DEFAULT_WORKER", "WorkerModule", "inbox", "locate", "worker_module"]

DEFAULT_WORKER: Final = "worker@localhost"
"""The account a loaded worker runs as (its resource is the one its ``App(resource=...)`` asks for)."""
DEFAULT_CALLER: Final = "client@localhost"
"""The caller's account; the worker allows it unless told otherwise (``allow=``)."""

_SERVES: Final = "run_forever"
"""A top-level statement that names this (``asyncio.get_event_loop().run_forever()``) is where
a script starts serving: loading stops there."""


@dataclasses.dataclass
class WorkerModule:
    """A worker script loaded by ``worker_module()``: its module, its ``App``\\ s, and a
    logged-in caller on the same network."""

    module: types.ModuleType
    """The script's module: its globals (``worker.module.App``, a counter it keeps, ...)."""
    apps: list[App]
    """The ``App`` objects the script keeps in module-level names, in the order it made them."""
    caller: Client
    """A ``Client`` logged in as the caller (``client@localhost`` unless told otherwise)."""
    messages: asyncio.Queue[Message]
    """The chat messages the caller receives (``App.sendtojid(caller_jid, ...)``), in order."""
    network: MemoryNetwork

    @property
    def app(self) -> App:
        """The script's ``App`` (ValueError if it made several: use ``apps``)."""
        if len(self.apps) != 1:
            raise ValueError(f"{self.module.__name__} made {len(self.apps)} App objects: use .apps")
        return self.apps[0]

    @property
    def jid(self) -> str:
        """The worker's full JID, e.g. ``worker@localhost/python``."""
        return self.app.jid

    async def call(self, cmd: str, body: dict[str, Any] | None = None, *, timeout: float = 5.0) -> dict[str, Any]:
        """``cmd`` on the worker, as the caller; its dict, or the ``CallError`` it raised."""
        return await self.caller.call(self.jid, cmd, body, timeout=timeout)


def locate(target: str | os.PathLike[str], base: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The file and module name of a worker script: ``target`` is a path (``my_worker.py``,
    relative to ``base``, default the current directory) or a module name found on
    ``sys.path`` without importing it (``my_worker``, ``pkg.worker``)."""
    text = os.fspath(target)
    if text.endswith(".py") or "/" in text or os.sep in text:
        path = Path(text)
        if not path.is_absolute():
            path = Path(base if base is not None else os.getcwd()) / path
        if not path.is_file():
            raise FileNotFoundError(f"no worker script at {path}")
        return path.resolve(), path.stem
    try:
        spec = importlib.util.find_spec(text)
    except (ImportError, ValueError) as exc:
        raise ModuleNotFoundError(f"cannot find module {text!r}: {exc}") from None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ModuleNotFoundError(f"no Python file for module {text!r} on sys.path (give a path to the script)")
    return Path(spec.origin).resolve(), text


def inbox(client: Client) -> asyncio.Queue[Message]:
    """A queue of the chat messages ``client`` receives from now on (``Message``: ``sender``,
    ``text``, ``room``), for a test to ``await asyncio.wait_for(queue.get(), 5)``."""
    queue: asyncio.Queue[Message] = asyncio.Queue()
    client.transport.on_message = queue.put_nowait
    return queue


@contextlib.asynccontextmanager
async def worker_module(
    target: str | os.PathLike[str],
    *,
    network: MemoryNetwork | None = None,
    jid: str = DEFAULT_WORKER,
    allow: Iterable[str] = (DEFAULT_CALLER,),
    resource: str | None = None,
    caller: str = DEFAULT_CALLER,
    base: str | os.PathLike[str] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    timeout: float = 10.0,
) -> AsyncIterator[WorkerModule]:
    """Load the worker script ``target`` (``locate()``) into the running loop, serving on
    ``network`` (a new one by default) as account ``jid``, allowing ``allow`` (bare JIDs,
    ``QE_ALLOW``); yield it with a caller logged in as ``caller``. On the way out every
    ``App`` it made leaves, the timers started meanwhile stop, the script's folder leaves
    ``sys.path`` (it comes first meanwhile, as for ``python script.py``), and the script's
    module and the modules imported from its folder meanwhile are forgotten (a next load
    imports them afresh; libraries it imported stay imported).

    ``resource`` overrides the resource of every ``App`` it makes (what ``RESOURCE`` does);
    ``state_dir`` is its ``QE_STATE_DIR``; ``timeout`` bounds each top-level ``await`` and
    the wait for the worker to be online, in seconds. The script's own exceptions come out
    as they are; a script that made no ``App`` is a ``LookupError``.
    """
    __tracebackhide__ = True
    path, name = locate(target, base)
    script = load_script(str(path))
    if "/" in jid:
        raise ValueError(f"jid={jid!r}: give the account (worker@localhost); the resource comes from "
                         "the script's App(resource=...) or resource=")
    net = network if network is not None else MemoryNetwork()
    account = bare_jid(jid)
    allowed = tuple(allow)
    made: list[MemoryTransport] = []

    def transport(requested: str) -> MemoryTransport:
        full = f"{account}/{resource or requested}"
        if full in net.online() or any(t.jid == full for t in made):  # a second login would take it over
            raise ValueError(f"{full} is taken on this network: give this worker another resource (resource=...) "
                             "or account (jid=...)")
        made.append(net.transport(full, allow=allowed))
        made[-1].config = config
        return made[-1]

    # what startup() returns (QE's scripts ignore it): a worker's configuration on this network
    config = net.transport(f"{account}/{resource or 'python'}", allow=allowed).config
    if state_dir is not None:
        config = dataclasses.replace(config, state_dir=os.fspath(state_dir))
    module = _new_module(name, script)
    saved, before = sys.modules.get(name), set(sys.modules)
    folder = os.path.dirname(script.filename)
    sys.modules[name] = module
    sys.path.insert(0, folder)
    timers_before = set(live_timers())
    apps: list[App] = []
    try:
        with _runtime.hosting(_runtime.Host(config, transport)):
            await _run(script, module.__dict__, timeout)
        apps = _apps_in(module)
        if not apps:
            raise LookupError(f"{script.path} made no App at module level (QE style: App = app(...) before "
                              "run_forever()); a script that makes its App inside a function: call it in your test")
        async with asyncio.timeout(timeout):
            for app in apps:
                await app.wait_online(timeout)
        client = Client(transport=net.transport(caller))
        messages = inbox(client)
        async with client:
            yield WorkerModule(module, apps, client, messages, net)
    finally:
        try:
            await _unload(apps or _apps_in(module), made, timers_before, timeout)
        finally:
            _forget_modules(Path(folder), before)
            if saved is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = saved
            with contextlib.suppress(ValueError):  # only our entry: the test may change sys.path too
                sys.path.remove(folder)


def _new_module(name: str, script: Script) -> types.ModuleType:
    loader = importlib.machinery.SourceFileLoader(name, script.filename)
    module = types.ModuleType(name)
    module.__dict__.update(__file__=script.filename, __cached__=None, __builtins__=builtins, __loader__=loader,
                           __spec__=importlib.util.spec_from_file_location(name, script.filename, loader=loader))
    return module


async def _run(script: Script, namespace: dict[str, Any], timeout: float) -> None:
    """Run the script's top-level statements up to the one that would serve forever."""
    __tracebackhide__ = True
    for code in script.statements:
        if _SERVES in code.co_names:
            return
        try:
            if code.co_flags & inspect.CO_COROUTINE:
                async with asyncio.timeout(timeout):
                    await eval(code, namespace)
            else:
                exec(code, namespace)
        except TimeoutError as exc:
            exc.add_note(f"qe-worker test kit: the top-level await at {script.path}:{_line(code)} did not "
                         f"finish within {timeout:g} s")
            raise
        except RuntimeError as exc:
            if "already running" in str(exc) or "another loop is running" in str(exc):
                exc.add_note(f"qe-worker test kit: {script.path}:{_line(code)} runs the event loop itself; "
                             "a loaded script runs inside the test's loop: use top-level await instead")
            raise


def _forget_modules(folder: Path, before: set[str]) -> None:
    """Drop the modules imported since ``before`` from ``folder`` (the script's helpers), so
    that the next load imports them afresh, as a new process would."""
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name not in before and file and Path(file).resolve().is_relative_to(folder):
            del sys.modules[name]


def _line(code: types.CodeType) -> int:
    """The first line of a top-level statement: its code object is a module's, whose preamble
    is on line 1 whatever the statement's line."""
    first = code.co_firstlineno
    return min((line for _start, _end, line in code.co_lines() if line and line != first), default=first)


def _apps_in(module: types.ModuleType) -> list[App]:
    found: dict[int, App] = {}
    for value in list(vars(module).values()):
        if isinstance(value, App):
            found.setdefault(id(value), value)
    return list(found.values())


async def _unload(apps: list[App], made: list[MemoryTransport], timers_before: set[Any], timeout: float) -> None:
    """Stop what the script started: its timers, its ``App``\\ s, any transport left."""
    await asyncio.sleep(0)  # an App made just before is started first (App() schedules that), then closed
    for t in live_timers():
        if t not in timers_before:
            t.stop()
    for app in apps:
        await app.close(timeout)
    for transport in made:
        await transport.close()
