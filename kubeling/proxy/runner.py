"""`BoundedFrequencyRunner` (upstream ``pkg/util/async/bounded_frequency_runner.go``), on asyncio.

``run()`` asks for a sync; requests made while one is pending or running coalesce into one.
Syncs start at most once per ``min_interval`` (kube-proxy's ``--min-sync-period``) and at least
once per ``max_interval`` (``--sync-period``), even with no request. The body is
``await fn(full)``: ``full`` is True for the first sync, the periodic one and a retry after a
failure; a request-driven sync after a good one is partial (``full`` False), so a mode may
rewrite only what changed. A body that raises is retried after ``retry_interval`` (doubling up
to ``max_interval``) as a full sync; a success resets it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class BoundedFrequencyRunner:
    def __init__(self, name: str, fn: Callable[[bool], Awaitable[None]], *, min_interval: float,
                 max_interval: float, retry_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_interval < min_interval:
            raise ValueError(f"{name}: max_interval {max_interval} < min_interval {min_interval}")
        self.name = name
        self.fn = fn
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.retry_interval = retry_interval
        self.clock = clock
        self._wake = asyncio.Event()
        self._requested = False
        self._last_start = float("-inf")
        self._last_success = float("-inf")
        self._retry_at: float | None = None
        self._retry_delay = retry_interval
        self._need_full = True
        self.runs = 0
        self.failures = 0

    def run(self) -> None:
        """Ask for a sync (coalesced; never blocks)."""
        self._requested = True
        self._wake.set()

    def retry_after(self, seconds: float) -> None:
        """A full sync no later than ``seconds`` from now."""
        at = self.clock() + seconds
        self._retry_at = at if self._retry_at is None else min(self._retry_at, at)
        self._need_full = True
        self._wake.set()

    def _next_due(self, now: float) -> float:
        """When the next sync should start, ignoring min_interval."""
        if self._retry_at is not None:
            due = self._retry_at
        elif self._last_success == float("-inf"):
            due = now
        else:
            due = self._last_success + self.max_interval
        if self._requested:
            due = min(due, now)
        return due

    async def loop(self, stop: asyncio.Event) -> None:
        """Run syncs until ``stop`` is set."""
        while not stop.is_set():
            now = self.clock()
            due = max(self._next_due(now), self._last_start + self.min_interval)
            if due > now:
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait([waiter, stopper], timeout=due - now, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    stopper.cancel()
                continue
            periodic = not self._requested and self._retry_at is None
            full = self._need_full or periodic
            self._requested = False
            self._retry_at = None
            self._last_start = self.clock()
            self.runs += 1
            try:
                await self.fn(full)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - retried
                self.failures += 1
                log.error("%s: sync failed (%s); retrying in %.1fs with a full sync", self.name, e, self._retry_delay)
                log.debug("%s: sync failure", self.name, exc_info=True)
                self._need_full = True
                self._retry_at = self.clock() + self._retry_delay
                self._retry_delay = min(self._retry_delay * 2, self.max_interval)
                continue
            self._need_full = False
            self._retry_delay = self.retry_interval
            self._last_success = self.clock()
