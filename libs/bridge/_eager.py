"""Run a coroutine's first step at once, and hand the rest to asyncio only if there is a rest.

Most API calls (``ping``, ``info``, an ``echo``) never wait for anything: their whole life is
one step of their coroutine. Two things cost time around that step for no use:

- a Task started the usual way runs its first step on the *next* pass of the event loop.
  ``start_eager()`` runs it at once: Python 3.12+ has ``eager_start`` for that, and on 3.11
  it is emulated (below);
- a deadline timer (``asyncio.timeout``) armed around a handler that returns without
  waiting. The dispatcher runs the handler's first step itself (``coro.send(None)``) and
  arms the deadline only if the handler is still running after it, around
  ``await Resumed(coro, what_it_yielded)``.

Both rest on ``Resumed``: a coroutine that was already stepped once, wrapped so that a Task
(or an ``await``) can take it over as if it had run that step itself. It gives the awaited
future back on the first ``send()`` and then forwards ``send``/``throw``/``close`` to the
original coroutine, so results, exceptions and cancellation reach it unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine, Generator
from typing import Any, Final

__all__ = ["Resumed", "start_eager"]

_PENDING: Final = 0  # stepped once and waiting: what it yielded is not handed over yet
_RETURNED: Final = 1  # finished in its first step with a value (kept in _value)
_RAISED: Final = 2  # finished in its first step with an exception (kept in _value)
_FORWARD: Final = 3  # handed over (or never stepped by us): every call goes to the coroutine


class Resumed(Coroutine[Any, Any, Any]):
    """``coro`` after its first step (``yielded = coro.send(None)``), ready to be taken over.

    Await it, or make it a Task's coroutine, once. The first ``send()`` returns ``yielded``
    (the future ``coro`` waits for, or None after a bare ``yield``) for the Task to wait on,
    exactly as if the Task had run that step; every later ``send``/``throw``/``close`` goes
    to ``coro``. A ``throw()`` that comes before the hand-over (a Task cancelled before its
    first step) also cancels the future ``coro`` waits for, as ``Task.cancel()`` does for a
    task that waits, then throws into ``coro`` at its wait.
    """

    __slots__ = ("_coro", "_state", "_value")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any = None) -> None:
        self._coro = coro
        self._state = _PENDING
        self._value: Any = yielded

    @classmethod
    def _unstarted(cls, coro: Coroutine[Any, Any, Any]) -> Resumed:
        """A wrapper for ``coro`` whose first step ``_step()`` will run (``start_eager``)."""
        self = cls(coro)
        self._state = _FORWARD
        return self

    def _step(self) -> None:
        """Run ``coro``'s first step now and keep its outcome for the first ``send()``."""
        try:
            self._value = self._coro.send(None)
            self._state = _PENDING
        except StopIteration as stop:
            self._value = stop.value
            self._state = _RETURNED
        except BaseException as exc:  # handed to the Task on its first step, which decides
            self._value = exc
            self._state = _RAISED

    @property
    def waiting(self) -> bool:
        """True until the hand-over if ``coro`` is waiting (did not finish in its first step)."""
        return self._state == _PENDING

    def _outcome(self) -> Any:
        """The first step's outcome, handed over once: the yielded value, or its end."""
        state, value = self._state, self._value
        self._state, self._value = _FORWARD, None
        if state == _RETURNED:
            raise StopIteration(value)
        if state == _RAISED:
            try:
                raise value
            finally:
                del value
        return value

    def send(self, value: Any) -> Any:
        if self._state == _FORWARD:
            return self._coro.send(value)
        return self._outcome()

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        state = self._state
        if state == _RETURNED or state == _RAISED:
            # It finished before the Task ran its first step: that outcome stands (as for a
            # Python 3.12 eager task, which is already done and cannot be cancelled).
            return self._outcome()
        if state == _PENDING:
            waited_for = self._value
            self._state, self._value = _FORWARD, None
            if isinstance(typ, asyncio.CancelledError) and asyncio.isfuture(waited_for):
                waited_for.cancel()
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)  # old-style call, passed on as it came

    def close(self) -> None:
        self._state, self._value = _FORWARD, None
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self  # an iterator with send/throw/close

    def __iter__(self) -> Resumed:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    # What asyncio shows for a Task (repr, get_stack, print_stack) is the wrapped coroutine.
    # (A class cannot have a __qualname__ property; asyncio falls back to __name__.)
    @property
    def __name__(self) -> str:
        coro = self._coro
        return str(getattr(coro, "__qualname__", None) or getattr(coro, "__name__", type(coro).__name__))

    @property
    def cr_code(self) -> Any:
        return getattr(self._coro, "cr_code", None)

    @property
    def cr_frame(self) -> Any:
        return getattr(self._coro, "cr_frame", None)

    @property
    def cr_running(self) -> bool:
        return bool(getattr(self._coro, "cr_running", False))

    @property
    def cr_await(self) -> Any:
        return getattr(self._coro, "cr_await", None)


if sys.version_info >= (3, 12):

    def start_eager(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> tuple[asyncio.Task[Any], bool]:
        """Start ``coro`` as a Task whose first step runs now (``eager_start``). Returns the
        Task and whether it is still running after that step."""
        task = asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        return task, not task.done()

else:
    _enter_task = asyncio.tasks._enter_task  # type: ignore[attr-defined,unused-ignore]  # typeshed varies
    _leave_task = asyncio.tasks._leave_task  # type: ignore[attr-defined,unused-ignore]

    def start_eager(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> tuple[asyncio.Task[Any], bool]:
        """Start ``coro`` as a Task whose first step runs now, as Python 3.12's
        ``eager_start`` does: in the Task's own context and with the Task as the current
        task (so ``asyncio.current_task()``, ``asyncio.timeout()`` and TaskGroups work in
        that step). Returns the Task and whether it is still running after that step.

        If the coroutine finished in that step, the Task reports the same result or exception
        on its own first step, one loop pass later (a ``cancel()`` before then changes
        nothing: the work is done); if it waits, the Task takes it over at that wait.
        Called from inside a task (3.11 cannot have two current tasks on one loop), the
        Task starts as usual, on the next pass.
        """
        if asyncio.current_task(loop) is not None:
            return loop.create_task(coro), True
        context = contextvars.copy_context()
        stepped = Resumed._unstarted(coro)
        task: asyncio.Task[Any] = loop.create_task(stepped, context=context)
        _enter_task(loop, task)
        try:
            context.run(stepped._step)
        finally:
            _leave_task(loop, task)
        return task, stepped.waiting
