"""The envelope: the only thing the relay sees.

A strict, versioned binary encoding (PROTOCOL.md §8). The relay routes on the recipient, rate-
limits on the sender when there is one, de-duplicates on the message id and sweeps on the expiry;
everything else is the opaque session message, whose plaintext was padded before encryption.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .encoding import Reader, Writer
from .errors import InvalidFieldError, UnknownVersionError

ENVELOPE_VERSION = 1
MESSAGE_ID_SIZE = 16
MAX_NAME_BYTES = 64
MAX_CIPHERTEXT_BYTES = 96 * 1024
"""Signal-Server's MAX_MESSAGE_SIZE; the relay refuses larger envelopes at the door."""
FLAG_HAS_SENDER = 0x01
_KNOWN_FLAGS = FLAG_HAS_SENDER


class Route(IntEnum):
    """The routing hint: how the relay should treat the envelope."""

    DIRECT = 1
    """From an identified sender to the recipient; the sender field is required."""
    SEALED = 2
    """Sealed sender: no sender field; the relay checks a delivery token instead."""
    FORWARD = 3
    """Blind forwarding: addressed to a mediator who carries it on without reading it."""


@dataclass(frozen=True, slots=True)
class Envelope:
    recipient: str
    sender: str | None
    message_id: bytes
    route: Route
    expires_at: int
    """Unix time in seconds after which the relay deletes the envelope unread."""
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        self._check()
        writer = Writer().u8(ENVELOPE_VERSION)
        writer.u8(FLAG_HAS_SENDER if self.sender is not None else 0)
        writer.var8(self.recipient.encode("utf-8"))
        if self.sender is not None:
            writer.var8(self.sender.encode("utf-8"))
        writer.fixed(self.message_id, MESSAGE_ID_SIZE)
        writer.u8(self.route).u64(self.expires_at)
        return bytes(writer.var32(self.ciphertext))

    def _check(self) -> None:
        for name in (self.recipient, self.sender):
            if name is not None and not 0 < len(name.encode("utf-8")) <= MAX_NAME_BYTES:
                raise ValueError(f"a name is 1 to {MAX_NAME_BYTES} bytes of UTF-8")
        if len(self.message_id) != MESSAGE_ID_SIZE:
            raise ValueError(f"a message id is {MESSAGE_ID_SIZE} bytes")
        if not 0 < len(self.ciphertext) <= MAX_CIPHERTEXT_BYTES:
            raise ValueError(f"a ciphertext is 1 to {MAX_CIPHERTEXT_BYTES} bytes")
        _check_route(self.route, self.sender is not None)

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Decode strictly: every departure from PROTOCOL.md §8 is a specific `DecodeError`."""
        reader = Reader(data, "envelope")
        version = reader.u8()
        if version != ENVELOPE_VERSION:
            raise UnknownVersionError(f"envelope version {version} is not supported")
        flags = reader.u8()
        if flags & ~_KNOWN_FLAGS:
            raise InvalidFieldError(f"envelope has unknown flags {flags:#04x}")
        recipient = _read_name(reader, "recipient")
        sender = _read_name(reader, "sender") if flags & FLAG_HAS_SENDER else None
        message_id = reader.fixed(MESSAGE_ID_SIZE)
        raw_route = reader.u8()
        try:
            route = Route(raw_route)
        except ValueError:
            raise InvalidFieldError(f"envelope has unknown route {raw_route}") from None
        _check_route(route, sender is not None)
        expires_at = reader.u64()
        ciphertext = reader.var32(MAX_CIPHERTEXT_BYTES, "ciphertext")
        reader.finish()
        if not ciphertext:
            raise InvalidFieldError("envelope has an empty ciphertext")
        return cls(recipient, sender, message_id, route, expires_at, ciphertext)


def _check_route(route: Route, has_sender: bool) -> None:
    if route == Route.SEALED and has_sender:
        raise InvalidFieldError("a sealed-sender envelope must not name its sender")
    if route != Route.SEALED and not has_sender:
        raise InvalidFieldError(f"a {route.name.lower()} envelope must name its sender")


def _read_name(reader: Reader, field: str) -> str:
    raw = reader.var8(MAX_NAME_BYTES, field)
    if not raw:
        raise InvalidFieldError(f"envelope {field} is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidFieldError(f"envelope {field} is not valid UTF-8") from None
