"""Exceptions a caller of another worker can catch, one per way a call can end badly.

Why typed errors: a script must tell "the worker said no" (``RemoteError``, with the code
from ``docs/protocol.md``) from "nobody answered in time" (``CallTimeout``) from "we are not
connected" (``NotConnected``) without parsing strings.
"""

from __future__ import annotations

__all__ = ["AuthenticationFailed", "CallError", "CallTimeout", "NotConnected", "RemoteError"]


class CallError(Exception):
    """Base of every failed ``call()``; ``code`` is a protocol error code or a local one."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CallTimeout(CallError):
    """No answer before the timeout. The request carried the same deadline, so a worker that
    receives it late (after a reconnect) does not execute it."""

    code = "timeout"


class NotConnected(CallError):
    """Our own connection to the XMPP server was not up within the timeout."""

    code = "not-connected"


class AuthenticationFailed(CallError):
    """The server refused our JID/password; retrying will not help."""

    code = "auth-failed"


class RemoteError(CallError):
    """The worker (or the server on its behalf) answered with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.remote_message = message
