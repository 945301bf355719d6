"""Off-the-record channels: deniable messages authenticated to the recipient only (PROTOCOL.md §15).

The construction is OTR's data-message design (Borisov, Goldberg and Brewer, "Off-the-Record
Communication, or, Why Not To Use PGP", WPES 2004; OTR protocol version 3), on the primitives
this protocol already uses:

- The channel is agreed by an exchange of fresh X25519 keys carried inside an existing session
  (§6), which is authenticated by shared keys only (PQXDH signs prekeys, never a transcript), so
  the agreement itself proves nothing to a third party.
- Each message is encrypted with AES-256-CTR (a malleable stream cipher) and authenticated
  separately with HMAC-SHA256 under a key both sides know. No signature appears anywhere.
- Whoever sends reveals, in the clear, the MAC keys of the messages it has received since its last
  send. Once revealed, anyone can flip ciphertext bits and recompute a valid tag: a transcript
  proves nothing about who wrote what, while the recipient, who checked the tag before the key was
  revealed, knew the message came from its correspondent.

Message keys come from one HMAC chain per direction (as the Double Ratchet's symmetric chains)
and are deleted once used, so a captured state does not open earlier messages. This module is
pure: the caller keeps `OtrChannel` (in memory, or sealed) and wipes it on close or expiry.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum

from . import labels
from .encoding import Reader, Writer
from .errors import DecryptionError, DuplicateMessageError, InvalidFieldError, TooManySkippedError
from .keys import DHKeyPair, DHPublicKey
from .padding import pad, padded_size, unpad
from .primitives import (
    RandomSource,
    aes256_ctr,
    hkdf_sha256,
    hmac_sha256,
    hmac_sha256_verify,
    system_random,
)

OTR_VERSION = 1
CHANNEL_ID_SIZE = 16
KEY_SIZE = 32
TAG_SIZE = 32
MAX_SKIP = 100
"""Messages one may skip in a chain (lost or reordered on the way)."""
MAX_SKIPPED_KEPT = 1000
"""Keys of skipped messages held at once; the oldest go first."""
MAX_REVEALED = 64
"""MAC keys revealed in one message; more wait for the next."""
MAX_TEXT_BYTES = 64 * 1024
TOKEN_SIZE = 32
MAX_PENDING_REVEALS = 4096
"""MAC keys kept for revealing; beyond this the oldest are dropped (a side that only listens)."""
STATE_VERSION = 1
ZERO_COUNTER = bytes(16)
"""AES-CTR's initial counter block: every message key encrypts exactly one message."""


class Role(IntEnum):
    OPENER = 0
    RESPONDER = 1


class OtrForm(IntEnum):
    """Session content kind 5 (§7): the channel's set-up, carried by the authenticated session."""

    OFFER = 1
    ACCEPT = 2
    CLOSE = 3


@dataclass(frozen=True, slots=True)
class OtrControl:
    """`Content = u8 5 ‖ u8 form ‖ fixed[16] channel id ‖ (OFFER, ACCEPT) fixed[32] X25519 key
    ‖ fixed[32] delivery token ‖ (OFFER) u64 expires_at (ms)`.

    The delivery token is the sender's own: what its correspondent presents to the relay to
    leave a sealed-sender message in the sender's drop (§15.3)."""

    form: OtrForm
    channel_id: bytes
    public: bytes = b""
    token: bytes = b""
    expires_at_ms: int = 0

    def to_content(self) -> bytes:
        writer = Writer().u8(5).u8(self.form).fixed(self.channel_id, CHANNEL_ID_SIZE)
        if self.form != OtrForm.CLOSE:
            writer.fixed(self.public, KEY_SIZE).fixed(self.token, TOKEN_SIZE)
        if self.form == OtrForm.OFFER:
            writer.u64(self.expires_at_ms)
        return bytes(writer)

    @classmethod
    def read(cls, reader: Reader) -> OtrControl:
        """After the kind byte."""
        raw = reader.u8()
        try:
            form = OtrForm(raw)
        except ValueError:
            raise InvalidFieldError(f"unknown off-the-record form {raw}") from None
        channel_id = reader.fixed(CHANNEL_ID_SIZE)
        public, token = b"", b""
        if form != OtrForm.CLOSE:
            public, token = reader.fixed(KEY_SIZE), reader.fixed(TOKEN_SIZE)
        expires = reader.u64() if form == OtrForm.OFFER else 0
        return cls(form, channel_id, public, token, expires)


@dataclass(frozen=True, slots=True)
class OtrChannel:
    """One side of a channel: its chains, counters, keys held for late messages, and the MAC
    keys of received messages that its next message will reveal."""

    channel_id: bytes
    role: Role
    send_chain: bytes
    send_n: int
    recv_chain: bytes
    recv_n: int
    expires_at_ms: int
    skipped: dict[int, bytes] = field(default_factory=dict)
    """Message keys of messages not yet received, by number."""
    to_reveal: tuple[bytes, ...] = ()

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_at_ms

    def to_bytes(self) -> bytes:
        """Local storage only (§15.5); never sent."""
        writer = Writer().u8(STATE_VERSION).fixed(self.channel_id, CHANNEL_ID_SIZE).u8(self.role)
        writer.fixed(self.send_chain, KEY_SIZE).u32(self.send_n)
        writer.fixed(self.recv_chain, KEY_SIZE).u32(self.recv_n).u64(self.expires_at_ms)
        writer.u16(len(self.skipped))
        for n, key in sorted(self.skipped.items()):
            writer.u32(n).fixed(key, KEY_SIZE)
        writer.u16(len(self.to_reveal))
        for key in self.to_reveal:
            writer.fixed(key, KEY_SIZE)
        return bytes(writer)

    @classmethod
    def from_bytes(cls, data: bytes) -> OtrChannel:
        reader = Reader(data, "off-the-record state")
        version = reader.u8()
        if version != STATE_VERSION:
            raise InvalidFieldError(f"off-the-record state version {version} is not supported")
        channel_id, raw_role = reader.fixed(CHANNEL_ID_SIZE), reader.u8()
        if raw_role not in (Role.OPENER, Role.RESPONDER):
            raise InvalidFieldError(f"unknown role {raw_role}")
        send_chain, send_n = reader.fixed(KEY_SIZE), reader.u32()
        recv_chain, recv_n, expires = reader.fixed(KEY_SIZE), reader.u32(), reader.u64()
        skipped = {reader.u32(): reader.fixed(KEY_SIZE) for _ in range(reader.u16())}
        to_reveal = tuple(reader.fixed(KEY_SIZE) for _ in range(reader.u16()))
        reader.finish()
        return cls(
            channel_id, Role(raw_role), send_chain, send_n, recv_chain, recv_n, expires,
            skipped, to_reveal,
        )  # fmt: skip


def offer(expires_at_ms: int, random: RandomSource = system_random) -> tuple[OtrControl, DHKeyPair]:
    """The opener's first step: a channel id, an ephemeral key (kept until the answer) and the
    opener's delivery token."""
    channel_id = random(CHANNEL_ID_SIZE)
    ephemeral = DHKeyPair.from_private_bytes(random(KEY_SIZE))
    token = random(TOKEN_SIZE)
    control = OtrControl(OtrForm.OFFER, channel_id, ephemeral.public.raw, token, expires_at_ms)
    return control, ephemeral


def accept(
    received: OtrControl, now_ms: int, random: RandomSource = system_random
) -> tuple[OtrControl, OtrChannel]:
    """The responder's answer to an offer, and its side of the channel."""
    if received.form != OtrForm.OFFER:
        raise InvalidFieldError("an off-the-record channel is accepted in answer to an offer")
    if received.expires_at_ms <= now_ms:
        raise InvalidFieldError("the off-the-record offer has expired")
    ephemeral = DHKeyPair.from_private_bytes(random(KEY_SIZE))
    token = random(TOKEN_SIZE)
    answer = OtrControl(OtrForm.ACCEPT, received.channel_id, ephemeral.public.raw, token)
    channel = _channel(
        Role.RESPONDER, received, ephemeral.dh(DHPublicKey.from_bytes(received.public)),
        ephemeral.public.raw,
    )  # fmt: skip
    return answer, channel


def complete(sent: OtrControl, ephemeral: DHKeyPair, answer: OtrControl) -> OtrChannel:
    """The opener's side, once the answer to its offer arrived."""
    if answer.form != OtrForm.ACCEPT or answer.channel_id != sent.channel_id:
        raise InvalidFieldError("the answer is not for this off-the-record offer")
    shared = ephemeral.dh(DHPublicKey.from_bytes(answer.public))
    return _channel(Role.OPENER, sent, shared, answer.public)


def chain_keys(shared: bytes, offered: OtrControl, responder_public: bytes) -> tuple[bytes, bytes]:
    """HKDF(salt = channel id, ikm = X25519 output, info = label ‖ both keys): the opener's
    sending chain, then the responder's."""
    info = labels.OTR_ROOT_INFO + offered.public + responder_public
    okm = hkdf_sha256(shared, offered.channel_id, info, 2 * KEY_SIZE)
    return okm[:KEY_SIZE], okm[KEY_SIZE:]


def _channel(role: Role, offered: OtrControl, shared: bytes, responder_public: bytes) -> OtrChannel:
    opener_chain, responder_chain = chain_keys(shared, offered, responder_public)
    mine, theirs = (
        (opener_chain, responder_chain) if role == Role.OPENER else (responder_chain, opener_chain)
    )
    return OtrChannel(offered.channel_id, role, mine, 0, theirs, 0, offered.expires_at_ms)


def step(chain: bytes) -> tuple[bytes, bytes]:
    """-> (next chain key, message key), as the Double Ratchet's symmetric chain (§5.1)."""
    return hmac_sha256(chain, labels.CHAIN_NEXT), hmac_sha256(chain, labels.CHAIN_MESSAGE_KEY)


def message_keys(message_key: bytes) -> tuple[bytes, bytes]:
    """-> (AES-256-CTR key, HMAC-SHA256 key)."""
    okm = hkdf_sha256(message_key, None, labels.OTR_MESSAGE_INFO, 2 * KEY_SIZE)
    return okm[:KEY_SIZE], okm[KEY_SIZE:]


@dataclass(frozen=True, slots=True)
class DataMessage:
    """One message on the wire (PROTOCOL.md §15.2); the tag is an HMAC over all bytes before it."""

    channel_id: bytes
    sender: Role
    n: int
    revealed: tuple[bytes, ...]
    ciphertext: bytes
    tag: bytes

    def body(self) -> bytes:
        writer = Writer().u8(OTR_VERSION).fixed(self.channel_id, CHANNEL_ID_SIZE)
        writer.u8(self.sender).u32(self.n).u8(len(self.revealed))
        for key in self.revealed:
            writer.fixed(key, KEY_SIZE)
        return bytes(writer.var32(self.ciphertext))

    def to_bytes(self) -> bytes:
        return self.body() + self.tag

    @classmethod
    def from_bytes(cls, data: bytes) -> DataMessage:
        reader = Reader(data, "off-the-record message")
        version = reader.u8()
        if version != OTR_VERSION:
            raise InvalidFieldError(f"off-the-record version {version} is not supported")
        channel_id = reader.fixed(CHANNEL_ID_SIZE)
        raw_role = reader.u8()
        if raw_role not in (Role.OPENER, Role.RESPONDER):
            raise InvalidFieldError(f"unknown sender role {raw_role}")
        n, count = reader.u32(), reader.u8()
        if count > MAX_REVEALED:
            raise InvalidFieldError(f"at most {MAX_REVEALED} MAC keys are revealed at once")
        revealed = tuple(reader.fixed(KEY_SIZE) for _ in range(count))
        ciphertext = reader.var32(padded_size(MAX_TEXT_BYTES), "ciphertext")
        tag = reader.fixed(TAG_SIZE)
        reader.finish()
        return cls(channel_id, Role(raw_role), n, revealed, ciphertext, tag)


def encrypt(channel: OtrChannel, plaintext: bytes) -> tuple[OtrChannel, bytes]:
    """Encrypt one message, revealing the MAC keys of messages received since the last send."""
    if len(plaintext) > MAX_TEXT_BYTES:
        raise ValueError(f"an off-the-record message holds at most {MAX_TEXT_BYTES} bytes")
    chain, message_key = step(channel.send_chain)
    enc_key, mac_key = message_keys(message_key)
    revealed, later = channel.to_reveal[:MAX_REVEALED], channel.to_reveal[MAX_REVEALED:]
    unsigned = DataMessage(
        channel.channel_id, channel.role, channel.send_n, revealed,
        aes256_ctr(enc_key, ZERO_COUNTER, pad(plaintext)), b"",
    )  # fmt: skip
    message = replace(unsigned, tag=hmac_sha256(mac_key, unsigned.body()))
    successor = replace(
        channel,
        send_chain=chain,
        send_n=channel.send_n + 1,
        to_reveal=later,
        skipped=channel.skipped,
    )
    return successor, message.to_bytes()


def decrypt(channel: OtrChannel, data: bytes) -> tuple[OtrChannel, bytes, tuple[bytes, ...]]:
    """Check and decrypt one message from the other side.

    Returns the successor state, the plaintext, and the MAC keys the message revealed (the
    caller need not keep them: they only matter to someone holding the transcript)."""
    message = DataMessage.from_bytes(data)
    if message.channel_id != channel.channel_id or message.sender == channel.role:
        raise DecryptionError("the message is not for this side of this channel")
    skipped = dict(channel.skipped)
    chain, recv_n = channel.recv_chain, channel.recv_n
    if message.n < recv_n:
        if message.n not in skipped:
            raise DuplicateMessageError("an off-the-record message was replayed")
        message_key = skipped.pop(message.n)
    else:
        if message.n - recv_n > MAX_SKIP:
            raise TooManySkippedError(f"more than {MAX_SKIP} off-the-record messages skipped")
        while recv_n < message.n:
            chain, skipped[recv_n] = step(chain)
            recv_n += 1
        for stale in sorted(skipped)[: max(0, len(skipped) - MAX_SKIPPED_KEPT)]:
            del skipped[stale]
        chain, message_key = step(chain)
        recv_n += 1
    enc_key, mac_key = message_keys(message_key)
    if not hmac_sha256_verify(mac_key, message.body(), message.tag):
        raise DecryptionError("the off-the-record message does not authenticate")
    plaintext = unpad(aes256_ctr(enc_key, ZERO_COUNTER, message.ciphertext))
    successor = replace(
        channel, recv_chain=chain, recv_n=recv_n, skipped=skipped,
        to_reveal=(*channel.to_reveal, mac_key)[-MAX_PENDING_REVEALS:],
    )  # fmt: skip
    return successor, plaintext, message.revealed


def tag_verifies(mac_key: bytes, data: bytes) -> bool:
    """What anyone holding a revealed MAC key can check (and therefore also forge)."""
    message = DataMessage.from_bytes(data)
    return hmac_sha256_verify(mac_key, message.body(), message.tag)
