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
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .database import is_sqlite
from .errors import BadRequest, Conflict, Forbidden, MailboxFull, NotFound, Unauthorized
from .models import (
    Challenge,
    EnvelopeRow,
    Invite,
    KemPrekeyRow,
    MessageIdRow,
    OneTimePrekeyRow,
    Participant,
    RelayMeta,
    SessionToken,
    SignedPrekeyRow,
)

Clock = Callable[[], float]
ROLES = ("party", "mediator", "observer")


def digest(secret: bytes) -> bytes:
    """Secrets (invites, challenges, tokens) are stored as SHA-256 only."""
    return hashlib.sha256(secret).digest()


@dataclass(frozen=True, slots=True)
class Limits:
    max_queue_envelopes: int = 10_000
    max_queue_bytes: int = 64 * 1024 * 1024
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
        async with self.write() as session:
            row = await session.get(RelayMeta, key)
            if row is not None:
                return row.value, False
            value = os.urandom(size)
            session.add(RelayMeta(key=key, value=value))
            return value, True

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
        code = os.urandom(16).hex()
        expires_at = self.now() + ttl_seconds
        async with self.write() as session:
            taken = await session.scalar(select(Participant.id).where(Participant.name == name))
            if taken is not None:
                raise Conflict(f"the name {name!r} is already registered", code="name_taken")
            session.add(
                Invite(
                    code_hash=digest(code.encode()),
                    name=name,
                    role=role,
                    expires_at=expires_at,
                    used_at=None,
                )
            )
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
            await session.flush()
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
        async with self.read() as session:
            row = await session.scalar(select(Participant).where(Participant.name == name))
        if row is None:
            raise NotFound(f"no participant named {name!r}", code="unknown_participant")
        return _info(row)

    async def participant_ids(self, names: Sequence[str]) -> dict[str, int]:
        async with self.read() as session:
            rows = await session.execute(
                select(Participant.name, Participant.id).where(Participant.name.in_(set(names)))
            )
            return {name: pid for name, pid in rows.tuples()}

    async def directory(self) -> list[ParticipantInfo]:
        async with self.read() as session:
            rows = await session.scalars(select(Participant).order_by(Participant.name))
            return [_info(row) for row in rows]

    async def create_challenge(self, participant_id: int) -> bytes:
        challenge = os.urandom(32)
        async with self.write() as session:
            await session.execute(delete(Challenge).where(Challenge.expires_at < self.now()))
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

    async def participant_for_token(self, token: bytes) -> ParticipantInfo | None:
        async with self.read() as session:
            row = await session.scalar(
                select(Participant)
                .join(SessionToken, SessionToken.participant_id == Participant.id)
                .where(SessionToken.token_hash == digest(token))
                .where(SessionToken.expires_at >= self.now())
            )
        return _info(row) if row else None

    # --- prekeys ------------------------------------------------------------------------------

    async def take_bundle_parts(self, name: str) -> tuple[bytes, bytes, bytes | None, bytes, int]:
        """-> (identity, signed prekey, one-time prekey or None, KEM prekey, one-time left).

        One-time keys leave the table in the same statement that reads them, so two concurrent
        fetches can never be handed the same one (row locks with SKIP LOCKED on PostgreSQL,
        the single writer on SQLite).
        """
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
        now_ms = self.now_ms()
        results: list[list[Receipt] | Exception] = []
        async with self.write() as session:
            recipient_ids = {rid for batch in batches for rid, _ in batch}
            counters = {
                row.id: [row.queued_count, row.queued_bytes]
                for row in await session.scalars(
                    select(Participant).where(Participant.id.in_(recipient_ids))
                )
            }
            for batch in batches:
                results.append(await self._store_batch(session, batch, counters, now_ms))
            for participant_id, (count, size) in counters.items():
                await session.execute(
                    update(Participant)
                    .where(Participant.id == participant_id)
                    .values(queued_count=count, queued_bytes=size)
                )
        return results

    async def _store_batch(
        self,
        session: AsyncSession,
        batch: Sequence[tuple[int, NewEnvelope]],
        counters: dict[int, list[int]],
        now_ms: int,
    ) -> list[Receipt] | Exception:
        hashes = [self.message_id_hash(rid, env.message_id) for rid, env in batch]
        seen = {
            row.id_hash: row
            for row in await session.scalars(
                select(MessageIdRow).where(MessageIdRow.id_hash.in_(hashes))
            )
        }
        planned = {rid: list(counts) for rid, counts in counters.items()}
        fresh: list[int] = []
        for index, (rid, env) in enumerate(batch):
            if hashes[index] in seen or hashes[index] in hashes[:index]:
                continue
            planned[rid][0] += 1
            planned[rid][1] += len(env.body)
            if planned[rid][0] > self.limits.max_queue_envelopes:
                limit = self.limits.max_queue_envelopes
                return MailboxFull(f"{env.recipient}'s mailbox is full ({limit} envelopes)")
            if planned[rid][1] > self.limits.max_queue_bytes:
                return MailboxFull(
                    f"{env.recipient}'s mailbox is full ({self.limits.max_queue_bytes} bytes)"
                )
            fresh.append(index)
        receipts: dict[int, Receipt] = {}
        if fresh:
            seqs = (
                await session.scalars(
                    insert(EnvelopeRow).returning(EnvelopeRow.seq, sort_by_parameter_order=True),
                    [
                        {
                            "recipient_id": batch[i][0],
                            "received_at": now_ms,
                            "expires_at": batch[i][1].expires_at,
                            "body": batch[i][1].body,
                        }
                        for i in fresh
                    ],
                )
            ).all()
            await session.execute(
                insert(MessageIdRow),
                [
                    {
                        "id_hash": hashes[i],
                        "seq": seq,
                        "received_at": now_ms,
                        "expires_at": batch[i][1].expires_at,
                    }
                    for i, seq in zip(fresh, seqs, strict=True)
                ],
            )
            for i, seq in zip(fresh, seqs, strict=True):
                receipts[i] = Receipt(batch[i][1].message_id, seq, now_ms, duplicate=False)
        counters.update(planned)
        out: list[Receipt] = []
        for index, (_, env) in enumerate(batch):
            if index in receipts:
                out.append(receipts[index])
            else:
                earlier = seen.get(hashes[index])
                if earlier is not None:
                    out.append(Receipt(env.message_id, earlier.seq, earlier.received_at, True))
                else:  # repeated within this very request
                    first = receipts[hashes.index(hashes[index])]
                    out.append(Receipt(env.message_id, first.seq, first.received_at_ms, True))
        return out

    async def mailbox_page(self, recipient_id: int, after: int, limit: int) -> list[StoredEnvelope]:
        """Unacknowledged, unexpired envelopes in arrival order, by keyset (cost ~ page size)."""
        async with self.read() as session:
            rows = await session.execute(
                select(EnvelopeRow.seq, EnvelopeRow.received_at, EnvelopeRow.body)
                .where(EnvelopeRow.recipient_id == recipient_id, EnvelopeRow.seq > after)
                .where(EnvelopeRow.expires_at >= self.now())
                .order_by(EnvelopeRow.seq)
                .limit(limit)
            )
            return [StoredEnvelope(seq, at, body) for seq, at, body in rows.tuples()]

    async def acknowledge(self, recipient_id: int, seqs: Sequence[int]) -> int:
        """Delete acknowledged envelopes from the caller's own mailbox only."""
        if not seqs:
            return 0
        async with self.write() as session:
            gone = await session.execute(
                delete(EnvelopeRow)
                .where(EnvelopeRow.recipient_id == recipient_id, EnvelopeRow.seq.in_(set(seqs)))
                .returning(func.length(EnvelopeRow.body))
            )
            sizes = [int(size) for (size,) in gone.tuples()]
            if sizes:
                await session.execute(
                    update(Participant)
                    .where(Participant.id == recipient_id)
                    .values(
                        queued_count=Participant.queued_count - len(sizes),
                        queued_bytes=Participant.queued_bytes - sum(sizes),
                    )
                )
            return len(sizes)

    async def sweep_expired(self) -> int:
        """Delete expired envelopes, message-id hashes, challenges and tokens."""
        now = self.now()
        async with self.write() as session:
            gone = await session.execute(
                delete(EnvelopeRow)
                .where(EnvelopeRow.expires_at < now)
                .returning(EnvelopeRow.recipient_id, func.length(EnvelopeRow.body))
            )
            per_recipient: dict[int, list[int]] = {}
            for rid, size in gone.tuples():
                entry = per_recipient.setdefault(rid, [0, 0])
                entry[0] += 1
                entry[1] += int(size)
            for rid, (count, size) in per_recipient.items():
                await session.execute(
                    update(Participant)
                    .where(Participant.id == rid)
                    .values(
                        queued_count=Participant.queued_count - count,
                        queued_bytes=Participant.queued_bytes - size,
                    )
                )
            await session.execute(delete(MessageIdRow).where(MessageIdRow.expires_at < now))
            await session.execute(delete(Challenge).where(Challenge.expires_at < now))
            await session.execute(delete(SessionToken).where(SessionToken.expires_at < now))
            return sum(count for count, _ in per_recipient.values())


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
