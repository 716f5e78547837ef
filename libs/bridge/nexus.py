"""``App.nexus``: QE's newer, decorator style of registering handlers.

The decorators register on the same dispatch as the legacy names, so both generations can
be mixed in one script: ``@App.nexus.API("cmd")`` is ``@App.command("cmd")``,
``@App.nexus.MsgReceiver()`` is ``App.xmpp.msgreceiver = ...``; ``Direct()`` and
``Channel(name)`` take direct and channel messages before ``msgreceiver`` sees them.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .access import Role
from .services import channel_room
from .specs import APISpecs, MessageSpecs

if TYPE_CHECKING:
    from .app import App

__all__ = ["Nexus", "NexusAPISpecs", "NexusMessageSpecs"]

NexusAPISpecs = APISpecs
"""QE's name for what an ``@App.nexus.API`` handler receives (the same fields)."""
NexusMessageSpecs = MessageSpecs
"""QE's name for what a message handler receives (the same fields)."""

MessageHandler = Callable[[MessageSpecs], Awaitable[Any]]
_H = TypeVar("_H", bound=Callable[..., Awaitable[Any]])


def _async(handler: Any, what: str) -> None:
    if not inspect.iscoroutinefunction(handler):
        raise TypeError(f"{what} must decorate an async function: async def handler(specs): ...")


class Nexus:
    """The decorators of one ``App``: ``API``, ``Direct``, ``Channel``, ``MsgReceiver``."""

    def __init__(self, app: App) -> None:
        self._app = app
        self.direct: MessageHandler | None = None
        self.channels: dict[str, MessageHandler] = {}  # room JID (as App.subscribe names it) -> handler

    def API(self, cmd: str, *, description: str | None = None,  # noqa: N802 - QE's name
            access: Role | str | None = None) -> Callable[[_H], _H]:
        """``@App.nexus.API("resize")``: the handler of command ``resize``; QE's ``async def
        f(specs)`` or a typed handler, with ``description`` and ``access`` as in
        ``App.command``."""
        register = self._app.command(cmd, description=description, access=access)

        def decorate(handler: _H) -> _H:
            _async(handler, f"@App.nexus.API({cmd!r})")
            register(handler)
            return handler

        return decorate

    def Direct(self) -> Callable[[_H], _H]:  # noqa: N802 - QE's name
        """``@App.nexus.Direct()``: the handler of direct (one-to-one chat) messages."""

        def decorate(handler: _H) -> _H:
            _async(handler, "@App.nexus.Direct()")
            self.direct = handler
            return handler

        return decorate

    def Channel(self, name: str) -> Callable[[_H], _H]:  # noqa: N802 - QE's name
        """``@App.nexus.Channel("news")``: the handler of messages in channel ``news``; the
        worker subscribes to it (as ``App.subscribe("news")`` would). Keyed by the room, as
        subscriptions are: ``Channel("news")`` serves a channel subscribed as ``"News"``."""
        self._app.subscribe(name)
        room = channel_room(name, self._app.config.rooms_domain)

        def decorate(handler: _H) -> _H:
            _async(handler, f"@App.nexus.Channel({name!r})")
            self.channels[room] = handler
            return handler

        return decorate

    def MsgReceiver(self) -> Callable[[_H], _H]:  # noqa: N802 - QE's name
        """``@App.nexus.MsgReceiver()``: every message no ``Direct``/``Channel`` handler took
        (the same slot as ``App.xmpp.msgreceiver``)."""

        def decorate(handler: _H) -> _H:
            _async(handler, "@App.nexus.MsgReceiver()")
            self._app.xmpp.msgreceiver = handler
            return handler

        return decorate
