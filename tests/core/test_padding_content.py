"""Padmé padding, and letters: their canonical encoding, signature and addressing."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backchannel import labels
from backchannel.content import (
    MAX_LETTER_TEXT_BYTES,
    ContentKind,
    Letter,
    SignedLetter,
    decode_content,
    sign_letter,
)
from backchannel.errors import (
    FieldTooLargeError,
    IdentityMismatchError,
    InvalidFieldError,
    LetterSignatureError,
    TrailingBytesError,
    TruncatedError,
)
from backchannel.identity import IdentityKeyPair
from backchannel.padding import MIN_PADDED_SIZE, pad, padded_size, padme, unpad

# --- Padmé --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "expected"), [(0, 0), (1, 1), (9, 10), (256, 256), (257, 272), (1000, 1024)]
)
def test_padme_known_values(length: int, expected: int) -> None:
    assert padme(length) == expected


def test_padded_size_has_a_floor_of_256() -> None:
    assert {padded_size(n) for n in range(MIN_PADDED_SIZE)} == {MIN_PADDED_SIZE}


def test_padded_size_always_leaves_room_for_the_terminator() -> None:
    assert all(padded_size(n) >= n + 1 for n in range(70_000))


def test_padded_size_is_monotone() -> None:
    sizes = [padded_size(n) for n in range(70_000)]
    assert all(a <= b for a, b in itertools.pairwise(sizes))


def test_padding_overhead_above_256_bytes_is_at_most_12_percent() -> None:
    assert all(padded_size(n) <= 1.12 * (n + 1) for n in range(MIN_PADDED_SIZE, 70_000))


@given(st.integers(min_value=MIN_PADDED_SIZE, max_value=2**40))
def test_padding_overhead_stays_bounded_for_large_lengths(length: int) -> None:
    size = padded_size(length)
    assert length + 1 <= size <= 1.12 * (length + 1)


@given(st.integers(min_value=2, max_value=2**40))
def test_padme_leaks_only_the_top_bits_of_the_length(length: int) -> None:
    exponent = length.bit_length() - 1
    dropped = exponent - exponent.bit_length()
    assert padme(length) % (1 << dropped) == 0


@given(st.binary(max_size=3000))
def test_unpad_inverts_pad(plaintext: bytes) -> None:
    padded = pad(plaintext)
    assert len(padded) == padded_size(len(plaintext))
    assert unpad(padded) == plaintext


def test_plaintext_ending_in_terminator_and_zero_bytes_round_trips() -> None:
    plaintext = b"text\x80\x00\x00"
    assert unpad(pad(plaintext)) == plaintext


@pytest.mark.parametrize("padded", [b"", bytes(256), b"abc" + bytes(253), b"\x00\x01" * 128])
def test_unpad_rejects_padding_without_terminator(padded: bytes) -> None:
    with pytest.raises(InvalidFieldError):
        unpad(padded)


def test_unpad_rejects_padding_that_is_too_long() -> None:
    with pytest.raises(InvalidFieldError):
        unpad(pad(b"hello") + bytes(16))


def test_unpad_rejects_padding_that_is_too_short() -> None:
    with pytest.raises(InvalidFieldError):
        unpad(pad(b"hello")[:-1])


def test_unpad_rejects_unpadded_terminated_text() -> None:
    with pytest.raises(InvalidFieldError):
        unpad(b"hello\x80")


# --- letters ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alice() -> IdentityKeyPair:
    return IdentityKeyPair.generate()


@pytest.fixture(scope="module")
def bob() -> IdentityKeyPair:
    return IdentityKeyPair.generate()


@pytest.fixture(scope="module")
def carol() -> IdentityKeyPair:
    return IdentityKeyPair.generate()


@pytest.fixture(scope="module")
def letter(alice: IdentityKeyPair, bob: IdentityKeyPair) -> Letter:
    return Letter(
        message_id=bytes(range(16)),
        sender="alice",
        sender_keys=alice.public.keys,
        recipient="bob",
        recipient_keys=bob.public.keys,
        sent_at_ms=1_700_000_000_000,
        text="Ceasefire holds at 06:00 — confirm receipt.",
    )


def test_letter_content_round_trips(alice: IdentityKeyPair, letter: Letter) -> None:
    signed = sign_letter(alice, letter)
    assert decode_content(signed.to_content()) == signed


def test_letter_with_in_reply_to_round_trips(alice: IdentityKeyPair, letter: Letter) -> None:
    signed = sign_letter(alice, replace(letter, in_reply_to=b"\x42" * 16))
    assert decode_content(signed.to_content()) == signed


def test_letter_content_starts_with_its_kind_and_canonical_encoding(
    alice: IdentityKeyPair, letter: Letter
) -> None:
    content = sign_letter(alice, letter).to_content()
    assert content[0] == ContentKind.LETTER
    assert content[1:-64] == letter.canonical()


def test_letter_signature_verifies_for_its_addressee(
    alice: IdentityKeyPair, bob: IdentityKeyPair, letter: Letter
) -> None:
    signed = decode_content(sign_letter(alice, letter).to_content())
    assert isinstance(signed, SignedLetter)
    signed.verify(alice.public, bob.public, "bob")  # raises if anything is wrong


def test_letter_with_tampered_text_is_refused(
    alice: IdentityKeyPair, bob: IdentityKeyPair, letter: Letter
) -> None:
    signed = sign_letter(alice, letter)
    tampered = SignedLetter(replace(letter, text=letter.text.replace("06", "09")), signed.signature)
    with pytest.raises(LetterSignatureError):
        tampered.verify(alice.public, bob.public, "bob")


def test_letter_with_tampered_time_is_refused(
    alice: IdentityKeyPair, bob: IdentityKeyPair, letter: Letter
) -> None:
    signed = sign_letter(alice, letter)
    tampered = SignedLetter(replace(letter, sent_at_ms=letter.sent_at_ms + 1), signed.signature)
    with pytest.raises(LetterSignatureError):
        tampered.verify(alice.public, bob.public, "bob")


def test_letter_forwarded_to_someone_else_is_refused_by_them(
    alice: IdentityKeyPair, carol: IdentityKeyPair, letter: Letter
) -> None:
    signed = sign_letter(alice, letter)
    with pytest.raises(IdentityMismatchError):
        signed.verify(alice.public, carol.public, "carol")


def test_letter_re_addressed_to_someone_else_fails_its_signature(
    alice: IdentityKeyPair, carol: IdentityKeyPair, letter: Letter
) -> None:
    signed = sign_letter(alice, letter)
    readdressed = replace(letter, recipient="carol", recipient_keys=carol.public.keys)
    with pytest.raises(LetterSignatureError):
        SignedLetter(readdressed, signed.signature).verify(alice.public, carol.public, "carol")


def test_letter_under_another_recipient_name_is_refused(
    alice: IdentityKeyPair, bob: IdentityKeyPair, letter: Letter
) -> None:
    with pytest.raises(IdentityMismatchError):
        sign_letter(alice, letter).verify(alice.public, bob.public, "robert")


def test_letter_claiming_an_author_other_than_the_peer_is_refused(
    alice: IdentityKeyPair, bob: IdentityKeyPair, carol: IdentityKeyPair, letter: Letter
) -> None:
    with pytest.raises(IdentityMismatchError):
        sign_letter(alice, letter).verify(carol.public, bob.public, "bob")


def test_signature_made_under_another_label_is_not_a_letter_signature(
    alice: IdentityKeyPair, bob: IdentityKeyPair, letter: Letter
) -> None:
    wrong = alice.sign(labels.SIG_SIGNED_PREKEY, letter.canonical())
    with pytest.raises(LetterSignatureError):
        SignedLetter(letter, wrong).verify(alice.public, bob.public, "bob")


def test_only_the_named_sender_can_sign_a_letter(bob: IdentityKeyPair, letter: Letter) -> None:
    with pytest.raises(ValueError):
        sign_letter(bob, letter)


def test_letter_text_over_the_limit_cannot_be_encoded(letter: Letter) -> None:
    with pytest.raises(ValueError):
        replace(letter, text="x" * (MAX_LETTER_TEXT_BYTES + 1)).canonical()


# --- decoding content ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [0, 8, 255])
def test_unknown_content_kind_is_refused(kind: int) -> None:
    with pytest.raises(InvalidFieldError):
        decode_content(bytes([kind]) + bytes(200))


RESERVED_KINDS = [
    ContentKind.PROPOSAL,
    ContentKind.ACKNOWLEDGEMENT,
    ContentKind.OFF_THE_RECORD,
    ContentKind.INTRODUCTION,
    ContentKind.CONTROL,
]


@pytest.mark.parametrize("kind", RESERVED_KINDS)
def test_reserved_content_kinds_are_not_yet_supported(kind: ContentKind) -> None:
    with pytest.raises(InvalidFieldError):
        decode_content(bytes([kind]) + bytes(200))


def test_letter_of_unknown_version_is_refused(alice: IdentityKeyPair, letter: Letter) -> None:
    content = bytearray(sign_letter(alice, letter).to_content())
    content[1] = 2
    with pytest.raises(InvalidFieldError):
        decode_content(bytes(content))


def test_truncated_letter_is_refused(alice: IdentityKeyPair, letter: Letter) -> None:
    content = sign_letter(alice, letter).to_content()
    with pytest.raises(TruncatedError):
        decode_content(content[:-1])


def test_letter_with_trailing_bytes_is_refused(alice: IdentityKeyPair, letter: Letter) -> None:
    with pytest.raises(TrailingBytesError):
        decode_content(sign_letter(alice, letter).to_content() + b"\x00")


def test_letter_text_that_is_not_utf8_is_refused(alice: IdentityKeyPair, letter: Letter) -> None:
    content = sign_letter(alice, replace(letter, text="ab")).to_content()
    text_at = len(content) - 64 - 2
    broken = content[:text_at] + b"\xff\xfe" + content[text_at + 2 :]
    with pytest.raises(InvalidFieldError):
        decode_content(broken)


def test_letter_text_length_over_the_limit_is_refused(
    alice: IdentityKeyPair, letter: Letter
) -> None:
    content = sign_letter(alice, replace(letter, text="")).to_content()
    length_at = len(content) - 64 - 4
    oversized = (MAX_LETTER_TEXT_BYTES + 1).to_bytes(4, "big")
    with pytest.raises(FieldTooLargeError):
        decode_content(content[:length_at] + oversized + content[length_at + 4 :])


@settings(max_examples=40, deadline=None)
@given(
    text=st.text(max_size=200),
    sender=st.text(min_size=1, max_size=16),
    recipient=st.text(min_size=1, max_size=16),
    sent_at=st.integers(0, 2**64 - 1),
    reply=st.none() | st.binary(min_size=16, max_size=16),
)
def test_any_letter_round_trips_and_verifies(
    alice: IdentityKeyPair,
    bob: IdentityKeyPair,
    text: str,
    sender: str,
    recipient: str,
    sent_at: int,
    reply: bytes | None,
) -> None:
    letter = Letter(
        bytes(16), sender, alice.public.keys, recipient, bob.public.keys, sent_at, text, reply
    )
    decoded = decode_content(sign_letter(alice, letter).to_content())
    assert isinstance(decoded, SignedLetter)
    assert decoded.letter == letter
    decoded.verify(alice.public, bob.public, recipient)
