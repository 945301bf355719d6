"""The participant's local state in SQLite: contacts, sessions, messages, prekeys.

One transaction holds a ratchet step and the message it produced, so a crash between decrypting
and saving neither loses the message nor desynchronises the session. Secret columns (ratchet
states, prekeys, message texts, the relay token) are sealed with the profile's data key
(AES-256-GCM, the row's identity as associated data), so the file alone reveals no content.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    Boolean,
    Integer,
    LargeBinary,
    String,
    create_engine,
    delete,
    event,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from backchannel import ticks

from .errors import CliError

MAX_PREVIOUS_SESSIONS = 10


class Base(DeclarativeBase):
    pass


class Secret(Base):
    __tablename__ = "secrets"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)


class Contact(Base):
    __tablename__ = "contacts"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    identity: Mapped[bytes] = mapped_column(LargeBinary)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_identity: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """A different key the directory or a message presented; refused until re-verified."""


class SessionRow(Base):
    __tablename__ = "sessions"
    peer: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[bytes] = mapped_column(LargeBinary)


class PreviousSession(Base):
    """Sessions replaced by a newer one with the same peer, still able to decrypt: when both
    sides open a session at once, each side's letters travel on a different one for a while."""

    __tablename__ = "previous_sessions"
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    peer: Mapped[str] = mapped_column(String(64), index=True)
    archived_at: Mapped[int] = mapped_column(Integer)
    state: Mapped[bytes] = mapped_column(LargeBinary)


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    direction: Mapped[str] = mapped_column(String(3))
    peer: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    text: Mapped[bytes] = mapped_column(LargeBinary)
    sent_at: Mapped[int] = mapped_column(Integer)
    stored_at: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    verified: Mapped[str] = mapped_column(String(16))
    in_reply_to: Mapped[str | None] = mapped_column(String(32), nullable=True)
    envelope: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """Outgoing only: the sealed envelope, kept until the relay's receipt so a retry resends it."""
    report: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """Outgoing letters in an exercise: the report to control still owed (PROTOCOL.md §16.11,
    JSON), posted before the envelope and queued with it, so neither goes without the other."""
    shown: Mapped[bool] = mapped_column(Boolean, default=False)
    refusal: Mapped[str | None] = mapped_column(String(600), nullable=True)
    """Outgoing only, status `refused`: the relay's reason and code. Never sent again by itself."""
    subject: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    """What the message is about beyond `in_reply_to`: the proposal digest for a proposal and
    its statements, the original for a forward or a consent; threads `history` and `show`."""
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    """A letter's digest (what acknowledgements and consents name), so it works as an ID too."""
    scenario_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The exercise's scenario time (ms) when it was sent, by the clock as known when stored:
    recorded once, never recomputed after the clock is set."""
    scenario_offset: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The scenario's UTC offset in minutes, for showing `scenario_at`."""
    relay_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """When the relay received it (its receipt, ms since the epoch)."""
    relay_scenario_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The scenario time of `relay_at`, recorded with it."""


class LetterSignature(Base):
    """A letter's signature, kept so a mediator can forward it verbatim (PRODUCT.md §6) and
    anyone can prove later who wrote it (`export --all`): received letters', and since the full
    export sent letters' too."""

    __tablename__ = "letter_signatures"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    peer_keys: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """The correspondent's IdentityKeys the letter names, so it is rebuilt byte for byte even
    after their key changes (None: kept by an earlier version; the pinned key is used)."""


class SignedItem(Base):
    """The exact signed bytes of an attributable item other than a letter, kept so `export
    --all` can prove it later (PROTOCOL.md §14.8): a formal acknowledgement (either way), an
    introduction, a forward (its whole content, kind 8), an inject or a communiqué. `signed` is
    sealed with the data key (an inject's or a forward's bytes carry text)."""

    __tablename__ = "signed_items"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """The id of the message it was stored as."""
    signer_key: Mapped[bytes] = mapped_column(LargeBinary)
    """The Ed25519 key it verified under when it was stored."""
    signed: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)


class ForwardLink(Base):
    """A mediator's private note that a message it sent as its own re-words another (`forward
    --as-own`): kept here only, never sent."""

    __tablename__ = "forward_links"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    original: Mapped[str] = mapped_column(String(64))


class ForwardConsentRow(Base):
    """A mediator's copy of an author's signed consent to forwarding one message verbatim
    (`to` is empty when the author left the recipient to the mediator)."""

    __tablename__ = "forward_consents"
    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    to: Mapped[str] = mapped_column(String(64), primary_key=True)
    author: Mapped[str] = mapped_column(String(64))
    signed: Mapped[bytes] = mapped_column(LargeBinary)


class HeldOffer(Base):
    """A mediator's side of a simultaneous exchange: an offer it holds until both are in. The
    offer itself is sealed with the data key; the rest is what the notary's log shows anyway."""

    __tablename__ = "held_offers"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    exchange: Mapped[str] = mapped_column(String(32), index=True)
    author: Mapped[str] = mapped_column(String(64))
    addressee: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    """The notary's sequence number for the offer's commitment."""
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    receipt: Mapped[bytes] = mapped_column(LargeBinary)
    released_at: Mapped[int] = mapped_column(Integer, default=0)
    """0 while held; when the exchange was released (ms), for both sides' rows."""


class Processed(Base):
    """An envelope that left no message behind (a receipt), remembered until it expires so that
    a redelivery (after a crash before the acknowledgement) is recognised, not decrypted again."""

    __tablename__ = "processed"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    expires_at: Mapped[int] = mapped_column(Integer)


class OwedReceipt(Base):
    """A delivery or read receipt owed for a received letter, recorded in the transaction that
    stored the letter (delivered) or marked it shown (read): a crash before it is sealed and
    sent leaves it owed, never lost. Sealed into one receipt per peer and kind when it goes."""

    __tablename__ = "owed_receipts"
    kind: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    peer: Mapped[str] = mapped_column(String(64), index=True)


class SealedReceipt(Base):
    """A receipt sealed (with the ratchet state that sealed it, in one transaction that also
    struck off what it names as owed) and not yet taken by the relay: resent as the same bytes,
    which the relay keeps once. Receipts are not messages: they never show in the outbox."""

    __tablename__ = "sealed_receipts"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    peer: Mapped[str] = mapped_column(String(64), index=True)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    stored_at: Mapped[int] = mapped_column(Integer)


class ProposalRow(Base):
    """A proposal this profile made or received. The offer itself is sealed with the data key
    (`sealed`, or `locked` while a timed one waits for its content key); the rest is what the
    relay saw anyway (who, when, the commitment and its receipt)."""

    __tablename__ = "proposals"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    commitment: Mapped[str] = mapped_column(String(64), unique=True)
    direction: Mapped[str] = mapped_column(String(3))
    peer: Mapped[str] = mapped_column(String(64), index=True)
    """The author of one received; the (first) addressee of one sent."""
    receipt: Mapped[bytes] = mapped_column(LargeBinary)
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    locked: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    reveal_at: Mapped[int] = mapped_column(Integer, default=0)
    stored_at: Mapped[int] = mapped_column(Integer)
    message_id: Mapped[str] = mapped_column(String(32))
    """The message that carried it (its relay and delivery status)."""


class StatementRow(Base):
    """A signed statement about a proposal, with the notary's receipt once it has one (a
    statement of ours is stored before it is notarised, so a retry notarises the same bytes)."""

    __tablename__ = "statements"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    proposal: Mapped[str] = mapped_column(String(64), index=True)
    direction: Mapped[str] = mapped_column(String(3))
    signed: Mapped[bytes] = mapped_column(LargeBinary)
    receipt: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recipients: Mapped[str] = mapped_column(String(1100), default="")
    """Who it goes to once notarised (names, comma-separated)."""


class Vault:
    """Seals and opens secret columns with the profile's data key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, context: str, data: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, context.encode())

    def open(self, context: str, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], context.encode())
        except (InvalidTag, ValueError):
            raise CliError(f"local state is damaged ({context} does not authenticate)") from None


class LocalStore:
    """Every transaction takes SQLite's write lock when it begins (`BEGIN IMMEDIATE`), so two
    processes of one profile (`inbox --watch` in one terminal, `send` in another) never both read
    a ratchet state and write back different successors, nor both show the same message."""

    def __init__(self, path: Path, data_key: bytes) -> None:
        new = not path.exists()
        if new:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 15})
        event.listen(self.engine, "connect", _pragmas)
        event.listen(self.engine, "begin", _begin_immediate)
        try:
            Base.metadata.create_all(self.engine)
            _add_missing_columns(self.engine)
        except OperationalError as exc:
            self.engine.dispose()
            raise CliError(f"cannot open the local state {path}: {exc.orig}") from None
        except DatabaseError as exc:
            self.engine.dispose()
            raise CliError(f"the local state {path} is damaged: {exc.orig}") from None
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.vault = Vault(data_key)
        self.scenario_clock: Callable[[int], tuple[int, int] | None] = lambda _ms: None
        """Wall ms -> (scenario ms, UTC offset minutes) in an exercise; set by the service."""

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        try:
            with self.sessions() as session, session.begin():
                yield session
        except OperationalError as exc:
            raise CliError(f"the local state could not be updated: {exc.orig}") from None

    def close(self) -> None:
        self.engine.dispose()

    # --- secrets ------------------------------------------------------------------------------

    def get_secret(self, session: Session, key: str) -> bytes | None:
        row = session.get(Secret, key)
        return self.vault.open(f"secret:{key}", row.value) if row else None

    def put_secret(self, session: Session, key: str, value: bytes) -> None:
        session.merge(Secret(key=key, value=self.vault.seal(f"secret:{key}", value)))

    def delete_secret(self, session: Session, key: str) -> None:
        row = session.get(Secret, key)
        if row is not None:
            session.delete(row)

    # --- sessions -----------------------------------------------------------------------------

    def get_session_state(self, session: Session, peer: str) -> bytes | None:
        row = session.get(SessionRow, peer)
        return self.vault.open(f"session:{peer}", row.state) if row else None

    def put_session_state(self, session: Session, peer: str, state: bytes) -> None:
        session.merge(SessionRow(peer=peer, state=self.vault.seal(f"session:{peer}", state)))

    def drop_session(self, session: Session, peer: str) -> None:
        """Forget every session with `peer` (its identity key was replaced)."""
        row = session.get(SessionRow, peer)
        if row is not None:
            session.delete(row)
        session.execute(delete(PreviousSession).where(PreviousSession.peer == peer))

    def archive_session(self, session: Session, peer: str) -> None:
        """Move the current session with `peer` among the previous ones (newest kept)."""
        current = self.get_session_state(session, peer)
        if current is None:
            return
        key = os.urandom(16).hex()
        session.delete(session.get(SessionRow, peer))
        session.add(
            PreviousSession(
                key=key,
                peer=peer,
                archived_at=time.time_ns(),
                state=self.vault.seal(f"previous-session:{peer}:{key}", current),
            )
        )
        session.flush()
        stale = self._previous_rows(session, peer)[MAX_PREVIOUS_SESSIONS:]
        for row in stale:
            session.delete(row)

    def has_session(self, session: Session, peer: str) -> bool:
        """A current or previous session with `peer`."""
        if session.get(SessionRow, peer) is not None:
            return True
        found = session.scalar(select(PreviousSession.key).where(PreviousSession.peer == peer))
        return found is not None

    def previous_sessions(self, session: Session, peer: str) -> list[tuple[str, bytes]]:
        """(key, state) of the previous sessions with `peer`, newest first."""
        return [
            (row.key, self.vault.open(f"previous-session:{peer}:{row.key}", row.state))
            for row in self._previous_rows(session, peer)
        ]

    def forget_previous_session(self, session: Session, key: str) -> None:
        row = session.get(PreviousSession, key)
        if row is not None:
            session.delete(row)

    def _previous_rows(self, session: Session, peer: str) -> list[PreviousSession]:
        query = (
            select(PreviousSession)
            .where(PreviousSession.peer == peer)
            .order_by(PreviousSession.archived_at.desc())
        )
        return list(session.scalars(query))

    # --- messages -----------------------------------------------------------------------------

    def text_of(self, message: Message) -> str:
        return self.vault.open(f"message:{message.id}", message.text).decode("utf-8")

    def add_message(self, session: Session, text: str, **fields: Any) -> Message:
        """Store a message; its scenario time is recorded now, from `sent_at`, unless given."""
        if "scenario_at" not in fields and fields.get("sent_at"):
            scenario = self.scenario_clock(fields["sent_at"])
            if scenario is not None:
                fields["scenario_at"], fields["scenario_offset"] = scenario
        message = Message(text=self.vault.seal(f"message:{fields['id']}", text.encode()), **fields)
        session.add(message)
        return message

    def keep_signed(
        self, session: Session, ident: str, signer_key: bytes, signed: bytes, signature: bytes
    ) -> None:
        """Keep an item's signed bytes for `export --all` (once: a redelivery changes nothing)."""
        if session.get(SignedItem, ident) is None:
            sealed = self.vault.seal(f"signed-item:{ident}", signed)
            session.add(SignedItem(id=ident, signer_key=signer_key, signed=sealed,
                                   signature=signature))  # fmt: skip

    def signed_item(self, session: Session, ident: str) -> tuple[bytes, bytes, bytes] | None:
        """(signer key, signed bytes, signature) kept for message `ident`, if any."""
        row = session.get(SignedItem, ident)
        if row is None:
            return None
        return row.signer_key, self.vault.open(f"signed-item:{ident}", row.signed), row.signature

    def stamp_relay_time(
        self, session: Session, message_id: str, received_at: int, direction: str
    ) -> None:
        """Record the relay's receipt time (and its scenario time) once, when first known."""
        session.flush()
        message = session.get(Message, message_id)
        if message is None or message.direction != direction or message.relay_at is not None:
            return
        if received_at <= 0:
            return
        message.relay_at = received_at
        scenario = self.scenario_clock(received_at)
        if scenario is not None:
            message.relay_scenario_at = scenario[0]
            message.scenario_offset = message.scenario_offset or scenario[1]

    def on_record_with(self, session: Session, peer: str, kept_otr: bool = True) -> bool:
        """Whether anything here besides the contact and the sessions names `peer`: an
        identified exchange (letters, acknowledgements, proposals, statements, mediation) or,
        with `kept_otr`, an off-the-record message the user chose to keep (`--keep`)."""
        messages = select(Message.id).where(Message.peer == peer)
        if not kept_otr:
            messages = messages.where(Message.kind != "otr")
        if session.scalar(messages.limit(1)) is not None:
            return True
        checks = (
            select(ProposalRow.digest).where(ProposalRow.peer == peer),
            select(HeldOffer.digest).where(
                (HeldOffer.author == peer) | (HeldOffer.addressee == peer)
            ),
            select(ForwardConsentRow.subject).where(
                (ForwardConsentRow.author == peer) | (ForwardConsentRow.to == peer)
            ),
        )
        if any(session.scalar(check.limit(1)) is not None for check in checks):
            return True
        listed = session.scalars(
            select(StatementRow.recipients).where(StatementRow.recipients.contains(peer))
        )
        return any(peer in recipients.split(",") for recipients in listed)

    def forget_peer(self, session: Session, peer: str, contact: bool, sessions: bool) -> None:
        """Delete the contact row (`contact`) and every session (`sessions`) with `peer`;
        `secure_delete` zeroes them in the file, `truncate_wal` then clears the log."""
        if sessions:
            self.drop_session(session, peer)
        row = session.get(Contact, peer) if contact else None
        if row is not None:
            session.delete(row)
        for owed in (OwedReceipt, SealedReceipt) if contact else ():
            session.execute(delete(owed).where(owed.peer == peer))

    def truncate_wal(self) -> bool:
        """Checkpoint the write-ahead log into the database and truncate it to nothing, so no
        earlier copy of a deleted row stays in it; False if another process was reading."""
        raw = self.engine.raw_connection()
        try:
            driver: Any = raw.driver_connection
            busy, _, _ = driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return not busy
        except sqlite3.Error:
            return False
        finally:
            raw.close()

    def forget_expired(self, session: Session, now: int) -> None:
        """Forget the processed envelope ids `ticks` says no redelivery can need (`now`: s)."""
        session.execute(delete(Processed).where(Processed.expires_at < ticks.forget_before(now)))

    def messages(self, session: Session, unshown_only: bool = False) -> list[Message]:
        query = select(Message).order_by(Message.stored_at, Message.id)
        if unshown_only:
            query = query.where(Message.shown.is_(False), Message.direction == "in")
        return list(session.scalars(query))


def _add_missing_columns(engine: Any) -> None:
    """A profile made by an earlier version gains the columns added since (all nullable)."""
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            have = {
                row[1] for row in connection.exec_driver_sql(f"PRAGMA table_info({table.name})")
            }
            for column in table.columns:
                if column.name not in have and column.nullable:
                    kind = column.type.compile(engine.dialect)
                    connection.exec_driver_sql(
                        f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"
                    )
        connection.commit()


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # transactions begin in `_begin_immediate` instead
    cursor = dbapi_connection.cursor()
    for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA secure_delete=ON"):
        cursor.execute(pragma)
    cursor.close()


def _begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
