"""A token bucket: one request budget shared by every caller, whatever it fetches.

Why it is its own module: throttling is a property of the *client*, not of one
channel or one source. Telegram counts requests per client, so a thousand channels
polled through t.me/s must share one budget, and a 429 for one of them means "slow
down, all of you". Nothing here knows about Telegram, HTML or channels, so any
source that talks to a rate-limited service can hold one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["TokenBucket"]


class TokenBucket:
    """A global request budget: ``rate`` requests per second, bursts up to ``burst``.

    Waiters are served in arrival order (``asyncio.Lock`` is FIFO), so a thousand
    channels queue fairly instead of racing. ``pause`` empties the bucket for a while:
    a 429 from Telegram is about this client, not about one channel.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        """Wait until one request may be made."""
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                self._refill(now)
                # The tolerance and the floor on the sleep keep float rounding (0.9999…) from
                # turning the wait into a spin of ever smaller sleeps.
                if self._tokens >= 1 - 1e-9:
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                await self._sleep(max((1 - self._tokens) / self.rate, 1e-3))

    def pause(self, seconds: float) -> None:
        """Allow no request for ``seconds`` (and start from an empty bucket after)."""
        now = self._clock()
        self._paused_until = max(self._paused_until, now + seconds)
        self._tokens = 0.0
        self._updated = max(self._updated, self._paused_until)
