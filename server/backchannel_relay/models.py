"""The relay's tables (SQLAlchemy 2.0 typed declarative style).

What is stored is what routing, authentication and limits need, and nothing more: public keys,
opaque envelopes, hashes of secrets (invites, challenges, tokens) and of message ids. No column
holds plaintext, and none can: the relay never has it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only makes INTEGER PRIMARY KEY an auto-incrementing rowid; BigInteger elsewhere.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class RelayMeta(Base):
    """Key-value facts about this relay: its id, its notary and HMAC keys, the admin token hash."""

    __tablename__ = "relay_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)


class Invite(Base):
    __tablename__ = "invites"
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[int] = mapped_column(BigInteger)
    used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Participant(Base):
    __tablename__ = "participants"
    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    identity: Mapped[bytes] = mapped_column(LargeBinary(128))
    registered_at: Mapped[int] = mapped_column(BigInteger)
    queued_count: Mapped[int] = mapped_column(Integer, default=0)
    queued_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class SignedPrekeyRow(Base):
    __tablename__ = "signed_prekeys"
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE"), primary_key=True
    )
    encoded: Mapped[bytes] = mapped_column(LargeBinary)


class OneTimePrekeyRow(Base):
    __tablename__ = "one_time_prekeys"
    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    key_id: Mapped[int] = mapped_column(BigInteger)
    encoded: Mapped[bytes] = mapped_column(LargeBinary)
    __table_args__ = (
        UniqueConstraint("participant_id", "key_id"),
        Index("ix_one_time_prekeys_owner", "participant_id", "id"),
    )


class KemPrekeyRow(Base):
    __tablename__ = "kem_prekeys"
    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    key_id: Mapped[int] = mapped_column(BigInteger)
    last_resort: Mapped[bool] = mapped_column(Boolean)
    encoded: Mapped[bytes] = mapped_column(LargeBinary)
    __table_args__ = (
        UniqueConstraint("participant_id", "key_id"),
        Index("ix_kem_prekeys_owner", "participant_id", "last_resort", "id"),
    )


class Challenge(Base):
    """A single-use authentication challenge (stored hashed; deleted when used or expired)."""

    __tablename__ = "auth_challenges"
    challenge_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    expires_at: Mapped[int] = mapped_column(BigInteger)


class SessionToken(Base):
    __tablename__ = "session_tokens"
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


class EnvelopeRow(Base):
    """One stored envelope, in its recipient's mailbox until acknowledged or expired."""

    __tablename__ = "envelopes"
    seq: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    received_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    sender_id: Mapped[int | None] = mapped_column(AutoId, nullable=True)
    """Whose share of the mailbox it counts in (`MailboxShare`); None for envelopes stored
    before shares existed. Identified mail names its sender in the envelope anyway."""
    # AUTOINCREMENT: SQLite would otherwise reuse the id of a deleted (acknowledged) last row,
    # and a live connection that has pushed up to that id would skip the newcomer.
    __table_args__ = (
        Index("ix_envelopes_mailbox", "recipient_id", "seq"),
        {"sqlite_autoincrement": True},
    )


class MailboxShare(Base):
    """What one sender has waiting in one recipient's mailbox: a sender may fill only its share
    of a mailbox, so one correspondent cannot jam it for everyone else (`Limits`). Kept like
    the participant's own counters: relative updates on every send, acknowledgement and sweep."""

    __tablename__ = "mailbox_shares"
    recipient_id: Mapped[int] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE"), primary_key=True
    )
    sender_id: Mapped[int] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE"), primary_key=True
    )
    queued_count: Mapped[int] = mapped_column(Integer)
    queued_bytes: Mapped[int] = mapped_column(BigInteger)


class MessageIdRow(Base):
    """A keyed hash of (recipient, message id), kept until expiry: a resend is not stored twice."""

    __tablename__ = "message_ids"
    id_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


class NotaryEntryRow(Base):
    """The notary's append-only, hash-chained log (PROTOCOL.md §14.3): commitments and the
    digests of statements, never an offer. `submitter_id` and `expires_at` are the relay's own
    bookkeeping (who may withdraw or accept; until when); a commitment's signed value binds
    them, with the addressees (`notary_terms`, PROTOCOL.md §14.3)."""

    __tablename__ = "notary_log"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[int] = mapped_column(Integer)
    subject: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    value: Mapped[bytes] = mapped_column(LargeBinary(32))
    previous: Mapped[bytes] = mapped_column(LargeBinary(32))
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    submitter_id: Mapped[int] = mapped_column(ForeignKey("participants.id"))
    expires_at_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    mediator_id: Mapped[int | None] = mapped_column(AutoId, nullable=True)
    """A commitment's mediator (PROTOCOL.md §14.4): its statements may reach a party through
    it, and it reads the proposal's entries in full."""
    __table_args__ = (UniqueConstraint("subject", "kind", "value"),)


class NotaryAddresseeRow(Base):
    """Who a notarised commitment is addressed to: only they may accept it."""

    __tablename__ = "notary_addressees"
    subject: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), primary_key=True)


class NotaryKeyRow(Base):
    """A timed proposal's content key, held until its release time (PROTOCOL.md §14.5). The
    relay never holds the matching ciphertext, which travels end to end to the addressees."""

    __tablename__ = "notary_keys"
    subject: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary(32))
    release_at_ms: Mapped[int] = mapped_column(BigInteger)
    submitter_id: Mapped[int] = mapped_column(ForeignKey("participants.id"))


class DropRow(Base):
    """A sealed-sender mailbox (PROTOCOL.md §15.3). It is filed under a hash of the delivery
    token and opened with a read key it holds only the hash of; no column names a participant,
    and none records when it was made."""

    __tablename__ = "drops"
    address: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    read_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


class DropMessageRow(Base):
    """One sealed-sender envelope waiting in a drop: deleted on delivery or at its expiry."""

    __tablename__ = "drop_messages"
    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    address: Mapped[bytes] = mapped_column(
        ForeignKey("drops.address", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[bytes] = mapped_column(LargeBinary(16))
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    __table_args__ = (UniqueConstraint("address", "message_id"), {"sqlite_autoincrement": True})


class ExerciseRow(Base):
    """An exercise loaded from a scenario (PRODUCT.md §7): its source as loaded, and its clock."""

    __tablename__ = "exercises"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    """The scenario TOML, parsed again when needed (it never changes once loaded)."""
    clock: Mapped[str] = mapped_column(String(200))
    """The clock as JSON (`backchannel.exercise.Clock`)."""
    loaded_at: Mapped[int] = mapped_column(BigInteger)


class ExerciseRoleRow(Base):
    """Which exercise a role (a participant name) belongs to."""

    __tablename__ = "exercise_roles"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    exercise: Mapped[str] = mapped_column(ForeignKey("exercises.name"), index=True)


class CommuniqueRow(Base):
    """A communiqué (PROTOCOL.md §16.9): public to every role of its exercise and to control."""

    __tablename__ = "exercise_communiques"
    exercise: Mapped[str] = mapped_column(ForeignKey("exercises.name"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    author: Mapped[str] = mapped_column(String(64))
    at: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text)
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    received_at: Mapped[int] = mapped_column(BigInteger)


class ControlTrafficRow(Base):
    """A letter as its pair's `control_sees` lets control see it (PROTOCOL.md §16.11): with
    `envelope` who wrote to whom, when, in which class; with `content` also the control copy,
    sealed to the control key. `existence` and `nothing` never make a row."""

    __tablename__ = "control_traffic"
    __table_args__ = (
        UniqueConstraint("exercise", "sender", "message_id", name="uq_control_traffic_letter"),
    )
    """A report sent again (its answer lost on the way) finds its row instead of a second."""
    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    exercise: Mapped[str] = mapped_column(ForeignKey("exercises.name"), index=True)
    channel_class: Mapped[str] = mapped_column(String(16))
    sender: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(64))
    at: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[bytes] = mapped_column(LargeBinary(16))
    copy: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class ControlCountRow(Base):
    """`existence`: how many letters of a class an exercise has seen, and nothing else."""

    __tablename__ = "control_counts"
    exercise: Mapped[str] = mapped_column(ForeignKey("exercises.name"), primary_key=True)
    channel_class: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class RateBucketRow(Base):
    """A per-identity token bucket shared by every relay process on PostgreSQL (`limits.py`);
    keyed by the participant's internal id; UNLOGGED there, as it is worthless after a crash."""

    __tablename__ = "rate_buckets"
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    at: Mapped[float] = mapped_column(Float)


class ControlActionRow(Base):
    """One thing control did in an exercise (issue 18): a clock change, an inject released,
    skipped, edited or added, an invite issued (never its code). The injects' schedule is
    computed from these (`backchannel.msel`), so every relay process sees the same one."""

    __tablename__ = "control_actions"
    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    exercise: Mapped[str] = mapped_column(ForeignKey("exercises.name"), index=True)
    at: Mapped[int] = mapped_column(BigInteger)
    """Wall time, Unix ms."""
    by: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text)
    """JSON, at most `control.MAX_DETAIL_BYTES`."""
    __table_args__ = ({"sqlite_autoincrement": True},)
