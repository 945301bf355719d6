"""Per-identity rate limiting: token buckets, Signal-Server's shape (a burst, then a steady rate).

On SQLite (one process) the buckets live in memory. On PostgreSQL, where several relay processes
may serve one database, the per-identity buckets live in the database, so the limit holds across
processes (`SharedRateLimiter`); the per-address limit on unauthenticated requests and the
per-drop limit stay in each process's memory, since neither an address nor a drop may be written
down.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from .errors import TooManyRequests


@dataclass(frozen=True, slots=True)
class RateLimit:
    burst: float = 60.0
    per_second: float = 1.0


class IdentityLimiter(Protocol):
    """What the authentication middleware asks of the per-identity limit."""

    async def take_async(self, key: int, cost: float = 1.0) -> None: ...


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

    async def take_async(self, key: Hashable, cost: float = 1.0) -> None:
        self.take(key, cost)


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


_NOW = "CAST(extract(epoch FROM clock_timestamp()) AS double precision)"
_BURST, _RATE, _COST = (f"CAST(:{n} AS double precision)" for n in ("burst", "rate", "cost"))
_LEVEL = f"LEAST({_BURST}, rate_buckets.tokens + ({_NOW} - rate_buckets.at) * {_RATE})"
SHARED_TAKE = text(
    f"""
    INSERT INTO rate_buckets (key, tokens, at) VALUES (:key, {_BURST} - {_COST}, {_NOW})
    ON CONFLICT (key) DO UPDATE SET tokens = {_LEVEL} - {_COST}, at = {_NOW}
    WHERE {_LEVEL} >= {_COST}
    RETURNING tokens
    """
)
SHARED_LEVEL = text(f"SELECT {_LEVEL} FROM rate_buckets WHERE key = :key")


class SharedRateLimiter:
    """The per-identity limit when several relay processes share one PostgreSQL database: the
    buckets live in the database (an UNLOGGED table, keyed by the participant's internal id), so
    a client spreading its requests over every process still gets one limit. The database's
    clock is the only clock, so processes on several hosts agree.

    A process takes tokens from the database a lease at a time (a tenth of the burst, at most a
    second's refill, at least one request) and spends them locally for up to a second: one
    statement per lease, not per request. A client spreading over N processes can thus get at
    most N leases beyond the limit; at the default limits a lease is one request, so it is exact.
    """

    LEASE_SECONDS = 1.0

    def __init__(
        self, limit: RateLimit, engine: AsyncEngine, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.engine = engine
        self.clock = clock
        self._leases: dict[int, tuple[float, float]] = {}
        """key -> (tokens left, when the lease lapses)."""

    async def take_async(self, key: int, cost: float = 1.0) -> None:
        now = self.clock()
        left, lapses = self._leases.get(key, (0.0, 0.0))
        if now < lapses and left >= cost:
            self._leases[key] = (left - cost, lapses)
            return
        lease = max(cost, min(self.limit.burst / 10, self.limit.per_second))
        for amount in (lease, cost) if lease > cost else (cost,):
            if await self._draw(key, amount):
                self._leases[key] = (amount - cost, now + self.LEASE_SECONDS)
                if len(self._leases) > 100_000:  # forget lapsed leases
                    self._leases = {k: v for k, v in self._leases.items() if v[1] > now}
                return
        async with self.engine.connect() as connection:
            level = (await connection.execute(SHARED_LEVEL, self._values(key, cost))).scalar()
        wait = (cost - float(level or 0.0)) / self.limit.per_second
        raise TooManyRequests("too many requests; slow down", retry_after=max(wait, 0.001))

    async def _draw(self, key: int, amount: float) -> bool:
        """Take `amount` tokens from the shared bucket if it holds them (one statement)."""
        async with self.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            drawn = await autocommit.execute(SHARED_TAKE, self._values(key, amount))
            return drawn.first() is not None

    def _values(self, key: int, cost: float) -> dict[str, object]:
        return {"key": str(key), "burst": self.limit.burst, "rate": self.limit.per_second,
                "cost": cost}  # fmt: skip
