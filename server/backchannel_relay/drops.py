"""Drops: the relay's side of sealed-sender delivery (PROTOCOL.md §15.3).

A drop is filed under the hash of a delivery token and read with a read key whose hash it keeps,
so its rows name nobody and record nothing but an expiry. Writing needs the token, reading the
key; nobody logs in for either, so the relay learns neither who sends nor who reads. Abuse is
held in check per drop instead of per sender: a rate limit on each token, a cap on what one drop
holds, and a hard expiry that the relay caps. Nothing here writes a log line or a metric.
"""

from __future__ import annotations

import contextlib
import hmac
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from backchannel.drops import EXPIRY_SPREAD, SealedEnvelope, drop_address, read_hash

from .errors import BadRequest, Conflict, Forbidden, MailboxFull, NotFound, TooManyRequests
from .limits import RateLimit, RateLimiter
from .models import DropMessageRow, DropRow
from .store import Store


@dataclass(frozen=True, slots=True)
class DropLimits:
    max_ttl: int
    """The longest a drop (an off-the-record channel) may live, in seconds. No default here: the
    config that builds these limits gives it (`config.DEFAULT_MAX_OTR_TTL`, also the CLI's)."""
    max_messages: int = 1000
    max_bytes: int = 16 * 1024 * 1024
    max_drops: int = 100_000
    rate: RateLimit = field(default_factory=lambda: RateLimit(120.0, 10.0))
    """Per drop, for sending and for reading alike."""
    max_opened: int = 200
    """Drops one participant may open within the longest a drop lives, so that no one
    participant fills `max_drops` (`DropQuota`)."""


class DropQuota:
    """How many drops each participant opened lately, so none can exhaust the relay's cap.

    Kept in this process's memory as opening times only, never an address: nothing links a drop
    to its opener. The relay cannot tell when a drop is closed (no one logs in for that), so an
    opening counts for as long as a drop may live at most."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic,
        max_tracked: int = 100_000,
    ) -> None:  # fmt: skip
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_tracked = max_tracked
        self._opened: OrderedDict[int, deque[float]] = OrderedDict()

    def take(self, participant: int) -> None:
        """Count one opening, or raise 429 `too_many_drops_opened` with when a slot frees."""
        now = self.clock()
        opened = self._opened.pop(participant, None)
        if opened is None:
            opened = deque()
            if len(self._opened) >= self.max_tracked:
                self._opened.popitem(last=False)
        while opened and now - opened[0] >= self.window:
            opened.popleft()
        self._opened[participant] = opened
        if len(opened) >= self.limit:
            raise TooManyRequests(
                f"you opened {self.limit} off-the-record drops lately, as many as one "
                "participant may; close channels you no longer use, or retry later",
                retry_after=opened[0] + self.window - now,
                code="too_many_drops_opened",
            )
        opened.append(now)

    def refund(self, participant: int) -> None:
        """Uncount the last opening (the relay refused it after all)."""
        opened = self._opened.get(participant)
        if opened:
            opened.pop()


@dataclass(frozen=True, slots=True)
class DropMessage:
    id: int
    body: bytes


class Drops:
    def __init__(self, store: Store, limits: DropLimits) -> None:
        self.store = store
        self.limits = limits
        self._rate = RateLimiter(limits.rate, max_keys=2 * limits.max_drops)
        """Keyed by drop address and by read-key hash, only once the drop is found: a made-up
        token or key creates no bucket (its refusal costs the caller's address instead)."""
        self.quota = DropQuota(limits.max_opened, limits.max_ttl + EXPIRY_SPREAD)
        self._scrub_due = False

    async def create(self, address: bytes, read_key_hash: bytes, expires_at: int) -> int:
        """Open a drop until `expires_at` (capped); the same request again is a no-op."""
        now = self.store.now()
        # A drop may outlive its channel by up to EXPIRY_SPREAD (each side draws its own
        # expiry after the channel's, so the two drops are not linked by an equal value).
        if not now < expires_at <= now + self.limits.max_ttl + EXPIRY_SPREAD:
            raise BadRequest(
                f"a drop expires in the future and within {self.limits.max_ttl} seconds "
                "(this relay's cap on an off-the-record channel's life) plus "
                f"{EXPIRY_SPREAD} seconds (the spread of drop expiries)",
                code="bad_expiry",
            )
        async with self.store.write() as session:
            existing = await session.get(DropRow, address)
            if existing is not None:
                if not hmac.compare_digest(existing.read_hash, read_key_hash):
                    raise Conflict("a drop with this address exists", code="drop_exists")
                return existing.expires_at
            count = await session.scalar(select(func.count()).select_from(DropRow))
            if (count or 0) >= self.limits.max_drops:
                raise MailboxFull("the relay holds as many drops as it may; retry later",
                                  code="too_many_drops")  # fmt: skip
            session.add(DropRow(address=address, read_hash=read_key_hash, expires_at=expires_at))
            try:
                await session.flush()
            except IntegrityError:
                raise Conflict("a drop with this read key exists", code="drop_exists") from None
        return expires_at

    async def deliver(self, token: bytes, data: bytes) -> bool:
        """Store one sealed envelope in the token's drop; True if it was there already."""
        address = drop_address(token)
        try:
            sealed = SealedEnvelope.from_bytes(data)
        except Exception as exc:  # the core's strict decoder: every fault is a DecodeError
            raise BadRequest(f"envelope: {exc}", code="invalid_envelope") from None
        now = self.store.now()
        if sealed.expires_at <= now:
            raise BadRequest("the envelope's expiry has passed", code="bad_expiry")
        async with self.store.write() as session:
            drop = await session.get(DropRow, address)
            if drop is None or drop.expires_at <= now:
                raise Forbidden("the delivery token is unknown or its channel has expired",
                                code="bad_delivery_token")  # fmt: skip
            self._rate.take(address)
            duplicate = await session.scalar(
                select(DropMessageRow.id).where(
                    DropMessageRow.address == address,
                    DropMessageRow.message_id == sealed.message_id,
                )
            )
            if duplicate is not None:
                return True
            held = func.coalesce(func.sum(func.length(DropMessageRow.body)), 0)
            query = select(func.count(), held).where(DropMessageRow.address == address)
            count, size = (await session.execute(query)).one()
            if count >= self.limits.max_messages or size + len(data) > self.limits.max_bytes:
                raise MailboxFull("the recipient's drop is full; retry later", retry_after=30)
            session.add(
                DropMessageRow(
                    address=address,
                    message_id=sealed.message_id,
                    expires_at=min(sealed.expires_at, drop.expires_at),
                    body=data,
                )
            )
        return False

    async def _drop_for(self, read_key: bytes) -> DropRow:
        key_hash = read_hash(read_key)
        async with self.store.read() as session:
            drop = await session.scalar(select(DropRow).where(DropRow.read_hash == key_hash))
        if drop is None or drop.expires_at <= self.store.now():
            raise NotFound("no drop for this read key (closed or expired)", code="unknown_drop")
        self._rate.take(key_hash)
        return drop

    async def fetch(self, read_key: bytes, after: int, limit: int) -> tuple[list[DropMessage], int]:
        """Unexpired messages with id > after, oldest first, and the drop's expiry."""
        drop = await self._drop_for(read_key)
        async with self.store.read() as session:
            rows = await session.execute(
                select(DropMessageRow.id, DropMessageRow.body)
                .where(
                    DropMessageRow.address == drop.address,
                    DropMessageRow.id > after,
                    DropMessageRow.expires_at > self.store.now(),
                )
                .order_by(DropMessageRow.id)
                .limit(limit)
            )
            return [DropMessage(i, body) for i, body in rows.tuples()], drop.expires_at

    async def acknowledge(self, read_key: bytes, ids: Sequence[int]) -> int:
        """Delete delivered messages: what was shown is gone from the relay."""
        drop = await self._drop_for(read_key)
        async with self.store.write() as session:
            gone = await session.execute(
                delete(DropMessageRow).where(
                    DropMessageRow.address == drop.address, DropMessageRow.id.in_(list(ids))
                )
            )
        self._scrub_due = True
        return int(getattr(gone, "rowcount", 0) or 0)

    async def close(self, read_key: bytes) -> None:
        """Delete the drop and whatever still waits in it."""
        drop = await self._drop_for(read_key)
        async with self.store.write() as session:
            for table in (DropMessageRow, DropRow):
                await session.execute(delete(table).where(table.address == drop.address))
        self._scrub_due = True

    async def sweep(self) -> None:
        """Delete expired drops and messages; on SQLite, then truncate the write-ahead log so
        no copy of a deleted page outlives the sweep (deleted rows are zeroed in the database
        itself by `secure_delete`)."""
        now = self.store.now()
        async with self.store.write() as session:
            expired = await session.execute(
                delete(DropMessageRow).where(DropMessageRow.expires_at <= now)
            )
            closed = await session.execute(delete(DropRow).where(DropRow.expires_at <= now))
            self._scrub_due |= bool(
                getattr(expired, "rowcount", 0) or getattr(closed, "rowcount", 0)
            )
            await session.execute(
                delete(DropMessageRow).where(DropMessageRow.address.not_in(select(DropRow.address)))
            )
        if self._scrub_due:
            with contextlib.suppress(SQLAlchemyError):  # a reader busy: the next sweep retries
                self._scrub_due = not await self.store.truncate_wal()
