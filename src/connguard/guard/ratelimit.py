"""A token bucket on new connections to one endpoint, so many callers cannot stampede a recovering server."""

from __future__ import annotations

import asyncio
import threading
import time

from connguard.guard.errors import ConnectRateLimited


class ConnectRateLimiter:
    """`rate_per_s` new connections per second on average, bursts up to `burst`; callers wait up to `wait_s`."""

    def __init__(self, endpoint: str, rate_per_s: float | None, burst: int, wait_s: float) -> None:
        if rate_per_s is not None and not rate_per_s > 0:
            raise ValueError(f"connect_rate_per_s={rate_per_s} must be > 0 (or None for no limit)")
        if not isinstance(burst, int) or burst < 1:
            raise ValueError(f"connect_burst={burst!r} must be an integer >= 1: a bucket of {burst} never admits anyone")
        if wait_s < 0:
            raise ValueError(f"connect_rate_wait_s={wait_s} must be >= 0")
        self.endpoint = endpoint
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.wait_s = wait_s
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()
        self.limited_total = 0
        self.waiters = 0

    def reserve(self) -> float:
        """Take a token now or book the next one; returns how long the caller must wait (0 = go)."""
        if self.rate_per_s is None:
            return 0.0
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate_per_s)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            wait = (1 - self._tokens) / self.rate_per_s
            if wait > self.wait_s:
                self.limited_total += 1
                raise ConnectRateLimited(self.endpoint, self.rate_per_s, wait)
            self._tokens -= 1  # booked: the token that accrues during our wait is ours
            return wait

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self.waiters = 0

    def _wait_count(self, delta: int) -> None:
        with self._lock:
            self.waiters += delta

    def sleep(self, wait_s: float) -> None:
        """The thread waiter for a booked token (`reserve` decided how long)."""
        self._wait_count(1)
        try:
            time.sleep(wait_s)
        finally:
            self._wait_count(-1)

    async def sleep_async(self, wait_s: float) -> None:
        """The asyncio waiter: the same wait, without blocking the event loop."""
        self._wait_count(1)
        try:
            await asyncio.sleep(wait_s)
        finally:
            self._wait_count(-1)

    def acquire(self) -> None:
        wait = self.reserve()
        if wait:
            self.sleep(wait)

    async def acquire_async(self) -> None:
        wait = self.reserve()
        if wait:
            await self.sleep_async(wait)
