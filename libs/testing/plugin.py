"""qe-worker's pytest plugin: fixtures to test your own workers (docs/testing.md).

pytest loads it by itself wherever qe-worker is installed (entry point ``pytest11``, name
``qe_worker``; ``-p no:qe_worker`` turns it off). Every fixture name starts with ``qe_``, so
it takes no name a project's own fixtures may use. Importing it costs nothing: the library
is imported when a fixture is first used.

In memory (no server, milliseconds):

* ``qe_network`` -- the test's ``MemoryNetwork``;
* ``qe_worker_module`` -- ``await qe_worker_module("my_worker.py")`` loads a QE-style script
  on ``qe_network`` and returns a ``WorkerModule`` (``.app``, ``.module``, ``.call(...)``);
* ``qe_caller`` -- ``await qe_caller("stranger@localhost")``: another ``Client`` on it;
* ``qe_clock`` -- a ``VirtualClock``: timers created during the test tick on ``await
  qe_clock.advance(seconds)`` only.

On a real server (a private Prosody, ~1 s per worker; skipped when Prosody is missing):

* ``qe_server`` -- the session's ``PrivateServer``;
* ``qe_real_worker`` -- ``await qe_real_worker("my_worker.py")`` runs the script in its own
  process (``qe-worker run``) and returns a ``RealWorker`` once it answers ``ping``;
* ``qe_real_caller`` -- ``await qe_real_caller()``: a ``Client`` logged in as ``client``.

Relative script paths are taken from the test file's folder. The async fixtures need
pytest-asyncio (``pip install 'qe-worker[testing]'``) and work in its ``auto`` and ``strict``
modes (strict: mark the tests ``@pytest.mark.asyncio``); they run on the loop of the
fixture loop scope pytest-asyncio is configured with (function, unless told otherwise), so
the tests that use them must run on that loop too.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from libs.bridge import Client, MemoryNetwork
    from libs.testing import PrivateServer, RealWorker, VirtualClock, WorkerModule

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the async fixtures then say what is missing
    pytest_asyncio = None  # type: ignore[assignment]

__all__ = [
    "qe_caller",
    "qe_clock",
    "qe_network",
    "qe_real_caller",
    "qe_real_worker",
    "qe_server",
    "qe_worker_module",
]


def _async_fixture(func: Callable[..., Any]) -> Any:
    """An async fixture for pytest-asyncio in any mode; without it, a fixture that says so."""
    if pytest_asyncio is not None:
        return pytest_asyncio.fixture(func)

    @functools.wraps(func)
    def missing(*args: Any, **kwargs: Any) -> NoReturn:
        pytest.fail(f"{func.__name__} is an async fixture: it needs pytest-asyncio "
                    "(pip install 'qe-worker[testing]')", pytrace=False)

    return pytest.fixture(missing)


def _folder(request: pytest.FixtureRequest) -> Path:
    return Path(str(request.path)).parent


# -- in memory ------------------------------------------------------------------------------


@pytest.fixture
def qe_network() -> MemoryNetwork:
    """The ``MemoryNetwork`` of the test: ``qe_worker_module`` and ``qe_caller`` use it."""
    from libs.bridge import MemoryNetwork

    return MemoryNetwork()


@_async_fixture
async def qe_worker_module(request: pytest.FixtureRequest, qe_network: MemoryNetwork,
                           tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[WorkerModule]]]:
    """``await qe_worker_module(script, **options)``: the QE-style worker script loaded on
    ``qe_network`` (``libs.testing.worker_module``: a path relative to the test file, or a
    module name), serving as ``worker@localhost/<its resource>`` and allowing
    ``client@localhost``; ``run_forever()`` is not entered. Unloaded after the test."""
    from libs.testing import worker_module

    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def load(target: str, **options: Any) -> WorkerModule:
            nonlocal count
            count += 1
            options.setdefault("base", _folder(request))
            options.setdefault("state_dir", tmp_path / f"qe-state-{count}")
            return await stack.enter_async_context(worker_module(target, network=qe_network, **options))

        yield load


@_async_fixture
async def qe_caller(qe_network: MemoryNetwork) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """``await qe_caller(jid="client@localhost")``: a ``Client`` on ``qe_network`` (a bare JID
    gets a random resource); logged out after the test."""
    from libs.bridge import Client

    async with contextlib.AsyncExitStack() as stack:

        async def login(jid: str = "client@localhost") -> Client:
            return await stack.enter_async_context(Client(transport=qe_network.transport(jid)))

        yield login


@pytest.fixture
def qe_clock() -> Iterator[VirtualClock]:
    """A ``VirtualClock``, installed for the test: the timers created meanwhile (those of
    the scripts it loads too) tick only on ``await qe_clock.advance(seconds)``."""
    from libs.testing import VirtualClock

    with VirtualClock() as clock:
        yield clock


# -- on a real server -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def qe_server() -> Iterator[PrivateServer]:
    """A private Prosody on 127.0.0.1 for the session (``libs.testing.PrivateServer``);
    accounts are made on first use. Skips the test when Prosody is not installed."""
    from libs.devserver import ProsodyNotInstalled
    from libs.testing import PrivateServer

    try:
        server = PrivateServer()
    except ProsodyNotInstalled as exc:
        pytest.skip(f"qe_server needs Prosody: {exc}")
    with server:
        yield server


@_async_fixture
async def qe_real_worker(request: pytest.FixtureRequest, qe_server: PrivateServer,
                         tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[RealWorker]]]:
    """``await qe_real_worker(script, **options)``: the worker script (a path relative to the
    test file, or a module name) in its own process on ``qe_server``, as account ``worker``
    with resource ``python``, allowing ``client`` (``libs.testing.real_worker``); returned once
    it answers ``ping``. SIGTERM after the test."""
    from libs.testing import locate, real_worker

    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def start(target: str, **options: Any) -> RealWorker:
            nonlocal count
            count += 1
            path, _name = locate(target, _folder(request))
            options.setdefault("log_dir", tmp_path / f"qe-worker-{count}")
            return await stack.enter_async_context(real_worker(path, qe_server, **options))

        yield start


@_async_fixture
async def qe_real_caller(qe_server: PrivateServer) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """``await qe_real_caller(account="client")``: a ``Client`` logged in to ``qe_server``;
    logged out after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def login(account: str = "client") -> Client:
            return await stack.enter_async_context(qe_server.client(account))

        yield login
