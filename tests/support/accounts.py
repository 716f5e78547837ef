"""Throwaway accounts on the session's Prosody, for tests that leave state on the server, and
raw access to a logged-in client's slixmpp session, for tests that send what our API never would.

Why not the shared ``worker``/``client``/``stranger`` accounts: presence subscriptions are
stored in the accounts' rosters and outlive the test (a later test would log in already
subscribed, or with a request pending). An account of the test's own keeps that state away
from every other test.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from slixmpp import ClientXMPP

from libs.bridge import App, Client, load_config
from libs.devserver import DevServer


@dataclass(frozen=True)
class Account:
    jid: str  # bare
    password: str

    @property
    def user(self) -> str:
        return self.jid.split("@", 1)[0]


def new_account(server: DevServer, prefix: str) -> Account:
    """Register ``<prefix>-<random>`` (unique per call) and return it."""
    password = secrets.token_urlsafe(16)
    return Account(server.register(f"{prefix}-{secrets.token_hex(4)}", password), password)


def account_env(server: DevServer, account: Account, **extra: str) -> dict[str, str]:
    """The ``QE_*`` variables for ``account`` on ``server``, plus ``extra``."""
    return {**server.env(account.user, account.password), **extra}


@asynccontextmanager
async def logged_in(server: DevServer, account: Account, **extra: str) -> AsyncIterator[Client]:
    """A ``Client`` logged in as ``account`` (``extra``: more ``QE_*`` settings), closed on exit."""
    async with Client(load_config(account_env(server, account, **extra)), connect_timeout=10) as client:
        yield client


def xmpp_of(peer: Client | App) -> ClientXMPP:
    """The slixmpp session under a logged-in ``Client`` or a started ``App``."""
    assert peer.transport is not None and peer.transport._client is not None, "not started"
    return peer.transport._client
