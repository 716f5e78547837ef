"""The timer heap: absolute deadlines, no drift, misfire policy. Sans-IO.

Why a separate class: all scheduling decisions (which tick is due, what the next deadline
is, how many ticks a stall cost) live here and nowhere else, with no threads, locks or
loops. Unit tests drive it with a virtual clock; the timer thread in ``timers.py`` is a
thin driver that sleeps until ``next_deadline()`` and calls ``due()``.

Thread affinity: none. Not thread-safe; the owner serialises calls (``timers._Engine``
holds its lock around every call).

Deadlines are seconds on the owner's clock (``time.monotonic`` in production). The k-th
tick of a timer is due at ``origin + k * interval``: computed from the origin, never by
adding to the previous wake-up time, so neither late wake-ups nor float rounding
accumulate into drift.

Cancelling and re-arming never search the heap. Each arm gets a fresh sequence number
(a generation), stored on the timer as ``_armed``; a heap item ``(deadline, seq, slot)``
is live only while ``slots[slot]._armed == seq``. Dead items are dropped when they reach
the top, and the heap is rebuilt when more than half of it is dead, so memory stays
proportional to the number of live timers even under heavy start/stop churn.

Why the heap holds a slot number and not the timer itself: tuples of numbers are
untracked by the cyclic garbage collector, so a tick allocates nothing the collector
must later promote and scan. With the timer in the tuple, 100,000 one-second timers
promote 100,000 tuples a second to the oldest generation and trigger a full collection
(a pause of ~100 ms) every second or two. Armed timers hold a slot in ``_slots``; slots
are reused through a free list.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import ClassVar, Generic, Protocol, TypeVar

__all__ = ["Schedulable", "TimerWheel"]

_COMPACT_MIN = 1024  # do not bother rebuilding small heaps


class Schedulable(Protocol):
    """What the wheel reads and writes on a timer (``timers._Timer`` implements it)."""

    _REPEAT: ClassVar[bool]  # interval (True) or one shot (False)
    _interval: float  # seconds between ticks (the delay, for a one shot)
    _skip: bool  # misfire policy: True = "skip", False = "coalesce"
    _origin: float  # clock value the tick grid starts from
    _n: int  # index of the armed tick: its deadline is origin + n * interval
    _armed: int  # sequence number of the live heap item, 0 when not armed
    _slot: int  # index in the wheel's slot table while armed, -1 otherwise
    _missed: int  # ticks that never ran (stalls, or max_instances reached)
    _inflight: int  # runs handed over and not finished yet
    _max_instances: int  # the most runs in flight at once


T = TypeVar("T", bound=Schedulable)


class TimerWheel(Generic[T]):
    """A heap of absolute deadlines. ``due(now)`` pops what is due and re-arms intervals."""

    __slots__ = ("_free", "_heap", "_seq", "_slots", "_stale", "clock")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, int]] = []  # (deadline, seq, slot)
        self._slots: list[T | None] = []  # armed timers by slot
        self._free: list[int] = []  # slots to reuse
        self._seq = 0
        self._stale = 0  # heap items whose timer was disarmed or re-armed since

    def __len__(self) -> int:
        """Heap items, live and dead (for tests and diagnostics)."""
        return len(self._heap)

    def armed(self) -> list[T]:
        """Every armed timer (in no particular order)."""
        return [t for t in self._slots if t is not None]

    def _take_slot(self, timer: T) -> int:
        if self._free:
            slot = self._free.pop()
            self._slots[slot] = timer
        else:
            slot = len(self._slots)
            self._slots.append(timer)
        timer._slot = slot
        return slot

    def _drop_slot(self, timer: T) -> None:
        self._slots[timer._slot] = None
        self._free.append(timer._slot)
        timer._slot = -1

    def arm(self, timer: T, origin: float) -> bool:
        """Start ``timer``'s tick grid at ``origin``: first tick at origin + interval.

        Replaces any earlier arming (that is how ``reset()`` works). Returns True if this
        tick is now the earliest in the heap, i.e. a sleeping driver must be woken.
        """
        if timer._armed:
            self._stale += 1
        slot = timer._slot if timer._slot >= 0 else self._take_slot(timer)
        timer._origin = origin
        timer._n = 1
        self._seq += 1
        seq = self._seq
        timer._armed = seq
        heap = self._heap
        heapq.heappush(heap, (origin + timer._interval, seq, slot))
        return heap[0][1] == seq

    def disarm(self, timer: T) -> None:
        """Forget ``timer``'s pending tick, if any (O(1); the heap item dies in place)."""
        if not timer._armed:
            return
        timer._armed = 0
        self._drop_slot(timer)
        self._stale += 1
        if self._stale > _COMPACT_MIN and self._stale * 2 > len(self._heap):
            self._heap = [item for item in self._heap if self._live(item)]
            heapq.heapify(self._heap)
            self._stale = 0

    def _live(self, item: tuple[float, int, int]) -> bool:
        timer = self._slots[item[2]]
        return timer is not None and timer._armed == item[1]

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or None when nothing is armed."""
        heap = self._heap
        while heap:
            if self._live(heap[0]):
                return heap[0][0]
            heapq.heappop(heap)
            self._stale -= 1
        return None

    def due(self, now: float | None = None, limit: int = 0) -> list[tuple[T, float]]:
        """Pop the ticks due at ``now`` (default: the clock) as ``(timer, deadline)`` pairs.

        Each timer appears at most once per call, whatever the stall: an interval whose
        deadline is more than one interval in the past has missed ticks. With
        ``coalesce`` it fires once, for the most recent grid point, and the older ones are
        added to ``_missed``; with ``skip`` it does not fire now and every passed grid
        point is added to ``_missed``. Either way the next deadline is the first grid
        point after ``now`` (still on the original grid). Intervals are re-armed here;
        one-shots are left disarmed.

        A tick fires only while the timer has fewer than ``_max_instances`` runs in
        flight; it then increments ``_inflight`` (the owner decrements it when the run
        ends). Otherwise the tick is added to ``_missed``.

        ``limit`` > 0 stops after that many popped items (the rest stays due), so the
        owner can release its lock between chunks of a very large backlog.
        """
        if now is None:
            now = self.clock()
        heap = self._heap
        slots = self._slots
        heappop = heapq.heappop
        heapreplace = heapq.heapreplace
        out: list[tuple[T, float]] = []
        append = out.append
        budget = limit if limit > 0 else -1
        while heap and budget:
            deadline, seq, slot = heap[0]
            if deadline > now:
                break
            budget -= 1
            timer = slots[slot]
            if timer is None or timer._armed != seq:
                heappop(heap)
                self._stale -= 1
                continue
            if timer._REPEAT:
                interval = timer._interval
                n = timer._n + 1
                nxt = timer._origin + n * interval
                fire = deadline
                skipped = False
                if nxt <= now:  # stalled past whole intervals
                    behind = int((now - deadline) // interval)  # grid points after deadline
                    n = timer._n + behind + 1
                    nxt = timer._origin + n * interval
                    if nxt <= now:  # float rounding at an exact grid point
                        behind += 1
                        n += 1
                        nxt = timer._origin + n * interval
                    if timer._skip:
                        timer._missed += behind + 1
                        skipped = True
                    else:
                        timer._missed += behind
                        fire = timer._origin + (n - 1) * interval
                timer._n = n
                self._seq += 1
                seq = self._seq
                timer._armed = seq
                heapreplace(heap, (nxt, seq, slot))
                if skipped:
                    continue
            else:
                heappop(heap)
                timer._armed = 0
                self._drop_slot(timer)
                fire = deadline
            if timer._inflight >= timer._max_instances:
                timer._missed += 1
                continue
            timer._inflight += 1
            append((timer, fire))
        return out
