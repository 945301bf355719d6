"""Sealed proposals in the core: canonical encoding, signatures, commitments, the lifecycle
rules and the notary's receipts and hash-chained log (PROTOCOL.md §14)."""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backchannel.errors import (
    DecodeError,
    InvalidFieldError,
    NotaryError,
    ProposalSignatureError,
    ProposalStateError,
    TrailingBytesError,
    TruncatedError,
)
from backchannel.identity import IdentityKeyPair
from backchannel.keys import SigningKeyPair
from backchannel.proposals import (
    EntryKind,
    NotaryEntry,
    NotaryLink,
    NotaryReceipt,
    Party,
    Proposal,
    Record,
    Reveal,
    SealedProposal,
    SignedStatement,
    Statement,
    StatementKind,
    Status,
    commitment,
    entry_kind,
    first_decision,
    next_entry,
    notarise,
    notary_terms,
    seal,
    sign_statement,
    verify_log,
)
from backchannel.records import ProposalRecord

KENNEDY, KHRUSHCHEV, THANT = (IdentityKeyPair.generate() for _ in range(3))
JFK = Party.of("kennedy", KENNEDY.public)
NSK = Party.of("khrushchev", KHRUSHCHEV.public)
UT = Party.of("u-thant", THANT.public)
T0 = 1_000_000


def offer(**changes: object) -> Proposal:
    base = Proposal(
        proposal_id=b"\x07" * 16,
        author=NSK,
        addressees=(JFK,),
        title="Missiles out of Cuba",
        terms=(
            "The missiles leave Cuba under UN inspection.",
            "The United States pledges not to invade Cuba.",
        ),
        created_at_ms=T0,
        expires_at_ms=T0 + 3_600_000,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def sealed(proposal: Proposal | None = None, by: IdentityKeyPair = KHRUSHCHEV) -> SealedProposal:
    return seal(by, proposal or offer(), os.urandom(32))


def say(
    record: Record, who: IdentityKeyPair, party: Party, kind: StatementKind, **extra: object
) -> SignedStatement:
    statement = Statement(
        kind,
        record.sealed.digest,
        record.sealed.commitment,
        party,
        T0 + 1,
        **extra,  # type: ignore[arg-type]
    )
    return sign_statement(who, statement)


# --- encoding and signatures ---------------------------------------------------------------------


def test_every_field_round_trips_and_the_digest_is_stable() -> None:
    full = offer(
        addressees=(JFK, UT),
        mediator=UT,
        conditions=(b"\x01" * 32, b"\x02" * 32),
        answers=b"\x03" * 32,
        reveal=Reveal.SIMULTANEOUS,
        exchange_id=b"\x04" * 16,
    )
    assert Proposal.from_bytes(full.canonical()) == full
    assert full.digest() == Proposal.from_bytes(full.canonical()).digest()
    timed = offer(reveal=Reveal.AT_TIME, reveal_at_ms=T0 + 5)
    assert Proposal.from_bytes(timed.canonical()) == timed
    assert timed.digest() != offer().digest()


@given(
    title=st.text(min_size=1, max_size=100),
    terms=st.lists(st.text(min_size=1, max_size=200), min_size=1, max_size=5),
)
def test_any_text_round_trips(title: str, terms: list[str]) -> None:
    proposal = offer(title=title, terms=tuple(terms))
    assert Proposal.from_bytes(proposal.canonical()) == proposal


def test_the_author_signature_verifies_and_binds_every_byte() -> None:
    seal_ = sealed()
    again = SealedProposal.from_bytes(seal_.to_bytes())
    again.verify(KHRUSHCHEV.public)
    with pytest.raises(ProposalSignatureError):
        again.verify(KENNEDY.public)  # another identity
    altered = dataclasses.replace(seal_, proposal=offer(title="Missiles out of Turkey"))
    with pytest.raises(ProposalSignatureError):
        altered.verify(KHRUSHCHEV.public)
    with pytest.raises(ValueError, match="signed by the identity it names"):
        seal(KENNEDY, offer(), os.urandom(32))


def test_the_commitment_binds_digest_and_nonce() -> None:
    digest, nonce = offer().digest(), os.urandom(32)
    assert commitment(digest, nonce) == commitment(digest, nonce)
    assert commitment(digest, nonce) != commitment(digest, os.urandom(32))
    assert commitment(digest, nonce) != commitment(offer(title="Other").digest(), nonce)
    with pytest.raises(ValueError):
        commitment(digest, b"short")


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (lambda b: b[:-1], TruncatedError),
        (lambda b: b + b"\x00", TrailingBytesError),
        (lambda b: b"\x03" + b[1:], InvalidFieldError),  # unknown version
        (lambda b: b[:-17] + b"\x09" + b[-16:], InvalidFieldError),  # unknown reveal policy
    ],
)
def test_malformed_proposals_are_refused(mangle: object, error: type[DecodeError]) -> None:
    raw = offer(reveal=Reveal.SIMULTANEOUS, exchange_id=b"\x04" * 16).canonical()
    with pytest.raises(error):
        Proposal.from_bytes(mangle(raw))  # type: ignore[operator]


def test_empty_titles_and_terms_are_refused_both_ways() -> None:
    with pytest.raises(ValueError):
        offer(title="").canonical()
    with pytest.raises(ValueError):
        offer(terms=()).canonical()
    raw = offer(title="x").canonical()
    at = raw.index(b"\x00\x01x")  # var16 title of one byte
    with pytest.raises(InvalidFieldError, match="title is empty"):
        Proposal.from_bytes(raw[:at] + b"\x00\x00" + raw[at + 3 :])


def test_statements_round_trip_and_verify() -> None:
    record = Record(sealed())
    signed = say(record, KENNEDY, JFK, StatementKind.ACCEPTED, accepted_with=(b"\x05" * 32,))
    again = SignedStatement.from_bytes(signed.to_bytes())
    assert again == signed
    again.verify(KENNEDY.public)
    with pytest.raises(ProposalSignatureError):
        again.verify(KHRUSHCHEV.public)
    with pytest.raises(ValueError):
        Statement(
            StatementKind.REJECTED, b"\x00" * 32, b"\x00" * 32, JFK, T0, (b"\x05" * 32,)
        ).canonical()
    with pytest.raises(ValueError):
        Statement(StatementKind.COUNTERED, b"\x00" * 32, b"\x00" * 32, JFK, T0).canonical()


# --- the lifecycle -------------------------------------------------------------------------------


def test_status_follows_the_statements() -> None:
    record = Record(sealed())
    assert record.status(T0) == Status.SEALED
    for kind in (StatementKind.DELIVERED, StatementKind.OPENED, StatementKind.ACKNOWLEDGED):
        record.add(say(record, KENNEDY, JFK, kind), T0)
        assert record.status(T0) == Status(kind.value)
    record.add(say(record, KENNEDY, JFK, StatementKind.ACCEPTED), T0)
    assert record.status(T0 + 10**9) == Status.ACCEPTED  # final: expiry no longer applies


def test_after_acceptance_nothing_else_is_decided() -> None:
    record = Record(sealed())
    record.add(say(record, KENNEDY, JFK, StatementKind.ACCEPTED), T0)
    with pytest.raises(ProposalStateError, match="already accepted"):
        record.add(say(record, KHRUSHCHEV, NSK, StatementKind.WITHDRAWN), T0)
    with pytest.raises(ProposalStateError, match="already accepted"):
        record.add(say(record, KENNEDY, JFK, StatementKind.REJECTED), T0)


def test_a_withdrawn_or_expired_proposal_cannot_be_accepted() -> None:
    record = Record(sealed())
    record.add(say(record, KHRUSHCHEV, NSK, StatementKind.WITHDRAWN), T0)
    with pytest.raises(ProposalStateError, match="already withdrawn"):
        record.check(say(record, KENNEDY, JFK, StatementKind.ACCEPTED).statement, T0)
    late = Record(sealed())
    expired_at = late.proposal.expires_at_ms
    assert late.status(expired_at) == Status.EXPIRED
    with pytest.raises(ProposalStateError, match="expired"):
        late.check(say(late, KENNEDY, JFK, StatementKind.ACCEPTED).statement, expired_at)


def test_only_the_author_withdraws_and_only_addressees_answer() -> None:
    record = Record(sealed())
    with pytest.raises(ProposalStateError, match="only the author"):
        record.check(say(record, KENNEDY, JFK, StatementKind.WITHDRAWN).statement, T0)
    with pytest.raises(ProposalStateError, match="only an addressee"):
        record.check(say(record, THANT, UT, StatementKind.ACCEPTED).statement, T0)


def test_a_conditional_proposal_is_accepted_with_or_after_its_conditions() -> None:
    condition = sealed(offer(proposal_id=b"\x08" * 16, title="Jupiters out of Turkey"))
    record = Record(sealed(offer(conditions=(condition.digest,))))
    alone = say(record, KENNEDY, JFK, StatementKind.ACCEPTED)
    with pytest.raises(ProposalStateError, match="conditional"):
        record.check(alone.statement, T0)
    record.check(alone.statement, T0, accepted=[condition.digest])  # already accepted
    together = say(record, KENNEDY, JFK, StatementKind.ACCEPTED, accepted_with=(condition.digest,))
    record.add(together, T0)
    assert record.status(T0) == Status.ACCEPTED


def test_a_counter_names_the_counter_proposal_and_closes_the_original() -> None:
    record = Record(sealed())
    counter = sealed(offer(proposal_id=b"\x09" * 16, author=JFK, addressees=(NSK,),
                           answers=record.sealed.digest), by=KENNEDY)  # fmt: skip
    record.add(say(record, KENNEDY, JFK, StatementKind.COUNTERED, counter=counter.digest), T0)
    assert record.status(T0) == Status.COUNTERED
    assert counter.proposal.answers == record.sealed.digest


def test_a_statement_about_another_proposal_is_refused() -> None:
    record, other = Record(sealed()), Record(sealed(offer(title="Another offer")))
    with pytest.raises(ProposalStateError, match="another proposal"):
        record.check(say(other, KENNEDY, JFK, StatementKind.ACKNOWLEDGED).statement, T0)
    same_offer_other_seal = Record(sealed())  # another nonce: another commitment
    with pytest.raises(ProposalStateError, match="another commitment"):
        record.check(say(same_offer_other_seal, KENNEDY, JFK, StatementKind.OPENED).statement, T0)


# --- the notary ----------------------------------------------------------------------------------


def a_log(length: int) -> list[NotaryEntry]:
    entries: list[NotaryEntry] = []
    for index in range(length):
        previous = entries[-1] if entries else None
        kind = EntryKind.COMMITMENT if index % 2 == 0 else EntryKind.STATEMENT
        entries.append(next_entry(previous, T0 + index, kind, bytes([index]) * 32, os.urandom(32)))
    return entries


def test_a_log_built_entry_by_entry_verifies_whole_and_in_parts() -> None:
    entries = a_log(6)
    verify_log(entries)
    verify_log(entries[3:], after=entries[2])
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert all(NotaryEntry.from_bytes(e.to_bytes()) == e for e in entries)


@pytest.mark.parametrize("damage", ["alter", "drop", "swap", "time"])
def test_a_damaged_log_is_detected(damage: str) -> None:
    entries = a_log(5)
    if damage == "alter":
        entries[2] = dataclasses.replace(entries[2], value=os.urandom(32))
    elif damage == "drop":
        del entries[2]
    elif damage == "swap":
        entries[1], entries[2] = entries[2], entries[1]
    else:
        entries = entries[:3]
        entries.append(next_entry(entries[-1], 0, EntryKind.STATEMENT, ZERO, ZERO))
        entries[-1] = dataclasses.replace(entries[-1], at_ms=T0 - 1)
    with pytest.raises(NotaryError):
        verify_log(entries)


ZERO = bytes(32)


def test_receipts_verify_and_a_forged_one_is_detected() -> None:
    notary, impostor = SigningKeyPair.generate(), SigningKeyPair.generate()
    entry = a_log(1)[0]
    receipt = notarise(notary, b"\x0a" * 16, entry)
    NotaryReceipt.from_bytes(receipt.to_bytes()).verify(notary.public)
    forged = notarise(impostor, b"\x0a" * 16, entry)
    with pytest.raises(NotaryError):
        forged.verify(notary.public)
    moved = dataclasses.replace(receipt, entry=dataclasses.replace(entry, seq=2))
    with pytest.raises(NotaryError):
        moved.verify(notary.public)
    other_relay = dataclasses.replace(receipt, relay_id=b"\x0b" * 16)
    with pytest.raises(NotaryError):
        other_relay.verify(notary.public)


def test_the_first_sequenced_decision_wins_a_race() -> None:
    subject = os.urandom(32)
    commit = next_entry(None, T0, EntryKind.COMMITMENT, subject, subject)
    withdraw = next_entry(commit, T0, entry_kind(StatementKind.WITHDRAWN), subject, os.urandom(32))
    accept = next_entry(withdraw, T0, entry_kind(StatementKind.ACCEPTED), subject, os.urandom(32))
    assert first_decision([accept, commit, withdraw], subject) == withdraw
    assert first_decision([commit], subject) is None
    assert entry_kind(StatementKind.OPENED) == EntryKind.STATEMENT


def test_a_reader_who_holds_links_for_other_entries_checks_the_same_chain() -> None:
    """PROTOCOL.md §14.3: entries one is no party to come as links (seq, body hash, previous);
    the chain through them checks, and a link changed in any field does not."""
    entries = a_log(6)
    mixed: list[NotaryEntry | NotaryLink] = [
        e if e.seq in (2, 5) else e.link() for e in entries
    ]
    verify_log(mixed)
    verify_log(mixed[3:], after=mixed[2])
    assert all(NotaryLink.from_bytes(e.link().to_bytes()) == e.link() for e in entries)
    assert [e.chain_hash() for e in entries] == [m.chain_hash() for m in mixed]
    for field, value in (("body", os.urandom(32)), ("previous", os.urandom(32)), ("seq", 9)):
        damaged = list(mixed)
        damaged[3] = dataclasses.replace(entries[3].link(), **{field: value})
        with pytest.raises(NotaryError):
            verify_log(damaged)
    # Nothing in a link shows what the entry holds: its subject and value are hashed away.
    link = entries[2].link().to_bytes()
    assert entries[2].subject not in link and entries[2].value not in link


def test_a_commitment_receipt_binds_the_author_addressees_and_expiry() -> None:
    """The value of a commitment entry is `notary_terms`: a record whose notary recorded another
    expiry, other addressees (a confederate who would accept first) or another author than the
    proposal names does not check."""
    notary = SigningKeyPair.generate()
    proposal = sealed()

    def receipt(value: bytes) -> NotaryReceipt:
        entry = next_entry(None, T0, EntryKind.COMMITMENT, proposal.commitment, value)
        return notarise(notary, b"\x0a" * 16, entry)

    ProposalRecord(proposal, receipt(proposal.terms)).check(notary.public)
    expires = proposal.proposal.expires_at_ms
    for wrong in (
        notary_terms(proposal.commitment, NSK, (JFK,), expires - 60_000),  # an earlier expiry
        notary_terms(proposal.commitment, NSK, (JFK, UT), expires),  # a confederate
        notary_terms(proposal.commitment, UT, (JFK,), expires),  # another author
        notary_terms(proposal.commitment, NSK, (JFK,), expires, UT),  # a mediator it names not
        proposal.commitment,  # the value version 1 of this section recorded
    ):
        with pytest.raises(NotaryError, match="another author, other addressees"):
            ProposalRecord(proposal, receipt(wrong)).check(notary.public)


def test_a_commitment_receipt_binds_the_mediator_the_proposal_names() -> None:
    """A proposal that travels through a mediator names it, and so do the notary's terms: the
    addressee's client checks that the mediator the notary let it through is the proposal's."""
    notary = SigningKeyPair.generate()
    mediated = sealed(dataclasses.replace(offer(), mediator=UT))
    expires = mediated.proposal.expires_at_ms

    def receipt(value: bytes) -> NotaryReceipt:
        entry = next_entry(None, T0, EntryKind.COMMITMENT, mediated.commitment, value)
        return notarise(notary, b"\x0a" * 16, entry)

    assert mediated.terms == notary_terms(mediated.commitment, NSK, (JFK,), expires, UT)
    ProposalRecord(mediated, receipt(mediated.terms)).check(notary.public)
    for wrong in (
        notary_terms(mediated.commitment, NSK, (JFK,), expires),  # no mediator
        notary_terms(mediated.commitment, NSK, (JFK,), expires, JFK),  # another one
    ):
        with pytest.raises(NotaryError, match="another mediator"):
            ProposalRecord(mediated, receipt(wrong)).check(notary.public)


def test_a_condition_allowing_an_understood_clause_is_version_2_and_round_trips() -> None:
    plain = offer(conditions=(b"\x01" * 32, b"\x02" * 32))
    assert plain.canonical()[0] == 1  # nothing allowed: version 1, digest as before
    allowing = dataclasses.replace(plain, allow_understood=(b"\x02" * 32,))
    raw = allowing.canonical()
    assert raw[0] == 2 and raw[-2:] == b"\x00\x02"
    assert Proposal.from_bytes(raw) == allowing
    assert allowing.digest() != plain.digest()
    for mask in (b"\x00\x00", b"\x00\x04"):  # none, or a condition it does not have
        with pytest.raises(InvalidFieldError):
            Proposal.from_bytes(raw[:-2] + mask)
    with pytest.raises(ValueError, match="only a condition"):
        dataclasses.replace(plain, allow_understood=(b"\x03" * 32,)).canonical()
