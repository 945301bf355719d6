"""What an arriving envelope means (backchannel/arrival.py): every content kind, redeliveries
in any order, envelopes carried for others, and garbage, which is unreadable, never an error."""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backchannel import arrival, otr
from backchannel.arrival import (
    BAD_SIGNATURE,
    NOTHING,
    SIGNED,
    Arrival,
    Known,
    Receiver,
    Record,
    Unopened,
)
from backchannel.content import (
    Letter,
    LetterAcknowledgement,
    ProposalContent,
    Receipt,
    ReceiptType,
    StatementContent,
    letter_digest,
    sign_acknowledgement,
    sign_letter,
)
from backchannel.envelope import Envelope, Route
from backchannel.identity import IdentityKeyPair
from backchannel.keys import SigningKeyPair
from backchannel.mediation import (
    ForwardConsent,
    Forwarded,
    Introduction,
    ReleasedOffer,
    sign_consent,
    sign_introduction,
    sign_release,
)
from backchannel.proposals import (
    EntryKind,
    NotaryReceipt,
    Party,
    Proposal,
    Reveal,
    SealedProposal,
    Statement,
    StatementKind,
    next_entry,
    notarise,
    seal,
    sign_statement,
)

KENNEDY, KHRUSHCHEV, THANT = (IdentityKeyPair.generate() for _ in range(3))
NOTARY = SigningKeyPair.generate()
ME = Receiver("kennedy", KENNEDY.public)
PEER = KHRUSHCHEV.public
JFK, NSK, UT = ME.party, Party.of("khrushchev", PEER), Party.of("u-thant", THANT.public)
T0 = 1_793_059_200_000


def letter(message_id: bytes, to: Party = JFK, text: str = "Withdraw the missiles.") -> Letter:
    return Letter(message_id, "khrushchev", PEER.keys, to.name, to.keys, T0, text, None)


def notarised(sealed: SealedProposal) -> NotaryReceipt:
    entry = next_entry(None, T0, EntryKind.COMMITMENT, sealed.commitment, sealed.terms)
    return notarise(NOTARY, b"\x0a" * 16, entry)


def offer(**changes: object) -> SealedProposal:
    terms = ("The missiles leave Cuba under UN inspection.",)
    base = Proposal(os.urandom(16), NSK, (JFK,), "Missiles out of Cuba", terms, T0, T0 + 3_600_000)
    changed = dataclasses.replace(base, **changes)  # type: ignore[arg-type]
    return seal(KHRUSHCHEV, changed, os.urandom(32))


def proposal(sealed: SealedProposal) -> ProposalContent:
    return ProposalContent(notarised(sealed), sealed.digest, sealed)


ID = os.urandom(16)
LETTER = sign_letter(KHRUSHCHEV, letter(ID))
SENT = os.urandom(16)
"""One of our own letters, which receipts and acknowledgements name."""
MINE = Letter(SENT, "kennedy", KENNEDY.public.keys, "khrushchev", PEER.keys, T0, "Agreed.", None)
ACK = sign_acknowledgement(
    KHRUSHCHEV,
    LetterAcknowledgement(SENT, letter_digest(MINE), "khrushchev", PEER.keys, "kennedy",
                          KENNEDY.public.keys, T0 + 1),
)  # fmt: skip
RECEIPT = Receipt(ReceiptType.DELIVERED, T0 + 1, (SENT,))
OTR_OFFER = otr.offer(T0 + 3_600_000)[0]
INTRODUCTION = sign_introduction(
    KHRUSHCHEV, Introduction(NSK, JFK, "u-thant", THANT.public.to_bytes(), T0)
)
CONSENT = sign_consent(KHRUSHCHEV, ForwardConsent(NSK, JFK, letter_digest(LETTER.letter), "", T0))
FORWARDED = Forwarded(CONSENT, letter=LETTER)
PLAIN = offer()
TIMED = ProposalContent(notarised(PLAIN), PLAIN.digest, None, T0 + 60_000, os.urandom(40))
MEDIATED_BY_ME = offer(reveal=Reveal.SIMULTANEOUS, mediator=JFK, exchange_id=os.urandom(16))
MEDIATED_BY_THANT = offer(reveal=Reveal.SIMULTANEOUS, mediator=UT, exchange_id=os.urandom(16))
STATEMENT = StatementContent(
    sign_statement(KHRUSHCHEV, Statement(StatementKind.WITHDRAWN, PLAIN.digest, PLAIN.commitment,
                                         NSK, T0 + 2)),
    notarised(PLAIN),
)  # fmt: skip
RELEASE = sign_release(
    KHRUSHCHEV,
    ReleasedOffer(os.urandom(16), NSK, MEDIATED_BY_THANT, notarised(MEDIATED_BY_THANT),
                  notarised(MEDIATED_BY_THANT), T0 + 5),
)  # fmt: skip

EVERY_KIND: list[tuple[object, Arrival]] = [
    (LETTER, Arrival(Record.LETTER, LETTER, verified=SIGNED, owed=(ReceiptType.DELIVERED,))),
    (ACK, Arrival(Record.ACKNOWLEDGEMENT, ACK)),
    (RECEIPT, Arrival(Record.RECEIPT, RECEIPT, processed=True)),
    (OTR_OFFER, Arrival(Record.OFF_THE_RECORD, OTR_OFFER, processed=True, offrecord=True)),
    (INTRODUCTION, Arrival(Record.INTRODUCTION, INTRODUCTION)),
    (CONSENT, Arrival(Record.CONSENT, CONSENT)),
    (FORWARDED, Arrival(Record.FORWARD, FORWARDED)),
    (proposal(PLAIN), Arrival(Record.PROPOSAL, proposal(PLAIN), negotiation=True)),
    (TIMED, Arrival(Record.PROPOSAL, TIMED, negotiation=True)),
    (STATEMENT, Arrival(Record.STATEMENT, STATEMENT, negotiation=True)),
    (RELEASE, Arrival(Record.RELEASED_OFFER, RELEASE, negotiation=True)),
]


@pytest.mark.parametrize(("content", "expected"), EVERY_KIND, ids=lambda x: type(x).__name__)
def test_every_content_kind_has_its_meaning_decoded_or_not(
    content: object, expected: Arrival
) -> None:
    decided = arrival.meaning(content, ID, PEER, ME)
    assert (decided.record, decided.verified, decided.owed) == (
        expected.record, expected.verified, expected.owed)  # fmt: skip
    assert (decided.processed, decided.negotiation, decided.offrecord, decided.held) == (
        expected.processed, expected.negotiation, expected.offrecord, False)  # fmt: skip
    encoded = content.to_content()  # type: ignore[attr-defined]
    assert arrival.read(encoded, ID, PEER, ME) == decided  # what travels means the same


def test_one_side_of_an_exchange_i_mediate_is_held_and_anyone_elses_is_a_proposal() -> None:
    assert arrival.meaning(proposal(MEDIATED_BY_ME), ID, PEER, ME).record == Record.HELD_OFFER
    held = arrival.meaning(proposal(MEDIATED_BY_ME), ID, PEER, ME)
    assert not held.negotiation  # nothing to catch up on until the mediator releases it
    theirs = arrival.meaning(proposal(MEDIATED_BY_THANT), ID, PEER, ME)
    assert theirs.record == Record.PROPOSAL and theirs.negotiation


def test_a_letter_with_a_bad_signature_is_kept_marked_and_still_owes_its_receipt() -> None:
    forged = dataclasses.replace(LETTER, signature=bytes(64))
    decided = arrival.meaning(forged, ID, PEER, ME)
    assert (decided.record, decided.verified) == (Record.LETTER, BAD_SIGNATURE)
    assert decided.owed == (ReceiptType.DELIVERED,)
    elsewhere = sign_letter(KHRUSHCHEV, letter(ID, to=UT))  # well signed, to someone else
    assert arrival.meaning(elsewhere, ID, PEER, ME).verified == BAD_SIGNATURE
    by_another = arrival.meaning(LETTER, ID, THANT.public, ME)  # its author is not the peer
    assert by_another.verified == BAD_SIGNATURE


def test_a_letter_whose_id_is_not_its_envelopes_is_unreadable() -> None:
    decided = arrival.meaning(LETTER, os.urandom(16), PEER, ME)
    assert decided.record == Record.UNREADABLE
    assert decided.reason == "the letter's id differs from its envelope's"
    assert not decided.owed


def test_a_decision_that_fails_on_applying_becomes_unreadable_and_owes_nothing() -> None:
    for content, _ in EVERY_KIND:
        failed = arrival.meaning(content, ID, PEER, ME).failed("not notarised")
        assert failed == Arrival(Record.UNREADABLE, reason="not notarised")


@given(st.one_of(st.none(), st.integers(), st.text(), st.binary(), st.lists(st.integers())))
def test_any_other_object_is_unreadable(content: object) -> None:
    decided = arrival.meaning(content, ID, PEER, ME)
    assert decided.record == Record.UNREADABLE and decided.reason


@given(st.binary(max_size=300))
def test_garbage_is_unreadable_never_an_error(plaintext: bytes) -> None:
    decided = arrival.read(plaintext, ID, PEER, ME)
    assert decided.record in Record
    if decided.record == Record.UNREADABLE:
        assert decided.reason


@given(st.sampled_from([c for c, _ in EVERY_KIND]), st.data())
def test_damaged_content_is_unreadable_or_read_never_an_error(
    content: object, data: st.DataObject
) -> None:
    encoded = bytearray(content.to_content())  # type: ignore[attr-defined]
    index = data.draw(st.integers(0, len(encoded) - 1))
    if data.draw(st.booleans()):
        del encoded[index:]
    else:
        encoded[index] ^= data.draw(st.integers(1, 255))
    decided = arrival.read(bytes(encoded), ID, PEER, ME)
    assert decided.record in Record  # a flip in a signature still decodes: checked on applying


def test_a_redelivery_is_not_opened_again() -> None:
    assert arrival.screen(Known(stored=True)) == NOTHING
    assert arrival.screen(Known(processed=True)) == NOTHING
    assert arrival.screen(Known()) is None
    assert arrival.screen(Known(new_contact=True)) is None


def test_what_failing_to_decrypt_means() -> None:
    changed = arrival.unopened(Unopened.KEY_CHANGED, "key changed", "khrushchev", Known())
    assert changed.held and changed.record == Record.NONE
    forgotten = arrival.unopened(Unopened.NO_SESSION, "no session", "khrushchev",
                                 Known(new_contact=True))  # fmt: skip
    assert forgotten.record == Record.NONE and not forgotten.held
    assert forgotten.note == "a message from khrushchev could not be read: no session"
    known_peer = arrival.unopened(Unopened.NO_SESSION, "no session", "khrushchev", Known())
    assert known_peer == Arrival(Record.UNREADABLE, reason="no session")
    damaged = arrival.unopened(Unopened.UNREADABLE, "bad tag", "nobody", Known(new_contact=True))
    assert damaged == Arrival(Record.UNREADABLE, reason="bad tag")


def envelope(to: str, route: Route = Route.DIRECT, inside: bytes = b"ciphertext") -> Envelope:
    return Envelope(to, "khrushchev", os.urandom(16), route, T0 // 1000 + 3600, inside)


def test_routing_direct_forwarded_to_me_carried_and_undeliverable() -> None:
    direct = envelope("kennedy")
    assert arrival.route(direct, "kennedy") == arrival.Routed(direct)
    inner = envelope("kennedy")
    forwarded = envelope("u-thant", Route.FORWARD, inner.to_bytes())
    assert arrival.route(forwarded, "kennedy") == arrival.Routed(inner)
    assert arrival.route(forwarded, "u-thant") == arrival.Routed(carry=inner)
    broken = envelope("u-thant", Route.FORWARD, b"\x07 no envelope")
    assert arrival.route(broken, "u-thant") == arrival.Routed()


STORES_A_MESSAGE = {Record.LETTER, Record.ACKNOWLEDGEMENT, Record.UNREADABLE}
"""The records that keep a message under the envelope's id (the others: `processed`)."""


@given(st.permutations([
    (ID, LETTER), (ID, LETTER),  # a letter to us, and its redelivery
    (b"r" * 16, RECEIPT), (b"r" * 16, RECEIPT),  # their receipt for our letter, twice
    (b"a" * 16, ACK), (b"a" * 16, ACK),  # their acknowledgement of it, twice
    (b"u" * 16, b"\xff garbage"), (b"u" * 16, b"\xff garbage"),
]))  # fmt: skip
def test_any_order_of_arrivals_and_redeliveries_decides_the_same(
    arrivals: list[tuple[bytes, object]],
) -> None:
    """A model store: what one decision keeps is what the next `screen` knows."""
    stored: set[bytes] = set()
    processed: set[bytes] = set()
    decisions: list[tuple[bytes, Record, tuple[ReceiptType, ...], bool]] = []
    for envelope_id, content in arrivals:
        decided = arrival.screen(Known(envelope_id in stored, envelope_id in processed))
        if decided is None:
            if isinstance(content, bytes):
                decided = arrival.read(content, envelope_id, PEER, ME)
            else:
                decided = arrival.meaning(content, envelope_id, PEER, ME)
            decisions.append((envelope_id, decided.record, decided.owed, decided.processed))
        else:
            assert decided == NOTHING
        if decided.record in STORES_A_MESSAGE:
            stored.add(envelope_id)
        if decided.processed:
            processed.add(envelope_id)
    assert len(decisions) == 4  # each envelope decided once, whatever came first
    assert set(decisions) == {
        (ID, Record.LETTER, (ReceiptType.DELIVERED,), False),
        (b"r" * 16, Record.RECEIPT, (), True),
        (b"a" * 16, Record.ACKNOWLEDGEMENT, (), False),
        (b"u" * 16, Record.UNREADABLE, (), False),
    }
    assert stored == {ID, b"a" * 16, b"u" * 16} and processed == {b"r" * 16}
