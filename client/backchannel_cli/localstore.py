"""The participant's local state in SQLite: contacts, sessions, messages, prekeys.

One transaction holds a ratchet step and the message it produced, so a crash between decrypting
and saving neither loses the message nor desynchronises the session. Secret columns (ratchet
states, prekeys, message texts, the relay token) are sealed with the profile's data key
(AES-256-GCM, the row's identity as associated data), so the file alone reveals no content.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Boolean, Integer, LargeBinary, String, create_engine, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from .errors import CliError


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
    shown: Mapped[bool] = mapped_column(Boolean, default=False)


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
    def __init__(self, path: Path, data_key: bytes) -> None:
        new = not path.exists()
        if new:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.engine = create_engine(f"sqlite:///{path}")
        event.listen(self.engine, "connect", _pragmas)
        Base.metadata.create_all(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.vault = Vault(data_key)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.sessions() as session, session.begin():
            yield session

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
        row = session.get(SessionRow, peer)
        if row is not None:
            session.delete(row)

    # --- messages -----------------------------------------------------------------------------

    def text_of(self, message: Message) -> str:
        return self.vault.open(f"message:{message.id}", message.text).decode("utf-8")

    def add_message(self, session: Session, text: str, **fields: Any) -> Message:
        message = Message(text=self.vault.seal(f"message:{fields['id']}", text.encode()), **fields)
        session.add(message)
        return message

    def messages(self, session: Session, unshown_only: bool = False) -> list[Message]:
        query = select(Message).order_by(Message.stored_at, Message.id)
        if unshown_only:
            query = query.where(Message.shown.is_(False), Message.direction == "in")
        return list(session.scalars(query))


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA secure_delete=ON"):
        cursor.execute(pragma)
    cursor.close()
