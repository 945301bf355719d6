"""Control copies (PROTOCOL.md §16.11): only the control key opens them, bound to their letter."""

from __future__ import annotations

import os

import pytest

from backchannel.content import Letter, sign_letter
from backchannel.control_copy import (
    CONTROL_KEY_SECRET_SIZE,
    ControlCopyError,
    ControlKeyPair,
    open_copy,
    open_letter,
    seal,
)
from backchannel.errors import SignatureError
from backchannel.identity import IdentityKeyPair
from backchannel.keys import SigningKeyPair


def _letter(author: IdentityKeyPair, reader: IdentityKeyPair, text: str) -> tuple[bytes, bytes]:
    message_id = os.urandom(16)
    letter = Letter(message_id, "kennedy", author.public.keys, "dobrynin", reader.public.keys,
                    1_000, text)  # fmt: skip
    return message_id, sign_letter(author, letter).to_content()


def test_a_sealed_letter_opens_only_for_control_and_only_as_itself() -> None:
    control = ControlKeyPair.from_secret(os.urandom(CONTROL_KEY_SECRET_SIZE))
    other = ControlKeyPair.from_secret(os.urandom(CONTROL_KEY_SECRET_SIZE))
    author, reader = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    message_id, content = _letter(author, reader, "the Jupiters, privately")
    copy = seal(control.public, message_id, content)
    assert b"Jupiters" not in copy
    letter = open_letter(control, message_id, copy, author.public)
    assert (letter.text, letter.sender, letter.recipient) == ("the Jupiters, privately",
                                                             "kennedy", "dobrynin")  # fmt: skip
    with pytest.raises(ControlCopyError):  # another key
        open_copy(other, message_id, copy)
    with pytest.raises(ControlCopyError):  # moved to another letter by the relay
        open_copy(control, os.urandom(16), copy)
    with pytest.raises(ControlCopyError):  # claimed for another author
        open_letter(control, message_id, copy, reader.public)
    flipped = copy[:-1] + bytes([copy[-1] ^ 1])
    with pytest.raises(ControlCopyError):
        open_copy(control, message_id, flipped)
    with pytest.raises(ControlCopyError):
        open_copy(control, message_id, copy[:100])
    forged = seal(control.public, message_id, content[:-64] + bytes(64))
    with pytest.raises(ControlCopyError, match="signature"):
        open_letter(control, message_id, forged, author.public)


def test_the_control_key_is_published_signed_by_control() -> None:
    control = ControlKeyPair.from_secret(os.urandom(CONTROL_KEY_SECRET_SIZE))
    signer = SigningKeyPair.generate()
    signature = control.public.sign(signer, "cuba-1962")
    control.public.verify(signer.public, "cuba-1962", signature)
    with pytest.raises(SignatureError):
        control.public.verify(signer.public, "berlin-1961", signature)
    with pytest.raises(SignatureError):
        control.public.verify(SigningKeyPair.generate().public, "cuba-1962", signature)
