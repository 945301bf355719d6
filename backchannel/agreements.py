"""Agreements: whether accepted proposals are bound, void or only understood (PRODUCT.md §4).

A proposal's own status (records.py) says what happened to it; whether it is an *agreement*
depends on its conditions too. An accepted proposal whose conditions are all met is **bound**; if
one fails it is **void**; proposals linked by conditions bind all or none. A proposal accepted off
the record is **understood**, never bound: its acceptance is deniable and has no notary entry, so
nobody can prove it; a condition counts an understood clause only where the proposal's author
allowed it. The race between an acceptance and a withdrawal is the notary's to decide: the
statement sequenced first stands (`first_decided`). PROTOCOL.md §14.7 is the specification; this
module is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum

from .encoding import Reader, Writer
from .errors import InvalidFieldError
from .proposals import DIGEST_SIZE, Proposal, Reveal, Status


class Outcome(Enum):
    """What happened to one proposal itself, in the notary's order."""

    OPEN = "open"
    """Nothing final yet: still sealed, delivered, opened or acknowledged."""
    ACCEPTED = "accepted"
    FAILED = "failed"
    """Withdrawn, rejected, countered or expired before an acceptance stood."""


class Agreement(Enum):
    NONE = "none"
    """Not accepted (yet, or ever): no agreement to speak of."""
    PENDING = "pending"
    """Accepted, but a condition is still open."""
    BOUND = "bound"
    VOID = "void"
    UNDERSTOOD = "understood"


@dataclass(frozen=True, slots=True)
class Condition:
    digest: bytes
    allow_understood: bool = False
    """The author lets this condition be met by a clause only understood off the record."""


@dataclass(frozen=True, slots=True)
class Clause:
    """One proposal as the decision needs it."""

    digest: bytes
    outcome: Outcome
    conditions: tuple[Condition, ...] = ()
    off_record: bool = False
    """Made or accepted off the record: at most understood."""


@dataclass(frozen=True, slots=True)
class Decision:
    agreement: Agreement
    reason: str = ""
    """Why it is void or pending (the condition that failed or is still open), or, for a
    standing one, which condition rests on an understood clause no record proves."""


def outcome_of(status: Status) -> Outcome:
    if status == Status.ACCEPTED:
        return Outcome.ACCEPTED
    if status in (Status.REJECTED, Status.COUNTERED, Status.WITHDRAWN, Status.EXPIRED):
        return Outcome.FAILED
    return Outcome.OPEN


def clause_of(proposal: Proposal, status: Status, off_record: bool = False) -> Clause:
    """A proposal as the decision needs it, its status replayed in the notary's order."""
    allowed = set(proposal.allow_understood)
    return Clause(
        proposal.digest(),
        outcome_of(status),
        tuple(Condition(c, c in allowed) for c in proposal.conditions),
        off_record,
    )


def first_decided(events: Iterable[tuple[int, Outcome]]) -> Outcome:
    """The outcome of the decisive statement sequenced first (lowest notary seq) among
    `(seq, outcome)` pairs; OPEN entries decide nothing. Later ones lose the race."""
    for _, outcome in sorted(events, key=lambda event: event[0]):
        if outcome != Outcome.OPEN:
            return outcome
    return Outcome.OPEN


def decide(clauses: Iterable[Clause]) -> dict[bytes, Decision]:
    """Every clause's agreement, given the outcomes the notary's order produced.

    Computed as the greatest fixpoint: every accepted clause starts out standing, and one falls
    (void or pending) when a condition does not stand, until nothing changes. That is what
    makes proposals conditional on each other bind all or none, cycles included. A condition
    not among `clauses` (not yet opened here) counts as open, unless the author allowed an
    understood clause to meet it: such a clause is in no record, so the condition counts and the
    decision says that this part is not provable.
    """
    by_digest: Mapping[bytes, Clause] = {clause.digest: clause for clause in clauses}
    result: dict[bytes, Decision] = {}
    for clause in by_digest.values():
        if clause.outcome == Outcome.ACCEPTED:
            kind = Agreement.UNDERSTOOD if clause.off_record else Agreement.BOUND
            result[clause.digest] = Decision(kind)
        else:
            result[clause.digest] = Decision(Agreement.NONE)
    changed = True
    while changed:
        changed = False
        for clause in by_digest.values():
            current = result[clause.digest].agreement
            if current in (Agreement.NONE, Agreement.VOID):
                continue
            fallen = _fall(clause, by_digest, result)
            # Only ever downwards (standing, then pending, then void): nothing revives.
            if fallen is not None and fallen != result[clause.digest]:
                if current == Agreement.PENDING and fallen.agreement != Agreement.VOID:
                    continue
                result[clause.digest] = fallen
                changed = True
    return result


def _fall(
    clause: Clause, by_digest: Mapping[bytes, Clause], result: Mapping[bytes, Decision]
) -> Decision | None:
    """Why a standing clause cannot stand on its conditions, or None if it can. A failure
    anywhere voids it even when another condition is merely open: a void never revives."""
    pending: Decision | None = None
    unprovable = ""
    for condition in clause.conditions:
        name = condition.digest.hex()[:12]
        other = by_digest.get(condition.digest)
        if other is None and condition.allow_understood and not clause.off_record:
            unprovable = unprovable or (
                f"condition {name} may be met by a clause only understood off the record, "
                "which no record can prove"
            )
            continue
        if other is None:
            pending = pending or Decision(Agreement.PENDING, f"condition {name} is not known here")
            continue
        if other.off_record and not (clause.off_record or condition.allow_understood):
            # Decided by what the clauses are, not by where the iteration stands: it can
            # never be bound, so a proposal that needs it bound never will be.
            return Decision(
                Agreement.VOID,
                f"condition {name} is only understood, and the proposal does not allow that",
            )
        state = result[other.digest].agreement
        if state == Agreement.BOUND:
            continue
        if state == Agreement.UNDERSTOOD:
            if clause.off_record:
                continue
            unprovable = unprovable or (
                f"condition {name} is met by a clause only understood off the record, "
                "which no record can prove"
            )
            continue
        if state == Agreement.VOID:
            return Decision(Agreement.VOID, f"condition {name} is void")
        if state == Agreement.PENDING:
            pending = pending or Decision(Agreement.PENDING, f"condition {name} is pending")
            continue
        # NONE: the condition itself is open, or it failed.
        if other.outcome == Outcome.FAILED:
            return Decision(Agreement.VOID, f"condition {name} failed")
        pending = pending or Decision(Agreement.PENDING, f"condition {name} is not accepted yet")
    if pending is None and unprovable and result[clause.digest].reason != unprovable:
        return Decision(result[clause.digest].agreement, unprovable)
    return pending


# --- clauses off the record ---------------------------------------------------------------------

CLAUSE_MARK = 0x00
"""The first plaintext byte of an off-the-record message that carries a clause, not text (text
never starts with NUL: `otr send` refuses control characters there)."""


class ClauseForm(IntEnum):
    PROPOSE = 1
    ACCEPT = 2
    WITHDRAW = 3
    """By its author, at any time: an offer taken back, or an understanding disavowed (it was
    never provable, so it can always be denied). It wins over an acceptance that crosses it."""


@dataclass(frozen=True, slots=True)
class OffRecordClause:
    """A proposal made, or accepted, inside an off-the-record channel (PROTOCOL.md §14.7).

    Unsigned and never notarised: the channel's deniability covers it, so an acceptance makes it
    understood and nothing more."""

    form: ClauseForm
    proposal: Proposal | None = None
    """PROPOSE: the offer (its `digest()` names the clause)."""
    digest: bytes = b""
    """ACCEPT, WITHDRAW: the clause accepted or withdrawn."""

    def to_plaintext(self) -> bytes:
        writer = Writer().u8(CLAUSE_MARK).u8(self.form)
        if self.form == ClauseForm.PROPOSE:
            if self.proposal is None or self.proposal.reveal != Reveal.IMMEDIATE:
                raise ValueError("an off-the-record proposal is an offer revealed at once")
            return bytes(writer) + self.proposal.canonical()
        return bytes(writer.fixed(self.digest, DIGEST_SIZE))

    @classmethod
    def from_plaintext(cls, data: bytes) -> OffRecordClause | None:
        """The clause a plaintext carries, None for text, `InvalidFieldError` if malformed."""
        if not data or data[0] != CLAUSE_MARK:
            return None
        reader = Reader(data[1:], "off-the-record clause")
        raw = reader.u8()
        try:
            form = ClauseForm(raw)
        except ValueError:
            raise InvalidFieldError(f"unknown off-the-record clause form {raw}") from None
        if form == ClauseForm.PROPOSE:
            proposal = Proposal.read(reader)
            reader.finish()
            if proposal.reveal != Reveal.IMMEDIATE:
                raise InvalidFieldError("an off-the-record proposal is revealed at once")
            return cls(form, proposal)
        digest = reader.fixed(DIGEST_SIZE)
        reader.finish()
        return cls(form, digest=digest)
