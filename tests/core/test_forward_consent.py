"""An author's consent to forwarding (PROTOCOL.md §16.8): what a mediator and a final recipient
accept, and everything they refuse."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backchannel.content import Letter, decode_content, letter_digest, sign_letter
from backchannel.errors import BackchannelError, DecodeError, IdentityMismatchError
from backchannel.identity import IdentityKeyPair
from backchannel.mediation import (
    ANYONE,
    ForwardConsent,
    Forwarded,
    SignedConsent,
    sign_consent,
)
from backchannel.proposals import Party

CASTRO, THANT, KHRUSHCHEV = (IdentityKeyPair.generate() for _ in range(3))
AUTHOR = Party.of("castro", CASTRO.public)
MEDIATOR = Party.of("u-thant", THANT.public)
LETTER = sign_letter(
    CASTRO,
    Letter(os.urandom(16), "castro", CASTRO.public.keys, "u-thant", THANT.public.keys,
           1_793_059_300_000, "Cuba will accept inspection only with guarantees."),
)  # fmt: skip


def consent(to: str = "khrushchev", **changes: object) -> SignedConsent:
    fields = ForwardConsent(AUTHOR, MEDIATOR, letter_digest(LETTER.letter), to, 1_793_059_400_000)
    return sign_consent(CASTRO, replace(fields, **changes))  # type: ignore[arg-type]


def test_a_consent_round_trips_and_is_checked_by_mediator_and_recipient() -> None:
    signed = consent()
    decoded = decode_content(signed.to_content())
    assert decoded == signed
    signed.verify_as_mediator(CASTRO.public, MEDIATOR)
    forwarded = decode_content(Forwarded(signed, letter=LETTER).to_content())
    assert isinstance(forwarded, Forwarded)
    forwarded.verify_author()
    forwarded.verify_consent(MEDIATOR, "khrushchev")


def test_anyone_lets_the_mediator_choose() -> None:
    forwarded = Forwarded(consent(ANYONE), letter=LETTER)
    for recipient in ("khrushchev", "kennedy"):
        forwarded.verify_consent(MEDIATOR, recipient)


IMPOSTOR = sign_consent(  # someone else consents to forwarding castro's letter
    KHRUSHCHEV,
    ForwardConsent(Party.of("khrushchev", KHRUSHCHEV.public), MEDIATOR,
                   letter_digest(LETTER.letter), "khrushchev", 1_793_059_400_000),
)  # fmt: skip


@pytest.mark.parametrize(
    ("mediator", "recipient", "signed", "why"),
    [
        (MEDIATOR, "kennedy", consent(), "consented to forwarding to khrushchev"),
        (Party.of("dobrynin", KHRUSHCHEV.public), "khrushchev", consent(), "another mediator"),
        (MEDIATOR, "khrushchev", consent(subject=bytes(32)), "another message"),
        (MEDIATOR, "khrushchev", IMPOSTOR, "another message or author"),
    ],
)
def test_a_recipient_refuses_a_consent_that_does_not_fit(
    mediator: Party, recipient: str, signed: SignedConsent, why: str
) -> None:
    with pytest.raises(IdentityMismatchError, match=why):
        Forwarded(signed, letter=LETTER).verify_consent(mediator, recipient)


def test_a_forged_consent_is_refused_by_both() -> None:
    signed = consent()
    forged = SignedConsent(replace(signed.consent, to="kennedy"), signed.signature)
    with pytest.raises(BackchannelError):
        Forwarded(forged, letter=LETTER).verify_consent(MEDIATOR, "kennedy")
    with pytest.raises(BackchannelError):
        forged.verify_as_mediator(CASTRO.public, MEDIATOR)


def test_a_mediator_refuses_a_consent_from_someone_else_or_for_someone_else() -> None:
    with pytest.raises(IdentityMismatchError, match="another author"):
        consent().verify_as_mediator(KHRUSHCHEV.public, MEDIATOR)
    with pytest.raises(IdentityMismatchError, match="another mediator"):
        consent().verify_as_mediator(CASTRO.public, Party.of("dobrynin", KHRUSHCHEV.public))


def test_the_author_signs_only_its_own_consent() -> None:
    with pytest.raises(ValueError, match="signed by the author"):
        sign_consent(THANT, ForwardConsent(AUTHOR, MEDIATOR, bytes(32), ANYONE, 0))


@given(st.binary(max_size=200))
def test_any_bytes_decode_to_a_consent_or_a_clear_error(tail: bytes) -> None:
    encoded = consent().to_content()
    for data in (encoded[: len(tail) % len(encoded)] + tail, encoded + tail):
        try:
            decoded = decode_content(data)
        except DecodeError:
            continue
        assert isinstance(decoded, SignedConsent)
