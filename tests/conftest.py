"""Fixtures for tests against a real, private XMPP server (see ``libs.devserver``), shared by
tests/integration and tests/reliability; unit tests never start a server. Also the
Hypothesis profiles of the whole suite (below).

The server is Prosody unless ``--xmpp-server`` (or ``QE_TEST_SERVER``) says ``ejabberd`` (one
node) or ``ejabberd-cluster`` (two nodes; each account's clients log in on its own node,
round-robin in registration order: ``worker`` on node 1, ``client`` on node 2, so calls cross
nodes). The fixtures keep their historical names (``prosody``, ``fresh_prosody``) whatever
the engine. Tests marked ``prosody_only("why")`` are skipped on ejabberd (``ejabberd_only``:
the other way round); the ``core`` marker
selects the suite CI runs on the ejabberd cluster too (``./run test-ejabberd``).

A missing server is a *failure*, not a skip: CI installs it, and a silently skipped
integration suite would look green while testing nothing.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from libs.devserver import DevServer, EjabberdCluster, ServerNotInstalled

# Hypothesis: one profile per place, chosen here, so that tests state only what they need.
# - "ci" (the CI variable is set, as .ci/run and most CI services do): derandomized, so a
#   red run is red again on a re-run and on a developer's machine with CI=true; more examples.
# - "dev" (otherwise): random and quick; the example database replays earlier failures.
# Both: no per-example deadline and no too_slow health check. Those measure the machine, and
# this one runs the suite on 2 shared cores; timing belongs to the tests that assert it.
_HYPOTHESIS_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", derandomize=True, max_examples=300, print_blob=True, **_HYPOTHESIS_COMMON)
settings.register_profile("dev", max_examples=50, **_HYPOTHESIS_COMMON)
settings.load_profile("ci" if os.environ.get("CI", "").lower() not in ("", "0", "false") else "dev")

_SERVER_DIRS = tuple(Path(__file__).resolve().parent / d for d in ("integration", "reliability"))

ACCOUNT_NAMES = ("worker", "client", "stranger")

#: --xmpp-server value -> (engine, nodes)
XMPP_SERVERS = {"prosody": ("prosody", 1), "ejabberd": ("ejabberd", 1), "ejabberd-cluster": ("ejabberd", 2)}

_server_choice = "prosody"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--xmpp-server", choices=sorted(XMPP_SERVERS), default=os.environ.get("QE_TEST_SERVER") or "prosody",
        help="the private server the integration tests run against (default: $QE_TEST_SERVER or prosody); "
             "ejabberd-cluster is two nodes with the accounts spread over them",
    )


def pytest_configure(config: pytest.Config) -> None:
    global _server_choice
    choice = config.getoption("--xmpp-server", default="prosody")
    if choice not in XMPP_SERVERS:
        raise pytest.UsageError(f"QE_TEST_SERVER / --xmpp-server: unknown server {choice!r}; "
                                f"choose one of {', '.join(sorted(XMPP_SERVERS))}")
    _server_choice = choice


def server_engine() -> str:
    """``prosody`` or ``ejabberd``: what the session's fixtures start."""
    return XMPP_SERVERS[_server_choice][0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration and tests/reliability as ``integration`` (so
    ``-m "not integration"`` runs only the unit tests) without a line in each module.

    The hook sees the whole session's items, so filter by path.
    """
    on_prosody = server_engine() == "prosody"
    for item in items:
        parents = Path(str(item.path)).resolve().parents
        if any(d in parents for d in _SERVER_DIRS):
            item.add_marker(pytest.mark.integration)
        only = item.get_closest_marker("prosody_only")
        if only is not None and not on_prosody:
            reason = only.args[0] if only.args else "relies on Prosody specifics"
            item.add_marker(pytest.mark.skip(reason=f"Prosody only: {reason}"))
        only = item.get_closest_marker("ejabberd_only")
        if only is not None and on_prosody:
            reason = only.args[0] if only.args else "needs ejabberd"
            item.add_marker(pytest.mark.skip(reason=f"ejabberd only (--xmpp-server=ejabberd-cluster): {reason}"))


def _new_server() -> DevServer:
    """A new server of the session's engine (typed as ``DevServer``: ``EjabberdCluster`` offers
    the same interface, ``libs.devserver.XmppDevServer``, and more)."""
    engine, nodes = XMPP_SERVERS[_server_choice]
    try:
        if engine == "ejabberd":
            return EjabberdCluster(nodes=nodes)  # type: ignore[return-value]
        return DevServer()
    except ServerNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def _prosody_session() -> Iterator[tuple[DevServer, dict[str, tuple[str, str]]]]:
    server = _new_server()
    try:
        server.start()
        accounts: dict[str, tuple[str, str]] = {}
        for name in ACCOUNT_NAMES:
            password = secrets.token_urlsafe(16)
            accounts[name] = (server.register(name, password), password)
        yield server, accounts
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def prosody(_prosody_session: tuple[DevServer, dict[str, tuple[str, str]]]) -> DevServer:
    """A started server shared by the session (Prosody, or what ``--xmpp-server`` chose),
    with accounts worker/client/stranger.

    Do not kill or restart it (use ``fresh_prosody``); registering extra accounts is fine.
    """
    return _prosody_session[0]


@pytest.fixture(scope="session")
def accounts(_prosody_session: tuple[DevServer, dict[str, tuple[str, str]]]) -> dict[str, tuple[str, str]]:
    """name -> (bare JID, password) for the accounts of ``prosody``."""
    return dict(_prosody_session[1])


@pytest.fixture
def fresh_prosody() -> Iterator[DevServer]:
    """A started server of the test's own (no accounts yet; the session's engine), for
    kill/restart tests."""
    server = _new_server()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
async def login(prosody: DevServer, accounts: dict[str, tuple[str, str]]):
    """``await login("client")``: a logged-in ``Client`` for one of the accounts, closed at
    the end of the test."""
    from libs.bridge import Client, load_config

    clients: list[Client] = []

    async def _login(name: str) -> Client:
        client = Client(load_config(prosody.env(name, accounts[name][1])), connect_timeout=10)
        await client.__aenter__()
        clients.append(client)
        return client

    yield _login
    for client in clients:
        await client.__aexit__(None, None, None)
