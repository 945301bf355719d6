"""Sealed-sender delivery for off-the-record channels: drops (PROTOCOL.md §15.3).

A drop is a mailbox that names nobody. Its owner draws two secrets: a delivery token, which it
hands its correspondent inside the channel's set-up, and a read key, which it keeps. The relay
stores only a hash of each, so it checks that a sender holds the token (Signal's unidentified
access, without the account behind it) and that a reader holds the read key, and learns from
the stored rows neither who writes nor who reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import labels
from .encoding import Reader, Writer
from .envelope import MAX_CIPHERTEXT_BYTES, MESSAGE_ID_SIZE
from .errors import InvalidFieldError, UnknownVersionError
from .padding import pad, unpad
from .primitives import RandomSource, sha256, system_random

SEALED_VERSION = 1
SECRET_SIZE = 32


def drop_address(token: bytes) -> bytes:
    """What the relay files a drop under: SHA-256(PREFIX ‖ "drop address" ‖ 0x00 ‖ token)."""
    _check_secret(token, "delivery token")
    return sha256(labels.DROP_ADDRESS + b"\x00" + token)


def read_hash(read_key: bytes) -> bytes:
    """What the relay keeps of the read key: SHA-256(PREFIX ‖ "drop read key" ‖ 0x00 ‖ key)."""
    _check_secret(read_key, "read key")
    return sha256(labels.DROP_READ_KEY + b"\x00" + read_key)


def new_read_key(random: RandomSource = system_random) -> bytes:
    return random(SECRET_SIZE)


def _check_secret(value: bytes, what: str) -> None:
    if len(value) != SECRET_SIZE:
        raise ValueError(f"a {what} is {SECRET_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class SealedEnvelope:
    """`u8 version (= 1) ‖ fixed[16] message id ‖ u64 expires_at (s) ‖ var32 Pad(message)`:
    no sender and no recipient; the drop is named by the token sent alongside."""

    message_id: bytes
    expires_at: int
    message: bytes
    """An off-the-record message (§15.2), padded here again so the number of MAC keys it
    reveals does not show in its length."""

    def to_bytes(self) -> bytes:
        if len(self.message_id) != MESSAGE_ID_SIZE:
            raise ValueError(f"a message id is {MESSAGE_ID_SIZE} bytes")
        padded = pad(self.message)
        if len(padded) > MAX_CIPHERTEXT_BYTES:
            raise ValueError(f"a sealed envelope holds at most {MAX_CIPHERTEXT_BYTES} bytes")
        writer = Writer().u8(SEALED_VERSION).fixed(self.message_id, MESSAGE_ID_SIZE)
        return bytes(writer.u64(self.expires_at).var32(padded))

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedEnvelope:
        reader = Reader(data, "sealed envelope")
        version = reader.u8()
        if version != SEALED_VERSION:
            raise UnknownVersionError(f"sealed envelope version {version} is not supported")
        message_id = reader.fixed(MESSAGE_ID_SIZE)
        expires_at = reader.u64()
        padded = reader.var32(MAX_CIPHERTEXT_BYTES, "message")
        reader.finish()
        if not padded:
            raise InvalidFieldError("sealed envelope has an empty message")
        return cls(message_id, expires_at, unpad(padded))
