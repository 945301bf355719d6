"""What travels inside the encryption: a kind byte, then that kind's canonical encoding.

A letter is signed by its author's identity key over a canonical encoding that binds sender,
recipient (names and identity keys), time and message id, so that the recipient can prove who
wrote it to a third party, and so a letter cannot be re-addressed (surreptitious forwarding).
The other kinds are numbered here so later protocol revisions slot in without renumbering.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from . import labels
from .encoding import Reader, Writer
from .errors import IdentityMismatchError, InvalidFieldError, LetterSignatureError
from .identity import IdentityKeyPair, IdentityPublic
from .keys import SIGNATURE_SIZE

LETTER_VERSION = 1
MESSAGE_ID_SIZE = 16
MAX_NAME_BYTES = 64
MAX_LETTER_TEXT_BYTES = 64 * 1024
"""Leaves room under the relay's 96 KiB envelope for encoding, padding and the ratchet."""


class ContentKind(IntEnum):
    LETTER = 1
    PROPOSAL = 2
    ACKNOWLEDGEMENT = 3
    RECEIPT = 4
    OFF_THE_RECORD = 5
    INTRODUCTION = 6
    CONTROL = 7


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
        writer.var8(_name(self.sender)).fixed(self.sender_keys, 64)
        writer.var8(_name(self.recipient)).fixed(self.recipient_keys, 64)
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
        sender = _decode_name(reader.var8(MAX_NAME_BYTES, "sender"))
        sender_keys = reader.fixed(64)
        recipient = _decode_name(reader.var8(MAX_NAME_BYTES, "recipient"))
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


class ReceiptType(IntEnum):
    DELIVERED = 1
    """The recipient's client has stored the message on its disk."""
    READ = 2
    """The recipient has displayed the message."""


RECEIPT_VERSION = 1
MAX_RECEIPT_IDS = 500


@dataclass(frozen=True, slots=True)
class Receipt:
    """Delivery and read receipts (PRODUCT.md §5), authenticated by the session, not signed."""

    type: ReceiptType
    at_ms: int
    message_ids: tuple[bytes, ...]

    def to_content(self) -> bytes:
        if not 0 < len(self.message_ids) <= MAX_RECEIPT_IDS:
            raise ValueError(f"a receipt names 1 to {MAX_RECEIPT_IDS} messages")
        writer = Writer().u8(ContentKind.RECEIPT).u8(RECEIPT_VERSION).u8(self.type)
        writer.u64(self.at_ms).u16(len(self.message_ids))
        for message_id in self.message_ids:
            writer.fixed(message_id, MESSAGE_ID_SIZE)
        return bytes(writer)

    @classmethod
    def read(cls, reader: Reader) -> Receipt:
        version = reader.u8()
        if version != RECEIPT_VERSION:
            raise InvalidFieldError(f"receipt version {version} is not supported")
        raw_type = reader.u8()
        try:
            receipt_type = ReceiptType(raw_type)
        except ValueError:
            raise InvalidFieldError(f"unknown receipt type {raw_type}") from None
        at_ms, count = reader.u64(), reader.u16()
        if not 0 < count <= MAX_RECEIPT_IDS:
            raise InvalidFieldError(f"a receipt names 1 to {MAX_RECEIPT_IDS} messages")
        ids = tuple(reader.fixed(MESSAGE_ID_SIZE) for _ in range(count))
        return cls(receipt_type, at_ms, ids)


Content = SignedLetter | Receipt


def decode_content(data: bytes) -> Content:
    """Parse the plaintext of a session message. Signatures are checked by the caller."""
    reader = Reader(data, "message content")
    kind = reader.u8()
    if kind == ContentKind.LETTER:
        letter = Letter.read(reader)
        signature = reader.fixed(SIGNATURE_SIZE)
        reader.finish()
        return SignedLetter(letter, signature)
    if kind == ContentKind.RECEIPT:
        receipt = Receipt.read(reader)
        reader.finish()
        return receipt
    if kind in ContentKind.__members__.values():
        raise InvalidFieldError(f"content kind {ContentKind(kind).name} is not supported yet")
    raise InvalidFieldError(f"unknown content kind {kind}")


def _name(name: str) -> bytes:
    raw = name.encode("utf-8")
    if not 0 < len(raw) <= MAX_NAME_BYTES:
        raise ValueError(f"a name is 1 to {MAX_NAME_BYTES} bytes of UTF-8")
    return raw


def _decode_name(raw: bytes) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidFieldError("name is not valid UTF-8") from exc
    if not name:
        raise InvalidFieldError("name is empty")
    return name
