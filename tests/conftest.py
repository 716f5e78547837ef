"""Fixtures for tests against a real, private Prosody (see ``libs.devserver``), shared by
tests/integration and tests/reliability; unit tests never start a server. Also the
Hypothesis profiles of the whole suite (below).

A missing Prosody is a *failure*, not a skip: CI installs it, and a silently skipped
integration suite would look green while testing nothing.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from libs.devserver import DevServer, ProsodyNotInstalled

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration and tests/reliability as ``integration`` (so
    ``-m "not integration"`` runs only the unit tests) without a line in each module.

    The hook sees the whole session's items, so filter by path.
    """
    for item in items:
        parents = Path(str(item.path)).resolve().parents
        if any(d in parents for d in _SERVER_DIRS):
            item.add_marker(pytest.mark.integration)


def _new_server() -> DevServer:
    try:
        return DevServer()
    except ProsodyNotInstalled as exc:
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
    """A started Prosody shared by the session, with accounts worker/client/stranger.

    Do not kill or restart it (use ``fresh_prosody``); registering extra accounts is fine.
    """
    return _prosody_session[0]


@pytest.fixture(scope="session")
def accounts(_prosody_session: tuple[DevServer, dict[str, tuple[str, str]]]) -> dict[str, tuple[str, str]]:
    """name -> (bare JID, password) for the accounts of ``prosody``."""
    return dict(_prosody_session[1])


@pytest.fixture
def fresh_prosody() -> Iterator[DevServer]:
    """A started Prosody of the test's own (no accounts yet), for kill/restart tests."""
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
