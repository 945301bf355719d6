"""The relay's notary: sequences commitments and statement digests in a signed, hash-chained log.

The log and its receipts are the core's (`backchannel.proposals`, PROTOCOL.md §14.3); this module
keeps them in the database and enforces who may add what. Every append runs in one write
transaction that holds the log's single writer (SQLite's write lock, or a PostgreSQL advisory lock
when several relay processes share the database), so seqs stay contiguous and each entry chains to
the one before, whichever process appends it. The notary sees commitments and digests only.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from backchannel.keys import SigningKeyPair
from backchannel.proposals import EntryKind, NotaryEntry, NotaryReceipt, next_entry, notarise

from .database import is_sqlite
from .errors import Conflict, Forbidden, Gone, NotFound
from .models import NotaryAddresseeRow, NotaryEntryRow, NotaryKeyRow
from .store import Store

ADVISORY_LOCK = 0x6263_6E6F_7461_7279  # "bcnotary": one log writer across relay processes
DECISIONS = (EntryKind.ACCEPTANCE, EntryKind.WITHDRAWAL)


def _entry(row: NotaryEntryRow) -> NotaryEntry:
    return NotaryEntry(
        row.seq, row.at_ms, EntryKind(row.kind), row.subject, row.value, row.previous
    )


class Notary:
    def __init__(self, store: Store, key: SigningKeyPair, relay_id: bytes) -> None:
        self.store = store
        self.key = key
        self.relay_id = relay_id

    def _receipt(self, row: NotaryEntryRow) -> NotaryReceipt:
        return NotaryReceipt(self.relay_id, _entry(row), row.signature)

    async def commit(
        self, submitter: int, commitment: bytes, addressees: Sequence[int], expires_at_ms: int
    ) -> NotaryReceipt:
        """Notarise a proposal's commitment; the same commitment again returns its receipt."""
        async with self.store.write() as session:
            await self._lock(session)
            existing = await self._commitment(session, commitment)
            if existing is not None:
                if existing.submitter_id != submitter:
                    raise Conflict("this commitment was notarised by someone else",
                                   code="already_committed")  # fmt: skip
                return self._receipt(existing)
            row = await self._append(
                session, submitter, EntryKind.COMMITMENT, commitment, commitment, expires_at_ms
            )
            session.add_all(
                NotaryAddresseeRow(subject=commitment, participant_id=pid)
                for pid in sorted(set(addressees))
            )
            return self._receipt(row)

    async def record(
        self, submitter: int, kind: EntryKind, commitment: bytes, digest: bytes
    ) -> NotaryReceipt:
        """Notarise a statement's digest about a committed proposal.

        Only the author withdraws, only an addressee accepts, and of the acceptance and the
        withdrawal of one proposal the one sequenced first stands: the other is refused with a
        conflict that carries the winner's receipt.
        """
        if kind == EntryKind.COMMITMENT:
            raise ValueError("commitments go through commit()")
        async with self.store.write() as session:
            await self._lock(session)
            same = await session.scalar(
                select(NotaryEntryRow).where(
                    NotaryEntryRow.subject == commitment,
                    NotaryEntryRow.kind == kind,
                    NotaryEntryRow.value == digest,
                )
            )
            if same is not None:  # a retry
                return self._receipt(same)
            committed = await self._commitment(session, commitment)
            if committed is None:
                raise NotFound("no proposal with this commitment is notarised",
                               code="unknown_commitment")  # fmt: skip
            addressees = set(
                await session.scalars(
                    select(NotaryAddresseeRow.participant_id).where(
                        NotaryAddresseeRow.subject == commitment
                    )
                )
            )
            author = committed.submitter_id
            if kind == EntryKind.WITHDRAWAL and submitter != author:
                raise Forbidden("only the author can withdraw a proposal", code="not_the_author")
            if kind == EntryKind.ACCEPTANCE and submitter not in addressees:
                raise Forbidden("only an addressee can accept a proposal", code="not_an_addressee")
            if kind == EntryKind.STATEMENT and submitter not in addressees | {author}:
                raise Forbidden("only the author and the addressees make statements about a "
                                "proposal", code="not_a_party")  # fmt: skip
            if kind in DECISIONS:
                winner = await session.scalar(
                    select(NotaryEntryRow)
                    .where(NotaryEntryRow.subject == commitment, NotaryEntryRow.kind.in_(DECISIONS))
                    .order_by(NotaryEntryRow.seq)
                    .limit(1)
                )
                if winner is not None:
                    verb = "accepted" if winner.kind == EntryKind.ACCEPTANCE else "withdrawn"
                    raise Conflict(
                        f"the proposal was already {verb} (notary entry {winner.seq})",
                        code="already_decided",
                        extra={
                            "winner": base64.b64encode(self._receipt(winner).to_bytes()).decode()
                        },
                    )
                expires = committed.expires_at_ms
                if kind == EntryKind.ACCEPTANCE and expires and self.store.now_ms() >= expires:
                    raise Conflict("the proposal has expired and cannot be accepted",
                                   code="expired")  # fmt: skip
            row = await self._append(session, submitter, kind, commitment, digest, 0)
            return self._receipt(row)

    async def deposit(
        self, submitter: int, commitment: bytes, key: bytes, release_at_ms: int
    ) -> None:
        """Hold a timed proposal's content key until `release_at_ms` (only its author may)."""
        async with self.store.write() as session:
            committed = await self._commitment(session, commitment)
            if committed is None:
                raise NotFound("no proposal with this commitment is notarised",
                               code="unknown_commitment")  # fmt: skip
            if committed.submitter_id != submitter:
                raise Forbidden("only the author deposits a proposal's key", code="not_the_author")
            held = await session.get(NotaryKeyRow, commitment)
            if held is None:
                session.add(
                    NotaryKeyRow(
                        subject=commitment,
                        key=key,
                        release_at_ms=release_at_ms,
                        submitter_id=submitter,
                    )
                )
            elif (held.key, held.release_at_ms) != (key, release_at_ms):
                raise Conflict("another key or release time is already deposited for this "
                               "proposal", code="key_already_deposited")  # fmt: skip

    async def release(self, reader: int, commitment: bytes) -> tuple[bytes, int]:
        """The content key, to the author or an addressee, once its time has come; never for a
        proposal withdrawn before then."""
        async with self.store.read() as session:
            held = await session.get(NotaryKeyRow, commitment)
            addressees = set(
                await session.scalars(
                    select(NotaryAddresseeRow.participant_id).where(
                        NotaryAddresseeRow.subject == commitment
                    )
                )
            )
            if held is not None and reader != held.submitter_id and reader not in addressees:
                raise Forbidden("only the author and the addressees read a proposal's key",
                                code="not_a_party")  # fmt: skip
            if held is None:
                raise NotFound("no key is deposited for this proposal", code="unknown_key")
            withdrawn = await session.scalar(
                select(NotaryEntryRow.at_ms).where(
                    NotaryEntryRow.subject == commitment,
                    NotaryEntryRow.kind == EntryKind.WITHDRAWAL,
                )
            )
        if withdrawn is not None and withdrawn < held.release_at_ms:
            raise Gone("the proposal was withdrawn before its reveal time; it is never revealed",
                       code="withdrawn")  # fmt: skip
        wait_ms = held.release_at_ms - self.store.now_ms()
        if wait_ms > 0:
            raise Conflict(
                "the proposal's reveal time has not come",
                code="not_yet_released",
                extra={"release_at_ms": held.release_at_ms},
                retry_after=max(1, -(-wait_ms // 1000)),
            )
        return held.key, held.release_at_ms

    async def _commitment(self, session: AsyncSession, commitment: bytes) -> NotaryEntryRow | None:
        row: NotaryEntryRow | None = await session.scalar(
            select(NotaryEntryRow).where(
                NotaryEntryRow.subject == commitment,
                NotaryEntryRow.kind == EntryKind.COMMITMENT,
            )
        )
        return row

    async def log(self, after: int, limit: int) -> list[NotaryReceipt]:
        async with self.store.read() as session:
            rows = await session.scalars(
                select(NotaryEntryRow)
                .where(NotaryEntryRow.seq > after)
                .order_by(NotaryEntryRow.seq)
                .limit(limit)
            )
            return [self._receipt(row) for row in rows]

    async def _lock(self, session: AsyncSession) -> None:
        if not is_sqlite(self.store.engine):
            await session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                  {"key": ADVISORY_LOCK})  # fmt: skip

    async def _append(
        self,
        session: AsyncSession,
        submitter: int,
        kind: EntryKind,
        subject: bytes,
        value: bytes,
        expires_at_ms: int,
    ) -> NotaryEntryRow:
        head = await session.scalar(
            select(NotaryEntryRow).order_by(NotaryEntryRow.seq.desc()).limit(1)
        )
        entry = next_entry(
            _entry(head) if head else None, self.store.now_ms(), kind, subject, value
        )
        receipt = notarise(self.key, self.relay_id, entry)
        row = NotaryEntryRow(
            seq=entry.seq,
            at_ms=entry.at_ms,
            kind=int(entry.kind),
            subject=entry.subject,
            value=entry.value,
            previous=entry.previous,
            signature=receipt.signature,
            submitter_id=submitter,
            expires_at_ms=expires_at_ms,
        )
        session.add(row)
        await session.flush()
        return row
