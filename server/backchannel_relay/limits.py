"""Per-identity rate limiting: token buckets, Signal-Server's shape (a burst, then a steady rate).

Buckets live in this process's memory; with several relay processes each enforces its own share.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from .errors import TooManyRequests


@dataclass(frozen=True, slots=True)
class RateLimit:
    burst: float = 60.0
    per_second: float = 1.0


class RateLimiter:
    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def take(self, key: Hashable, cost: float = 1.0) -> None:
        """Spend `cost` tokens of `key`'s bucket or raise 429 with how long to wait."""
        now = self.clock()
        tokens, last = self._buckets.get(key, (self.limit.burst, now))
        tokens = min(self.limit.burst, tokens + (now - last) * self.limit.per_second)
        if tokens < cost:
            wait = (cost - tokens) / self.limit.per_second
            self._buckets[key] = (tokens, now)
            raise TooManyRequests("too many requests; slow down", retry_after=wait)
        self._buckets[key] = (tokens - cost, now)
        if len(self._buckets) > 100_000:  # forget idle buckets (they would be full anyway)
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 3600}


class ConnectionGate:
    """Counts requests in flight (a WebSocket counts for as long as it is open)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def enter(self) -> None:
        if self.open >= self.limit:
            raise TooManyRequests(
                "the relay is at its connection limit; retry shortly",
                retry_after=1,
                code="too_many_connections",
            )
        self.open += 1

    def leave(self) -> None:
        self.open -= 1
