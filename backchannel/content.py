"""What travels inside the encryption: a kind byte, then that kind's canonical encoding.

The letter (kind 1) and the kind numbers are in `letters`, the mediators' kinds (6, 8 to 10) in
`mediation`; both are re-exported or decoded here, so `decode_content` reads every kind. The other
kinds are numbered so later protocol revisions slot in without renumbering.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

from . import labels
from .encoding import Reader, Writer
from .errors import IdentityMismatchError, InvalidFieldError, LetterSignatureError, NotaryError
from .identity import IdentityKeyPair, IdentityPublic
from .keys import SIGNATURE_SIZE
from .letters import MAX_LETTER_TEXT_BYTES as MAX_LETTER_TEXT_BYTES
from .letters import MAX_NAME_BYTES as MAX_NAME_BYTES
from .letters import MAX_SEALED_BYTES as MAX_SEALED_BYTES
from .letters import MESSAGE_ID_SIZE as MESSAGE_ID_SIZE
from .letters import ContentKind as ContentKind
from .letters import Letter as Letter
from .letters import SignedLetter as SignedLetter
from .letters import decode_name, encode_name
from .letters import letter_digest as letter_digest
from .letters import sign_letter as sign_letter
from .mediation import (
    Forwarded,
    ReleasedOffer,
    SignedConsent,
    SignedIntroduction,
    read_consent,
    read_introduction,
)
from .otr import OtrControl
from .primitives import AEAD_NONCE_SIZE, AEAD_TAG_SIZE, aead_decrypt, aead_encrypt
from .proposals import (
    DIGEST_SIZE,
    NotaryReceipt,
    SealedProposal,
    SignedStatement,
    commitment,
)


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


PROPOSAL_CONTENT_VERSION = 1
LETTER_ACK_VERSION = 1


class AckForm(IntEnum):
    """Kind 3 carries one of two signed acknowledgements, told apart by the byte after the kind."""

    PROPOSAL_STATEMENT = 1
    LETTER = 2


CONTENT_KEY_SIZE = 32
MAX_RECORD_PART_BYTES = 8 * 1024
TIMED_LOCK_AD = labels.PREFIX + b"timed proposal"


class ProposalForm(IntEnum):
    OPEN = 0
    TIMED = 1
    """Encrypted under a content key the relay's notary releases at `reveal_at_ms`."""


@dataclass(frozen=True, slots=True)
class ProposalContent:
    """A sealed proposal on its way to an addressee, with the notary's receipt for its
    commitment (PROTOCOL.md §7.3). A timed one is locked under a content key until its reveal
    time; its digest travels beside it so the addressee can acknowledge what it cannot yet read."""

    receipt: NotaryReceipt
    digest: bytes
    sealed: SealedProposal | None = None
    reveal_at_ms: int = 0
    locked: bytes = b""
    """TIMED: AEAD nonce ‖ ciphertext of the `Sealed` bytes."""

    @property
    def commitment(self) -> bytes:
        return self.receipt.entry.subject

    def to_content(self) -> bytes:
        writer = Writer().u8(ContentKind.PROPOSAL).u8(PROPOSAL_CONTENT_VERSION)
        writer.var16(self.receipt.to_bytes()).fixed(self.digest, DIGEST_SIZE)
        if self.sealed is not None:
            return bytes(writer.u8(ProposalForm.OPEN).var32(self.sealed.to_bytes()))
        return bytes(writer.u8(ProposalForm.TIMED).u64(self.reveal_at_ms).var32(self.locked))

    @classmethod
    def read(cls, reader: Reader) -> ProposalContent:
        version = reader.u8()
        if version != PROPOSAL_CONTENT_VERSION:
            raise InvalidFieldError(f"proposal content version {version} is not supported")
        receipt = NotaryReceipt.from_bytes(reader.var16(MAX_RECORD_PART_BYTES, "receipt"))
        digest = reader.fixed(DIGEST_SIZE)
        form = reader.u8()
        if form == ProposalForm.OPEN:
            sealed = SealedProposal.from_bytes(reader.var32(MAX_SEALED_BYTES, "sealed proposal"))
            content = cls(receipt, digest, sealed)
            content.check_opening(sealed)
            return content
        if form == ProposalForm.TIMED:
            reveal_at = reader.u64()
            locked = reader.var32(MAX_SEALED_BYTES, "locked")
            if len(locked) < AEAD_NONCE_SIZE + AEAD_TAG_SIZE:
                raise InvalidFieldError("a locked proposal is shorter than its nonce and tag")
            return cls(receipt, digest, None, reveal_at, locked)
        raise InvalidFieldError(f"unknown proposal form {form}")

    def check_opening(self, sealed: SealedProposal) -> None:
        """The opened offer is the one committed to and notarised (AES-GCM alone does not bind a
        ciphertext to one key, so every opening is checked against the commitment)."""
        if sealed.digest != self.digest or sealed.commitment != self.commitment:
            raise NotaryError("the proposal does not open the commitment it was notarised under")

    def unlock(self, key: bytes) -> SealedProposal:
        """Open a timed proposal with the content key the notary released."""
        nonce, ciphertext = self.locked[:AEAD_NONCE_SIZE], self.locked[AEAD_NONCE_SIZE:]
        plaintext = None
        if len(key) == CONTENT_KEY_SIZE and len(nonce) == AEAD_NONCE_SIZE:  # else pyca raises
            plaintext = aead_decrypt(key, nonce, ciphertext, TIMED_LOCK_AD + self.commitment)
        if plaintext is None:
            raise NotaryError("the released content key does not open this proposal")
        sealed = SealedProposal.from_bytes(plaintext)
        self.check_opening(sealed)
        return sealed


def lock_proposal(sealed: SealedProposal, key: bytes, nonce: bytes) -> bytes:
    """AES-256-GCM of the `Sealed` bytes under a fresh content key, bound to the commitment."""
    if len(key) != CONTENT_KEY_SIZE or len(nonce) != AEAD_NONCE_SIZE:
        raise ValueError("a content key is 32 bytes and its nonce 12")
    ad = TIMED_LOCK_AD + commitment(sealed.digest, sealed.nonce)
    return nonce + aead_encrypt(key, nonce, sealed.to_bytes(), ad)


@dataclass(frozen=True, slots=True)
class StatementContent:
    """A signed statement about a proposal with the notary's receipt for it (PROTOCOL.md §7.3)."""

    signed: SignedStatement
    receipt: NotaryReceipt

    def to_content(self) -> bytes:
        writer = Writer().u8(ContentKind.ACKNOWLEDGEMENT).u8(AckForm.PROPOSAL_STATEMENT)
        return bytes(writer.var16(self.signed.to_bytes()).var16(self.receipt.to_bytes()))

    @classmethod
    def read(cls, reader: Reader) -> StatementContent:
        """After the form byte."""
        signed = SignedStatement.from_bytes(reader.var16(MAX_RECORD_PART_BYTES, "statement"))
        receipt = NotaryReceipt.from_bytes(reader.var16(MAX_RECORD_PART_BYTES, "receipt"))
        return cls(signed, receipt)


@dataclass(frozen=True, slots=True)
class LetterAcknowledgement:
    """A signed "we have received your letter with digest D" (PRODUCT.md §5): unlike a receipt
    it proves to a third party that the recipient had the letter, and which one."""

    letter_id: bytes
    letter_digest: bytes
    acknowledger: str
    acknowledger_keys: bytes
    author: str
    author_keys: bytes
    at_ms: int

    def canonical(self) -> bytes:
        writer = Writer().u8(LETTER_ACK_VERSION).fixed(self.letter_id, MESSAGE_ID_SIZE)
        writer.fixed(self.letter_digest, DIGEST_SIZE)
        writer.var8(encode_name(self.acknowledger)).fixed(self.acknowledger_keys, 64)
        writer.var8(encode_name(self.author)).fixed(self.author_keys, 64)
        return bytes(writer.u64(self.at_ms))

    @classmethod
    def read(cls, reader: Reader) -> LetterAcknowledgement:
        version = reader.u8()
        if version != LETTER_ACK_VERSION:
            raise InvalidFieldError(f"letter acknowledgement version {version} is not supported")
        letter_id, digest = reader.fixed(MESSAGE_ID_SIZE), reader.fixed(DIGEST_SIZE)
        acknowledger = decode_name(reader.var8(MAX_NAME_BYTES, "acknowledger"))
        acknowledger_keys = reader.fixed(64)
        author = decode_name(reader.var8(MAX_NAME_BYTES, "author"))
        author_keys = reader.fixed(64)
        return cls(letter_id, digest, acknowledger, acknowledger_keys, author, author_keys,
                   reader.u64())  # fmt: skip


@dataclass(frozen=True, slots=True)
class SignedAcknowledgement:
    acknowledgement: LetterAcknowledgement
    signature: bytes

    def to_content(self) -> bytes:
        writer = Writer().u8(ContentKind.ACKNOWLEDGEMENT).u8(AckForm.LETTER)
        return bytes(writer) + self.acknowledgement.canonical() + self.signature

    def verify(
        self, acknowledger: IdentityPublic, author: IdentityPublic, author_name: str
    ) -> None:
        """Signed by the session's peer, about a letter of ours (as `SignedLetter.verify`)."""
        ack = self.acknowledgement
        if ack.acknowledger_keys != acknowledger.keys:
            raise IdentityMismatchError("the acknowledgement names another signer than the peer")
        if ack.author_keys != author.keys or ack.author != author_name:
            raise IdentityMismatchError("the acknowledgement is about someone else's letter")
        acknowledger.signing.verify(
            self.signature,
            labels.signing_input(labels.SIG_LETTER_ACK, ack.canonical()),
            LetterSignatureError,
        )


def sign_acknowledgement(
    identity: IdentityKeyPair, ack: LetterAcknowledgement
) -> SignedAcknowledgement:
    if ack.acknowledger_keys != identity.public.keys:
        raise ValueError("an acknowledgement is signed by the identity it names")
    return SignedAcknowledgement(ack, identity.sign(labels.SIG_LETTER_ACK, ack.canonical()))


def _read_acknowledgement(reader: Reader) -> StatementContent | SignedAcknowledgement:
    form = reader.u8()
    if form == AckForm.PROPOSAL_STATEMENT:
        return StatementContent.read(reader)
    if form == AckForm.LETTER:
        ack = LetterAcknowledgement.read(reader)
        return SignedAcknowledgement(ack, reader.fixed(SIGNATURE_SIZE))
    raise InvalidFieldError(f"unknown acknowledgement form {form}")


Content: TypeAlias = (
    "SignedLetter | Receipt | ProposalContent | StatementContent | SignedAcknowledgement"
    " | OtrControl | SignedIntroduction | Forwarded | ReleasedOffer | SignedConsent"
)


def decode_content(data: bytes) -> Content:
    """Parse the plaintext of a session message. Signatures are checked by the caller."""
    reader = Reader(data, "message content")
    kind = reader.u8()
    if kind == ContentKind.LETTER:
        letter = Letter.read(reader)
        signature = reader.fixed(SIGNATURE_SIZE)
        reader.finish()
        return SignedLetter(letter, signature)
    readers: dict[int, Callable[[Reader], Content]] = {
        ContentKind.RECEIPT: Receipt.read,
        ContentKind.PROPOSAL: ProposalContent.read,
        ContentKind.ACKNOWLEDGEMENT: _read_acknowledgement,
        ContentKind.OFF_THE_RECORD: OtrControl.read,
        ContentKind.INTRODUCTION: read_introduction,
        ContentKind.FORWARDED: Forwarded.read,
        ContentKind.EXCHANGE_RELEASE: ReleasedOffer.read,
        ContentKind.FORWARD_CONSENT: read_consent,
    }
    if kind in readers:
        content = readers[kind](reader)
        reader.finish()
        return content
    if kind in ContentKind.__members__.values():
        raise InvalidFieldError(f"content kind {ContentKind(kind).name} is not supported yet")
    raise InvalidFieldError(f"unknown content kind {kind}")
