"""Per-identity rate limiting: token buckets, Signal-Server's shape (a burst, then a steady rate).

On SQLite (one process) the buckets live in memory. On PostgreSQL, where several relay processes
may serve one database, the per-identity buckets live in the database, so the limit holds across
processes (`SharedRateLimiter`); the per-address limit on unauthenticated requests and the
per-drop limit stay in each process's memory, since neither an address nor a drop may be written
down. Every in-memory table here has a bound and evicts in O(1), so no stream of made-up keys
can grow it or slow it down; `BodyBudget` bounds the request bodies held at once, and
`ClientAddresses` decides which address a request counts against.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
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

    def check(self, key: int, cost: float = 1.0) -> None:
        """Raise 429 if `key` is known to be unable to spend `cost` now, without I/O: lets a
        caller with an empty budget be refused before its request body is read."""


DEFAULT_MAX_KEYS = 100_000
"""Buckets one in-memory limiter holds at most (addresses, drops): a few MiB."""


class RateLimiter:
    """Token buckets in memory, at most `max_keys` of them, least recently used first out.

    Every operation is O(1). A key that arrives while the table is full takes the place of the
    least recently used bucket and starts no fuller than that bucket is: an idle bucket has
    refilled anyway, so nobody loses anything, and churning through fresh keys (addresses,
    tokens) gains a caller nothing beyond what `max_keys` separate keys would get, each
    refilling at `per_second`.
    """

    def __init__(
        self,
        limit: RateLimit,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.max_keys = max(1, max_keys)
        self.clock = clock
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()
        """key -> (tokens, when last counted); oldest use first."""

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, bucket: tuple[float, float], now: float) -> float:
        tokens, last = bucket
        return min(self.limit.burst, tokens + (now - last) * self.limit.per_second)

    def level(self, key: Hashable) -> float:
        """The tokens `key` has now, without creating or touching its bucket."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is not None:
            return self._level(bucket, now)
        if len(self._buckets) >= self.max_keys:
            return self._level(next(iter(self._buckets.values())), now)
        return self.limit.burst

    def _counted(self, key: Hashable, now: float) -> float:
        """`key`'s tokens now, its bucket made the most recently used (evicting if full)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            self._buckets.move_to_end(key)
            return self._level(bucket, now)
        if len(self._buckets) >= self.max_keys:
            _, oldest = self._buckets.popitem(last=False)
            return self._level(oldest, now)
        return self.limit.burst

    def _refuse(self, tokens: float, cost: float) -> TooManyRequests:
        wait = (cost - tokens) / self.limit.per_second
        return TooManyRequests("too many requests; slow down", retry_after=wait)

    def check(self, key: Hashable, cost: float = 1.0) -> None:
        """Raise 429 if `key` could not spend `cost` now; spends nothing and stores nothing."""
        tokens = self.level(key)
        if tokens < cost:
            raise self._refuse(tokens, cost)

    def take(self, key: Hashable, cost: float = 1.0) -> None:
        """Spend `cost` tokens of `key`'s bucket or raise 429 with how long to wait."""
        now = self.clock()
        tokens = self._counted(key, now)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            raise self._refuse(tokens, cost)
        self._buckets[key] = (tokens - cost, now)

    def spend(self, key: Hashable, cost: float) -> None:
        """Spend up to `cost` tokens (down to empty) and never refuse: what a failure costs,
        charged after the fact."""
        now = self.clock()
        self._buckets[key] = (max(0.0, self._counted(key, now) - cost), now)

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


class BodyBudget:
    """Bytes of request bodies held by this process at once: at most `limit` in all, and at most
    `share` for one holder (a participant, or a client address), so that no number of slow or
    parallel uploads can exhaust memory, and no single caller can take it all from the others.
    Holders are forgotten when they hold nothing, so the table is as large as the requests in
    flight."""

    def __init__(self, limit: int, share: int) -> None:
        self.limit = limit
        self.share = share
        self.held = 0
        self._by_holder: dict[Hashable, int] = {}

    def reserve(self, holder: Hashable, size: int) -> None:
        mine = self._by_holder.get(holder, 0)
        if self.held + size > self.limit or mine + size > self.share:
            raise TooManyRequests(
                "the relay is reading as many request bodies as it may; retry shortly",
                retry_after=1,
                code="relay_busy",
            )
        self.held += size
        self._by_holder[holder] = mine + size

    def release(self, holder: Hashable, size: int) -> None:
        if size <= 0:
            return
        self.held -= size
        left = self._by_holder.pop(holder, 0) - size
        if left > 0:
            self._by_holder[holder] = left


Address = IPv4Address | IPv6Address
MAX_FORWARDED_HOPS = 32
"""`X-Forwarded-For` entries looked at, from the right."""


def _address(text: str | None) -> Address | None:
    try:
        address = ip_address((text or "").strip())
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddresses:
    """The address a request counts against for the per-address limit.

    The peer's address, unless the peer is a configured trusted proxy: then the right-most
    `X-Forwarded-For` address that is not itself a trusted proxy, which is where the nearest
    untrusted hop connected from (everything left of it is that hop's own say, so it is never
    believed). Without trusted proxies the header is ignored: anyone can send it. IPv6
    addresses count by their /64, the block one subscriber gets, so that one machine cannot
    walk through its own addresses.
    """

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        self.trusted = tuple(ip_network(t, strict=False) for t in trusted)

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)

    def key(self, peer: str | None, forwarded: Sequence[str] = ()) -> str:
        address = _address(peer)
        if address is None:
            return peer or ""
        if self.trusted and self._is_trusted(address):
            hops = [hop for header in forwarded for hop in header.split(",")]
            for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
                found = _address(hop)
                if found is None:
                    break
                address = found
                if not self._is_trusted(found):
                    break
        if isinstance(address, IPv6Address):
            return str(ip_network(f"{address}/64", strict=False))
        return str(address)


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
        self._leases: OrderedDict[int, tuple[float, float]] = OrderedDict()
        """key -> (tokens left, when the lease lapses), at most `max_keys`: forgetting a lease
        only forgoes tokens already drawn, so the least recently drawn goes first."""
        self._empty: OrderedDict[int, float] = OrderedDict()
        """key -> until when its shared bucket, as last read, holds less than one token (the
        same bound: forgetting an entry only means the database is asked again)."""
        self.max_keys = DEFAULT_MAX_KEYS

    def check(self, key: int, cost: float = 1.0) -> None:
        """Raise 429 while the last refusal says the shared bucket cannot hold one token yet."""
        until = self._empty.get(key)
        if until is not None and self.clock() < until:
            raise TooManyRequests("too many requests; slow down", retry_after=until - self.clock())

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
                self._leases.move_to_end(key)
                if len(self._leases) > self.max_keys:
                    self._leases.popitem(last=False)
                return
        async with self.engine.connect() as connection:
            level = (await connection.execute(SHARED_LEVEL, self._values(key, cost))).scalar()
        empty_for = (1.0 - float(level or 0.0)) / self.limit.per_second
        if empty_for > 0:
            self._empty[key] = now + empty_for
            self._empty.move_to_end(key)
            if len(self._empty) > self.max_keys:
                self._empty.popitem(last=False)
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


class SharedBudget(SharedRateLimiter):
    """Another per-identity bucket in the same shared table: the send budget (per envelope) or
    the read budget (fetching and acknowledging one's own mailbox). Its keys carry its name, so
    it never draws from the general per-request limit, nor that from it."""

    def __init__(
        self,
        name: str,
        limit: RateLimit,
        engine: AsyncEngine,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(limit, engine, clock)
        self.name = name

    def _values(self, key: int, cost: float) -> dict[str, object]:
        return {**super()._values(key, cost), "key": f"{self.name}:{key}"}
