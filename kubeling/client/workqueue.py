"""Work queues for controllers, keeping client-go's ``util/workqueue`` promises.

A controller's event handlers `add` keys (``"namespace/name"``); its workers loop
on `get` → ``sync(key)`` → `done`. Three queues stack, each adding one ability:

    Queue                 fair, stingy, multi-producer/multi-consumer, shutdown
    └── DelayingQueue     + add_after(item, delay)
        └── RateLimitingQueue  + add_rate_limited / forget / num_requeues

Promises (each one is tested in ``tests/unit/test_workqueue.py``):

1. **Fair.** Items are handed out in the order they were first added.
2. **Deduplicated while queued.** Adding an item that is already waiting in the
   queue does nothing; it is processed once.
3. **Never concurrently.** Between ``get()`` returning an item and ``done(item)``,
   no other ``get()`` returns that item. Adding it meanwhile marks it *dirty*;
   ``done()`` puts it back at the tail, so the change is not lost.
4. **Delays.** ``add_after(item, d)`` adds the item once ``d`` seconds have
   passed (immediately if ``d <= 0``). If the same item is already waiting, the
   earlier of the two ready times wins.
5. **Rate-limited retries.** ``add_rate_limited(item)`` delays by the rate
   limiter's ``when(item)``: by default the maximum of a per-item exponential
   backoff (5ms, 10ms, 20ms, ... capped at 1000s) and an overall token bucket
   (10 qps, burst 100). ``forget(item)`` resets the item's backoff (call it after
   a successful sync); ``num_requeues(item)`` counts failures since the last forget.
6. **Shutdown.** After ``shutdown()`` new adds are ignored, items still queued are
   handed out until the queue is empty, then every ``get()`` returns
   ``(None, True)``. Items waiting for a delay are dropped.
   ``await shut_down_with_drain()`` additionally waits until every item handed
   out has been ``done()``.

Concurrency model: a queue belongs to one asyncio event loop. ``add``, ``done``,
``forget`` are plain (non-async) methods so synchronous informer handlers can
call them; only ``get`` and ``shut_down_with_drain`` await. Items must be
hashable. Time comes from the injectable ``clock`` (see `kubeling.client.clock`).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Hashable, Protocol

from kubeling.client.clock import REAL_CLOCK, Clock
from kubeling.client.flowcontrol import TokenBucket


class Queue:
    """The fair, stingy work queue (client-go's ``workqueue.Type``)."""

    def __init__(self, name: str = "", clock: Clock | None = None) -> None:
        self.name = name
        self._clock = clock or REAL_CLOCK
        self._queue: collections.deque[Hashable] = collections.deque()
        self._dirty: set[Hashable] = set()  # needs processing: queued, or re-added while processing
        self._processing: set[Hashable] = set()
        self._getters: collections.deque[asyncio.Future] = collections.deque()
        self._drained: asyncio.Future | None = None
        self._shutting_down = False

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, item: Hashable) -> None:
        if self._shutting_down or item in self._dirty:
            return
        self._dirty.add(item)
        if item in self._processing:
            return  # done() will queue it again; never hand it out twice at once
        self._queue.append(item)
        self._wake_one()

    async def get(self) -> tuple[Any, bool]:
        """Wait for the next item; return ``(item, False)``, or ``(None, True)`` once shut down and empty."""
        while not self._queue and not self._shutting_down:
            fut = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut in self._getters:
                    self._getters.remove(fut)
                elif fut.done() and not fut.cancelled():
                    self._wake_one()  # we were woken but will not take the item: pass it on
                raise
        if not self._queue:
            return None, True
        item = self._queue.popleft()
        self._processing.add(item)
        self._dirty.discard(item)
        return item, False

    def done(self, item: Hashable) -> None:
        """Mark ``item`` finished; if it was added meanwhile, queue it again."""
        self._processing.discard(item)
        if item in self._dirty:
            self._queue.append(item)
            self._wake_one()
        if not self._processing and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def shutdown(self) -> None:
        self._shutting_down = True
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)

    async def shut_down_with_drain(self) -> None:
        """Shut down, then wait until every item handed out has been marked done."""
        self.shutdown()
        if not self._processing:
            return
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drained)

    def shutting_down(self) -> bool:
        return self._shutting_down

    def processing(self) -> int:
        """How many items are handed out and not yet done."""
        return len(self._processing)

    def _wake_one(self) -> None:
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return


class DelayingQueue(Queue):
    """A `Queue` that can add an item later (client-go's ``DelayingInterface``)."""

    def __init__(self, name: str = "", clock: Clock | None = None) -> None:
        super().__init__(name, clock)
        self._waiting: dict[Hashable, tuple[float, Any]] = {}  # item -> (ready_at, timer handle)

    def add_after(self, item: Hashable, delay: float) -> None:
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(item)
            return
        ready_at = self._clock.now() + delay
        current = self._waiting.get(item)
        if current is not None:
            if current[0] <= ready_at:
                return  # already due sooner
            current[1].cancel()
        handle = self._clock.call_later(delay, self._ready, item)
        self._waiting[item] = (ready_at, handle)

    def waiting(self) -> int:
        """How many items are waiting for their delay to pass."""
        return len(self._waiting)

    def _ready(self, item: Hashable) -> None:
        self._waiting.pop(item, None)
        self.add(item)

    def shutdown(self) -> None:
        for _, handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        super().shutdown()


class RateLimiter(Protocol):
    """Decides how long an item waits before its next retry."""

    def when(self, item: Hashable) -> float: ...

    def forget(self, item: Hashable) -> None: ...

    def num_requeues(self, item: Hashable) -> int: ...


class ItemExponentialFailureRateLimiter:
    """``base * 2**failures`` per item, capped at ``max_delay``; `forget` resets it."""

    def __init__(self, base_delay: float = 0.005, max_delay: float = 1000.0) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        exp = self._failures.get(item, 0)
        self._failures[item] = exp + 1
        if exp > 64:  # 2**64 * base overflows any sensible cap; skip the float math
            return self.max_delay
        return min(self.base_delay * (2 ** exp), self.max_delay)

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class ItemFastSlowRateLimiter:
    """``fast_delay`` for the first ``max_fast_attempts`` failures of an item, then ``slow_delay``."""

    def __init__(self, fast_delay: float, slow_delay: float, max_fast_attempts: int) -> None:
        self.fast_delay = fast_delay
        self.slow_delay = slow_delay
        self.max_fast_attempts = max_fast_attempts
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        n = self._failures.get(item, 0) + 1
        self._failures[item] = n
        return self.fast_delay if n <= self.max_fast_attempts else self.slow_delay

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter:
    """An overall token bucket: retries of *all* items together stay under ``qps``."""

    def __init__(self, qps: float = 10.0, burst: int = 100, clock: Clock | None = None) -> None:
        self.bucket = TokenBucket(qps, burst, clock)

    def when(self, item: Hashable) -> float:
        return self.bucket.reserve()

    def forget(self, item: Hashable) -> None:
        pass

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The longest delay any of its limiters asks for; forget/num_requeues fan out."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self.limiters = limiters

    def when(self, item: Hashable) -> float:
        # Every limiter must see the failure (to count it / spend a token),
        # so no short-circuiting here.
        return max([lim.when(item) for lim in self.limiters])

    def forget(self, item: Hashable) -> None:
        for lim in self.limiters:
            lim.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(lim.num_requeues(item) for lim in self.limiters)


def default_controller_rate_limiter(clock: Clock | None = None) -> MaxOfRateLimiter:
    """Per-item 5ms→1000s exponential backoff, and 10 qps / burst 100 overall."""
    return MaxOfRateLimiter(ItemExponentialFailureRateLimiter(0.005, 1000.0),
                            BucketRateLimiter(10.0, 100, clock))


class RateLimitingQueue(DelayingQueue):
    """The queue every controller uses (client-go's ``RateLimitingInterface``).

    Typical worker::

        while True:
            key, shutdown = await queue.get()
            if shutdown:
                return
            try:
                await sync(key)
            except Exception:
                queue.add_rate_limited(key)   # retry with backoff
            else:
                queue.forget(key)             # success resets the backoff
            finally:
                queue.done(key)
    """

    def __init__(self, rate_limiter: RateLimiter | None = None, name: str = "",
                 clock: Clock | None = None) -> None:
        super().__init__(name, clock)
        self.rate_limiter = rate_limiter or default_controller_rate_limiter(self._clock)

    def add_rate_limited(self, item: Hashable) -> None:
        self.add_after(item, self.rate_limiter.when(item))

    def forget(self, item: Hashable) -> None:
        self.rate_limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return self.rate_limiter.num_requeues(item)
