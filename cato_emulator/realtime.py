"""A SimPy environment whose clock is an asyncio loop's, for serving a model in real time.

SimPy's ``simpy.rt.RealtimeEnvironment`` keeps the contract of ``simpy.Environment`` and
changes one thing, when ``step()`` may process the next event: only once the wall clock has
reached that event's time (``factor`` real seconds per simulated second), sleeping until
then. :class:`LoopClockEnvironment` does the same over an asyncio loop's clock
(``loop.time()``), except that it never sleeps: a server cannot block its loop, so the loop
does the waiting. The owner (the emulated replica) keeps one loop timer at :meth:`next_due`
and calls :meth:`advance` when it fires and whenever a request arrives::

    env = LoopClockEnvironment(loop, factor=time_scale)
    env.advance()                         # events due by now run; env.now = now
    ... schedule work at env.now ...
    when = env.next_due()                 # loop time of the next event, or None
    timer = loop.call_at(when, wake)      # wake() advances and re-arms

Timing model. An event keeps its simulated time whatever happens: being late never shifts
the model's schedule, it only delays the event's delivery (by the loop's timer resolution,
about 1 ms with epoll, plus whatever else the loop is doing). It is never early: ``step()``
refuses an event the wall clock has not reached. Between events ``now`` is brought up to
the wall clock (:meth:`advance`), so work that arrives from outside (an HTTP request) is
scheduled from the moment it arrived, as on a real engine. This is RealtimeEnvironment with
``strict=False``: no error when delivery runs late. Everything happens in the loop's thread,
so the environment is never touched from two threads.
"""

from __future__ import annotations

import asyncio
import math

import simpy
from simpy.core import EmptySchedule


class NotDue(Exception):
    """The next event lies ahead of the wall clock (``step()`` does not wait for it)."""


class LoopClockEnvironment(simpy.Environment):
    """Simulated time = (``loop.time()`` - its value at creation) / ``factor`` + ``initial_time``.

    ``factor`` is real seconds per simulated second, as in RealtimeEnvironment (0.5 runs the
    model twice as fast as its durations say).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, factor: float = 1.0, initial_time: float = 0.0):
        if not factor > 0:
            raise ValueError(f"factor must be > 0, not {factor!r}")
        super().__init__(initial_time)
        self.loop = loop
        self.factor = factor
        self.env_start = initial_time
        self.real_start = loop.time()

    def wall_now(self) -> float:
        """The simulated time the wall clock is at now."""
        return self.env_start + (self.loop.time() - self.real_start) / self.factor

    def loop_time(self, t: float) -> float:
        """The loop time at which simulated time ``t`` is reached."""
        return self.real_start + (t - self.env_start) * self.factor

    def next_due(self) -> float | None:
        """The loop time of the next event (None: nothing scheduled): when to call advance()."""
        t = self.peek()
        return None if t == math.inf else self.loop_time(t)

    def step(self) -> None:
        """Process the next event if the wall clock has reached it.

        Raises EmptySchedule if there is none and NotDue if it lies ahead (no waiting: the
        caller arms a timer at next_due()).
        """
        t = self.peek()
        if t == math.inf:
            raise EmptySchedule
        if t > self.wall_now():
            raise NotDue(t)
        super().step()

    def advance(self) -> None:
        """Process every event the wall clock has reached, then bring ``now`` to the wall clock.

        Events run at their own simulated times; ``now`` then moves to the wall clock's now
        (never back: every event left lies ahead of it).
        """
        target = self.wall_now()
        try:
            while True:
                self.step()
        except (EmptySchedule, NotDue):
            pass
        if target > self._now:
            self._now = target

    def run(self, until=None):
        """Not for this environment: its loop drives it (advance() on a timer at next_due())."""
        raise RuntimeError("a LoopClockEnvironment is driven by its asyncio loop: call advance() at next_due()")
