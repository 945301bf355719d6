"""Sealed proposals: canonical offers, signed statements about them, commitments and the notary.

A proposal is a structured offer (PRODUCT.md §4) with one canonical encoding. Its author signs
it; its **digest** names it in every later statement; its **commitment** (a salted hash of the
digest) is what the relay's notary sees and sequences, so the relay can order events without
learning the offer. Every transition after sealing is a `Statement` signed by whoever makes it.
The notary answers each notarised value with a `NotaryReceipt`: its Ed25519 signature over a log
entry that is hash-chained to the one before, so anyone holding the log can check that no entry
was changed, dropped or reordered. PROTOCOL.md §14 is the specification; this module is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from . import labels
from .encoding import Reader, Writer
from .errors import InvalidFieldError, NotaryError, ProposalSignatureError, ProposalStateError
from .identity import IdentityKeyPair, IdentityPublic
from .keys import SIGNATURE_SIZE, SigningKeyPair, SigningPublicKey
from .primitives import sha256

PROPOSAL_VERSION = 1
PROPOSAL_VERSION_UNDERSTOOD = 2
"""Version 1 with a trailing u16 naming the conditions an understood clause may meet; written
only when one may, so every version-1 proposal keeps its encoding and digest."""
STATEMENT_VERSION = 1
ID_SIZE = 16
DIGEST_SIZE = 32
NONCE_SIZE = 32
KEYS_SIZE = 64
"""An identity's two public keys (Ed25519 ‖ X25519), as in letters."""
MAX_NAME_BYTES = 64
MAX_ADDRESSEES = 16
MAX_TITLE_BYTES = 512
MAX_TERMS = 64
MAX_TERM_BYTES = 4096
MAX_CONDITIONS = 16
MAX_REASON_BYTES = 1024
ZERO_HASH = bytes(DIGEST_SIZE)


class Reveal(IntEnum):
    """When the addressee may open the offer (PRODUCT.md §4)."""

    IMMEDIATE = 0
    AT_TIME = 1
    SIMULTANEOUS = 2


class StatementKind(IntEnum):
    DELIVERED = 1
    OPENED = 2
    ACKNOWLEDGED = 3
    ACCEPTED = 4
    REJECTED = 5
    COUNTERED = 6
    WITHDRAWN = 7


class Status(IntEnum):
    """A proposal's place in its lifecycle, in order; the last four are final."""

    SEALED = 0
    DELIVERED = 1
    OPENED = 2
    ACKNOWLEDGED = 3
    ACCEPTED = 4
    REJECTED = 5
    COUNTERED = 6
    WITHDRAWN = 7
    EXPIRED = 8


FINAL = frozenset({Status.ACCEPTED, Status.REJECTED, Status.COUNTERED, Status.WITHDRAWN})
_STATUS_OF = {kind: Status(kind.value) for kind in StatementKind}


@dataclass(frozen=True, slots=True)
class Party:
    """A name with the identity keys it was verified under."""

    name: str
    keys: bytes

    def write(self, writer: Writer) -> None:
        raw = self.name.encode("utf-8")
        if not 0 < len(raw) <= MAX_NAME_BYTES:
            raise ValueError(f"a name is 1 to {MAX_NAME_BYTES} bytes of UTF-8")
        writer.var8(raw).fixed(self.keys, KEYS_SIZE)

    @classmethod
    def read(cls, reader: Reader, what: str) -> Party:
        name = text_field(reader.var8(MAX_NAME_BYTES, what), f"{what} name", empty=False)
        return cls(name, reader.fixed(KEYS_SIZE))

    @classmethod
    def of(cls, name: str, identity: IdentityPublic) -> Party:
        return cls(name, identity.keys)


@dataclass(frozen=True, slots=True)
class Proposal:
    """The offer itself. `conditions` are digests of proposals this one is valid only with;
    `answers` is the digest of the proposal a counter-proposal answers."""

    proposal_id: bytes
    author: Party
    addressees: tuple[Party, ...]
    title: str
    terms: tuple[str, ...]
    created_at_ms: int
    expires_at_ms: int = 0
    """0: no expiry."""
    mediator: Party | None = None
    conditions: tuple[bytes, ...] = ()
    answers: bytes | None = None
    reveal: Reveal = Reveal.IMMEDIATE
    reveal_at_ms: int = 0
    """For `Reveal.AT_TIME`: when the content key is released."""
    exchange_id: bytes | None = None
    """For `Reveal.SIMULTANEOUS`: the exchange this offer is one side of."""
    allow_understood: tuple[bytes, ...] = ()
    """The conditions (a subset of `conditions`) the author lets an off-the-record, only
    understood, clause meet (`--if ID --allow-understood`)."""

    def understood_mask(self) -> int:
        """Bit i set: condition i may be met by an understood clause."""
        if not set(self.allow_understood) <= set(self.conditions):
            raise ValueError("only a condition may allow an understood clause")
        return sum(1 << i for i, c in enumerate(self.conditions) if c in self.allow_understood)

    def canonical(self) -> bytes:
        """The one encoding that is signed and hashed (PROTOCOL.md §14.1)."""
        if not 0 < len(self.addressees) <= MAX_ADDRESSEES:
            raise ValueError(f"a proposal has 1 to {MAX_ADDRESSEES} addressees")
        if not 0 < len(self.terms) <= MAX_TERMS:
            raise ValueError(f"a proposal has 1 to {MAX_TERMS} terms")
        if len(self.conditions) > MAX_CONDITIONS:
            raise ValueError(f"a proposal has at most {MAX_CONDITIONS} conditions")
        if (self.reveal == Reveal.SIMULTANEOUS) != (self.exchange_id is not None):
            raise ValueError("an exchange id goes with, and only with, simultaneous reveal")
        mask = self.understood_mask()
        version = PROPOSAL_VERSION_UNDERSTOOD if mask else PROPOSAL_VERSION
        writer = Writer().u8(version).fixed(self.proposal_id, ID_SIZE)
        self.author.write(writer)
        writer.u8(len(self.addressees))
        for addressee in self.addressees:
            addressee.write(writer)
        writer.u8(0 if self.mediator is None else 1)
        if self.mediator is not None:
            self.mediator.write(writer)
        writer.var16(_encode(self.title, MAX_TITLE_BYTES, "title"))
        writer.u8(len(self.terms))
        for term in self.terms:
            writer.var16(_encode(term, MAX_TERM_BYTES, "term"))
        writer.u8(len(self.conditions))
        for condition in self.conditions:
            writer.fixed(condition, DIGEST_SIZE)
        writer.optional(self.answers, DIGEST_SIZE)
        writer.u64(self.created_at_ms).u64(self.expires_at_ms).u8(self.reveal)
        if self.reveal == Reveal.AT_TIME:
            writer.u64(self.reveal_at_ms)
        elif self.reveal == Reveal.SIMULTANEOUS:
            assert self.exchange_id is not None
            writer.fixed(self.exchange_id, ID_SIZE)
        if mask:
            writer.u16(mask)
        return bytes(writer)

    @classmethod
    def read(cls, reader: Reader) -> Proposal:
        version = reader.u8()
        if version not in (PROPOSAL_VERSION, PROPOSAL_VERSION_UNDERSTOOD):
            raise InvalidFieldError(f"proposal version {version} is not supported")
        proposal_id = reader.fixed(ID_SIZE)
        author = Party.read(reader, "author")
        count = reader.u8()
        if not 0 < count <= MAX_ADDRESSEES:
            raise InvalidFieldError(f"a proposal has 1 to {MAX_ADDRESSEES} addressees")
        addressees = tuple(Party.read(reader, "addressee") for _ in range(count))
        mediator = _flagged(reader, "mediator")
        title = text_field(reader.var16(MAX_TITLE_BYTES, "title"), "title", empty=False)
        count = reader.u8()
        if not 0 < count <= MAX_TERMS:
            raise InvalidFieldError(f"a proposal has 1 to {MAX_TERMS} terms")
        terms = tuple(
            text_field(reader.var16(MAX_TERM_BYTES, "term"), "term", empty=False)
            for _ in range(count)
        )
        count = reader.u8()
        if count > MAX_CONDITIONS:
            raise InvalidFieldError(f"a proposal has at most {MAX_CONDITIONS} conditions")
        conditions = tuple(reader.fixed(DIGEST_SIZE) for _ in range(count))
        answers = reader.optional(DIGEST_SIZE, "answers")
        created_at, expires_at = reader.u64(), reader.u64()
        raw_reveal = reader.u8()
        try:
            reveal = Reveal(raw_reveal)
        except ValueError:
            raise InvalidFieldError(f"unknown reveal policy {raw_reveal}") from None
        reveal_at = reader.u64() if reveal == Reveal.AT_TIME else 0
        exchange_id = reader.fixed(ID_SIZE) if reveal == Reveal.SIMULTANEOUS else None
        allowed: tuple[bytes, ...] = ()
        if version == PROPOSAL_VERSION_UNDERSTOOD:
            mask = reader.u16()
            if mask == 0 or mask >> len(conditions):
                raise InvalidFieldError("the understood-clause mask names no condition or too many")
            allowed = tuple(c for i, c in enumerate(conditions) if mask >> i & 1)
        return cls(
            proposal_id, author, addressees, title, terms, created_at, expires_at, mediator,
            conditions, answers, reveal, reveal_at, exchange_id, allowed,
        )  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes) -> Proposal:
        reader = Reader(data, "proposal")
        proposal = cls.read(reader)
        reader.finish()
        return proposal

    def digest(self) -> bytes:
        return sha256(labels.PROPOSAL_DIGEST + b"\x00" + self.canonical())

    def expired(self, now_ms: int) -> bool:
        return self.expires_at_ms != 0 and now_ms >= self.expires_at_ms


def commitment(digest: bytes, nonce: bytes) -> bytes:
    """The salted hash the notary sees: it binds the offer without revealing it (the nonce
    travels only inside the end-to-end encryption)."""
    if len(digest) != DIGEST_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError("a commitment takes a 32-byte digest and a 32-byte nonce")
    return sha256(labels.PROPOSAL_COMMITMENT + b"\x00" + nonce + digest)


@dataclass(frozen=True, slots=True)
class SealedProposal:
    """A proposal, its author's signature and the nonce of its commitment."""

    proposal: Proposal
    signature: bytes
    nonce: bytes

    @property
    def digest(self) -> bytes:
        return self.proposal.digest()

    @property
    def commitment(self) -> bytes:
        return commitment(self.digest, self.nonce)

    @property
    def terms(self) -> bytes:
        """The value the notary records for this proposal's commitment (`notary_terms`)."""
        proposal = self.proposal
        return notary_terms(
            self.commitment, proposal.author, proposal.addressees, proposal.expires_at_ms,
            proposal.mediator,
        )  # fmt: skip

    def to_bytes(self) -> bytes:
        return self.proposal.canonical() + self.signature + self.nonce

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedProposal:
        reader = Reader(data, "sealed proposal")
        proposal = Proposal.read(reader)
        signature, nonce = reader.fixed(SIGNATURE_SIZE), reader.fixed(NONCE_SIZE)
        reader.finish()
        return cls(proposal, signature, nonce)

    def verify(self, author: IdentityPublic) -> None:
        """The author named in the proposal signed it with this identity."""
        if self.proposal.author.keys != author.keys:
            raise ProposalSignatureError("the proposal names another author's keys")
        author.signing.verify(
            self.signature,
            labels.signing_input(labels.SIG_PROPOSAL, self.proposal.canonical()),
            ProposalSignatureError,
        )


def seal(identity: IdentityKeyPair, proposal: Proposal, nonce: bytes) -> SealedProposal:
    """Sign `proposal` as its author; `nonce` is 32 fresh random bytes for the commitment."""
    if proposal.author.keys != identity.public.keys:
        raise ValueError("a proposal is signed by the identity it names as author")
    if len(nonce) != NONCE_SIZE:
        raise ValueError("the commitment nonce is 32 bytes")
    signature = identity.sign(labels.SIG_PROPOSAL, proposal.canonical())
    return SealedProposal(proposal, signature, nonce)


@dataclass(frozen=True, slots=True)
class Statement:
    """A signed transition: who says what about which proposal, and when."""

    kind: StatementKind
    proposal_digest: bytes
    proposal_commitment: bytes
    author: Party
    at_ms: int
    accepted_with: tuple[bytes, ...] = ()
    """ACCEPTED only: digests of the conditions accepted together with this proposal."""
    counter: bytes | None = None
    """COUNTERED only: the digest of the counter-proposal."""
    reason: str = ""

    def canonical(self) -> bytes:
        if self.accepted_with and self.kind != StatementKind.ACCEPTED:
            raise ValueError("only an acceptance names proposals accepted with it")
        if (self.counter is not None) != (self.kind == StatementKind.COUNTERED):
            raise ValueError("a counter statement, and only one, names the counter-proposal")
        if len(self.accepted_with) > MAX_CONDITIONS:
            raise ValueError(f"at most {MAX_CONDITIONS} proposals accepted together")
        writer = Writer().u8(STATEMENT_VERSION).u8(self.kind)
        writer.fixed(self.proposal_digest, DIGEST_SIZE)
        writer.fixed(self.proposal_commitment, DIGEST_SIZE)
        self.author.write(writer)
        writer.u64(self.at_ms).u8(len(self.accepted_with))
        for digest in self.accepted_with:
            writer.fixed(digest, DIGEST_SIZE)
        writer.optional(self.counter, DIGEST_SIZE)
        return bytes(writer.var16(_encode(self.reason, MAX_REASON_BYTES, "reason", empty=True)))

    @classmethod
    def read(cls, reader: Reader) -> Statement:
        version = reader.u8()
        if version != STATEMENT_VERSION:
            raise InvalidFieldError(f"statement version {version} is not supported")
        raw_kind = reader.u8()
        try:
            kind = StatementKind(raw_kind)
        except ValueError:
            raise InvalidFieldError(f"unknown statement kind {raw_kind}") from None
        digest, proposal_commitment = reader.fixed(DIGEST_SIZE), reader.fixed(DIGEST_SIZE)
        author = Party.read(reader, "statement author")
        at_ms, count = reader.u64(), reader.u8()
        if count > MAX_CONDITIONS or (count and kind != StatementKind.ACCEPTED):
            raise InvalidFieldError("only an acceptance names up to 16 proposals accepted with it")
        accepted_with = tuple(reader.fixed(DIGEST_SIZE) for _ in range(count))
        counter = reader.optional(DIGEST_SIZE, "counter")
        if (counter is not None) != (kind == StatementKind.COUNTERED):
            raise InvalidFieldError("a counter statement, and only one, names a counter-proposal")
        reason = text_field(reader.var16(MAX_REASON_BYTES, "reason"), "reason")
        return cls(kind, digest, proposal_commitment, author, at_ms, accepted_with, counter, reason)

    def digest(self) -> bytes:
        return sha256(labels.STATEMENT_DIGEST + b"\x00" + self.canonical())


@dataclass(frozen=True, slots=True)
class SignedStatement:
    statement: Statement
    signature: bytes

    def to_bytes(self) -> bytes:
        return self.statement.canonical() + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedStatement:
        reader = Reader(data, "statement")
        statement = Statement.read(reader)
        signature = reader.fixed(SIGNATURE_SIZE)
        reader.finish()
        return cls(statement, signature)

    def verify(self, author: IdentityPublic) -> None:
        if self.statement.author.keys != author.keys:
            raise ProposalSignatureError("the statement names another author's keys")
        author.signing.verify(
            self.signature,
            labels.signing_input(labels.SIG_STATEMENT, self.statement.canonical()),
            ProposalSignatureError,
        )


def sign_statement(identity: IdentityKeyPair, statement: Statement) -> SignedStatement:
    if statement.author.keys != identity.public.keys:
        raise ValueError("a statement is signed by the identity it names as author")
    return SignedStatement(statement, identity.sign(labels.SIG_STATEMENT, statement.canonical()))


# --- the lifecycle ------------------------------------------------------------------------------


@dataclass(slots=True)
class Record:
    """One proposal and the statements made about it, checked as they are added."""

    sealed: SealedProposal
    statements: list[SignedStatement] = field(default_factory=list)

    @property
    def proposal(self) -> Proposal:
        return self.sealed.proposal

    def status(self, now_ms: int) -> Status:
        status = Status.SEALED
        for signed in self.statements:
            status = max(status, _STATUS_OF[signed.statement.kind])
        if status not in FINAL and self.proposal.expired(now_ms):
            return Status.EXPIRED
        return status

    def check(self, statement: Statement, now_ms: int, accepted: Iterable[bytes] = ()) -> None:
        """Raise `ProposalStateError` unless `statement` may follow what is recorded.

        `accepted` holds digests of proposals already accepted (for conditional acceptance).
        """
        proposal = self.proposal
        if statement.proposal_digest != self.sealed.digest:
            raise ProposalStateError("the statement is about another proposal")
        if statement.proposal_commitment != self.sealed.commitment:
            raise ProposalStateError("the statement names another commitment")
        status = self.status(now_ms)
        kind = statement.kind
        is_author = statement.author == proposal.author
        if kind == StatementKind.WITHDRAWN:
            if not is_author:
                raise ProposalStateError("only the author can withdraw a proposal")
        elif statement.author not in proposal.addressees:
            raise ProposalStateError(f"only an addressee can mark a proposal {kind.name.lower()}")
        if status in FINAL:
            raise ProposalStateError(f"the proposal is already {status.name.lower()}")
        if status == Status.EXPIRED and kind in (StatementKind.ACCEPTED, StatementKind.WITHDRAWN):
            raise ProposalStateError(f"the proposal expired; it cannot be {kind.name.lower()}")
        if kind == StatementKind.ACCEPTED:
            # A condition an understood clause may meet has no acceptance on the record to
            # wait for; whether it holds is the agreement's question (agreements.py).
            missing = set(proposal.conditions) - set(proposal.allow_understood)
            missing -= set(statement.accepted_with) | set(accepted)
            if missing:
                raise ProposalStateError(
                    f"the proposal is conditional on {len(missing)} proposal(s) neither accepted "
                    "nor accepted with it"
                )

    def add(self, signed: SignedStatement, now_ms: int, accepted: Iterable[bytes] = ()) -> None:
        self.check(signed.statement, now_ms, accepted)
        self.statements.append(signed)


# --- the notary ---------------------------------------------------------------------------------


class EntryKind(IntEnum):
    """What a notary log entry records. Acceptance and withdrawal race: the lower seq wins."""

    COMMITMENT = 1
    ACCEPTANCE = 2
    WITHDRAWAL = 3
    STATEMENT = 4


def notary_terms(
    commitment: bytes,
    author: Party,
    addressees: Sequence[Party],
    expires_at_ms: int,
    mediator: Party | None = None,
) -> bytes:
    """The value of a COMMITMENT entry: what the notary enforces for the proposal (who may
    withdraw it, who may accept it, until when, and the mediator through whom it and its
    statements may reach a party the author may not write to directly), signed into its log so
    that every client can check that it is what the proposal itself says. Without it an author
    could notarise an earlier expiry, or a confederate as an addressee who accepts first, or
    another mediator, than the offer shows. Salted by the commitment, so it names nobody to
    whoever does not know the proposal."""
    if len(commitment) != DIGEST_SIZE:
        raise ValueError("a commitment is 32 bytes")
    if not 0 < len(addressees) <= MAX_ADDRESSEES:
        raise ValueError(f"a proposal has 1 to {MAX_ADDRESSEES} addressees")
    writer = Writer().fixed(commitment, DIGEST_SIZE)
    author.write(writer)
    writer.u64(expires_at_ms).u8(len(addressees))
    for addressee in addressees:
        addressee.write(writer)
    writer.u8(0 if mediator is None else 1)
    if mediator is not None:
        mediator.write(writer)
    return sha256(labels.NOTARY_TERMS + b"\x00" + bytes(writer))


@dataclass(frozen=True, slots=True)
class NotaryLink:
    """What the chain keeps of one entry: its seq, a hash of its content and the previous link's
    chain hash. A reader who is no party to an entry gets only this, which is enough to check
    the whole chain and nothing more (PROTOCOL.md §14.3)."""

    seq: int
    body: bytes
    """`NotaryEntry.body_hash()`: the entry's time, kind, subject and value, hashed."""
    previous: bytes

    def to_bytes(self) -> bytes:
        writer = Writer().u64(self.seq).fixed(self.body, DIGEST_SIZE)
        return bytes(writer.fixed(self.previous, DIGEST_SIZE))

    @classmethod
    def from_bytes(cls, data: bytes) -> NotaryLink:
        reader = Reader(data, "notary link")
        link = cls(reader.u64(), reader.fixed(DIGEST_SIZE), reader.fixed(DIGEST_SIZE))
        reader.finish()
        return link

    def chain_hash(self) -> bytes:
        return sha256(labels.NOTARY_CHAIN + b"\x00" + self.to_bytes())


@dataclass(frozen=True, slots=True)
class NotaryEntry:
    seq: int
    at_ms: int
    kind: EntryKind
    subject: bytes
    """The proposal's commitment: what every entry about one proposal shares."""
    value: bytes
    """`notary_terms` for COMMITMENT, else the statement's digest."""
    previous: bytes
    """The chain hash of entry seq - 1 (zeros for seq 1)."""

    def to_bytes(self) -> bytes:
        writer = Writer().u64(self.seq).u64(self.at_ms).u8(self.kind)
        writer.fixed(self.subject, DIGEST_SIZE).fixed(self.value, DIGEST_SIZE)
        return bytes(writer.fixed(self.previous, DIGEST_SIZE))

    @classmethod
    def from_bytes(cls, data: bytes) -> NotaryEntry:
        reader = Reader(data, "notary entry")
        seq, at_ms, raw_kind = reader.u64(), reader.u64(), reader.u8()
        try:
            kind = EntryKind(raw_kind)
        except ValueError:
            raise InvalidFieldError(f"unknown notary entry kind {raw_kind}") from None
        entry = cls(
            seq, at_ms, kind, reader.fixed(DIGEST_SIZE), reader.fixed(DIGEST_SIZE),
            reader.fixed(DIGEST_SIZE),
        )  # fmt: skip
        reader.finish()
        return entry

    def body_hash(self) -> bytes:
        writer = Writer().u64(self.at_ms).u8(self.kind)
        writer.fixed(self.subject, DIGEST_SIZE).fixed(self.value, DIGEST_SIZE)
        return sha256(labels.NOTARY_ENTRY + b"\x00" + bytes(writer))

    def link(self) -> NotaryLink:
        return NotaryLink(self.seq, self.body_hash(), self.previous)

    def chain_hash(self) -> bytes:
        return self.link().chain_hash()


def next_entry(
    previous: NotaryEntry | None, at_ms: int, kind: EntryKind, subject: bytes, value: bytes
) -> NotaryEntry:
    """The entry that follows `previous` in the log (the first one when it is None)."""
    if previous is None:
        return NotaryEntry(1, at_ms, kind, subject, value, ZERO_HASH)
    return NotaryEntry(
        previous.seq + 1, max(at_ms, previous.at_ms), kind, subject, value, previous.chain_hash()
    )


def _receipt_body(relay_id: bytes, entry: NotaryEntry) -> bytes:
    return bytes(Writer().fixed(relay_id, ID_SIZE)) + entry.to_bytes()


@dataclass(frozen=True, slots=True)
class NotaryReceipt:
    """The relay's signed word that `entry` is in its log, exportable for offline checks."""

    relay_id: bytes
    entry: NotaryEntry
    signature: bytes

    def to_bytes(self) -> bytes:
        return _receipt_body(self.relay_id, self.entry) + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> NotaryReceipt:
        reader = Reader(data, "notary receipt")
        relay_id = reader.fixed(ID_SIZE)
        entry = NotaryEntry.from_bytes(reader.fixed(8 + 8 + 1 + 3 * DIGEST_SIZE))
        signature = reader.fixed(SIGNATURE_SIZE)
        reader.finish()
        return cls(relay_id, entry, signature)

    def verify(self, notary_key: SigningPublicKey) -> None:
        notary_key.verify(
            self.signature,
            labels.signing_input(labels.SIG_NOTARY, _receipt_body(self.relay_id, self.entry)),
            NotaryError,
        )


def notarise(key: SigningKeyPair, relay_id: bytes, entry: NotaryEntry) -> NotaryReceipt:
    body = labels.signing_input(labels.SIG_NOTARY, _receipt_body(relay_id, entry))
    return NotaryReceipt(relay_id, entry, key.sign(body))


def verify_log(
    entries: Sequence[NotaryEntry | NotaryLink], after: NotaryEntry | NotaryLink | None = None
) -> None:
    """Raise `NotaryError` unless `entries` continue `after` (or start the log) with no entry
    changed, dropped, inserted or reordered, and with time never going back. Entries the reader
    is no party to come as links: they are checked as part of the chain, their content not."""
    previous = after
    last_at = previous.at_ms if isinstance(previous, NotaryEntry) else 0
    for entry in entries:
        expected_seq = 1 if previous is None else previous.seq + 1
        if entry.seq != expected_seq:
            raise NotaryError(f"notary log entry {entry.seq} where {expected_seq} was due")
        expected_hash = ZERO_HASH if previous is None else previous.chain_hash()
        if entry.previous != expected_hash:
            raise NotaryError(f"notary log entry {entry.seq} does not chain to the one before")
        if isinstance(entry, NotaryEntry):
            if entry.at_ms < last_at:
                raise NotaryError(f"notary log entry {entry.seq} goes back in time")
            last_at = entry.at_ms
        previous = entry


def first_decision(entries: Iterable[NotaryEntry], subject: bytes) -> NotaryEntry | None:
    """The acceptance or withdrawal of `subject` sequenced first: the one that stands."""
    for entry in sorted(entries, key=lambda e: e.seq):
        if entry.subject == subject and entry.kind in (EntryKind.ACCEPTANCE, EntryKind.WITHDRAWAL):
            return entry
    return None


def entry_kind(statement: StatementKind) -> EntryKind:
    """How a statement is recorded by the notary."""
    if statement == StatementKind.ACCEPTED:
        return EntryKind.ACCEPTANCE
    if statement == StatementKind.WITHDRAWN:
        return EntryKind.WITHDRAWAL
    return EntryKind.STATEMENT


# --- helpers ------------------------------------------------------------------------------------


def _encode(value: str, limit: int, what: str, empty: bool = False) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > limit or (not raw and not empty):
        raise ValueError(f"a {what} is {0 if empty else 1} to {limit} bytes of UTF-8")
    return raw


def text_field(raw: bytes, what: str, empty: bool = True) -> str:
    """UTF-8 text read off the wire, or a clear error naming the field."""
    if not raw and not empty:
        raise InvalidFieldError(f"{what} is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidFieldError(f"{what} is not valid UTF-8") from None


def _flagged(reader: Reader, what: str) -> Party | None:
    flag = reader.u8()
    if flag not in (0, 1):
        raise InvalidFieldError(f"{what} presence byte must be 0 or 1")
    return Party.read(reader, what) if flag else None
