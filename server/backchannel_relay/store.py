"""The relay's queries, each named for what it means.

Every write goes through `Store.write()`, a transaction that on SQLite also holds the one write
lock (SQLite admits a single writer; queueing in Python beats colliding in the database). Envelope
sends go through the `GroupCommitter`, which commits everything that arrived while the previous
commit was syncing in one transaction: one fsync covers many receipts, and no receipt is given
before its fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar, cast

from sqlalchemy import (
    BigInteger,
    Integer,
    Table,
    bindparam,
    column,
    delete,
    func,
    insert,
    select,
    text,
    true,
    update,
    values,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .database import is_sqlite, open_sync_sqlite_engine
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    MailboxFull,
    NotFound,
    SenderShareFull,
    Unauthorized,
)
from .models import (
    Challenge,
    EnvelopeRow,
    Invite,
    KemPrekeyRow,
    MailboxShare,
    MessageIdRow,
    OneTimePrekeyRow,
    Participant,
    RelayMeta,
    SessionToken,
    SignedPrekeyRow,
)
from .names import ROLES, storable
from .wakeups import CHANNEL, payloads

Clock = Callable[[], float]
T = TypeVar("T")
CACHE_ENTRIES = 100_000
"""At most this many session tokens, and as many names, remembered in memory (the least
recently used forgotten first)."""
MAX_OPEN_CHALLENGES = 8
"""Unexpired login challenges per participant: a new one beyond replaces the oldest, so that
nobody can pile up challenges for a name, nor lock its owner out by asking for them."""
MAILBOX_LOCKS = 0x6263_6D62  # "bcmb": with a participant id, one writer of that mailbox at a time
IN_CHUNK = 500
"""Values per `IN (...)` list (well under any database's limit on bound parameters)."""
TOKEN_RECHECK_SECONDS = 5
"""How long this process trusts a token it found without asking the database again."""
SHARE_RETRY_AFTER = 60
"""Seconds a sender whose share of a mailbox is full is asked to wait: the share frees only as
the recipient reads, which no retry hurries."""
ShareDeltas = dict[tuple[int, int], tuple[int, int]]
"""(recipient, sender) -> change of that sender's share of that mailbox (count, bytes)."""


def digest(secret: bytes) -> bytes:
    """Secrets (invites, challenges, tokens) are stored as SHA-256 only."""
    return hashlib.sha256(secret).digest()


@dataclass(frozen=True, slots=True)
class Limits:
    max_queue_envelopes: int = 10_000
    max_queue_bytes: int = 64 * 1024 * 1024
    max_share_envelopes: int = 1_250
    """What one sender may have waiting in one recipient's mailbox: an eighth of the queue, so
    a correspondent flooding a mailbox leaves the rest of it to everyone else."""
    max_share_bytes: int = 8 * 1024 * 1024
    max_expiry_seconds: int = 30 * 24 * 3600
    challenge_ttl: int = 60
    token_ttl: int = 3600


@dataclass(frozen=True, slots=True)
class ParticipantInfo:
    id: int
    name: str
    role: str
    identity: bytes


@dataclass(frozen=True, slots=True)
class NewEnvelope:
    recipient: str
    message_id: bytes
    expires_at: int
    body: bytes
    sender_id: int | None = None
    """The sender's internal id: whose share of the recipient's mailbox it counts in."""


@dataclass(frozen=True, slots=True)
class Receipt:
    message_id: bytes
    seq: int
    received_at_ms: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    seq: int
    received_at_ms: int
    body: bytes


# Core tables for the hot paths (sending, pushing, acknowledging): no ORM unit of work there.
ENVELOPES = cast(Table, EnvelopeRow.__table__)
SHARES = cast(Table, MailboxShare.__table__)
MESSAGE_IDS = cast(Table, MessageIdRow.__table__)
PARTICIPANTS = cast(Table, Participant.__table__)


def add_invite(session: AsyncSession, name: str, role: str, expires_at: int) -> str:
    """A new single-use invite for `name` in the session's transaction; -> its code (only its
    hash is stored, so the code is seen once, here)."""
    code = os.urandom(16).hex()
    session.add(
        Invite(code_hash=digest(code.encode()), name=name, role=role, expires_at=expires_at,
               used_at=None)
    )  # fmt: skip
    return code


def _info(row: Participant) -> ParticipantInfo:
    return ParticipantInfo(row.id, row.name, row.role, row.identity)


class Store:
    def __init__(self, engine: AsyncEngine, limits: Limits, clock: Clock = time.time) -> None:
        self.engine = engine
        self.limits = limits
        self.clock = clock
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if is_sqlite(engine) else None
        self._id_key = b""
        # Names never change once written (no participant is renamed or removed), and a token
        # only expires or is revoked, so this process may remember them instead of asking the
        # database on every request: a token for at most TOKEN_RECHECK_SECONDS, so that one
        # revoked by another process stops working here within that. Only hits are remembered:
        # a miss may be issued by another process. Entry: (participant, recheck at, expires at).
        self._token_cache: OrderedDict[bytes, tuple[ParticipantInfo, int, int]] = OrderedDict()
        self._ids_by_name: OrderedDict[str, int] = OrderedDict()
        self._writer: tuple[ThreadPoolExecutor, Engine] | None = None
        self.wake_origin: str | None = None
        """Set when other relay processes share this database: commits then notify them."""

    def now(self) -> int:
        return int(self.clock())

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One write transaction (serialised on SQLite)."""
        async with contextlib.AsyncExitStack() as stack:
            if self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            session = await stack.enter_async_context(self.sessions())
            await stack.enter_async_context(session.begin())
            yield session

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    # --- relay facts ------------------------------------------------------------------------

    async def meta_secret(self, key: str, size: int = 32) -> tuple[bytes, bool]:
        """A random secret created once per relay: -> (value, created now)."""
        stored = await self.get_meta(key)
        if stored is not None:
            return stored, False
        return await self.meta_once(key, os.urandom(size))

    async def meta_once(self, key: str, value: bytes) -> tuple[bytes, bool]:
        """Keep `value` under `key` unless a value is there already: -> (the value kept, whether
        it is ours). An insert that does nothing on conflict, then a read of what won: two
        processes starting together on one database end with one secret, not one each."""
        from sqlalchemy.dialects import postgresql, sqlite

        row = {"key": key, "value": value}
        async with self.write() as session:
            if is_sqlite(self.engine):
                lite = sqlite.insert(RelayMeta).values(row)
                await session.execute(lite.on_conflict_do_nothing(index_elements=["key"]))
            else:
                pg = postgresql.insert(RelayMeta).values(row)
                await session.execute(pg.on_conflict_do_nothing(index_elements=["key"]))
            kept = await session.scalar(select(RelayMeta.value).where(RelayMeta.key == key))
        assert kept is not None  # inserted now or by whoever won; nothing deletes it meanwhile
        return kept, kept == value

    async def set_meta(self, key: str, value: bytes) -> None:
        async with self.write() as session:
            await session.merge(RelayMeta(key=key, value=value))

    async def get_meta(self, key: str) -> bytes | None:
        async with self.read() as session:
            row = await session.get(RelayMeta, key)
            return row.value if row else None

    async def load_keys(self) -> None:
        self._id_key, _ = await self.meta_secret("message_id_key")

    def message_id_hash(self, recipient_id: int, message_id: bytes) -> bytes:
        """Keyed, so the table of seen ids says nothing to someone without the relay's key."""
        return hmac.digest(self._id_key, recipient_id.to_bytes(8, "big") + message_id, "sha256")

    # --- invites and registration --------------------------------------------------------------

    async def create_invite(self, name: str, role: str, ttl_seconds: int) -> tuple[str, int]:
        if role not in ROLES:
            raise BadRequest(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
        expires_at = self.now() + ttl_seconds
        async with self.write() as session:
            taken = await session.scalar(select(Participant.id).where(Participant.name == name))
            if taken is not None:
                raise Conflict(f"the name {name!r} is already registered", code="name_taken")
            code = add_invite(session, name, role, expires_at)
        return code, expires_at

    async def register(
        self,
        invite_code: str,
        name: str,
        identity: bytes,
        signed_prekey: bytes,
        kem_last_resort: tuple[int, bytes],
        one_time: Sequence[tuple[int, bytes]],
        kem_one_time: Sequence[tuple[int, bytes]],
    ) -> ParticipantInfo:
        async with self.write() as session:
            invite = await session.get(Invite, digest(invite_code.encode()))
            if invite is None or invite.used_at is not None:
                raise Forbidden("the invite is unknown or already used", code="invalid_invite")
            if invite.expires_at < self.now():
                raise Forbidden("the invite has expired", code="invite_expired")
            if invite.name != name:
                raise Forbidden(f"this invite is for {invite.name!r}", code="invite_name_mismatch")
            if await session.scalar(select(Participant.id).where(Participant.name == name)):
                raise Conflict(f"the name {name!r} is already registered", code="name_taken")
            invite.used_at = self.now()
            row = Participant(
                name=name,
                role=invite.role,
                identity=identity,
                registered_at=self.now(),
                queued_count=0,
                queued_bytes=0,
            )
            session.add(row)
            try:
                await session.flush()
            except IntegrityError:  # the same name registered at the same moment
                raise Conflict(
                    f"the name {name!r} is already registered", code="name_taken"
                ) from None
            session.add(SignedPrekeyRow(participant_id=row.id, encoded=signed_prekey))
            session.add(
                KemPrekeyRow(
                    participant_id=row.id,
                    key_id=kem_last_resort[0],
                    last_resort=True,
                    encoded=kem_last_resort[1],
                )
            )
            _add_one_time(session, row.id, one_time, kem_one_time)
            return _info(row)

    # --- participants and authentication -------------------------------------------------------

    async def participant(self, name: str) -> ParticipantInfo:
        row = None
        if storable(name):
            async with self.read() as session:
                row = await session.scalar(select(Participant).where(Participant.name == name))
        if row is None:
            raise NotFound(f"no participant named {name!r}", code="unknown_participant")
        return _info(row)

    async def participant_ids(self, names: Sequence[str]) -> dict[str, int]:
        known = self._ids_by_name
        wanted = {name for name in names if storable(name)}
        missing = wanted - known.keys()
        if missing:
            async with self.read() as session:
                rows = await session.execute(
                    select(Participant.name, Participant.id).where(Participant.name.in_(missing))
                )
                for name, pid in rows.tuples():
                    known[name] = pid
                    if len(known) > CACHE_ENTRIES:
                        known.popitem(last=False)
        found = {name: known[name] for name in wanted if name in known}
        for name in found:
            known.move_to_end(name)
        return found

    async def directory(self) -> list[ParticipantInfo]:
        async with self.read() as session:
            rows = await session.scalars(select(Participant).order_by(Participant.name))
            return [_info(row) for row in rows]

    async def create_challenge(self, participant_id: int) -> bytes:
        challenge = os.urandom(32)
        async with self.write() as session:
            await session.execute(delete(Challenge).where(Challenge.expires_at < self.now()))
            oldest = (
                select(Challenge.challenge_hash)
                .where(Challenge.participant_id == participant_id)
                .order_by(Challenge.expires_at.desc())
                .offset(MAX_OPEN_CHALLENGES - 1)
            )
            await session.execute(delete(Challenge).where(Challenge.challenge_hash.in_(oldest)))
            session.add(
                Challenge(
                    challenge_hash=digest(challenge),
                    participant_id=participant_id,
                    expires_at=self.now() + self.limits.challenge_ttl,
                )
            )
        return challenge

    async def redeem_challenge(self, participant_id: int, challenge: bytes) -> tuple[bytes, int]:
        """Consume a challenge (single use) and issue a session token: -> (token, expiry)."""
        token = os.urandom(32)
        expires_at = self.now() + self.limits.token_ttl
        async with self.write() as session:
            deleted = await session.execute(
                delete(Challenge)
                .where(Challenge.challenge_hash == digest(challenge))
                .where(Challenge.participant_id == participant_id)
                .where(Challenge.expires_at >= self.now())
                .returning(Challenge.challenge_hash)
            )
            if deleted.first() is None:
                raise Unauthorized(
                    "the challenge is unknown, used or expired", code="bad_challenge"
                )
            await session.execute(delete(SessionToken).where(SessionToken.expires_at < self.now()))
            session.add(
                SessionToken(
                    token_hash=digest(token), participant_id=participant_id, expires_at=expires_at
                )
            )
        return token, expires_at

    async def revoke_token(self, token: bytes) -> None:
        """Log out: the token stops working at once in this process, and within
        TOKEN_RECHECK_SECONDS in the others sharing the database."""
        token_hash = digest(token)
        self._token_cache.pop(token_hash, None)
        async with self.write() as session:
            await session.execute(delete(SessionToken).where(SessionToken.token_hash == token_hash))

    def cached_participant(self, token: bytes) -> ParticipantInfo | None:
        """The token's participant if this process remembers the token unexpired (no I/O)."""
        token_hash = digest(token)
        cached = self._token_cache.get(token_hash)
        if cached is None or cached[1] < self.now():
            return None
        self._token_cache.move_to_end(token_hash)
        return cached[0]

    def known_token(self, token: bytes) -> bool:
        """Whether this process found the token valid before and it has not expired since (it
        may be due for a re-check): such a caller is a participant, not a stranger guessing."""
        cached = self._token_cache.get(digest(token))
        return cached is not None and cached[2] >= self.now()

    async def participant_for_token(self, token: bytes) -> ParticipantInfo | None:
        cached = self.cached_participant(token)
        if cached is not None:
            return cached
        token_hash = digest(token)
        now = self.now()
        async with self.read() as session:
            found = (
                await session.execute(
                    select(Participant, SessionToken.expires_at)
                    .join(SessionToken, SessionToken.participant_id == Participant.id)
                    .where(SessionToken.token_hash == token_hash)
                    .where(SessionToken.expires_at >= now)
                )
            ).first()
        if found is None:
            self._token_cache.pop(token_hash, None)
            return None
        info = _info(found[0])
        expires_at = int(found[1])
        self._token_cache[token_hash] = (info, min(expires_at, now + TOKEN_RECHECK_SECONDS),
                                         expires_at)  # fmt: skip
        self._token_cache.move_to_end(token_hash)
        if len(self._token_cache) > CACHE_ENTRIES:
            self._token_cache.popitem(last=False)
        return info

    # --- prekeys ------------------------------------------------------------------------------

    async def take_bundle_parts(self, name: str) -> tuple[bytes, bytes, bytes | None, bytes, int]:
        """-> (identity, signed prekey, one-time prekey or None, KEM prekey, one-time left).

        One-time keys leave the table in the same statement that reads them, so two concurrent
        fetches can never be handed the same one (row locks with SKIP LOCKED on PostgreSQL,
        the single writer on SQLite).
        """
        if not storable(name):
            raise NotFound(f"no participant named {name!r}", code="unknown_participant")
        async with self.write() as session:
            owner = await session.scalar(select(Participant).where(Participant.name == name))
            if owner is None:
                raise NotFound(f"no participant named {name!r}", code="unknown_participant")
            signed = await session.scalar(
                select(SignedPrekeyRow.encoded).where(SignedPrekeyRow.participant_id == owner.id)
            )
            one_time = await _pop(session, OneTimePrekeyRow, owner.id)
            kem = await _pop(session, KemPrekeyRow, owner.id, KemPrekeyRow.last_resort.is_(False))
            if kem is None:
                kem = await session.scalar(
                    select(KemPrekeyRow.encoded)
                    .where(KemPrekeyRow.participant_id == owner.id, KemPrekeyRow.last_resort)
                    .order_by(KemPrekeyRow.id.desc())
                    .limit(1)
                )
            left = await session.scalar(
                select(func.count())
                .select_from(OneTimePrekeyRow)
                .where(OneTimePrekeyRow.participant_id == owner.id)
            )
            assert signed is not None and kem is not None
            return owner.identity, signed, one_time, kem, int(left or 0)

    async def prekey_counts(self, participant_id: int) -> dict[str, int]:
        async with self.read() as session:
            one_time = await session.scalar(
                select(func.count())
                .select_from(OneTimePrekeyRow)
                .where(OneTimePrekeyRow.participant_id == participant_id)
            )
            kem = await session.scalar(
                select(func.count())
                .select_from(KemPrekeyRow)
                .where(KemPrekeyRow.participant_id == participant_id)
                .where(KemPrekeyRow.last_resort.is_(False))
            )
        return {"one_time_prekeys": int(one_time or 0), "kem_prekeys": int(kem or 0)}

    async def add_prekeys(
        self,
        participant_id: int,
        signed_prekey: bytes | None,
        kem_last_resort: tuple[int, bytes] | None,
        one_time: Sequence[tuple[int, bytes]],
        kem_one_time: Sequence[tuple[int, bytes]],
    ) -> None:
        try:
            async with self.write() as session:
                if signed_prekey is not None:
                    await session.merge(
                        SignedPrekeyRow(participant_id=participant_id, encoded=signed_prekey)
                    )
                if kem_last_resort is not None:
                    session.add(
                        KemPrekeyRow(
                            participant_id=participant_id,
                            key_id=kem_last_resort[0],
                            last_resort=True,
                            encoded=kem_last_resort[1],
                        )
                    )
                _add_one_time(session, participant_id, one_time, kem_one_time)
        except IntegrityError:
            raise Conflict("a prekey id was uploaded before", code="prekey_id_reused") from None

    # --- envelopes ----------------------------------------------------------------------------

    async def commit_envelopes(
        self, batches: Sequence[Sequence[tuple[int, NewEnvelope]]]
    ) -> list[list[Receipt] | Exception]:
        """Store several requests' envelopes in one transaction; one result per request.

        A request whose envelope would overflow a mailbox is refused whole (nothing of it is
        stored); other requests in the same commit are unaffected.
        """
        results, _ = await self.commit_group(batches, ())
        return results

    async def commit_group(
        self,
        batches: Sequence[Sequence[tuple[int, NewEnvelope]]],
        acks: Sequence[tuple[int, Sequence[int]]],
    ) -> tuple[list[list[Receipt] | Exception], list[int]]:
        """One transaction (one fsync) for many send requests and acknowledgements.

        -> (per send request: its receipts or why it was refused, per acknowledgement: how many
        envelopes it deleted). Acknowledgements are applied first, so the room they free counts.
        """
        now_ms = self.now_ms()

        def work(connection: Connection) -> tuple[list[list[Receipt] | Exception], list[int]]:
            if self._write_lock is None:
                _lock_mailboxes(connection, batches)
            deltas: dict[int, tuple[int, int]] = {}  # participant -> change of its counters
            shares: ShareDeltas = {}  # (recipient, sender) -> change of that sender's share
            acknowledged = []
            for (rid, _), (count, size) in zip(
                acks, _delete_acknowledged(connection, acks, shares), strict=True
            ):
                acknowledged.append(count)
                before = deltas.get(rid, (0, 0))
                deltas[rid] = (before[0] - count, before[1] - size)
            results = (
                self._insert_batches(connection, batches, now_ms, deltas, shares) if batches else []
            )
            _add_to_counters(connection, deltas)
            _add_to_shares(connection, shares)
            if self.wake_origin is not None:
                arrived = [
                    rid
                    for batch, result in zip(batches, results, strict=True)
                    if not isinstance(result, Exception)
                    for (rid, _), receipt in zip(batch, result, strict=True)
                    if not receipt.duplicate
                ]
                for payload in payloads(self.wake_origin, arrived):  # sent at commit, if any
                    connection.execute(select(func.pg_notify(CHANNEL, payload)))
            return results, acknowledged

        return await self.write_sync(work)

    async def write_sync(self, work: Callable[[Connection], T]) -> T:
        """One write transaction that runs `work` on a synchronous connection.

        On a SQLite file the whole transaction is one step on a writer thread with a connection
        of its own (same pragmas, so the same `synchronous=FULL`), under the same write lock as
        every other write: a commit does not wait for the event loop between its statements,
        which under load costs more than the statements. Elsewhere the async engine runs it.
        """
        writer = self._sqlite_writer()
        if writer is not None and self._write_lock is not None:
            executor, engine = writer

            def transaction() -> T:
                with engine.begin() as connection:
                    return work(connection)

            async with self._write_lock:
                return await asyncio.get_running_loop().run_in_executor(executor, transaction)
        async with self.write() as session:
            connection = await session.connection()
            return await connection.run_sync(work)

    async def truncate_wal(self) -> bool:
        """On SQLite, copy the write-ahead log into the database and empty it, so no copy of a
        page deleted since (with `secure_delete`, zeroed in the database) stays in the log.
        False if a reader kept it from finishing."""
        if self._write_lock is None:
            return True
        async with self._write_lock, self.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            result = await autocommit.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            row = result.first()
        return row is None or row[0] == 0

    def _sqlite_writer(self) -> tuple[ThreadPoolExecutor, Engine] | None:
        if self._writer is None and is_sqlite(self.engine):
            sync_engine = open_sync_sqlite_engine(self.engine.url)
            if sync_engine is not None:
                self._writer = (
                    ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer"),
                    sync_engine,
                )
        return self._writer

    def close(self) -> None:
        """Release the SQLite writer thread and its connection (not the caller's engine)."""
        if self._writer is not None:
            executor, engine = self._writer
            executor.submit(engine.dispose).result()
            executor.shutdown()
            self._writer = None

    def _insert_batches(
        self,
        connection: Connection,
        batches: Sequence[Sequence[tuple[int, NewEnvelope]]],
        now_ms: int,
        deltas: dict[int, tuple[int, int]],
        share_deltas: ShareDeltas,
    ) -> list[list[Receipt] | Exception]:
        """Plan every request against one read of the seen ids and the mailbox counters, then
        write all fresh envelopes and their id hashes with a few multi-row INSERTs: the number
        of statements does not grow with the number of requests. What the envelopes add to the
        mailbox counters is added to `deltas` (which holds what acknowledgements took away),
        and what they add to their senders' shares to `share_deltas` (likewise)."""
        hashes = [[self.message_id_hash(rid, env.message_id) for rid, env in b] for b in batches]
        seen: dict[bytes, tuple[int, int]] = {}
        wanted = sorted({h for batch_hashes in hashes for h in batch_hashes})
        for at in range(0, len(wanted), IN_CHUNK):
            rows = connection.execute(
                select(MESSAGE_IDS.c.id_hash, MESSAGE_IDS.c.seq, MESSAGE_IDS.c.received_at).where(
                    MESSAGE_IDS.c.id_hash.in_(wanted[at : at + IN_CHUNK])
                )
            )
            seen.update((bytes(h), (seq, at_ms)) for h, seq, at_ms in rows.tuples())
        recipient_ids = sorted({rid for batch in batches for rid, _ in batch})
        counters: dict[int, tuple[int, int]] = {}
        for at in range(0, len(recipient_ids), IN_CHUNK):
            rows = connection.execute(
                select(
                    PARTICIPANTS.c.id, PARTICIPANTS.c.queued_count, PARTICIPANTS.c.queued_bytes
                ).where(PARTICIPANTS.c.id.in_(recipient_ids[at : at + IN_CHUNK]))
            )
            counters.update((pid, (count, size)) for pid, count, size in rows.tuples())
        for pid, (count, size) in counters.items():
            freed = deltas.get(pid, (0, 0))
            counters[pid] = (count + freed[0], size + freed[1])
        start = dict(counters)
        shares = _read_shares(
            connection,
            {(rid, env.sender_id) for b in batches for rid, env in b if env.sender_id is not None},
        )
        for key, (count, size) in share_deltas.items():
            if key in shares:
                shares[key] = (shares[key][0] + count, shares[key][1] + size)
        share_start = dict(shares)

        limits = self.limits
        first_in_group: dict[bytes, int] = {}  # id hash -> its row in `fresh`
        fresh: list[tuple[int, NewEnvelope, bytes]] = []
        plans: list[list[tuple[bool, int]] | Exception] = []  # per envelope: (new?, row index)
        changed: set[int] = set()
        for batch, batch_hashes in zip(batches, hashes, strict=True):
            planned: dict[int, tuple[int, int]] = {}
            planned_shares: dict[tuple[int, int], tuple[int, int]] = {}
            local: dict[bytes, int] = {}
            adding: list[tuple[int, NewEnvelope, bytes]] = []
            plan: list[tuple[bool, int]] = []
            refused: Exception | None = None
            for (rid, env), id_hash in zip(batch, batch_hashes, strict=True):
                if id_hash in seen:
                    plan.append((False, -1))
                    continue
                earlier = first_in_group.get(id_hash, local.get(id_hash))
                if earlier is not None:
                    plan.append((False, earlier))
                    continue
                share_key = (rid, env.sender_id) if env.sender_id is not None else None
                if share_key is not None:
                    held, held_bytes = planned_shares.get(share_key) or shares[share_key]
                    held, held_bytes = held + 1, held_bytes + len(env.body)
                    if held > limits.max_share_envelopes or held_bytes > limits.max_share_bytes:
                        refused = _share_full(env.recipient, limits)
                        break
                    planned_shares[share_key] = (held, held_bytes)
                count, size = planned.get(rid) or counters[rid]
                count, size = count + 1, size + len(env.body)
                if count > limits.max_queue_envelopes:
                    cap = limits.max_queue_envelopes
                    refused = MailboxFull(f"{env.recipient}'s mailbox is full ({cap} envelopes)")
                    break
                if size > limits.max_queue_bytes:
                    refused = MailboxFull(
                        f"{env.recipient}'s mailbox is full ({limits.max_queue_bytes} bytes)"
                    )
                    break
                planned[rid] = (count, size)
                local[id_hash] = len(fresh) + len(adding)
                adding.append((rid, env, id_hash))
                plan.append((True, local[id_hash]))
            if refused is not None:
                plans.append(refused)
                continue
            first_in_group.update(local)
            fresh.extend(adding)
            counters.update(planned)
            changed.update(planned)
            shares.update(planned_shares)
            plans.append(plan)

        seqs = _insert_envelopes(
            connection,
            [(rid, env.sender_id, now_ms, env.expires_at, env.body) for rid, env, _ in fresh],
        )
        _insert_message_ids(
            connection,
            [
                (id_hash, seq, now_ms, env.expires_at)
                for (_, env, id_hash), seq in zip(fresh, seqs, strict=True)
            ],
        )
        for pid in changed:
            before = deltas.get(pid, (0, 0))
            deltas[pid] = (
                before[0] + counters[pid][0] - start[pid][0],
                before[1] + counters[pid][1] - start[pid][1],
            )
        for key, (count, size) in shares.items():
            added = (count - share_start[key][0], size - share_start[key][1])
            if added != (0, 0):
                before = share_deltas.get(key, (0, 0))
                share_deltas[key] = (before[0] + added[0], before[1] + added[1])

        results: list[list[Receipt] | Exception] = []
        for batch, batch_hashes, outcome in zip(batches, hashes, plans, strict=True):
            if isinstance(outcome, Exception):
                results.append(outcome)
                continue
            receipts = []
            for (_, env), id_hash, (new, row) in zip(batch, batch_hashes, outcome, strict=True):
                if row < 0:
                    seq, received_at = seen[id_hash]
                else:
                    seq, received_at = seqs[row], now_ms
                receipts.append(Receipt(env.message_id, seq, received_at, duplicate=not new))
            results.append(receipts)
        return results

    async def mailbox_pages(
        self, cursors: dict[int, int], limit: int
    ) -> dict[int, list[StoredEnvelope]]:
        """`mailbox_page` for many mailboxes (recipient -> after) in one statement per
        `IN_CHUNK` of them, a LATERAL page per mailbox. PostgreSQL only: it serves the
        `MailboxFeed`, which runs where processes share the database."""
        pages: dict[int, list[StoredEnvelope]] = {rid: [] for rid in cursors}
        items = sorted(cursors.items())
        async with self.read() as session:
            for at in range(0, len(items), IN_CHUNK):
                wanted = values(
                    column("rid", Integer), column("after", BigInteger), name="cursor"
                ).data(items[at : at + IN_CHUNK])
                page = (
                    select(ENVELOPES.c.seq, ENVELOPES.c.received_at, ENVELOPES.c.body)
                    .where(ENVELOPES.c.recipient_id == wanted.c.rid)
                    .where(ENVELOPES.c.seq > wanted.c.after)
                    .where(ENVELOPES.c.expires_at >= self.now())
                    .order_by(ENVELOPES.c.seq)
                    .limit(limit)
                    .lateral("page")
                )
                rows = await session.execute(
                    select(wanted.c.rid, page.c.seq, page.c.received_at, page.c.body)
                    .select_from(wanted.join(page, true()))
                    .order_by(wanted.c.rid, page.c.seq)
                )
                for rid, seq, received_at, body in rows.tuples():
                    pages[rid].append(StoredEnvelope(seq, received_at, body))
        return pages

    async def mailbox_page(self, recipient_id: int, after: int, limit: int) -> list[StoredEnvelope]:
        """Unacknowledged, unexpired envelopes in arrival order, by keyset (cost ~ page size)."""
        async with self.read() as session:
            rows = await session.execute(
                select(ENVELOPES.c.seq, ENVELOPES.c.received_at, ENVELOPES.c.body)
                .where(ENVELOPES.c.recipient_id == recipient_id, ENVELOPES.c.seq > after)
                .where(ENVELOPES.c.expires_at >= self.now())
                .order_by(ENVELOPES.c.seq)
                .limit(limit)
            )
            return [StoredEnvelope(seq, at, body) for seq, at, body in rows.tuples()]

    async def acknowledge(self, recipient_id: int, seqs: Sequence[int]) -> int:
        """Delete acknowledged envelopes from the caller's own mailbox only."""
        if not seqs:
            return 0
        _, (count,) = await self.commit_group((), [(recipient_id, seqs)])
        return count

    async def sweep_expired(self) -> int:
        """Delete expired envelopes (giving back their senders' shares), message-id hashes,
        challenges and tokens."""
        now = self.now()
        async with self.write() as session:
            gone = await session.execute(
                delete(EnvelopeRow)
                .where(EnvelopeRow.expires_at < now)
                .returning(
                    EnvelopeRow.recipient_id, func.length(EnvelopeRow.body), EnvelopeRow.sender_id
                )
            )
            per_recipient: dict[int, list[int]] = {}
            shares: ShareDeltas = {}
            for rid, size, sid in gone.tuples():
                entry = per_recipient.setdefault(rid, [0, 0])
                entry[0] += 1
                entry[1] += int(size)
                _give_back(shares, rid, sid, int(size))
            for rid, (count, size) in sorted(per_recipient.items()):  # the order commits use
                await session.execute(
                    update(Participant)
                    .where(Participant.id == rid)
                    .values(
                        queued_count=Participant.queued_count - count,
                        queued_bytes=Participant.queued_bytes - size,
                    )
                )
            await session.run_sync(lambda sync: _add_to_shares(sync.connection(), shares))
            await session.execute(  # senders with nothing left waiting
                delete(MailboxShare).where(
                    MailboxShare.queued_count <= 0, MailboxShare.queued_bytes <= 0
                )
            )
            await session.execute(delete(MessageIdRow).where(MessageIdRow.expires_at < now))
            await session.execute(delete(Challenge).where(Challenge.expires_at < now))
            await session.execute(delete(SessionToken).where(SessionToken.expires_at < now))
            return sum(count for count, _ in per_recipient.values())


SQLITE_ROWS_PER_INSERT = 150
"""Rows per multi-row INSERT on SQLite: at most 900 parameters, under old builds' 999."""


def _insert_envelopes(
    connection: Connection, rows: Sequence[tuple[int, int | None, int, int, bytes]]
) -> list[int]:
    """INSERT (recipient_id, sender_id, received_at, expires_at, body) rows; -> their seqs, in
    order.

    On SQLite the transaction is `BEGIN IMMEDIATE` (the writer engine's, see database.py): no
    one else can insert before it commits, so it numbers the rows itself, after the highest
    seq ever used (AUTOINCREMENT's `sqlite_sequence`, which explicit seqs move on too), and
    sends multi-row INSERTs without RETURNING. Each statement and each returned row releases
    and retakes the GIL; under load, retaking it behind the event loop cost more than SQLite's
    own work, so the statement count stays small and no row comes back.
    """
    if not rows:
        return []
    if connection.dialect.name != "sqlite":
        result = connection.execute(
            insert(ENVELOPES).returning(ENVELOPES.c.seq, sort_by_parameter_order=True),
            [
                {
                    "recipient_id": rid,
                    "sender_id": sid,
                    "received_at": at,
                    "expires_at": exp,
                    "body": body,
                }
                for rid, sid, at, exp, body in rows
            ],
        )
        return list(result.scalars())
    last = connection.exec_driver_sql(
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'envelopes'), 0), "
        "coalesce((SELECT max(seq) FROM envelopes), 0))"
    ).scalar_one()
    seqs = list(range(int(last) + 1, int(last) + 1 + len(rows)))
    for at in range(0, len(rows), SQLITE_ROWS_PER_INSERT):
        chunk = rows[at : at + SQLITE_ROWS_PER_INSERT]
        values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
        connection.exec_driver_sql(
            "INSERT INTO envelopes (seq, recipient_id, sender_id, received_at, expires_at, body) "
            f"VALUES {values}",
            tuple(
                value
                for seq, row in zip(seqs[at : at + SQLITE_ROWS_PER_INSERT], chunk, strict=True)
                for value in (seq, *row)
            ),
        )
    return seqs


def _insert_message_ids(
    connection: Connection, rows: Sequence[tuple[bytes, int, int, int]]
) -> None:
    """INSERT (id_hash, seq, received_at, expires_at) rows."""
    if not rows:
        return
    if connection.dialect.name != "sqlite":
        connection.execute(
            insert(MESSAGE_IDS),
            [
                {"id_hash": h, "seq": seq, "received_at": at, "expires_at": exp}
                for h, seq, at, exp in rows
            ],
        )
        return
    for at in range(0, len(rows), SQLITE_ROWS_PER_INSERT):
        chunk = rows[at : at + SQLITE_ROWS_PER_INSERT]
        values = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
        connection.exec_driver_sql(
            f"INSERT INTO message_ids (id_hash, seq, received_at, expires_at) VALUES {values}",
            tuple(value for row in chunk for value in row),
        )


def _lock_mailboxes(
    connection: Connection, batches: Sequence[Sequence[tuple[int, NewEnvelope]]]
) -> None:
    """On PostgreSQL, take the advisory lock of every mailbox written to, in id order, to the
    commit.

    Several processes may insert at once, and PostgreSQL numbers rows when they are inserted,
    not when they commit: without these locks a reader could see a mailbox's seq 126 before 101
    commits, move its cursor past 101, and never push it. Held to the commit, a mailbox's lock
    makes its commit order its seq order, and keeps its seen-id check and mailbox-full check to
    one writer. Transactions writing to different mailboxes never wait for each other, and
    acknowledgements take no lock (deleting does not reorder; the counters change relatively).
    No two transactions wait in a cycle: every lock is taken first, in one order, and counters
    are updated last, in id order. SQLite has one writer anyway.
    """
    mailboxes = sorted({rid for batch in batches for rid, _ in batch})
    if mailboxes:
        connection.execute(_LOCK_MAILBOXES, {"space": MAILBOX_LOCKS, "ids": mailboxes})


_DELETE_ACKNOWLEDGED = text(  # every acknowledgement of a group, each from its own mailbox
    "DELETE FROM envelopes USING unnest(CAST(:rids AS integer[]), CAST(:seqs AS bigint[]))"
    " AS acked(rid, seq) WHERE envelopes.recipient_id = acked.rid AND envelopes.seq = acked.seq"
    " RETURNING envelopes.recipient_id, envelopes.seq, length(envelopes.body),"
    " envelopes.sender_id"
)
_LOCK_MAILBOXES = text(  # one compiled statement whatever the number of ids; taken in array order
    "SELECT pg_advisory_xact_lock(CAST(:space AS integer), id)"
    " FROM unnest(CAST(:ids AS integer[])) AS id"
)


def _add_to_counters(connection: Connection, deltas: dict[int, tuple[int, int]]) -> None:
    """Add to participants' queued counts and bytes: relative (never a stale absolute value
    written over another transaction's change), one compiled statement run for every row."""
    rows = [
        {"pid": pid, "count": count, "size": size}
        for pid, (count, size) in sorted(deltas.items())
        if (count, size) != (0, 0)
    ]
    if rows:
        connection.execute(_ADD_TO_COUNTERS, rows)


_ADD_TO_COUNTERS = (
    update(PARTICIPANTS)
    .where(PARTICIPANTS.c.id == bindparam("pid"))
    .values(
        queued_count=PARTICIPANTS.c.queued_count + bindparam("count"),
        queued_bytes=PARTICIPANTS.c.queued_bytes + bindparam("size"),
    )
)


def _read_shares(
    connection: Connection, keys: set[tuple[int, int]]
) -> dict[tuple[int, int], tuple[int, int]]:
    """(recipient, sender) -> what that sender has waiting in that mailbox, for every key
    asked (a sender with nothing there has no row: (0, 0))."""
    found = dict.fromkeys(keys, (0, 0))
    wanted = sorted(keys)
    for at in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[at : at + IN_CHUNK]
        # Two plain IN lists, not a row-value IN: SQLite answers that one with a full scan.
        rows = connection.execute(
            select(
                SHARES.c.recipient_id, SHARES.c.sender_id,
                SHARES.c.queued_count, SHARES.c.queued_bytes,
            ).where(
                SHARES.c.recipient_id.in_({rid for rid, _ in chunk}),
                SHARES.c.sender_id.in_({sid for _, sid in chunk}),
            )
        )  # fmt: skip
        found.update(
            ((rid, sid), (count, size))
            for rid, sid, count, size in rows.tuples()
            if (rid, sid) in found
        )
    return found


def _give_back(shares: ShareDeltas, recipient_id: int, sender_id: int | None, size: int) -> None:
    """An envelope left the mailbox (acknowledged or expired): its sender's share shrinks."""
    if sender_id is None:  # stored before shares were kept
        return
    count, total = shares.get((recipient_id, sender_id), (0, 0))
    shares[(recipient_id, sender_id)] = (count - 1, total - size)


def _share_full(recipient: str, limits: Limits) -> SenderShareFull:
    """The refusal names the recipient the sender chose and the sender's own share, nothing of
    what anyone else has sent."""
    return SenderShareFull(
        f"you have as much waiting in {recipient}'s mailbox as one sender may "
        f"({limits.max_share_envelopes} envelopes or {limits.max_share_bytes} bytes); "
        "more fits as they read it",
        retry_after=SHARE_RETRY_AFTER,
    )


def _add_to_shares(connection: Connection, deltas: ShareDeltas) -> None:
    """Add to senders' shares of mailboxes: relative, like `_add_to_counters`, after it and
    in (recipient, sender) order, so concurrent transactions take row locks in one order. One
    upsert for growing and shrinking alike (a sender's first envelope creates its row; a
    shrinking share has one). Rows that reach zero are left for the sweep."""
    rows = [
        {"rid": rid, "sid": sid, "count": count, "size": size}
        for (rid, sid), (count, size) in sorted(deltas.items())
        if (count, size) != (0, 0)
    ]
    if rows:
        connection.execute(_ADD_TO_SHARE, rows)


_ADD_TO_SHARE = text(  # the same statement on SQLite (3.24+) and PostgreSQL
    "INSERT INTO mailbox_shares (recipient_id, sender_id, queued_count, queued_bytes)"
    " VALUES (:rid, :sid, :count, :size) ON CONFLICT (recipient_id, sender_id) DO UPDATE SET"
    " queued_count = mailbox_shares.queued_count + excluded.queued_count,"
    " queued_bytes = mailbox_shares.queued_bytes + excluded.queued_bytes"
)


def _delete_acknowledged(
    connection: Connection, acks: Sequence[tuple[int, Sequence[int]]], shares: ShareDeltas
) -> list[tuple[int, int]]:
    """Delete what each (recipient, seqs) acknowledges from that recipient's own mailbox;
    -> per acknowledgement, (how many it deleted, their bytes). The caller updates counters;
    what each deleted envelope gave back to its sender's share is subtracted in `shares`.

    On SQLite (one writer at a time, so what is read stays true until the commit) every
    acknowledgement of the group costs the same two statements: find the envelopes with one
    SELECT, keep those in the acknowledger's own mailbox, DELETE them by seq. On PostgreSQL the
    whole group is one DELETE ... RETURNING, exact under concurrent transactions from other
    processes (a row two of them delete counts for whichever deleted it).
    """
    if not acks:
        return []
    if connection.dialect.name != "sqlite":
        owner: dict[tuple[int, int], int] = {}  # (recipient, seq) -> the first ack naming it
        for index, (recipient_id, seqs) in enumerate(acks):
            for seq in seqs:
                owner.setdefault((recipient_id, seq), index)
        out = [(0, 0)] * len(acks)
        pairs = sorted(owner)
        gone = connection.execute(
            _DELETE_ACKNOWLEDGED,
            {"rids": [rid for rid, _ in pairs], "seqs": [seq for _, seq in pairs]},
        )
        for rid, seq, size, sid in gone.tuples():
            index = owner[(rid, seq)]
            out[index] = (out[index][0] + 1, out[index][1] + int(size))
            _give_back(shares, rid, sid, int(size))
        return out
    wanted = sorted({seq for _, seqs in acks for seq in seqs})
    found: dict[int, tuple[int, int, int | None]] = {}  # seq -> (recipient, bytes, sender)
    for at in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[at : at + IN_CHUNK]
        rows = connection.exec_driver_sql(
            "SELECT seq, recipient_id, length(body), sender_id FROM envelopes "
            f"WHERE seq IN ({', '.join('?' * len(chunk))})",
            tuple(chunk),
        )
        found.update((seq, (rid, size, sid)) for seq, rid, size, sid in rows)
    out = []
    doomed: list[int] = []
    for recipient_id, seqs in acks:
        count = size = 0
        for seq in set(seqs):
            hit = found.get(seq)
            if hit is not None and hit[0] == recipient_id:
                del found[seq]  # counted once, whoever else acknowledges it in this group
                doomed.append(seq)
                count, size = count + 1, size + hit[1]
                _give_back(shares, recipient_id, hit[2], hit[1])
        out.append((count, size))
    for at in range(0, len(doomed), IN_CHUNK):
        chunk = doomed[at : at + IN_CHUNK]
        connection.exec_driver_sql(
            f"DELETE FROM envelopes WHERE seq IN ({', '.join('?' * len(chunk))})", tuple(chunk)
        )
    return out


async def _pop(
    session: AsyncSession,
    model: type[OneTimePrekeyRow] | type[KemPrekeyRow],
    owner: int,
    *extra: object,
) -> bytes | None:
    oldest = (
        select(model.id)
        .where(model.participant_id == owner, *extra)  # type: ignore[arg-type]
        .order_by(model.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = await session.execute(delete(model).where(model.id == oldest).returning(model.encoded))
    row = result.first()
    return bytes(row[0]) if row else None


def _add_one_time(
    session: AsyncSession,
    participant_id: int,
    one_time: Sequence[tuple[int, bytes]],
    kem_one_time: Sequence[tuple[int, bytes]],
) -> None:
    for key_id, encoded in one_time:
        session.add(OneTimePrekeyRow(participant_id=participant_id, key_id=key_id, encoded=encoded))
    for key_id, encoded in kem_one_time:
        session.add(
            KemPrekeyRow(
                participant_id=participant_id, key_id=key_id, last_resort=False, encoded=encoded
            )
        )
