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
EXPIRY_SPREAD = 3600
"""Seconds: how long after its channel a drop may outlive it (at most; see `drop_expiry`), and
the grid a sealed envelope's expiry is rounded to."""


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


def drop_expiry(
    channel_expires_at_ms: int, now_ms: int, random: RandomSource = system_random
) -> int:
    """The expiry (s) a side asks for its own drop: a second drawn at random, by each side on its
    own, within min(EXPIRY_SPREAD, the channel's remaining life) after the channel's expiry.

    The relay stores it, so it must not link the two drops of a channel to each other (the same
    value twice would) nor to the set-up (the set-up's receipt time plus the TTL would). Drawn
    after the expiry, never before: the channel lasts as long as its users were told."""
    end = -(-channel_expires_at_ms // 1000)
    window = max(1, min(EXPIRY_SPREAD, end - now_ms // 1000))
    return end + int.from_bytes(random(8), "big") % window


def sealed_expiry(channel_expires_at_ms: int) -> int:
    """What a sealed envelope of the channel carries (s): the first multiple of EXPIRY_SPREAD at
    or after the latest a drop of the channel can expire. The relay keeps a message until the
    earlier of this and its drop's expiry, so it takes the recipient's own drop expiry and adds
    no value of its own; the value itself is shared by every channel ending in the same hour."""
    latest = -(-channel_expires_at_ms // 1000) + EXPIRY_SPREAD
    return -(-latest // EXPIRY_SPREAD) * EXPIRY_SPREAD


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
