"""The named values shared by timers, periodic tasks and remote jobs: one definition each.

Why one module: the same policy or state used to be spelled as string literals and tuples in
each module that needed it (APScheduler keeps its ``CoalescePolicy`` & co. in one
``_enums.py`` for the same reason). Each enum is a ``StrEnum``: a member *is* its string
(``MisfirePolicy.SKIP == "skip"``, ``json.dumps`` and ``str()`` give ``"skip"``), so the
strings users pass, the JSON on the wire and the values in the job store keep working
unchanged.

Public homes: ``libs.scheduling`` and ``libs.timers`` re-export ``MisfirePolicy``; the states
are read through each object's own properties (``is_running``, ``status`` of a job).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["JobStatus", "MisfirePolicy", "RunState"]


class MisfirePolicy(StrEnum):
    """What to do about fire times (ticks) that passed while nothing could run them.

    Never a burst, whichever: a timer, periodic task or job that missed several fire times
    runs at most once for all of them.
    """

    COALESCE = "coalesce"
    """One catch-up run, as soon as possible, stands for every missed fire time."""
    SKIP = "skip"
    """No catch-up run: the missed fire times are only counted; the next one runs on time."""

    @classmethod
    def parse(cls, value: object, what: str = "misfire policy") -> MisfirePolicy:
        """The member for ``value`` (a member or its string); ``ValueError`` naming the choices."""
        try:
            return cls(value)  # type: ignore[arg-type]  # anything: the ValueError is the check
        except ValueError:
            choices = " or ".join(repr(p.value) for p in cls)
            raise ValueError(f"unknown {what} {value!r}: use {choices}") from None


class RunState(StrEnum):
    """The life cycle of a timer or a periodic task in this process.

    ``NEW`` -> ``start()`` -> ``RUNNING`` -> ``STOPPED`` (by ``stop()``) or ``FINISHED``
    (a timeout whose callback started, a task whose trigger has no more fire times). Each
    object starts once: ``STOPPED`` and ``FINISHED`` are final.
    """

    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"
    FINISHED = "finished"


class JobStatus(StrEnum):
    """The stored status of a remotely scheduled job (``JobStore``; the ``jobs`` command).

    These strings are persisted and sent on the wire: never rename a value.
    """

    ACTIVE = "active"
    """Scheduled: runs at its fire times, also after the worker restarts."""
    FINISHED = "finished"
    """Its trigger has no more fire times."""
    CANCELLED = "cancelled"
    """Cancelled by a caller, or its requester is no longer allowed on the worker."""
