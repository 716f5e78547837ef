"""The deadline heap: absolute deadlines, no drift, misfire policy. Sans-IO.

Why a separate class: all scheduling decisions (which tick is due, what the next deadline
is, how many ticks a stall cost) live here and nowhere else, with no threads, locks or
loops. Unit tests drive it with a virtual clock; the engine (``_engine.py``) calls it under
its lock and the timer thread (``_thread.py``) only sleeps until ``next_deadline()``.

Thread affinity: none. Not thread-safe; the owner serialises calls (the engine's lock).

Deadlines are seconds on the owner's clock (``time.monotonic`` in production). The k-th
tick of a timer is due at ``origin + k * interval``: computed from the origin, never by
adding to the previous wake-up time, so neither late wake-ups nor float rounding
accumulate into drift.

Cancelling and re-arming never search the heap. A heap item is one int, the *key*:
the deadline rounded up to whole nanoseconds, shifted left by ``_SLOT_BITS``, plus the
timer's slot number (its index in ``_slots``). The armed timer remembers its key in
``_armed``, so an item is live only while ``slots[key & _SLOT_MASK]._armed == key``. Dead
items are dropped when they reach the top, and the heap is rebuilt when more than half of
it is dead, so memory stays proportional to the number of live timers even under heavy
start/stop churn. (Two items can only have the same key if they are for the same slot and
the same nanosecond; the first one to pop then fires for both and the other is dead.)
Slots of disarmed timers are reused through a free list.

Items are ints, not ``(deadline, seq, timer)`` tuples, and ``due()`` returns its ticks flat:
an int is smaller, compares faster and is not tracked by the cyclic garbage collector, which
at 100,000 timers decides whether full collections stall every tick (docs/timers.md,
"Design notes", has the measurements).

The key only orders the heap and tells a due item from a future one; the deadline a
tick fires for is computed exactly (``origin + n * interval``, as a float), so rounding
to nanoseconds can neither drift nor fire early.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import ClassVar, Generic, Protocol, TypeVar

__all__ = ["DeadlineHeap", "Schedulable"]

_COMPACT_MIN = 1024  # do not bother rebuilding small heaps
_SLOT_BITS = 32
_SLOT_MASK = (1 << _SLOT_BITS) - 1


class Schedulable(Protocol):
    """What the heap reads and writes on a timer (``_timers.Timer`` implements it)."""

    _REPEAT: ClassVar[bool]  # interval (True) or one shot (False)
    _interval: float  # seconds between ticks (the delay, for a one shot)
    _skip: bool  # the misfire policy, as read per tick: True = SKIP, False = COALESCE
    _origin: float  # clock value the tick grid starts from
    _n: int  # index of the armed tick: its deadline is origin + n * interval
    _armed: int  # key of the live heap item, 0 when not armed
    _missed: int  # ticks that never ran (stalls, or max_instances reached)
    _inflight: int  # runs handed over and not finished yet
    _max_instances: int  # the most runs in flight at once


T = TypeVar("T", bound=Schedulable)


class DeadlineHeap(Generic[T]):
    """A heap of absolute deadlines. ``due(now)`` pops what is due and re-arms intervals."""

    __slots__ = ("_free", "_heap", "_slots", "_stale", "clock")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._heap: list[int] = []  # keys: deadline in ns << _SLOT_BITS | slot
        self._slots: list[T | None] = [None]  # armed timers by slot (0 unused: key 0 = not armed)
        self._free: list[int] = []  # slots to reuse
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
        return slot

    def _drop_slot(self, key: int) -> None:
        """Free the slot of the timer armed with ``key``."""
        slot = key & _SLOT_MASK
        self._slots[slot] = None
        self._free.append(slot)

    def arm(self, timer: T, origin: float) -> bool:
        """Start ``timer``'s tick grid at ``origin``: first tick at origin + interval.

        Replaces any earlier arming (that is how ``reset()`` works). Returns True if this
        tick is now the earliest in the heap, i.e. a sleeping driver must be woken.
        """
        if timer._armed:
            self._stale += 1
        slot = timer._armed & _SLOT_MASK if timer._armed else self._take_slot(timer)
        timer._origin = origin
        timer._n = 1
        key = (math.ceil((origin + timer._interval) * 1e9) << _SLOT_BITS) | slot
        timer._armed = key
        heap = self._heap
        heapq.heappush(heap, key)
        return heap[0] == key

    def disarm(self, timer: T) -> None:
        """Forget ``timer``'s pending tick, if any (O(1); the heap item dies in place)."""
        if not timer._armed:
            return
        self._drop_slot(timer._armed)
        timer._armed = 0
        self._stale += 1
        if self._stale > _COMPACT_MIN and self._stale * 2 > len(self._heap):
            self._heap = [item for item in self._heap if self._live(item)]
            heapq.heapify(self._heap)
            self._stale = 0

    def _live(self, key: int) -> bool:
        timer = self._slots[key & _SLOT_MASK]
        return timer is not None and timer._armed == key

    def next_deadline(self) -> float | None:
        """The earliest live deadline (exact, not rounded), or None when nothing is armed."""
        heap = self._heap
        slots = self._slots
        while heap:
            key = heap[0]
            timer = slots[key & _SLOT_MASK]
            if timer is not None and timer._armed == key:
                return timer._origin + timer._n * timer._interval
            heapq.heappop(heap)
            self._stale -= 1
        return None

    def due(self, now: float | None = None, limit: int = 0) -> list[T | float]:
        """Pop the ticks due at ``now`` (default: the clock), returned flat:
        ``[timer, deadline, timer, deadline, ...]`` (no tuple per tick: see the module doc).

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
        ceil = math.ceil
        # Every key that may be due at ``now``: keys round deadlines *up* to the nanosecond, so
        # a deadline equal to ``now`` but not on a whole nanosecond has a key above now's
        # floor; rounding now up as well keeps it. A deadline a fraction of a nanosecond
        # after ``now`` gets in too, and is stopped by the exact check below.
        top = (math.ceil(now * 1e9) << _SLOT_BITS) | _SLOT_MASK
        out: list[T | float] = []
        append = out.append
        budget = limit if limit > 0 else -1
        while heap and budget:
            key = heap[0]
            if key > top:
                break
            budget -= 1
            slot = key & _SLOT_MASK
            timer = slots[slot]
            if timer is None or timer._armed != key:
                heappop(heap)
                self._stale -= 1
                continue
            interval = timer._interval
            n = timer._n
            fire = timer._origin + n * interval
            if fire > now:  # due by the rounded key, a fraction of a nanosecond early
                break
            if timer._REPEAT:
                n += 1
                nxt = timer._origin + n * interval
                skipped = False
                if nxt <= now:  # stalled past whole intervals
                    behind = int((now - fire) // interval)  # grid points after fire
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
                key = (ceil(nxt * 1e9) << _SLOT_BITS) | slot
                timer._armed = key
                heapreplace(heap, key)
                if skipped:
                    continue
            else:
                heappop(heap)
                timer._armed = 0
                self._drop_slot(key)
            if timer._inflight >= timer._max_instances:
                timer._missed += 1
                continue
            timer._inflight += 1
            append(timer)
            append(fire)
        return out
