"""The signed letter (content kind 1), and the kind byte every content starts with.

A letter is signed by its author's identity key over a canonical encoding that binds sender,
recipient (names and identity keys), time and message id, so that the recipient can prove who
wrote it to a third party, and so a letter cannot be re-addressed (surreptitious forwarding).
It lives below `content` and `mediation` because both carry letters: `content` decodes every
kind, mediation's forwards among them, and a forward holds a letter verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from . import labels
from .encoding import Reader, Writer
from .errors import IdentityMismatchError, InvalidFieldError, LetterSignatureError
from .identity import IdentityKeyPair, IdentityPublic
from .primitives import sha256

LETTER_VERSION = 1
MESSAGE_ID_SIZE = 16
MAX_NAME_BYTES = 64
MAX_LETTER_TEXT_BYTES = 64 * 1024
"""Leaves room under the relay's 96 KiB envelope for encoding, padding and the ratchet."""
MAX_SEALED_BYTES = 80 * 1024
"""The largest sealed proposal, locked proposal or forwarded letter a content carries."""


class ContentKind(IntEnum):
    LETTER = 1
    PROPOSAL = 2
    ACKNOWLEDGEMENT = 3
    RECEIPT = 4
    OFF_THE_RECORD = 5
    INTRODUCTION = 6
    CONTROL = 7
    FORWARDED = 8
    EXCHANGE_RELEASE = 9
    FORWARD_CONSENT = 10


@dataclass(frozen=True, slots=True)
class Letter:
    """Formal, attributable correspondence (PRODUCT.md §3)."""

    message_id: bytes
    sender: str
    sender_keys: bytes
    recipient: str
    recipient_keys: bytes
    sent_at_ms: int
    text: str
    in_reply_to: bytes | None = None

    def canonical(self) -> bytes:
        """The one encoding that is signed; documented in PROTOCOL.md §7."""
        writer = Writer().u8(LETTER_VERSION).fixed(self.message_id, MESSAGE_ID_SIZE)
        writer.var8(encode_name(self.sender)).fixed(self.sender_keys, 64)
        writer.var8(encode_name(self.recipient)).fixed(self.recipient_keys, 64)
        writer.u64(self.sent_at_ms)
        writer.optional(self.in_reply_to, MESSAGE_ID_SIZE)
        text = self.text.encode("utf-8")
        if len(text) > MAX_LETTER_TEXT_BYTES:
            raise ValueError(f"a letter holds at most {MAX_LETTER_TEXT_BYTES} bytes of text")
        return bytes(writer.var32(text))

    @classmethod
    def read(cls, reader: Reader) -> Letter:
        version = reader.u8()
        if version != LETTER_VERSION:
            raise InvalidFieldError(f"letter version {version} is not supported")
        message_id = reader.fixed(MESSAGE_ID_SIZE)
        sender = decode_name(reader.var8(MAX_NAME_BYTES, "sender"))
        sender_keys = reader.fixed(64)
        recipient = decode_name(reader.var8(MAX_NAME_BYTES, "recipient"))
        recipient_keys = reader.fixed(64)
        sent_at = reader.u64()
        in_reply_to = reader.optional(MESSAGE_ID_SIZE, "in_reply_to")
        raw_text = reader.var32(MAX_LETTER_TEXT_BYTES, "letter text")
        try:
            text = raw_text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidFieldError("letter text is not valid UTF-8") from exc
        return cls(
            message_id, sender, sender_keys, recipient, recipient_keys, sent_at, text, in_reply_to
        )


@dataclass(frozen=True, slots=True)
class SignedLetter:
    letter: Letter
    signature: bytes

    def to_content(self) -> bytes:
        return bytes((ContentKind.LETTER,)) + self.letter.canonical() + self.signature

    def verify(
        self, sender: IdentityPublic, recipient: IdentityPublic, recipient_name: str
    ) -> None:
        """Check the signature and that the letter names these two identities.

        `sender` is the identity the session authenticated; a letter claiming another author,
        or addressed to someone else, is refused even when its signature is good.
        """
        letter = self.letter
        if letter.sender_keys != sender.keys:
            raise IdentityMismatchError("letter names a different author than the session's peer")
        if letter.recipient_keys != recipient.keys or letter.recipient != recipient_name:
            raise IdentityMismatchError("letter is addressed to someone else")
        sender.signing.verify(
            self.signature,
            labels.signing_input(labels.SIG_LETTER, letter.canonical()),
            LetterSignatureError,
        )


def sign_letter(identity: IdentityKeyPair, letter: Letter) -> SignedLetter:
    if letter.sender_keys != identity.public.keys:
        raise ValueError("a letter is signed by the identity it names as sender")
    return SignedLetter(letter, identity.sign(labels.SIG_LETTER, letter.canonical()))


def letter_digest(letter: Letter) -> bytes:
    """What a formal acknowledgement names: the hash of the letter's signed encoding."""
    return sha256(labels.LETTER_DIGEST + b"\x00" + letter.canonical())


def encode_name(name: str) -> bytes:
    """A name as letters and acknowledgements carry it: 1 to 64 bytes of UTF-8."""
    raw = name.encode("utf-8")
    if not 0 < len(raw) <= MAX_NAME_BYTES:
        raise ValueError(f"a name is 1 to {MAX_NAME_BYTES} bytes of UTF-8")
    return raw


def decode_name(raw: bytes) -> str:
    """The converse of `encode_name`, refusing what it would not have written."""
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidFieldError("name is not valid UTF-8") from exc
    if not name:
        raise InvalidFieldError("name is empty")
    return name
