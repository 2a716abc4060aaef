"""Client-side flow control: a token bucket, like client-go's ``util/flowcontrol``.

The REST client uses one to cap requests per second, the workqueue's
`BucketRateLimiter` uses one to cap the overall retry rate.

Contract: the bucket starts full (``burst`` tokens) and refills at ``qps`` tokens
per second up to ``burst``. `reserve` always takes a token, possibly going into
debt, and returns how long the caller must wait before acting on it — so
reservations are served strictly in the order they were made, and a burst of
callers is spread evenly at ``1/qps`` apart. `try_accept` never waits and never
goes into debt.
"""

from __future__ import annotations

from kubeling.client.clock import REAL_CLOCK, Clock


class TokenBucket:
    def __init__(self, qps: float, burst: int, clock: Clock | None = None) -> None:
        if qps <= 0:
            raise ValueError("qps must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.qps = float(qps)
        self.burst = burst
        self._clock = clock or REAL_CLOCK
        self._tokens = float(burst)
        self._last = self._clock.now()

    def _refill(self) -> None:
        now = self._clock.now()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now

    def tokens(self) -> float:
        """Tokens available now (negative while reservations are outstanding)."""
        self._refill()
        return self._tokens

    def reserve(self) -> float:
        """Take one token; return the seconds to wait before it may be used (>= 0)."""
        self._refill()
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def try_accept(self) -> bool:
        """Take one token if one is available right now."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    async def wait(self) -> None:
        """Take one token, sleeping until it is due."""
        delay = self.reserve()
        if delay > 0:
            await self._clock.sleep(delay)
