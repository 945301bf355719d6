"""What mediators send: introductions and forwarded letters and proposals (PRODUCT.md §6).

An **introduction** (content kind 6) is the mediator's signed statement "this is B's identity
key", sent to A (and the converse to B): A checks it against the key A holds for B, or pins it
when A holds none, and then writes to B directly, on or off the record.

A **forwarded** message (content kind 8) carries a letter or a sealed proposal verbatim, with its
author's signature, so the recipient can check who wrote it even though the mediator sent it;
the mediator's own session vouches only for having passed it on. By default nothing said to a
mediator is passed on: a verbatim forward also carries the author's signed **consent** (content
kind 10, sent by the author to the mediator), naming the message, the mediator and to whom.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from . import labels
from .encoding import Reader, Writer
from .errors import IdentityMismatchError, InvalidFieldError, LetterSignatureError
from .identity import IDENTITY_PUBLIC_SIZE, IdentityKeyPair, IdentityPublic
from .keys import SIGNATURE_SIZE, SigningPublicKey
from .letters import MAX_SEALED_BYTES, ContentKind, Letter, SignedLetter, letter_digest
from .proposals import MAX_NAME_BYTES, NotaryReceipt, Party, SealedProposal, text_field

INTRODUCTION_VERSION = 1
FORWARD_VERSION = 2
CONSENT_VERSION = 1
DIGEST_SIZE = 32
ANYONE = ""
"""A consent's `to` when the author leaves the choice of recipient to the mediator."""
MAX_RECEIPT_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Introduction:
    """`u8 version (= 1) ‖ Party introducer ‖ Party recipient ‖ name subject
    ‖ fixed[128] IdentityPublic of the subject ‖ u64 at (ms)`."""

    introducer: Party
    recipient: Party
    subject: str
    subject_identity: bytes
    at_ms: int

    def canonical(self) -> bytes:
        writer = Writer().u8(INTRODUCTION_VERSION)
        self.introducer.write(writer)
        self.recipient.write(writer)
        writer.var8(self.subject.encode("utf-8"))
        return bytes(writer.fixed(self.subject_identity, IDENTITY_PUBLIC_SIZE).u64(self.at_ms))

    @classmethod
    def read(cls, reader: Reader) -> Introduction:
        version = reader.u8()
        if version != INTRODUCTION_VERSION:
            raise InvalidFieldError(f"introduction version {version} is not supported")
        introducer = Party.read(reader, "introducer")
        recipient = Party.read(reader, "recipient")
        subject = text_field(reader.var8(MAX_NAME_BYTES, "subject"), "subject name", empty=False)
        identity = reader.fixed(IDENTITY_PUBLIC_SIZE)
        IdentityPublic.from_bytes(identity)  # a well-formed, self-bound identity
        return cls(introducer, recipient, subject, identity, reader.u64())


@dataclass(frozen=True, slots=True)
class SignedIntroduction:
    introduction: Introduction
    signature: bytes

    def to_content(self) -> bytes:
        return bytes((ContentKind.INTRODUCTION,)) + self.introduction.canonical() + self.signature

    def verify(self, introducer: IdentityPublic, me: IdentityPublic, my_name: str) -> None:
        """Signed by the session's peer, and addressed to us."""
        intro = self.introduction
        if intro.introducer.keys != introducer.keys:
            raise IdentityMismatchError("the introduction names another introducer")
        if intro.recipient != Party(my_name, me.keys):
            raise IdentityMismatchError("the introduction is addressed to someone else")
        introducer.signing.verify(
            self.signature,
            labels.signing_input(labels.SIG_INTRODUCTION, intro.canonical()),
            LetterSignatureError,
        )


def sign_introduction(identity: IdentityKeyPair, introduction: Introduction) -> SignedIntroduction:
    signature = identity.sign(labels.SIG_INTRODUCTION, introduction.canonical())
    return SignedIntroduction(introduction, signature)


def read_introduction(reader: Reader) -> SignedIntroduction:
    return SignedIntroduction(Introduction.read(reader), reader.fixed(SIGNATURE_SIZE))


@dataclass(frozen=True, slots=True)
class ForwardConsent:
    """`u8 version (= 1) ‖ Party author ‖ Party mediator ‖ fixed[32] subject ‖ var8 to
    ‖ u64 at (ms)`: the author lets this mediator pass on verbatim the letter or proposal whose
    digest is `subject`, to `to` (empty: to whomever the mediator chooses)."""

    author: Party
    mediator: Party
    subject: bytes
    to: str
    at_ms: int

    def canonical(self) -> bytes:
        writer = Writer().u8(CONSENT_VERSION)
        self.author.write(writer)
        self.mediator.write(writer)
        writer.fixed(self.subject, DIGEST_SIZE).var8(self.to.encode("utf-8"))
        return bytes(writer.u64(self.at_ms))

    @classmethod
    def read(cls, reader: Reader) -> ForwardConsent:
        version = reader.u8()
        if version != CONSENT_VERSION:
            raise InvalidFieldError(f"forwarding consent version {version} is not supported")
        author = Party.read(reader, "author")
        mediator = Party.read(reader, "mediator")
        subject = reader.fixed(DIGEST_SIZE)
        to = text_field(reader.var8(MAX_NAME_BYTES, "to"), "the consent's recipient")
        return cls(author, mediator, subject, to, reader.u64())

    def allows(self, to: str) -> bool:
        return self.to in (ANYONE, to)


@dataclass(frozen=True, slots=True)
class SignedConsent:
    consent: ForwardConsent
    signature: bytes

    def encoded(self) -> bytes:
        return self.consent.canonical() + self.signature

    def to_content(self) -> bytes:
        return bytes((ContentKind.FORWARD_CONSENT,)) + self.encoded()

    def verify(self) -> None:
        """Signed with the keys of the author it names (callers compare those keys and the
        other fields with what they hold)."""
        signing = SigningPublicKey.from_bytes(self.consent.author.keys[:32])
        body = labels.signing_input(labels.SIG_FORWARD_CONSENT, self.consent.canonical())
        signing.verify(self.signature, body, LetterSignatureError)

    def verify_as_mediator(self, author: IdentityPublic, me: Party) -> None:
        """Received by the mediator it names, from the author it names (the session's peer)."""
        if self.consent.author.keys != author.keys:
            raise IdentityMismatchError("the consent names another author than the session's")
        if self.consent.mediator != me:
            raise IdentityMismatchError("the consent is for another mediator")
        self.verify()


def sign_consent(identity: IdentityKeyPair, consent: ForwardConsent) -> SignedConsent:
    if consent.author.keys != identity.public.keys:
        raise ValueError("a consent is signed by the author it names")
    return SignedConsent(consent, identity.sign(labels.SIG_FORWARD_CONSENT, consent.canonical()))


def read_consent(reader: Reader) -> SignedConsent:
    return SignedConsent(ForwardConsent.read(reader), reader.fixed(SIGNATURE_SIZE))


class ForwardForm(IntEnum):
    LETTER = 1
    PROPOSAL = 2


@dataclass(frozen=True, slots=True)
class Forwarded:
    """`u8 8 ‖ u8 version (= 2) ‖ u8 form ‖ (1) var32 (LetterCanonical ‖ fixed[64] signature)
    | (2) var32 Sealed ‖ var16 Receipt of its commitment; then var16 (ConsentCanonical ‖
    fixed[64] signature)`: the author's consent to this forward."""

    consent: SignedConsent
    letter: SignedLetter | None = None
    sealed: SealedProposal | None = None
    receipt: NotaryReceipt | None = None

    def to_content(self) -> bytes:
        writer = Writer().u8(ContentKind.FORWARDED).u8(FORWARD_VERSION)
        if self.letter is not None:
            signed = self.letter.letter.canonical() + self.letter.signature
            writer.u8(ForwardForm.LETTER).var32(signed)
        else:
            assert self.sealed is not None and self.receipt is not None
            writer.u8(ForwardForm.PROPOSAL).var32(self.sealed.to_bytes())
            writer.var16(self.receipt.to_bytes())
        return bytes(writer.var16(self.consent.encoded()))

    @classmethod
    def read(cls, reader: Reader) -> Forwarded:
        version = reader.u8()
        if version != FORWARD_VERSION:
            raise InvalidFieldError(f"forwarded content version {version} is not supported")
        form = reader.u8()
        letter = sealed = receipt = None
        if form == ForwardForm.LETTER:
            inner = Reader(reader.var32(MAX_SEALED_BYTES, "forwarded letter"), "forwarded letter")
            letter = SignedLetter(Letter.read(inner), inner.fixed(SIGNATURE_SIZE))
            inner.finish()
        elif form == ForwardForm.PROPOSAL:
            sealed = SealedProposal.from_bytes(reader.var32(MAX_SEALED_BYTES, "sealed proposal"))
            receipt = NotaryReceipt.from_bytes(reader.var16(MAX_RECEIPT_BYTES, "receipt"))
            if receipt.entry.subject != sealed.commitment:
                raise InvalidFieldError("the receipt is for another proposal's commitment")
        else:
            raise InvalidFieldError(f"unknown forwarded form {form}")
        consent = Reader(reader.var16(MAX_RECEIPT_BYTES, "consent"), "consent")
        signed_consent = read_consent(consent)
        consent.finish()
        return cls(signed_consent, letter, sealed, receipt)

    def author(self) -> Party:
        if self.letter is not None:
            letter = self.letter.letter
            return Party(letter.sender, letter.sender_keys)
        assert self.sealed is not None
        return self.sealed.proposal.author

    def subject(self) -> bytes:
        """The digest a consent names: of the letter's signed encoding, or the proposal's."""
        if self.letter is not None:
            return letter_digest(self.letter.letter)
        assert self.sealed is not None
        return self.sealed.digest

    def verify_consent(self, mediator: Party, recipient: str) -> None:
        """The author consented to this mediator passing this message on to `recipient`."""
        consent = self.consent.consent
        if consent.author != self.author() or consent.subject != self.subject():
            raise IdentityMismatchError("the consent is for another message or author")
        if consent.mediator != mediator:
            raise IdentityMismatchError("the consent names another mediator")
        if not consent.allows(recipient):
            raise IdentityMismatchError(f"the author consented to forwarding to {consent.to}")
        self.consent.verify()

    def verify_author(self) -> None:
        """The author's signature, checked against the keys the original names (the caller
        compares those keys with the ones it holds for that name)."""
        signing = SigningPublicKey.from_bytes(self.author().keys[:32])
        if self.letter is not None:
            body = labels.signing_input(labels.SIG_LETTER, self.letter.letter.canonical())
            signing.verify(self.letter.signature, body, LetterSignatureError)
            return
        assert self.sealed is not None
        body = labels.signing_input(labels.SIG_PROPOSAL, self.sealed.proposal.canonical())
        signing.verify(self.sealed.signature, body, LetterSignatureError)


RELEASE_VERSION = 1


@dataclass(frozen=True, slots=True)
class ReleasedOffer:
    """The mediator's release of one side's offer to the other in a simultaneous exchange
    (PRODUCT.md §4; content kind 9):

        u8 9 ‖ u8 version (= 1) ‖ fixed[16] exchange id ‖ Party mediator
        ‖ var32 Sealed (the offer released) ‖ var16 Receipt of its commitment
        ‖ var16 Receipt of the recipient's own offer's commitment ‖ u64 released_at (ms)
        ‖ fixed[64] Ed25519-Sign(mediator, SigningInput("exchange release", ReleaseBody))
        ReleaseBody = exchange id ‖ commitment released ‖ u64 its notary seq
                    ‖ commitment of the recipient's offer ‖ u64 its notary seq ‖ u64 released_at

    The two receipts show both commitments notarised before `released_at`; the signature is the
    mediator's statement that it released them together."""

    exchange_id: bytes
    mediator: Party
    sealed: SealedProposal
    receipt: NotaryReceipt
    own_receipt: NotaryReceipt
    released_at_ms: int
    signature: bytes = b""

    def body(self) -> bytes:
        writer = Writer().fixed(self.exchange_id, 16)
        writer.fixed(self.receipt.entry.subject, 32).u64(self.receipt.entry.seq)
        writer.fixed(self.own_receipt.entry.subject, 32).u64(self.own_receipt.entry.seq)
        return bytes(writer.u64(self.released_at_ms))

    def to_content(self) -> bytes:
        writer = Writer().u8(ContentKind.EXCHANGE_RELEASE).u8(RELEASE_VERSION)
        writer.fixed(self.exchange_id, 16)
        self.mediator.write(writer)
        writer.var32(self.sealed.to_bytes()).var16(self.receipt.to_bytes())
        writer.var16(self.own_receipt.to_bytes()).u64(self.released_at_ms)
        return bytes(writer.fixed(self.signature, SIGNATURE_SIZE))

    @classmethod
    def read(cls, reader: Reader) -> ReleasedOffer:
        version = reader.u8()
        if version != RELEASE_VERSION:
            raise InvalidFieldError(f"exchange release version {version} is not supported")
        exchange_id = reader.fixed(16)
        mediator = Party.read(reader, "mediator")
        sealed = SealedProposal.from_bytes(reader.var32(MAX_SEALED_BYTES, "sealed proposal"))
        receipt = NotaryReceipt.from_bytes(reader.var16(MAX_RECEIPT_BYTES, "receipt"))
        own = NotaryReceipt.from_bytes(reader.var16(MAX_RECEIPT_BYTES, "own receipt"))
        return cls(exchange_id, mediator, sealed, receipt, own, reader.u64(),
                   reader.fixed(SIGNATURE_SIZE))  # fmt: skip

    def verify(self, mediator: IdentityPublic, notary_key: SigningPublicKey) -> None:
        """Signed by the mediator named in the offer; both commitments notarised (by this
        notary) before the release; the offer is the one the first receipt notarised."""
        proposal = self.sealed.proposal
        if proposal.mediator != self.mediator or self.mediator.keys != mediator.keys:
            raise IdentityMismatchError("the offer names another mediator")
        if self.receipt.entry.subject != self.sealed.commitment:
            raise InvalidFieldError("the receipt is for another offer's commitment")
        if self.receipt.entry.value != self.sealed.terms:
            raise InvalidFieldError("the notary recorded other terms than the offer names")
        for receipt in (self.receipt, self.own_receipt):
            receipt.verify(notary_key)
            if receipt.entry.at_ms > self.released_at_ms:
                raise InvalidFieldError("an offer was notarised after the release")
        mediator.signing.verify(
            self.signature,
            labels.signing_input(labels.SIG_EXCHANGE_RELEASE, self.body()),
            LetterSignatureError,
        )


def sign_release(identity: IdentityKeyPair, release: ReleasedOffer) -> ReleasedOffer:
    signature = identity.sign(labels.SIG_EXCHANGE_RELEASE, release.body())
    return ReleasedOffer(
        release.exchange_id, release.mediator, release.sealed, release.receipt,
        release.own_receipt, release.released_at_ms, signature,
    )  # fmt: skip
