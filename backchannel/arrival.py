"""What an arriving envelope means to the participant who receives it.

A client receives an envelope in four steps, and between them does the I/O only it can do:

1. `route`: a forwarded envelope (PROTOCOL.md §16.4) is for us, or ours to carry on unread;
2. `screen`: what the local store already holds of it (a redelivery is never opened twice:
   a receipt's or a control's message key is spent once applied);
3. the client decrypts it; if that fails, `unopened` says what the failure means;
4. `read`: what the decrypted content is, as a decision (`Arrival`): which record to keep,
   which receipts it owes its sender, and whether negotiation or an off-the-record channel has
   work to catch up on.

The client applies the decision to its store in the transaction that decrypted the envelope;
applying it may still find the content false (an acknowledgement of a letter never sent, a
proposal the notary did not record), and then `Arrival.failed` is the decision instead. Like
h11, this module never touches a socket, a file or a clock, so the command line, an agent and
a TUI receive alike, and the decisions are tested on their own (tests/core/test_arrival.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .content import (
    ProposalContent,
    Receipt,
    ReceiptType,
    SignedAcknowledgement,
    SignedLetter,
    StatementContent,
    decode_content,
)
from .envelope import Envelope, Route
from .errors import BackchannelError
from .identity import IdentityPublic
from .mediation import Forwarded, ReleasedOffer, SignedConsent, SignedIntroduction
from .otr import OtrControl
from .proposals import Party, Reveal

SIGNED = "signed"
BAD_SIGNATURE = "BAD SIGNATURE"
"""A letter's `verified`: it names us and its author checks, or it does not (kept, marked)."""


class Record(Enum):
    """What the local store keeps of an arrival."""

    NONE = "none"
    """Nothing: a redelivery, what nobody could deliver, or what is held on the relay."""
    LETTER = "letter"
    ACKNOWLEDGEMENT = "acknowledgement"
    """A signed acknowledgement of one of our letters: kept, and the letter marked."""
    INTRODUCTION = "introduction"
    FORWARD = "forward"
    """A letter or proposal a mediator passed on verbatim, with its author's consent."""
    CONSENT = "consent"
    """An author's consent to a forward, sent to us as their mediator."""
    HELD_OFFER = "held offer"
    """One side of a simultaneous exchange we mediate: kept until the other side's is in."""
    RELEASED_OFFER = "released offer"
    PROPOSAL = "proposal"
    STATEMENT = "statement"
    RECEIPT = "receipt"
    """A delivery or read receipt: applied to our letters (`receipts.on_receipt`), the envelope
    id remembered."""
    OFF_THE_RECORD = "off the record"
    """An off-the-record channel's set-up or close: applied, the envelope id remembered."""
    UNREADABLE = "unreadable"
    """Kept as a failed message saying why, so the user learns something arrived."""


class Unopened(Enum):
    """Why decrypting an envelope failed, as far as what it means goes."""

    KEY_CHANGED = "key changed"
    """It authenticates under another identity key than the one pinned for its sender."""
    NO_SESSION = "no session"
    """It continues a session this profile does not hold."""
    UNREADABLE = "unreadable"
    """Anything else: damaged, replayed, or not for this profile."""


@dataclass(frozen=True, slots=True)
class Known:
    """What the local store already holds that matters to an arrival."""

    stored: bool = False
    """A message with the envelope's id is stored (the last run stored it, unacknowledged)."""
    processed: bool = False
    """The envelope's id is among those processed (a receipt or control applied)."""
    new_contact: bool = False
    """Nothing is known of the sender: no contact row before this envelope."""


@dataclass(frozen=True, slots=True)
class Routed:
    """Where a received envelope goes: to us (`envelope`), on (`carry`), or nowhere."""

    envelope: Envelope | None = None
    """For us: the envelope itself, or the one inside when a mediator carried it to us."""
    carry: Envelope | None = None
    """For someone else through us (blind forwarding): the inner envelope, to hand on."""


@dataclass(frozen=True, slots=True)
class Receiver:
    """Who receives: what a letter must be addressed to, and which mediator we are."""

    name: str
    identity: IdentityPublic

    @property
    def party(self) -> Party:
        return Party.of(self.name, self.identity)


@dataclass(frozen=True, slots=True)
class Arrival:
    """The decision about one envelope: what to keep, what is owed, what to catch up on."""

    record: Record
    content: object = None
    """The decoded content the record is made from (None when nothing was read)."""
    reason: str = ""
    """`UNREADABLE`: why, in words for the user."""
    verified: str = ""
    """`LETTER`: `SIGNED` or `BAD_SIGNATURE`."""
    owed: tuple[ReceiptType, ...] = ()
    """Receipts owed to the sender for this envelope from the moment it is stored."""
    processed: bool = False
    """Remember the envelope's id: what it carried leaves no message of its own."""
    negotiation: bool = False
    """A proposal or a statement about one: there may be work to catch up on."""
    offrecord: bool = False
    """An off-the-record channel's set-up or close: there may be an answer to send."""
    held: bool = False
    """Not acknowledged: it stays on the relay until the user re-verifies the sender."""
    note: str = ""
    """Something to tell the user once, though nothing is kept."""

    def failed(self, reason: object) -> Arrival:
        """The decision when applying this one finds the content false."""
        return unreadable(reason)


NOTHING = Arrival(Record.NONE)


def unreadable(reason: object) -> Arrival:
    return Arrival(Record.UNREADABLE, reason=str(reason))


def route(envelope: Envelope, my_name: str) -> Routed:
    """For us, ours to carry on, or (a forward whose inside is no envelope) nobody's."""
    if envelope.route != Route.FORWARD:
        return Routed(envelope)
    try:
        inner = Envelope.from_bytes(envelope.ciphertext)
    except BackchannelError:
        return Routed()
    if inner.recipient != my_name:
        return Routed(carry=inner)
    return Routed(inner)


def screen(known: Known) -> Arrival | None:
    """A redelivery is not opened again (None: open it). A stored message owed its delivery
    receipt when it was stored; a processed receipt or control was applied already."""
    if known.stored or known.processed:
        return NOTHING
    return None


def unopened(failure: Unopened, reason: str, sender: str, known: Known) -> Arrival:
    """What an envelope that did not decrypt means."""
    if failure == Unopened.KEY_CHANGED:
        return Arrival(Record.NONE, held=True)  # the change is recorded; the envelope stays
    if failure == Unopened.NO_SESSION and known.new_contact:
        # From a session forgotten with an off-the-record channel: keep nothing of it.
        return Arrival(Record.NONE, note=f"a message from {sender} could not be read: {reason}")
    return unreadable(reason)


def read(plaintext: bytes, envelope_id: bytes, peer: IdentityPublic, me: Receiver) -> Arrival:
    """What a decrypted envelope's content means; garbage is `UNREADABLE`, never an error."""
    try:
        content = decode_content(plaintext)
    except (BackchannelError, ValueError) as exc:
        return unreadable(exc)
    return meaning(content, envelope_id, peer, me)


def meaning(content: object, envelope_id: bytes, peer: IdentityPublic, me: Receiver) -> Arrival:
    """What decoded `content` from `peer` (the identity its session authenticated) means."""
    if isinstance(content, SignedLetter):
        return _letter(content, envelope_id, peer, me)
    if isinstance(content, SignedAcknowledgement):
        return Arrival(Record.ACKNOWLEDGEMENT, content)
    if isinstance(content, SignedIntroduction):
        return Arrival(Record.INTRODUCTION, content)
    if isinstance(content, Forwarded):
        return Arrival(Record.FORWARD, content)
    if isinstance(content, SignedConsent):
        return Arrival(Record.CONSENT, content)
    if isinstance(content, OtrControl):
        return Arrival(Record.OFF_THE_RECORD, content, processed=True, offrecord=True)
    if isinstance(content, ProposalContent) and holds(content, me):
        return Arrival(Record.HELD_OFFER, content)
    if isinstance(content, ReleasedOffer):
        return Arrival(Record.RELEASED_OFFER, content, negotiation=True)
    if isinstance(content, ProposalContent):
        return Arrival(Record.PROPOSAL, content, negotiation=True)
    if isinstance(content, StatementContent):
        return Arrival(Record.STATEMENT, content, negotiation=True)
    if isinstance(content, Receipt):
        return Arrival(Record.RECEIPT, content, processed=True)
    return unreadable(f"content of type {type(content).__name__} is not understood")


def holds(content: ProposalContent, me: Receiver) -> bool:
    """Whether this proposal is one side of a simultaneous exchange `me` mediates."""
    sealed = content.sealed
    return (
        sealed is not None
        and sealed.proposal.reveal == Reveal.SIMULTANEOUS
        and sealed.proposal.mediator == me.party
    )


def _letter(
    content: SignedLetter, envelope_id: bytes, peer: IdentityPublic, me: Receiver
) -> Arrival:
    """Kept even when its signature fails (marked so); its delivery receipt is owed at once."""
    if content.letter.message_id != envelope_id:
        return unreadable("the letter's id differs from its envelope's")
    try:
        content.verify(peer, me.identity, me.name)
        verified = SIGNED
    except BackchannelError:
        verified = BAD_SIGNATURE
    return Arrival(Record.LETTER, content, verified=verified, owed=(ReceiptType.DELIVERED,))
