"""Sealed proposals on the participant's side: propose, answer, follow, export (PRODUCT.md §4-5).

The rules live in the core (`backchannel.proposals`, `backchannel.records`); this module moves
the bytes. Every statement of ours is stored before it is notarised and notarised before it is
sent, so a crash or a lost connection at any point is finished by the next command, with the
same bytes (the notary answers a repeated statement with its first receipt). A statement the
notary refuses (the other side's withdrawal or acceptance was sequenced first) is dropped and the
refusal shown with the winner's entry. Status is never stored: it is replayed from the notarised
statements, in the notary's order, so both sides compute the same one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from backchannel import ticks
from backchannel.agreements import Agreement, Clause, Decision, Outcome, clause_of, decide
from backchannel.content import (
    ProposalContent,
    StatementContent,
    decode_content,
    lock_proposal,
)
from backchannel.errors import BackchannelError, ProposalStateError
from backchannel.identity import IdentityPublic, format_fingerprint
from backchannel.keys import SigningPublicKey
from backchannel.primitives import AEAD_NONCE_SIZE, sha256
from backchannel.proposals import (
    NotaryEntry,
    NotaryLink,
    NotaryReceipt,
    Party,
    Proposal,
    Reveal,
    SealedProposal,
    SignedStatement,
    Statement,
    StatementKind,
    Status,
    entry_kind,
    seal,
    sign_statement,
)
from backchannel.records import Export, Notarised, ProposalRecord

from .errors import CliError, RelayRefusedError
from .ids import resolve
from .localstore import Message, ProposalRow, StatementRow
from .offrecord import ACCEPTED, OPENED, WITHDRAWN, OffTheRecord, clause_view
from .participant_api import ParticipantApi
from .relay import RelayRequestError, b64, unb64

if TYPE_CHECKING:
    from .exercising import Exercise


class Participant(ParticipantApi, Protocol):
    """What proposals need of the participant: the exercise's routes and off-the-record
    clauses (which an agreement may weigh) as well."""

    exercise: Exercise
    offrecord: OffTheRecord


NOTARY_SECRET = "notary"
ENTRY_NAMES = {1: "commitment", 2: "acceptance", 3: "withdrawal", 4: "statement"}
CLAUSE_OUTCOME = {OPENED: Outcome.OPEN, ACCEPTED: Outcome.ACCEPTED, WITHDRAWN: Outcome.FAILED}
"""An off-the-record clause's state as the agreements core weighs it: withdrawn fails."""


@dataclass(frozen=True, slots=True)
class Notary:
    relay_id: bytes
    key: SigningPublicKey

    def check(self, receipt: NotaryReceipt) -> None:
        if receipt.relay_id != self.relay_id:
            raise BackchannelError("the notary receipt is from another relay")
        receipt.verify(self.key)


def now_ms() -> int:
    return int(time.time() * 1000)


def short(digest: str) -> str:
    return digest[:12]


class Negotiation:
    """One participant's proposals (held by `Participant.negotiation`)."""

    def __init__(self, participant: Participant) -> None:
        self.p = participant
        self.notes: list[str] = []
        """Refusals met while finishing earlier work; the CLI prints them."""

    # --- the relay's notary ----------------------------------------------------------------------

    async def notary(self) -> Notary:
        """The relay's notary key, pinned on first use like a participant's identity key."""
        with self.p.store.transaction() as db:
            pinned = self.p.store.get_secret(db, NOTARY_SECRET)
        if pinned is None:
            info = await self.p._call(self.p.relay.info())
            try:
                pinned = unb64(info["relay_id"]) + unb64(info["notary_key"])
            except (KeyError, TypeError, ValueError):
                raise CliError(
                    "the relay does not run a notary (no notary_key in /v1/info)"
                ) from None
            with self.p.store.transaction() as db:
                self.p.store.put_secret(db, NOTARY_SECRET, pinned)
        return Notary(pinned[:16], SigningPublicKey.from_bytes(pinned[16:]))

    def _pinned(self, db: Any) -> Notary | None:
        pinned = self.p.store.get_secret(db, NOTARY_SECRET)
        return Notary(pinned[:16], SigningPublicKey.from_bytes(pinned[16:])) if pinned else None

    def _receipt(self, notary: Notary, answer: Any) -> NotaryReceipt:
        try:
            receipt = NotaryReceipt.from_bytes(unb64(answer["receipt"]))
            notary.check(receipt)
        except (BackchannelError, KeyError, TypeError, ValueError) as exc:
            raise CliError(f"the relay's notary receipt does not verify: {exc}") from None
        return receipt

    # --- proposing -----------------------------------------------------------------------------

    async def propose(
        self,
        to: str,
        title: str,
        terms: Sequence[str],
        conditions: Sequence[str] = (),
        expires_at_ms: int = 0,
        reveal_at_ms: int = 0,
        answers: str | None = None,
        via: str | None = None,
        simultaneous: bool = False,
        allow_understood: bool = False,
    ) -> dict[str, Any]:
        """`allow_understood`: every condition may be met by a clause only understood off the
        record (PRODUCT.md §4); such a proposal may then bind on a clause no record proves.
        `via` with `simultaneous`: one side of a simultaneous exchange, sealed to that
        mediator, who releases it to `to` only together with `to`'s offer (PRODUCT.md §4).
        Without: where the exercise routes us to `to` through a mediator, the proposal names it
        (and so do the notary's terms, PROTOCOL.md §14.4) and travels through it blind."""
        if to == self.p.name:
            raise CliError("you cannot make a proposal to yourself")
        if simultaneous and (via is None or reveal_at_ms):
            raise CliError("--simultaneous goes with --via MEDIATOR, and not with --reveal-at")
        if via in (to, self.p.name):
            raise CliError("the mediator of an exchange is a third participant")
        route = await self.p.exercise.via(to)
        if not simultaneous:
            if via is not None and via != route:
                raise CliError(
                    "--via MEDIATOR is for a simultaneous exchange: add --simultaneous"
                    if route is None
                    else f"the exercise routes your proposals to {to} through {route}, not {via}"
                )
            via = route
            if via is not None and reveal_at_ms:
                raise CliError(
                    f"--reveal-at needs a direct channel to {to}: the notary would hand them "
                    f"the key itself, past {via}, who carries what you send them"
                )
        contact = await self.p.contact(to)
        peer = IdentityPublic.from_bytes(contact.identity)
        mediator = None
        if via is not None:
            mediator = Party(
                via, IdentityPublic.from_bytes((await self.p.contact(via)).identity).keys
            )
        notary = await self.notary()
        condition_digests = tuple(self._condition(c, allow_understood) for c in conditions)
        proposal = Proposal(
            os.urandom(16),
            Party.of(self.p.name, self.p.me.identity.public),
            (Party(to, peer.keys),),
            title,
            tuple(terms),
            now_ms(),
            expires_at_ms,
            conditions=condition_digests,
            answers=bytes.fromhex(answers) if answers else None,
            allow_understood=condition_digests if allow_understood else (),
            reveal=(
                Reveal.SIMULTANEOUS if simultaneous
                else Reveal.AT_TIME if reveal_at_ms else Reveal.IMMEDIATE
            ),
            reveal_at_ms=reveal_at_ms,
            mediator=mediator,
            exchange_id=os.urandom(16) if simultaneous else None,
        )  # fmt: skip
        try:
            sealed = seal(self.p.me.identity, proposal, os.urandom(32))
        except ValueError as exc:
            raise CliError(str(exc)) from None
        body: dict[str, Any] = {"commitment": b64(sealed.commitment), "addressees": [to]}
        if expires_at_ms:
            body["expires_at_ms"] = expires_at_ms
        if mediator is not None:
            body["via"] = mediator.name
        answer = await self.p.authed(
            lambda: self.p.relay.request("POST", "/v1/notary/commitments", body)
        )
        receipt = self._receipt(notary, answer)
        try:  # the terms the notary will enforce are the proposal's own (PROTOCOL.md §14.3)
            ProposalRecord(sealed, receipt).check()
        except BackchannelError as exc:
            raise CliError(f"the relay's notary receipt does not fit the proposal: {exc}") from None
        if reveal_at_ms:
            key = os.urandom(32)
            deposit = {
                "commitment": b64(sealed.commitment),
                "key": b64(key),
                "release_at_ms": reveal_at_ms,
            }
            await self.p.authed(lambda: self.p.relay.request("POST", "/v1/notary/keys", deposit))
            locked = lock_proposal(sealed, key, os.urandom(AEAD_NONCE_SIZE))
            content = ProposalContent(receipt, sealed.digest, None, reveal_at_ms, locked)
        else:
            content = ProposalContent(receipt, sealed.digest, sealed)
        message_id = os.urandom(16)
        digest = sealed.digest.hex()

        def store(db: Any) -> None:
            db.add(
                ProposalRow(
                    digest=digest,
                    commitment=sealed.commitment.hex(),
                    direction="out",
                    peer=to,
                    receipt=receipt.to_bytes(),
                    sealed=self.p.store.vault.seal(f"proposal:{digest}", sealed.to_bytes()),
                    locked=None,
                    reveal_at=reveal_at_ms,
                    stored_at=now_ms(),
                    message_id=message_id.hex(),
                )
            )

        carrier, carrier_keys = to, peer  # through the exercise's mediator, blind (`queue`)
        if simultaneous:  # sealed to the mediator, who holds it
            assert via is not None
            carrier = via
            carrier_keys = IdentityPublic.from_bytes((await self.p.contact(via)).identity)
        await self.p.queue(
            carrier,
            carrier_keys,
            content.to_content(),
            message_id,
            _summary(sealed.proposal, digest)
            + (f" (sealed to {via} for a simultaneous exchange)" if simultaneous else ""),
            kind="proposal",
            sent_at=proposal.created_at_ms,
            also=store,
            subject=digest,
        )
        await self._flush(f"the proposal is saved as {short(digest)}", message_id.hex())
        return self.view(digest)

    # --- statements ------------------------------------------------------------------------------

    async def state(
        self,
        ident: str,
        kind: StatementKind,
        reason: str = "",
        accepted_with: Sequence[str] = (),
        counter: str | None = None,
        sync: bool = True,
    ) -> dict[str, Any]:
        """Make, notarise and send one statement about a proposal."""
        if sync:
            await self.p.sync()
        now = now_ms()
        with self.p.store.transaction() as db:
            row = self._find(db, ident)
            together = tuple(bytes.fromhex(self._find(db, w).digest) for w in accepted_with)
            me = Party.of(self.p.name, self.p.me.identity.public)
            statement = Statement(
                kind,
                bytes.fromhex(row.digest),
                bytes.fromhex(row.commitment),
                me,
                now,
                together,
                bytes.fromhex(counter) if counter else None,
                reason,
            )
            try:
                signed = sign_statement(self.p.me.identity, statement)
                signed_bytes, statement_digest = signed.to_bytes(), statement.digest().hex()
            except ValueError as exc:
                raise CliError(str(exc)) from None
            record = self._check(db, row, statement)
            if record is None and kind != StatementKind.DELIVERED:
                raise CliError(
                    f"proposal {short(row.digest)} is sealed until its reveal time; "
                    "it can be answered once it opens"
                )
            if kind == StatementKind.WITHDRAWN:
                recipients = [p.name for p in record.sealed.proposal.addressees] if record else []
            else:
                recipients = [row.peer]
            db.add(
                StatementRow(
                    digest=statement_digest,
                    proposal=row.digest,
                    direction="out",
                    signed=signed_bytes,
                    receipt=None,
                    seq=None,
                    recipients=",".join(recipients),
                )
            )
            digest = row.digest
        refused = await self.advance(only=statement_digest)
        if refused:
            raise CliError(refused[0])
        await self._flush("the statement is notarised")
        return self.view(digest)

    def _check(self, db: Any, row: ProposalRow, statement: Statement) -> ProposalRecord | None:
        """Refuse, with the lifecycle's reason, a statement that may not follow the record."""
        record = self._record(db, row)
        if record is None:
            return None
        accepted = self._accepted(db, statement.at_ms)
        replayed = record.replay(statement.at_ms, accepted)
        try:
            replayed.record.check(statement, statement.at_ms, accepted)
        except ProposalStateError as exc:
            what = f"{short(row.digest)} {_verb(statement.kind)}"
            raise CliError(f"cannot mark {what}: {exc}") from None
        return record

    def check_may(self, ident: str, kind: StatementKind) -> None:
        """Fail now, before other work, if we may not make a `kind` statement about `ident`."""
        with self.p.store.transaction() as db:
            row = self._find(db, ident)
            me = Party.of(self.p.name, self.p.me.identity.public)
            statement = Statement(
                kind, bytes.fromhex(row.digest), bytes.fromhex(row.commitment), me, now_ms()
            )
            if self._check(db, row, statement) is None:
                raise CliError(f"proposal {short(row.digest)} is sealed until its reveal time")

    async def advance(self, only: str | None = None) -> list[str]:
        """Notarise our statements that have no receipt yet, and queue notarised ones to whoever
        has not been sent them. Returns the notary's refusals (the statement is then dropped)."""
        notary = await self.notary()
        refusals: list[str] = []
        with self.p.store.transaction() as db:
            todo = [
                (r.digest, r.proposal, r.signed, r.receipt, r.recipients)
                for r in db.query(StatementRow).filter(
                    StatementRow.direction == "out", StatementRow.recipients != ""
                )
                if only is None or r.digest == only
            ]
        for digest, proposal_digest, signed_bytes, receipt_bytes, recipients in todo:
            signed = SignedStatement.from_bytes(signed_bytes)
            statement = signed.statement
            if receipt_bytes is None:
                body = {
                    "commitment": b64(statement.proposal_commitment),
                    "kind": ENTRY_NAMES[entry_kind(statement.kind)],
                    "digest": b64(statement.digest()),
                }
                try:
                    answer = await self.p.authed(
                        partial(self.p.relay.request, "POST", "/v1/notary/statements", body)
                    )
                except RelayRefusedError as exc:
                    refusals.append(self._refusal(notary, exc, statement))
                    with self.p.store.transaction() as db:
                        row = db.get(StatementRow, digest)
                        if row is not None:
                            db.delete(row)
                    continue
                receipt = self._receipt(notary, answer)
                try:
                    Notarised(signed, receipt).check(statement.proposal_commitment)
                except BackchannelError as exc:
                    raise CliError(
                        f"the notary's receipt is not for our statement: {exc}"
                    ) from None
                with self.p.store.transaction() as db:
                    row = _get(db, StatementRow, digest)
                    row.receipt, row.seq = receipt.to_bytes(), receipt.entry.seq
                receipt_bytes = receipt.to_bytes()
            content = StatementContent(signed, NotaryReceipt.from_bytes(receipt_bytes)).to_content()
            for name in [n for n in recipients.split(",") if n]:
                contact = await self.p.contact(name)

                def sent(db: Any, name: str = name, digest: str = digest) -> None:
                    row = _get(db, StatementRow, digest)
                    row.recipients = ",".join(n for n in row.recipients.split(",") if n != name)

                await self.p.queue(
                    name,
                    IdentityPublic.from_bytes(contact.identity),
                    content,
                    os.urandom(16),
                    f"{_verb(statement.kind)} proposal {short(proposal_digest)}"
                    + (f": {statement.reason}" if statement.reason else ""),
                    kind="statement",
                    sent_at=statement.at_ms,
                    also=sent,
                    subject=proposal_digest,
                )
        return refusals

    def take_notes(self) -> list[str]:
        notes, self.notes = self.notes, []
        return notes

    def _refusal(self, notary: Notary, exc: RelayRefusedError, statement: Statement) -> str:
        cause = exc.error
        what = f"{_verb(statement.kind)} refused"
        if not isinstance(cause, RelayRequestError):
            return f"{what}: {exc.message}"
        if cause.code == "already_decided" and "winner" in cause.body:
            try:
                winner = NotaryReceipt.from_bytes(unb64(cause.body["winner"]))
                notary.check(winner)
                kind = ENTRY_NAMES.get(int(winner.entry.kind), "?")
                return (
                    f"{what}: the notary sequenced the {kind} first (entry {winner.entry.seq}); "
                    "that one stands"
                )
            except (BackchannelError, ValueError):
                pass
        return f"{what}: {exc.message}"

    async def _flush(self, saved: str, mine: str | None = None) -> None:
        """Send what waits; a refusal of `mine` (the proposal just made) is an error, and so is
        the relay being out of reach (the rest is told as notes)."""
        flushed = await self.p.flush_outbox(mine=[mine] if mine else (), what="the proposal")
        if flushed.waiting is not None and mine is None:
            raise CliError(f"{flushed.waiting}; {saved} and goes out with your next command")

    # --- receiving (inside the transaction that decrypted it) -----------------------------------

    def receive(
        self,
        db: Any,
        envelope_id: str,
        sender: str,
        peer: IdentityPublic | None,
        content: ProposalContent | StatementContent,
        author: Party | None = None,
        note: str = "",
    ) -> None:
        """Check and store a proposal or a statement; raises `BackchannelError` if it is bad.

        `author` (with `peer` None): a proposal its mediator released to us in a simultaneous
        exchange (checked by the caller); `note` says so in the inbox."""
        notary = self._pinned(db)
        if notary is None:
            raise BackchannelError("the relay's notary key is not pinned yet")
        if author is None:
            assert peer is not None
            author = Party(sender, peer.keys)
        sender_party = author
        if isinstance(content, StatementContent):
            self._receive_statement(db, envelope_id, sender_party, notary, content)
            return
        notary.check(content.receipt)
        digest = content.digest.hex()
        if content.sealed is not None:
            record = ProposalRecord(content.sealed, content.receipt)
            record.check(notary.key)
            self._check_addressed(content.sealed, sender_party)
            summary = _summary(content.sealed.proposal, digest)
        else:
            summary = f"[sealed until {_when(content.reveal_at_ms)}] (proposal {short(digest)})"
        if db.get(ProposalRow, digest) is None:
            db.add(
                ProposalRow(
                    digest=digest,
                    commitment=content.commitment.hex(),
                    direction="in",
                    peer=sender,
                    receipt=content.receipt.to_bytes(),
                    sealed=(
                        self.p.store.vault.seal(f"proposal:{digest}", content.sealed.to_bytes())
                        if content.sealed
                        else None
                    ),
                    locked=(
                        None
                        if content.sealed
                        else self.p.store.vault.seal(f"locked:{digest}", content.to_content())
                    ),
                    reveal_at=content.reveal_at_ms,
                    stored_at=now_ms(),
                    message_id=envelope_id,
                )
            )
        if note:
            summary = f"[{note}]\n{summary}"
        self._inbox(db, envelope_id, sender, "proposal", summary, content.receipt.entry.at_ms,
                    digest)  # fmt: skip

    def _check_addressed(self, sealed: SealedProposal, sender: Party) -> None:
        me = Party.of(self.p.name, self.p.me.identity.public)
        if sealed.proposal.author != sender:
            raise BackchannelError("the proposal names another author than its sender")
        if me not in sealed.proposal.addressees:
            raise BackchannelError("the proposal is addressed to someone else")

    def _receive_statement(
        self, db: Any, envelope_id: str, sender: Party, notary: Notary, content: StatementContent
    ) -> None:
        statement = content.signed.statement
        row = db.get(ProposalRow, statement.proposal_digest.hex())
        if row is None or row.commitment != statement.proposal_commitment.hex():
            raise BackchannelError("a statement about a proposal this profile does not hold")
        if statement.author != sender:
            raise BackchannelError("the statement names another author than its sender")
        notary.check(content.receipt)
        Notarised(content.signed, content.receipt).check(statement.proposal_commitment)
        digest = statement.digest().hex()
        if db.get(StatementRow, digest) is None:
            db.add(
                StatementRow(
                    digest=digest,
                    proposal=row.digest,
                    direction="in",
                    signed=content.signed.to_bytes(),
                    receipt=content.receipt.to_bytes(),
                    seq=content.receipt.entry.seq,
                    recipients="",
                )
            )
        text = f"{_verb(statement.kind)} your proposal {short(row.digest)}"
        if statement.kind == StatementKind.WITHDRAWN:
            text = f"withdrew proposal {short(row.digest)}"
        if statement.reason:
            text += f": {statement.reason}"
        if statement.counter is not None:
            text += f" (the counter-proposal is {short(statement.counter.hex())})"
        self._inbox(db, envelope_id, sender.name, "statement", text, statement.at_ms,
                    statement.proposal_digest.hex())  # fmt: skip

    def _inbox(
        self, db: Any, envelope_id: str, sender: str, kind: str, text: str, at: int, subject: str
    ) -> None:
        self.p.store.add_message(
            db,
            text,
            id=envelope_id,
            direction="in",
            peer=sender,
            kind=kind,
            sent_at=at,
            stored_at=now_ms(),
            status="delivered",
            verified="signed",
            in_reply_to=None,
            subject=subject,
        )

    # --- catching up -----------------------------------------------------------------------------

    async def catch_up(self) -> None:
        """Open timed proposals whose time has come, acknowledge delivery of new ones, and
        finish statements an interrupted command left behind. Refusals go to `notes`."""
        await self._open_due()
        with self.p.store.transaction() as db:
            received = []
            for row in db.query(ProposalRow).filter(ProposalRow.direction == "in"):
                stated = self._made(db, row.digest, StatementKind.DELIVERED)
                status = None if stated else self._status(db, row)  # replayed only if it may count
                received.append(ticks.Received(row.digest, stated, status))
        for digest in ticks.deliveries_due(received):
            await self._auto(digest, StatementKind.DELIVERED)
        self.notes += await self.advance()

    async def opened(self, message_ids: Sequence[str]) -> None:
        """State that the proposals these displayed messages carried were opened (once each)."""
        if not message_ids:
            return
        with self.p.store.transaction() as db:
            due = [
                row.digest
                for row in db.query(ProposalRow).filter(
                    ProposalRow.message_id.in_(message_ids),
                    ProposalRow.direction == "in",
                    ProposalRow.sealed.is_not(None),
                )
                if not self._made(db, row.digest, StatementKind.OPENED)
            ]
        for digest in due:
            await self._auto(digest, StatementKind.OPENED)

    async def _auto(self, digest: str, kind: StatementKind) -> None:
        try:
            await self.state(digest, kind, sync=False)
        except CliError as exc:
            self.notes.append(exc.message)

    def _made(self, db: Any, digest: str, kind: StatementKind) -> bool:
        for row in db.query(StatementRow).filter(
            StatementRow.proposal == digest, StatementRow.direction == "out"
        ):
            if SignedStatement.from_bytes(row.signed).statement.kind == kind:
                return True
        return False

    def next_reveal(self) -> int | None:
        """When the next timed proposal held here opens (ms), if any."""
        return ticks.next_reveal(self._locked())

    def _locked(self) -> list[ticks.Locked]:
        """The timed proposals held sealed until their reveal time."""
        with self.p.store.transaction() as db:
            return [ticks.Locked(row.digest, row.reveal_at) for row in db.query(ProposalRow)
                    .filter(ProposalRow.locked.is_not(None))]  # fmt: skip

    async def _open_due(self) -> None:
        for digest in ticks.reveals_due(self._locked(), now_ms()):
            with self.p.store.transaction() as db:
                row = _get(db, ProposalRow, digest)
                assert row.locked is not None
                content = decode_content(self.p.store.vault.open(f"locked:{digest}", row.locked))
                assert isinstance(content, ProposalContent)
            try:
                answer = await self.p.authed(
                    partial(self.p.relay.request, "GET", f"/v1/notary/keys/{row.commitment}")
                )
            except RelayRefusedError as exc:
                if isinstance(exc.error, RelayRequestError) and exc.error.code == "withdrawn":
                    with self.p.store.transaction() as db:
                        _get(db, ProposalRow, digest).locked = None  # never to be opened
                    self.notes.append(
                        f"proposal {short(digest)} was withdrawn before its reveal time; "
                        "it will never open"
                    )
                else:
                    self.notes.append(f"proposal {short(digest)} stays sealed: {exc.message}")
                continue
            try:
                sealed = content.unlock(unb64(answer["key"]))
                ProposalRecord(sealed, content.receipt).check()
                self._check_addressed(sealed, Party(row.peer, sealed.proposal.author.keys))
                contact = await self.p.contact(row.peer)
                if sealed.proposal.author.keys != IdentityPublic.from_bytes(contact.identity).keys:
                    raise BackchannelError(
                        "the proposal was signed by another key than its sender's"
                    )
            except (BackchannelError, KeyError, TypeError, ValueError) as exc:
                self.notes.append(f"proposal {short(digest)} does not open: {exc}")
                continue
            with self.p.store.transaction() as db:
                row = _get(db, ProposalRow, digest)
                row.sealed = self.p.store.vault.seal(f"proposal:{digest}", sealed.to_bytes())
                row.locked = None
                message = db.get(Message, row.message_id)
                if message is not None:
                    message.text = self.p.store.vault.seal(
                        f"message:{message.id}", _summary(sealed.proposal, digest).encode()
                    )
                    message.shown = False  # shown again, now readable

    # --- reading ---------------------------------------------------------------------------------

    def _condition(self, ident: str, allow_understood: bool) -> bytes:
        """A proposal's digest for `--if`, or an off-the-record clause's where allowed."""
        clause = self.p.offrecord.find_clause(ident)
        if clause is None:
            with self.p.store.transaction() as db:
                return bytes.fromhex(self._find(db, ident).digest)
        if not allow_understood:
            raise CliError(
                f"{ident} is a clause only understood off the record: a proposal counts it "
                "only with --allow-understood"
            )
        return clause[1].digest()

    def _find(self, db: Any, ident: str) -> ProposalRow:
        """A proposal by the ID rule (`ids.py`): its digest, or the message that carried it."""
        found = resolve(db, ident, "proposal")
        return _get(db, ProposalRow, found.id)

    def _record(self, db: Any, row: ProposalRow) -> ProposalRecord | None:
        if row.sealed is None:
            return None
        sealed = SealedProposal.from_bytes(
            self.p.store.vault.open(f"proposal:{row.digest}", row.sealed)
        )
        statements = tuple(
            Notarised(SignedStatement.from_bytes(s.signed), NotaryReceipt.from_bytes(s.receipt))
            for s in db.query(StatementRow).filter(
                StatementRow.proposal == row.digest, StatementRow.receipt.is_not(None)
            )
        )
        return ProposalRecord(sealed, NotaryReceipt.from_bytes(row.receipt), statements)

    def _accepted(self, db: Any, now: int) -> dict[bytes, int]:
        """Digests of the proposals accepted so far, with the notary seq of their acceptance."""
        records = [r for r in (self._record(db, row) for row in db.query(ProposalRow)) if r]
        accepted: dict[bytes, int] = {}
        for _ in range(len(records) + 1):
            found = {}
            for record in records:
                replayed = record.replay(now, accepted)
                if replayed.status == Status.ACCEPTED:
                    found[record.digest] = replayed.decided_at_seq
            if found == accepted:
                break
            accepted = found
        return accepted

    def _status(self, db: Any, row: ProposalRow) -> Status:
        record = self._record(db, row)
        if record is None:
            return Status.SEALED
        now = now_ms()
        return record.replay(now, self._accepted(db, now)).status

    def _agreements(
        self,
        db: Any,
        now: int,
        accepted: dict[bytes, int],
        understood: Sequence[tuple[str, Proposal, str]],
    ) -> dict[bytes, Decision]:
        """Bound, void, pending or understood, for every proposal held here and every clause
        of an open off-the-record channel (PRODUCT.md §4)."""
        clauses = [
            Clause(p.digest(), CLAUSE_OUTCOME[state], (), off_record=True)
            for _, p, state in understood
        ]
        for row in db.query(ProposalRow):
            record = self._record(db, row)
            if record is not None:
                status = record.replay(now, accepted).status
                clauses.append(clause_of(record.sealed.proposal, status))
        return decide(clauses)

    def views(self) -> list[dict[str, Any]]:
        """Every proposal, then every clause of an open off-the-record channel."""
        understood = self.p.offrecord.clauses()
        with self.p.store.transaction() as db:
            rows = list(db.query(ProposalRow).order_by(ProposalRow.stored_at))
            now = now_ms()
            accepted = self._accepted(db, now)
            decisions = self._agreements(db, now, accepted, understood)
            views = [self._view(db, row, accepted, decisions) for row in rows]
        return views + [clause_view(*u, self.p.name) for u in understood]

    def view(self, ident: str) -> dict[str, Any]:
        understood = self.p.offrecord.clauses()
        with self.p.store.transaction() as db:
            now = now_ms()
            accepted = self._accepted(db, now)
            decisions = self._agreements(db, now, accepted, understood)
            return self._view(db, self._find(db, ident), accepted, decisions)

    def _view(
        self,
        db: Any,
        row: ProposalRow,
        accepted: dict[bytes, int],
        decisions: Mapping[bytes, Decision],
    ) -> dict[str, Any]:
        now = now_ms()
        receipt = NotaryReceipt.from_bytes(row.receipt)
        message = db.get(Message, row.message_id)
        view: dict[str, Any] = {
            "id": row.digest,
            "digest": row.digest,
            "commitment": row.commitment,
            "from": self.p.name if row.direction == "out" else row.peer,
            "to": [self.p.name] if row.direction == "in" else [row.peer],
            "direction": row.direction,
            "message": row.message_id,
            "relay": message.status if message is not None and row.direction == "out" else None,
            "notary": {"seq": receipt.entry.seq, "notarised_at": receipt.entry.at_ms},
            "reveal_at": row.reveal_at or None,
        }
        record = self._record(db, row)
        if record is None:
            pending = [
                _history_item(
                    Notarised(
                        SignedStatement.from_bytes(s.signed), NotaryReceipt.from_bytes(s.receipt)
                    ),
                    True,
                    "",
                )
                for s in db.query(StatementRow).filter(
                    StatementRow.proposal == row.digest, StatementRow.receipt.is_not(None)
                )
            ]
            withdrawn = any(item["kind"] == "withdrawn" for item in pending)
            view.update(
                title=None,
                terms=[],
                status="withdrawn" if withdrawn else "sealed",
                agreement=Agreement.NONE.value,
                agreement_note=None,
                allow_understood=[],
                history=pending,
                signature="not yet opened",
                expires_at=None,
                conditions=[],
                answers=None,
            )
            return view
        proposal = record.sealed.proposal
        replayed = record.replay(now, accepted)
        decision = decisions.get(record.digest, Decision(Agreement.NONE))
        view.update(
            {
                "from": proposal.author.name,
                "to": [a.name for a in proposal.addressees],
                "title": proposal.title,
                "terms": list(proposal.terms),
                "status": replayed.status.name.lower(),
                "agreement": decision.agreement.value,
                "agreement_note": decision.reason or None,
                "signature": "verified",
                "expires_at": proposal.expires_at_ms or None,
                "conditions": [c.hex() for c in proposal.conditions],
                "allow_understood": [c.hex() for c in proposal.allow_understood],
                "answers": proposal.answers.hex() if proposal.answers else None,
                "history": [
                    _history_item(s.notarised, s.effective, s.note) for s in replayed.steps
                ],
            }
        )
        return view

    def export(self, ident: str) -> dict[str, Any]:
        """The proposal's record with those of the proposals it depends on or answers."""
        with self.p.store.transaction() as db:
            notary = self._pinned(db)
            if notary is None:
                raise CliError("no notary key is pinned in this profile; run `backchannel inbox`")
            queue = [self._find(db, ident).digest]
            records: list[ProposalRecord] = []
            seen: set[str] = set()
            while queue:
                digest = queue.pop(0)
                if digest in seen:
                    continue
                seen.add(digest)
                row = db.get(ProposalRow, digest)
                record = self._record(db, row) if row is not None else None
                if record is None:
                    if not records:
                        raise CliError(f"proposal {short(digest)} is still sealed")
                    continue
                records.append(record)
                proposal = record.sealed.proposal
                queue += [c.hex() for c in proposal.conditions]
                if proposal.answers:
                    queue.append(proposal.answers.hex())
        return Export(notary.key.raw, tuple(records)).to_json()

    async def check_log(self) -> dict[str, Any]:
        """Fetch the whole notary log, check its chain and signatures, and that every receipt
        this profile holds is in it unchanged. The relay shows the entries about our own
        proposals as receipts and every other entry as a link (PROTOCOL.md §14.3): the chain is
        checked whole all the same, and a receipt we hold matches its link."""
        from backchannel.proposals import verify_log

        notary = await self.notary()
        chain: list[NotaryEntry | NotaryLink] = []
        own = 0
        while True:
            params = {"after": str(len(chain)), "limit": "500"}
            page = await self.p.authed(
                partial(self.p.relay.request, "GET", "/v1/notary/log", params=params)
            )
            for item in page["entries"]:
                if "receipt" in item:
                    chain.append(self._receipt(notary, item).entry)
                    own += 1
                    continue
                try:
                    chain.append(NotaryLink.from_bytes(unb64(item["link"])))
                except (BackchannelError, KeyError, TypeError, ValueError) as exc:
                    raise CliError(f"the relay's notary log holds a bad link: {exc}") from None
            if not page["more"] or not page["entries"]:
                break
        try:
            verify_log(chain)
        except BackchannelError as exc:
            raise CliError(f"the notary log is broken: {exc}") from None
        links = {e.seq: e if isinstance(e, NotaryLink) else e.link() for e in chain}
        with self.p.store.transaction() as db:
            held = [NotaryReceipt.from_bytes(r.receipt) for r in db.query(ProposalRow)]
            held += [
                NotaryReceipt.from_bytes(s.receipt)
                for s in db.query(StatementRow)
                if s.receipt is not None
            ]
        missing = [r.entry.seq for r in held if links.get(r.entry.seq) != r.entry.link()]
        if missing:
            raise CliError(
                f"the notary log does not hold {len(missing)} receipt(s) this profile holds "
                f"(entries {', '.join(map(str, sorted(missing)[:5]))}): the log was rewritten"
            )
        head = chain[-1] if chain else None
        return {
            "entries": len(chain),
            "own_entries": own,
            "head": head.chain_hash().hex() if head else None,
            "ours_checked": len(held),
            "notary_key": format_fingerprint(sha256(notary.key.raw)),
        }


T = TypeVar("T")


def _get(db: Any, model: type[T], key: str) -> T:
    row: T | None = db.get(model, key)
    if row is None:
        raise CliError(f"local state changed meanwhile ({model.__name__} {short(key)} is gone)")
    return row


def _history_item(notarised: Notarised, effective: bool, note: str) -> dict[str, Any]:
    statement, entry = notarised.signed.statement, notarised.receipt.entry
    item: dict[str, Any] = {
        "kind": statement.kind.name.lower(),
        "by": statement.author.name,
        "stated_at": statement.at_ms,
        "seq": entry.seq,
        "notarised_at": entry.at_ms,
        "effective": effective,
    }
    if note:
        item["note"] = note
    if statement.reason:
        item["reason"] = statement.reason
    if statement.counter is not None:
        item["counter"] = statement.counter.hex()
    if statement.accepted_with:
        item["accepted_with"] = [d.hex() for d in statement.accepted_with]
    return item


def _verb(kind: StatementKind) -> str:
    return {StatementKind.WITHDRAWN: "withdrawn"}.get(kind, kind.name.lower())


def _when(ms: int) -> str:
    from .render import when

    return when(ms)


def _summary(proposal: Proposal, digest: str) -> str:
    lines = [proposal.title]
    lines += [f"{i}. {term}" for i, term in enumerate(proposal.terms, 1)]
    if proposal.conditions:
        lines.append(
            "only together with: " + ", ".join(short(c.hex()) for c in proposal.conditions)
        )
    if proposal.answers:
        lines.append(f"counters proposal {short(proposal.answers.hex())}")
    if proposal.expires_at_ms:
        lines.append(f"expires {_when(proposal.expires_at_ms)}")
    lines.append(f"(proposal {short(digest)}: `backchannel show {short(digest)}`)")
    return "\n".join(lines)
