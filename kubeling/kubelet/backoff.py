"""Per-key exponential back-off (upstream's ``flowcontrol.Backoff``), for CrashLoopBackOff.

A key (pod UID + container name) that fails waits 10 s, then 20, 40 ... up to 5 min. A key that
has not failed for ``reset_after`` (10 min, twice the maximum as upstream) starts again at 10 s:
a container that ran long enough is back to a short delay. The clock is injectable.
"""

from __future__ import annotations

import time
from typing import Callable, Hashable

INITIAL = 10.0
MAXIMUM = 300.0
RESET_AFTER = 600.0


class Backoff:
    def __init__(self, initial: float = INITIAL, maximum: float = MAXIMUM, reset_after: float = RESET_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.initial, self.maximum, self.reset_after = initial, maximum, reset_after
        self.clock = clock
        self._entries: dict[Hashable, tuple[float, float]] = {}   # key -> (delay, last failure)

    def next(self, key: Hashable, ran_for: float = 0.0) -> float:
        """Record a failure now; returns the delay before the next try. ``ran_for`` is how long
        the container ran before it failed: a run longer than ``reset_after`` resets the delay."""
        now = self.clock()
        delay, last = self._entries.get(key, (0.0, 0.0))
        if delay == 0.0 or now - last > self.reset_after or ran_for >= self.reset_after:
            delay = self.initial
        else:
            delay = min(delay * 2, self.maximum)
        self._entries[key] = (delay, now)
        return delay

    def remaining(self, key: Hashable) -> float:
        """Seconds until ``key`` may be tried again (0 when it may now)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        delay, last = entry
        return max(0.0, last + delay - self.clock())

    def current(self, key: Hashable) -> float:
        entry = self._entries.get(key)
        return entry[0] if entry else 0.0

    def forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def forget_prefix(self, first: Hashable) -> None:
        for key in [k for k in self._entries if isinstance(k, tuple) and k and k[0] == first]:
            del self._entries[key]
