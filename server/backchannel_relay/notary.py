"""The relay's notary: sequences commitments and statement digests in a signed, hash-chained log.

The log and its receipts are the core's (`backchannel.proposals`, PROTOCOL.md §14.3); this module
keeps them in the database and enforces who may add what. Every append runs in one write
transaction that holds the log's single writer (SQLite's write lock, or a PostgreSQL advisory lock
when several relay processes share the database), so seqs stay contiguous and each entry chains to
the one before, whichever process appends it. The notary sees commitments and digests only, and
shows each participant in full only the entries about its own proposals that their submitters
may write to it directly (the rest as chain links).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from backchannel.identity import IdentityPublic
from backchannel.keys import SigningKeyPair
from backchannel.proposals import (
    EntryKind,
    NotaryEntry,
    NotaryLink,
    NotaryReceipt,
    Party,
    next_entry,
    notarise,
    notary_terms,
)

from .database import is_sqlite
from .errors import Conflict, Forbidden, Gone, NotFound
from .models import NotaryAddresseeRow, NotaryEntryRow, NotaryKeyRow, Participant
from .names import storable
from .store import ParticipantInfo, Store

ADVISORY_LOCK = 0x6263_6E6F_7461_7279  # "bcnotary": one log writer across relay processes
DECISIONS = (EntryKind.ACCEPTANCE, EntryKind.WITHDRAWAL)

Direct = Callable[[str], Awaitable[bool]]
"""Whether the participant of this name may write directly to the reader (the exercise policy):
only then does the reader see in full what that participant notarised."""


def _party(name: str, identity: bytes) -> Party:
    return Party(name, IdentityPublic.from_bytes(identity).keys)


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
        self,
        author: ParticipantInfo,
        commitment: bytes,
        addressees: Sequence[str],
        expires_at_ms: int,
        mediator: str | None = None,
    ) -> NotaryReceipt:
        """Notarise a proposal's commitment with the terms the notary enforces (its author,
        addressees in the order given, expiry and mediator), bound as the entry's value
        (`notary_terms`) so that every client can check them against the proposal. The same
        request again returns its receipt."""
        named = [*addressees, *([mediator] if mediator is not None else [])]
        async with self.store.write() as session:
            wanted = {name for name in named if storable(name)}
            found = {
                row.name: row
                for row in await session.scalars(
                    select(Participant).where(Participant.name.in_(wanted))
                )
            }
            missing = [name for name in named if name not in found]
            if missing:
                raise NotFound(f"no participant named {missing[0]!r}",
                               code="unknown_participant")  # fmt: skip
            terms = notary_terms(
                commitment,
                _party(author.name, author.identity),
                [_party(name, found[name].identity) for name in addressees],
                expires_at_ms,
                None if mediator is None else _party(mediator, found[mediator].identity),
            )
            await self._lock(session)
            existing = await self._commitment(session, commitment)
            if existing is not None:
                if existing.submitter_id != author.id:
                    raise Conflict("this commitment was notarised by someone else",
                                   code="already_committed")  # fmt: skip
                if existing.value != terms:
                    raise Conflict("this commitment was notarised with other addressees, "
                                   "another expiry or another mediator",
                                   code="already_committed")  # fmt: skip
                return self._receipt(existing)
            row = await self._append(
                session, author.id, EntryKind.COMMITMENT, commitment, terms, expires_at_ms
            )
            row.mediator_id = None if mediator is None else found[mediator].id
            session.add_all(
                NotaryAddresseeRow(subject=commitment, participant_id=found[name].id)
                for name in sorted(set(addressees))
            )
            return self._receipt(row)

    async def parties(self, commitment: bytes) -> tuple[str, list[str], str | None] | None:
        """The author, the addressees and the mediator (if any) of a notarised proposal, by
        name (None: unknown)."""
        async with self.store.read() as session:
            found = (
                await session.execute(
                    select(Participant.name, NotaryEntryRow.mediator_id)
                    .join(NotaryEntryRow, NotaryEntryRow.submitter_id == Participant.id)
                    .where(
                        NotaryEntryRow.subject == commitment,
                        NotaryEntryRow.kind == EntryKind.COMMITMENT,
                    )
                )
            ).first()
            if found is None:
                return None
            author, mediator_id = found
            mediator = None
            if mediator_id is not None:
                mediator = await session.scalar(
                    select(Participant.name).where(Participant.id == mediator_id)
                )
            addressees = await session.scalars(
                select(Participant.name)
                .join(NotaryAddresseeRow, NotaryAddresseeRow.participant_id == Participant.id)
                .where(NotaryAddresseeRow.subject == commitment)
                .order_by(Participant.name)
            )
            return author, list(addressees), mediator

    async def record(
        self,
        submitter: int,
        kind: EntryKind,
        commitment: bytes,
        digest: bytes,
        direct: Direct | None = None,
    ) -> NotaryReceipt:
        """Notarise a statement's digest about a committed proposal.

        Only the author withdraws, only an addressee accepts, and of the acceptance and the
        withdrawal of one proposal the one sequenced first stands: the other is refused with a
        conflict that carries the winner's receipt, if its submitter may write to the caller
        directly (`direct`; else the winner's value would pass between them unmediated).
        """
        if kind == EntryKind.COMMITMENT:
            raise ValueError("commitments go through commit()")
        lost: tuple[NotaryReceipt, int, str] | None = None
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
                    name = await session.scalar(
                        select(Participant.name).where(Participant.id == winner.submitter_id)
                    )
                    lost = (self._receipt(winner), winner.submitter_id, name or "")
                expires = committed.expires_at_ms
                if lost is None and kind == EntryKind.ACCEPTANCE and expires and (
                    self.store.now_ms() >= expires
                ):
                    raise Conflict("the proposal has expired and cannot be accepted",
                                   code="expired")  # fmt: skip
            if lost is None:
                row = await self._append(session, submitter, kind, commitment, digest, 0)
                return self._receipt(row)
        first, by, name = lost  # outside the write transaction: `direct` may read the store
        verb = "accepted" if first.entry.kind == EntryKind.ACCEPTANCE else "withdrawn"
        shown = by == submitter or direct is None or await direct(name)
        raise Conflict(
            f"the proposal was already {verb} (notary entry {first.entry.seq})",
            code="already_decided",
            extra={"winner": base64.b64encode(first.to_bytes()).decode()} if shown else {},
        )

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

    async def log(
        self, reader: int, after: int, limit: int, direct: Direct | None = None
    ) -> list[NotaryReceipt | NotaryLink]:
        """The log from seq `after + 1`: as receipts the entries about proposals `reader`
        authored, is addressed by or mediates, made by itself or by someone who may write to it
        directly (`direct`), as links (seq, content hash, previous) all others. A link is
        enough to check the chain and shows nothing anyone wrote: the log carries nothing from
        one participant to another that the policy has not let through; what a mediated party
        notarised reaches the other through the mediator (PROTOCOL.md §14.3)."""
        async with self.store.read() as session:
            rows = list(
                await session.scalars(
                    select(NotaryEntryRow)
                    .where(NotaryEntryRow.seq > after)
                    .order_by(NotaryEntryRow.seq)
                    .limit(limit)
                )
            )
            subjects = {row.subject for row in rows}
            mine = set(
                await session.scalars(
                    select(NotaryEntryRow.subject).where(
                        NotaryEntryRow.subject.in_(subjects),
                        NotaryEntryRow.kind == EntryKind.COMMITMENT,
                        NotaryEntryRow.submitter_id == reader,
                    )
                )
            )
            mine.update(
                await session.scalars(
                    select(NotaryAddresseeRow.subject).where(
                        NotaryAddresseeRow.subject.in_(subjects),
                        NotaryAddresseeRow.participant_id == reader,
                    )
                )
            )
            mine.update(
                await session.scalars(
                    select(NotaryEntryRow.subject).where(
                        NotaryEntryRow.subject.in_(subjects),
                        NotaryEntryRow.kind == EntryKind.COMMITMENT,
                        NotaryEntryRow.mediator_id == reader,
                    )
                )
            )
            others = {row.submitter_id for row in rows if row.subject in mine} - {reader}
            names: dict[int, str] = {}
            if others:
                found = await session.execute(
                    select(Participant.id, Participant.name).where(Participant.id.in_(others))
                )
                names = {submitter: name for submitter, name in found.tuples()}
        shown = {reader: True}
        for submitter, name in names.items():
            shown[submitter] = direct is None or await direct(name)
        return [
            self._receipt(row)
            if row.subject in mine and shown.get(row.submitter_id, False)
            else _entry(row).link()
            for row in rows
        ]

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
