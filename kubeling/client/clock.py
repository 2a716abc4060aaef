"""Clocks: the one seam through which client code reads time and waits.

Everything in `kubeling.client` that sleeps, schedules or stamps a time takes a
``clock=`` argument, so tests drive time by hand instead of sleeping.

Contract of a clock (both implementations below keep it):

- ``now()`` is *monotonic* seconds; use it for durations and deadlines only.
- ``wall()`` is an aware UTC `datetime`; use it for timestamps written to objects.
  The two are unrelated: never subtract one from the other.
- ``call_later(delay, fn, *args)`` runs ``fn(*args)`` on the running event loop
  once ``delay`` seconds have passed and returns a handle with ``cancel()``.
  Callbacks whose times are equal run in the order they were scheduled.
- ``await sleep(delay)`` suspends the caller for ``delay`` seconds; cancelling the
  caller cancels the sleep.

`FakeClock` only moves when `step` / `set` is called. Stepping fires every timer
that became due, in time order, synchronously; coroutines woken by it resume the
next time the test yields to the loop (``await asyncio.sleep(0)``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def wall(self) -> datetime: ...

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Any: ...

    async def sleep(self, delay: float) -> None: ...


class RealClock:
    """The system clock and the running asyncio loop's timers."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime:
        return datetime.now(timezone.utc)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, delay), fn, *args)

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))


REAL_CLOCK = RealClock()


class _FakeTimer:
    __slots__ = ("when", "fn", "args", "cancelled")

    def __init__(self, when: float, fn: Callable[..., Any], args: tuple) -> None:
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that stands still until the test moves it.

    ``FakeClock(start=0.0, wall=datetime(2024, 1, 1, tzinfo=timezone.utc))``:
    ``wall()`` is the start wall time plus the monotonic time elapsed since.
    """

    def __init__(self, start: float = 1000.0, wall: datetime | None = None) -> None:
        self._now = start
        self._start = start
        self._wall0 = wall or datetime(2024, 1, 1, tzinfo=timezone.utc)
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> datetime:
        return self._wall0 + timedelta(seconds=self._now - self._start)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> _FakeTimer:
        t = _FakeTimer(self._now + max(0.0, delay), fn, args)
        heapq.heappush(self._timers, (t.when, next(self._seq), t))
        return t

    async def sleep(self, delay: float) -> None:
        fut = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        timer = self.call_later(delay, wake)
        try:
            await fut
        finally:
            timer.cancel()

    def has_waiters(self) -> bool:
        """True while any timer or sleeper is pending (handy to wait for a loop to park)."""
        return any(not t.cancelled for _, _, t in self._timers)

    def next_deadline(self) -> float | None:
        live = [w for w, _, t in self._timers if not t.cancelled]
        return min(live) if live else None

    def step(self, seconds: float) -> None:
        """Advance time by ``seconds`` and fire every timer that fell due."""
        self.set(self._now + seconds)

    def set(self, now: float) -> None:
        if now < self._now:
            raise ValueError("a monotonic clock cannot go backwards")
        while self._timers and self._timers[0][0] <= now:
            when, _, timer = heapq.heappop(self._timers)
            # Time moves in jumps to each timer's deadline so that a callback
            # reading now() sees the time it was scheduled for.
            self._now = max(self._now, when)
            if not timer.cancelled:
                timer.fn(*timer.args)
        self._now = now


async def sleep_or_stop(clock: Clock, delay: float, stop: asyncio.Event | None) -> bool:
    """Sleep ``delay`` on ``clock``; True if ``stop`` was (or got) set first."""
    if stop is None:
        await clock.sleep(delay)
        return False
    if stop.is_set():
        return True
    sleeper = asyncio.ensure_future(clock.sleep(delay))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([sleeper, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        stopper.cancel()
    return stop.is_set()
