"""Timers: QE's ``SetInterval``/``SetTimeout`` classes and Nexus decorators on one timer thread.

QE scripts import these names from ``libs.bridge`` (which re-exports them); import from
``libs.timers`` or ``libs.bridge``, never from the modules inside. docs/timers.md is the
user's guide. The modules, one job each:

* ``_timers.py`` -- the public classes and ``timer_stats()``, bound to the process's engine;
* ``_decorators.py`` -- ``@setInterval``/``@setTimeout``, ``clearInterval``/``clearTimeout``;
* ``_runner.py`` -- ``RepeatingTaskRunner`` (seed 001's API, in seconds) over one ``SetInterval``;
* ``_engine.py`` -- which timers run and what is due, under one lock; the hand-over of due
  ticks to event loops (its injection point: ``Engine(driver=...)``);
* ``_thread.py`` -- the timer thread, the production driver of the engine;
* ``_pool.py`` -- the worker threads that run plain callbacks;
* ``_callbacks.py`` -- how one callback is called, and what counts as its failure;
* ``_heap.py`` -- the deadline heap (sans-IO: no threads, locks or loops);
* ``_stats.py`` -- run accounting, the lateness histogram, ``TimerStats``;
* ``virtual.py`` -- public, for tests: ``VirtualClock``, the timers created while it is
  installed on virtual time (``libs.testing`` and its ``qe_clock`` fixture use it).
"""

from .._enums import MisfirePolicy
from ._decorators import clearInterval, clearTimeout, setInterval, setTimeout
from ._runner import RepeatingTaskRunner
from ._stats import TimerStats
from ._timers import SetInterval, SetIntervalSafe, SetTimeout, SetTimeoutSafe, timer_stats

__all__ = [
    "MisfirePolicy",
    "RepeatingTaskRunner",
    "SetInterval",
    "SetIntervalSafe",
    "SetTimeout",
    "SetTimeoutSafe",
    "TimerStats",
    "clearInterval",
    "clearTimeout",
    "setInterval",
    "setTimeout",
    "timer_stats",
]
