"""Proposal records: one proposal with every notarised statement about it, replayed and checked.

Both sides of a negotiation, and anyone they show an exported record to, compute a proposal's
status the same way: statements are applied in the notary's order (their receipts' `seq`), each
checked by the lifecycle rules of `Record.check` at the notary's time, so an acceptance racing a
withdrawal resolves identically everywhere, and a statement made before its author had seen a
final one is kept in the history but has no effect. PROTOCOL.md §14.6 is the specification.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from . import labels
from .agreements import Decision, clause_of, decide
from .errors import (
    BackchannelError,
    InvalidFieldError,
    NotaryError,
    ProposalSignatureError,
    ProposalStateError,
)
from .keys import SigningPublicKey
from .proposals import (
    EntryKind,
    NotaryReceipt,
    Party,
    Record,
    SealedProposal,
    SignedStatement,
    StatementKind,
    Status,
    entry_kind,
)

RECORD_FORMAT = "backchannel-proposal-record/1"


def party_key(party: Party) -> SigningPublicKey:
    """The Ed25519 key a party signs with: the first half of its identity keys."""
    return SigningPublicKey.from_bytes(party.keys[:32])


@dataclass(frozen=True, slots=True)
class Notarised:
    """A signed statement and the notary's receipt for its digest."""

    signed: SignedStatement
    receipt: NotaryReceipt

    def check(self, commitment: bytes) -> None:
        """The receipt is for this statement about this commitment, and its author signed it."""
        statement, entry = self.signed.statement, self.receipt.entry
        if entry.subject != commitment or statement.proposal_commitment != commitment:
            raise NotaryError("the statement's receipt is for another proposal")
        if entry.value != statement.digest() or entry.kind != entry_kind(statement.kind):
            raise NotaryError("the notary receipt is not for this statement")
        party_key(statement.author).verify(
            self.signed.signature,
            labels.signing_input(labels.SIG_STATEMENT, statement.canonical()),
            ProposalSignatureError,
        )


@dataclass(frozen=True, slots=True)
class Step:
    notarised: Notarised
    effective: bool
    note: str = ""
    """Why a statement had no effect (it came after a final one, say)."""


@dataclass(frozen=True, slots=True)
class Replayed:
    status: Status
    steps: tuple[Step, ...]
    record: Record
    """The effective statements, for checking what may come next."""
    decided_at_seq: int = 0
    """The notary seq of the acceptance or withdrawal that stands (0: none)."""


@dataclass(frozen=True, slots=True)
class ProposalRecord:
    sealed: SealedProposal
    receipt: NotaryReceipt
    """The notary's receipt for the proposal's commitment."""
    statements: tuple[Notarised, ...] = ()

    @property
    def digest(self) -> bytes:
        return self.sealed.digest

    def check(self, notary_key: SigningPublicKey | None = None) -> None:
        """Raise unless the author signed the offer, the receipt notarises its commitment with
        the proposal's own author, addressees, expiry and mediator, and (given the notary's key)
        every receipt is the notary's and from one relay."""
        sealed, entry = self.sealed, self.receipt.entry
        party_key(sealed.proposal.author).verify(
            sealed.signature,
            labels.signing_input(labels.SIG_PROPOSAL, sealed.proposal.canonical()),
            ProposalSignatureError,
        )
        if entry.kind != EntryKind.COMMITMENT or entry.subject != sealed.commitment:
            raise NotaryError("the notary receipt is not for this proposal's commitment")
        if entry.value != sealed.terms:
            raise NotaryError(
                "the notary recorded another author, other addressees, another expiry or "
                "another mediator than the proposal names"
            )
        for notarised in self.statements:
            notarised.check(sealed.commitment)
            if notarised.receipt.relay_id != self.receipt.relay_id:
                raise NotaryError("the record mixes receipts from different relays")
        if notary_key is not None:
            for receipt in (self.receipt, *(n.receipt for n in self.statements)):
                receipt.verify(notary_key)

    def replay(self, now_ms: int, accepted: Mapping[bytes, int] | None = None) -> Replayed:
        """The status, applying statements in notary order by the lifecycle rules.

        `accepted` maps the digests of other proposals to the notary seq of their acceptance;
        a condition counts when it was accepted before, or is accepted together with, this one.
        """
        accepted = accepted or {}
        record = Record(self.sealed)
        steps: list[Step] = []
        decided = 0
        for notarised in sorted(self.statements, key=lambda n: n.receipt.entry.seq):
            entry = notarised.receipt.entry
            before = [digest for digest, seq in accepted.items() if seq < entry.seq]
            try:
                record.add(notarised.signed, entry.at_ms, before)
            except ProposalStateError as exc:
                steps.append(Step(notarised, False, str(exc)))
                continue
            steps.append(Step(notarised, True))
            if notarised.signed.statement.kind in (StatementKind.ACCEPTED, StatementKind.WITHDRAWN):
                decided = entry.seq
        return Replayed(record.status(now_ms), tuple(steps), record, decided)

    def with_statement(self, notarised: Notarised) -> ProposalRecord:
        if any(n.receipt.entry.seq == notarised.receipt.entry.seq for n in self.statements):
            return self
        return ProposalRecord(self.sealed, self.receipt, (*self.statements, notarised))

    def to_json(self) -> dict[str, Any]:
        return {
            "sealed": _b64(self.sealed.to_bytes()),
            "receipt": _b64(self.receipt.to_bytes()),
            "statements": [
                {"statement": _b64(n.signed.to_bytes()), "receipt": _b64(n.receipt.to_bytes())}
                for n in self.statements
            ],
        }

    @classmethod
    def from_json(cls, value: object) -> ProposalRecord:
        item = _object(value, "a record")
        statements = item.get("statements", [])
        if not isinstance(statements, list):
            raise InvalidFieldError("a record's 'statements' is a list")
        return cls(
            SealedProposal.from_bytes(_unb64(item, "sealed")),
            NotaryReceipt.from_bytes(_unb64(item, "receipt")),
            tuple(
                Notarised(
                    SignedStatement.from_bytes(_unb64(_object(s, "a statement"), "statement")),
                    NotaryReceipt.from_bytes(_unb64(_object(s, "a statement"), "receipt")),
                )
                for s in statements
            ),
        )


@dataclass(frozen=True, slots=True)
class Export:
    """What `backchannel export` writes: records and the notary key that signed their receipts.

    The key is only as good as where it came from: a reviewer compares it with the relay's
    published `notary_key`, or passes the key they trust."""

    notary_key: bytes
    records: tuple[ProposalRecord, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "notary_key": _b64(self.notary_key),
            "records": [record.to_json() for record in self.records],
        }

    @classmethod
    def from_json(cls, value: object) -> Export:
        item = _object(value, "an exported record")
        if item.get("format") != RECORD_FORMAT:
            raise InvalidFieldError(f"not a proposal record (format is not {RECORD_FORMAT!r})")
        records = item.get("records")
        if not isinstance(records, list) or not records:
            raise InvalidFieldError("an export holds a non-empty list of 'records'")
        return cls(_unb64(item, "notary_key"), tuple(ProposalRecord.from_json(r) for r in records))


def parse_export(data: bytes | str) -> Export:
    """An export file's contents (JSON as `Export.to_json` writes it): anything else, including
    text that is not JSON or JSON nested past the parser's depth, is an `InvalidFieldError`."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise InvalidFieldError("its JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and bytes that are not UTF-8/16/32
        raise InvalidFieldError(f"it is not JSON: {exc}") from None
    return Export.from_json(value)


@dataclass(frozen=True, slots=True)
class Verdict:
    record: ProposalRecord
    replayed: Replayed | None
    error: str = ""
    agreement: Decision | None = None
    """Bound, void or pending, decided from the records in the export alone (None: invalid)."""


def verify_export(export: Export, now_ms: int, notary_key: bytes | None = None) -> list[Verdict]:
    """Check every record offline; conditions are satisfied by records in the same export.

    `notary_key` is the key the reviewer trusts; without it the export's own key is used (and
    the caller should say so). Records are replayed conditions first, so each acceptance sees
    when the proposals it depends on were accepted."""
    try:
        key = SigningPublicKey.from_bytes(notary_key or export.notary_key)
    except BackchannelError as exc:
        raise NotaryError(f"the notary key is not an Ed25519 key: {exc}") from None
    accepted: dict[bytes, int] = {}
    verdicts: dict[int, Verdict] = {}
    for index in _conditions_first(export.records):
        record = export.records[index]
        try:
            record.check(key)
            replayed = record.replay(now_ms, accepted)
        except BackchannelError as exc:
            verdicts[index] = Verdict(record, None, str(exc))
            continue
        if replayed.status == Status.ACCEPTED:
            accepted[record.digest] = replayed.decided_at_seq
        verdicts[index] = Verdict(record, replayed)
    decisions = decide(
        clause_of(v.record.sealed.proposal, v.replayed.status)
        for v in verdicts.values()
        if v.replayed is not None
    )
    return [
        replace(verdicts[i], agreement=decisions.get(verdicts[i].record.digest))
        if verdicts[i].replayed is not None
        else verdicts[i]
        for i in range(len(export.records))
    ]


def _conditions_first(records: Sequence[ProposalRecord]) -> Iterable[int]:
    """Record indexes, each after the records of its conditions (a depth-first post-order; a
    cycle is cut where it closes). Iterative: an export is a file anyone can hand over, and a
    chain of conditions a thousand records long must not exhaust Python's recursion limit."""
    by_digest = {record.digest: i for i, record in enumerate(records)}

    def conditions(index: int) -> Iterator[int]:
        for condition in records[index].sealed.proposal.conditions:
            if condition in by_digest:
                yield by_digest[condition]

    done: set[int] = set()
    order: list[int] = []
    for root in range(len(records)):
        if root in done:
            continue
        on_path = {root}
        stack = [(root, conditions(root))]
        while stack:
            index, pending = stack[-1]
            child = next(pending, None)
            if child is None:
                stack.pop()
                on_path.discard(index)
                done.add(index)
                order.append(index)
            elif child not in done and child not in on_path:
                on_path.add(child)
                stack.append((child, conditions(child)))
    return order


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidFieldError(f"{what} is a JSON object")
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(item: Mapping[str, Any], key: str) -> bytes:
    value = item.get(key)
    if not isinstance(value, str):
        raise InvalidFieldError(f"field {key!r} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidFieldError(f"field {key!r} is not base64") from None
