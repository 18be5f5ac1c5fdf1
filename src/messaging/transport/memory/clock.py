"""Where the in-process broker gets its time from.

Message TTLs (the retry ladder's delay queues, the DLQ's 24 hours) need timers
that fire while nobody touches the queue. :class:`SystemClock` runs them on one
daemon thread per process; :class:`ManualClock` runs them only when a test
calls :meth:`ManualClock.advance`, so a 60-second retry delay is tested in no
time and without sleeping.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("messaging.memory")


class Timer:
    """A scheduled callback; :meth:`cancel` stops it from running."""

    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on this clock's own scale (only differences mean anything)."""

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` (on any thread) once :meth:`now` reaches ``deadline``."""


class _TimerHeap:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()

    def push(self, timer: Timer) -> None:
        heapq.heappush(self._heap, (timer.deadline, next(self._order), timer))

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> Timer | None:
        deadline = self.next_deadline()
        if deadline is None or deadline > now:
            return None
        return heapq.heappop(self._heap)[2]


class ManualClock:
    """Time that moves only when told: ``clock.advance(60)`` fires what fell due, in order."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers = _TimerHeap()
        self._lock = threading.RLock()

    def now(self) -> float:
        return self._now

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(deadline, callback)
        with self._lock:
            self._timers.push(timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running every timer due on the way, in order."""
        if seconds < 0:
            raise ValueError(f"time only moves forward; got advance({seconds!r})")
        with self._lock:
            target = self._now + seconds
            while True:
                timer = self._timers.pop_due(target)
                if timer is None:
                    break
                self._now = max(self._now, timer.deadline)
                if not timer.cancelled:
                    timer.callback()
            self._now = target


class SystemClock:
    """The monotonic clock, with timers run by one daemon thread started on first use."""

    def __init__(self) -> None:
        self._timers = _TimerHeap()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(deadline, callback)
        with self._wake:
            self._timers.push(timer)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="memory-broker-clock", daemon=True
                )
                self._thread.start()
            self._wake.notify()
        return timer

    def _run(self) -> None:
        while True:
            with self._wake:
                timer = self._timers.pop_due(self.now())
                if timer is None:
                    deadline = self._timers.next_deadline()
                    self._wake.wait(None if deadline is None else max(0.0, deadline - self.now()))
                    continue
            if not timer.cancelled:
                try:
                    timer.callback()
                except Exception:  # the one timer thread must outlive any callback
                    log.exception("memory broker timer failed")


_system_clock: SystemClock | None = None
_system_lock = threading.Lock()


def system_clock() -> SystemClock:
    """The process's one :class:`SystemClock` (one timer thread for every broker)."""
    global _system_clock
    with _system_lock:
        if _system_clock is None:
            _system_clock = SystemClock()
        return _system_clock
