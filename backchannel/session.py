"""A pairwise session: the handshake and the ratchet behind one small API.

`start_session` (initiator) and `accept_session` (responder) open it; `session_encrypt` and
`session_decrypt` move messages. Plaintexts are padded (`padding.py`) before they reach the
ratchet. The initiator attaches its `InitialHeader` to every message until the first answer, so a
responder who missed the first message can still open the session from a later one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum

from .encoding import Reader, Writer
from .errors import DecodeError, IdentityMismatchError, StateError, UnknownVersionError
from .handshake import (
    MAX_NAME_BYTES,
    Encapsulate,
    InitialHeader,
    decode_name,
    initiate,
    respond,
    system_encapsulate,
)
from .identity import IDENTITY_PUBLIC_SIZE, IdentityKeyPair, IdentityPublic
from .padding import pad, unpad
from .prekeys import PrekeyBundle, PrekeySecrets
from .primitives import RandomSource, system_random
from .ratchet import RatchetState, ratchet_decrypt, ratchet_encrypt

SESSION_STATE_VERSION = 1


class MessageType(IntEnum):
    """First byte of every session message."""

    PREKEY = 1
    """InitialHeader ‖ ratchet message: opens (or may open) a session."""
    RATCHET = 2
    """A ratchet message of an established session."""


@dataclass(frozen=True, slots=True)
class Session:
    peer: IdentityPublic
    peer_name: str
    ratchet: RatchetState
    pending_header: InitialHeader | None = None
    """Initiator only: attached to each message until the peer's first answer arrives."""
    handshake_digest: bytes | None = None
    """Responder only: the digest of the initial header that opened this session."""

    def to_bytes(self) -> bytes:
        writer = Writer().u8(SESSION_STATE_VERSION)
        writer.fixed(self.peer.to_bytes(), IDENTITY_PUBLIC_SIZE)
        writer.var8(self.peer_name.encode("utf-8"))
        writer.var32(self.ratchet.to_bytes())
        writer.var32(self.pending_header.to_bytes() if self.pending_header else b"")
        writer.optional(self.handshake_digest, 32)
        return bytes(writer)

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        reader = Reader(data, "session state")
        version = reader.u8()
        if version != SESSION_STATE_VERSION:
            raise UnknownVersionError(f"session state version {version} is not supported")
        peer = IdentityPublic.read(reader)
        name = decode_name(reader.var8(MAX_NAME_BYTES, "peer name"))
        ratchet = RatchetState.from_bytes(reader.var32())
        raw_header = reader.var32()
        header = None
        if raw_header:
            header_reader = Reader(raw_header, "pending initial header")
            header = InitialHeader.read(header_reader)
            header_reader.finish()
        digest = reader.optional(32, "handshake digest")
        reader.finish()
        return cls(peer, name, ratchet, header, digest)


def start_session(
    identity: IdentityKeyPair,
    identity_name: str,
    bundle: PrekeyBundle,
    peer_name: str,
    random: RandomSource = system_random,
    encapsulate: Encapsulate = system_encapsulate,
) -> Session:
    """Open a session to the owner of `bundle` (which is verified first)."""
    initiated = initiate(identity, identity_name, bundle, peer_name, random, encapsulate)
    return Session(bundle.identity, peer_name, initiated.state, pending_header=initiated.header)


def session_encrypt(
    session: Session, plaintext: bytes, random: RandomSource = system_random
) -> tuple[Session, bytes]:
    ratchet, message = ratchet_encrypt(session.ratchet, pad(plaintext), random)
    if session.pending_header is not None:
        wire = bytes((MessageType.PREKEY,)) + session.pending_header.to_bytes() + message
    else:
        wire = bytes((MessageType.RATCHET,)) + message
    return replace(session, ratchet=ratchet), wire


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    type: MessageType
    header: InitialHeader | None
    ratchet_message: bytes


def parse_message(data: bytes) -> ParsedMessage:
    """Split a session message; the initial header, if any, is fully validated."""
    reader = Reader(data, "session message")
    kind = reader.u8()
    if kind == MessageType.RATCHET:
        return ParsedMessage(MessageType.RATCHET, None, reader.rest())
    if kind == MessageType.PREKEY:
        header = InitialHeader.read(reader)
        return ParsedMessage(MessageType.PREKEY, header, reader.rest())
    raise DecodeError(f"unknown session message type {kind}")


def opens_new_session(session: Session | None, data: bytes) -> bool:
    """True when `data` must go to `accept_session` rather than `session_decrypt`."""
    parsed = parse_message(data)
    if parsed.header is None:
        return False
    return session is None or session.handshake_digest != parsed.header.digest()


def session_decrypt(
    session: Session, data: bytes, random: RandomSource = system_random
) -> tuple[Session, bytes]:
    parsed = parse_message(data)
    if parsed.header is not None and parsed.header.digest() != session.handshake_digest:
        raise StateError("message opens a new session; use accept_session")
    ratchet, padded = ratchet_decrypt(session.ratchet, parsed.ratchet_message, random)
    plaintext = unpad(padded)
    return Session(session.peer, session.peer_name, ratchet, None, session.handshake_digest), (
        plaintext
    )


def accept_session(
    identity: IdentityKeyPair,
    identity_name: str,
    prekeys: PrekeySecrets,
    data: bytes,
    random: RandomSource = system_random,
    expected_peer: IdentityPublic | None = None,
) -> tuple[PrekeySecrets, Session, bytes]:
    """Respond to a PREKEY message: -> (prekeys left, new session, first plaintext).

    Nothing is consumed unless the first message authenticates. `expected_peer`, when the caller
    has pinned the sender's identity, makes a different key an `IdentityMismatchError`.
    """
    parsed = parse_message(data)
    if parsed.header is None:
        raise StateError("message is not a session-opening (PREKEY) message")
    header = parsed.header
    if expected_peer is not None and expected_peer.keys != header.initiator.keys:
        raise IdentityMismatchError(f"{header.initiator_name}'s identity key has changed")
    responded = respond(identity, identity_name, prekeys, header)
    ratchet, padded = ratchet_decrypt(responded.state, parsed.ratchet_message, random)
    plaintext = unpad(padded)
    session = Session(
        header.initiator, header.initiator_name, ratchet, handshake_digest=header.digest()
    )
    return responded.prekeys, session, plaintext
