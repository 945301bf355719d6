"""Control copies: a letter sealed to the exercise control key (issue 17, PROTOCOL.md §16.10).

`control_sees = content` must be real, so the sender's client encrypts each such letter a second
time, to control. The seal is a one-shot hybrid KEM-DEM in the HPKE base-mode shape, built from
the same pieces as PQXDH (§5): an ephemeral X25519 exchange and an ML-KEM-768 encapsulation to
control's published keys, HKDF-SHA256 over both secrets, then AES-256-GCM. Either secret alone
keeps the copy sealed; the message id is the associated data, so a relay cannot move a copy
from one letter to another.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import labels
from .content import Letter, SignedLetter, decode_content
from .encoding import Writer
from .errors import BackchannelError, LetterSignatureError, LocalProtocolError
from .handshake import Encapsulate, system_encapsulate
from .identity import IdentityPublic
from .keys import (
    DH_KEY_SIZE,
    KEM_CIPHERTEXT_SIZE,
    KEM_SEED_SIZE,
    DHKeyPair,
    DHPublicKey,
    KEMKeyPair,
    KEMPublicKey,
    SigningKeyPair,
    SigningPublicKey,
)
from .primitives import (
    AEAD_NONCE_SIZE,
    AEAD_TAG_SIZE,
    RandomSource,
    aead_decrypt,
    aead_encrypt,
    hkdf_sha256,
    system_random,
)

CONTROL_KEY_SECRET_SIZE = DH_KEY_SIZE + KEM_SEED_SIZE
"""The relay stores one secret: X25519 private key ‖ ML-KEM-768 seed."""
MAX_COPY_PLAINTEXT = 70_000
"""A letter's content: 64 KiB of text, its canonical fields and signature."""
MESSAGE_ID_SIZE = 16
MAX_COPY_BYTES = DH_KEY_SIZE + KEM_CIPHERTEXT_SIZE + AEAD_TAG_SIZE + MAX_COPY_PLAINTEXT


class ControlCopyError(LocalProtocolError):
    """A control copy or control key that does not open or verify."""


@dataclass(frozen=True, slots=True)
class ControlPublicKey:
    """What control publishes (signed) so senders can seal copies to it."""

    dh: DHPublicKey
    kem: KEMPublicKey

    def body(self, exercise: str) -> bytes:
        """`var8 exercise ‖ 32 X25519 ‖ var16 ML-KEM-768 key`: the bytes control signs."""
        writer = Writer().var8(exercise.encode()).fixed(self.dh.raw, DH_KEY_SIZE)
        return bytes(writer.var16(self.kem.raw))

    def sign(self, key: SigningKeyPair, exercise: str) -> bytes:
        return key.sign(labels.signing_input(labels.SIG_CONTROL_KEY, self.body(exercise)))

    def verify(self, key: SigningPublicKey, exercise: str, signature: bytes) -> None:
        """Raise `SignatureError` unless control's signing key vouches for these keys."""
        key.verify(signature, labels.signing_input(labels.SIG_CONTROL_KEY, self.body(exercise)))


@dataclass(frozen=True, slots=True)
class ControlKeyPair:
    dh: DHKeyPair
    kem: KEMKeyPair

    @classmethod
    def from_secret(cls, secret: bytes) -> ControlKeyPair:
        if len(secret) != CONTROL_KEY_SECRET_SIZE:
            raise ControlCopyError(f"a control key secret is {CONTROL_KEY_SECRET_SIZE} bytes")
        return cls(DHKeyPair.from_private_bytes(secret[:DH_KEY_SIZE]),
                   KEMKeyPair.from_seed(secret[DH_KEY_SIZE:]))  # fmt: skip

    @property
    def public(self) -> ControlPublicKey:
        return ControlPublicKey(self.dh.public, self.kem.public)


def _keys(dh_secret: bytes, kem_secret: bytes, ephemeral: bytes, kem_ct: bytes,
          public: ControlPublicKey) -> tuple[bytes, bytes]:  # fmt: skip
    info = labels.CONTROL_COPY_INFO + ephemeral + kem_ct + public.dh.raw + public.kem.raw
    okm = hkdf_sha256(dh_secret + kem_secret, None, info, 32 + AEAD_NONCE_SIZE)
    return okm[:32], okm[32:]


def _ad(message_id: bytes) -> bytes:
    if len(message_id) != MESSAGE_ID_SIZE:
        raise ControlCopyError(f"a message id is {MESSAGE_ID_SIZE} bytes")
    return labels.CONTROL_COPY_INFO + message_id


def seal(public: ControlPublicKey, message_id: bytes, plaintext: bytes,
         random: RandomSource = system_random,
         encapsulate: Encapsulate = system_encapsulate) -> bytes:  # fmt: skip
    """`32 ephemeral X25519 ‖ 1088 ML-KEM ciphertext ‖ AES-256-GCM(plaintext)`; `random` and
    `encapsulate` are injected only for test vectors."""
    if len(plaintext) > MAX_COPY_PLAINTEXT:
        raise ControlCopyError(f"a control copy holds at most {MAX_COPY_PLAINTEXT} bytes")
    ad = _ad(message_id)
    ephemeral = DHKeyPair.from_private_bytes(random(DH_KEY_SIZE))
    kem_secret, kem_ct = encapsulate(public.kem)
    key, nonce = _keys(ephemeral.dh(public.dh), kem_secret, ephemeral.public.raw, kem_ct, public)
    return ephemeral.public.raw + kem_ct + aead_encrypt(key, nonce, plaintext, ad)


def open_copy(keys: ControlKeyPair, message_id: bytes, copy: bytes) -> bytes:
    """The plaintext of a sealed copy, or `ControlCopyError`."""
    head = DH_KEY_SIZE + KEM_CIPHERTEXT_SIZE
    if not head + AEAD_TAG_SIZE <= len(copy) <= MAX_COPY_BYTES:
        raise ControlCopyError("a control copy has the wrong length")
    ad = _ad(message_id)
    ephemeral = DHPublicKey.from_bytes(copy[:DH_KEY_SIZE])
    kem_ct = copy[DH_KEY_SIZE:head]
    dh_secret = keys.dh.dh(ephemeral)
    key, nonce = _keys(dh_secret, keys.kem.decapsulate(kem_ct), ephemeral.raw, kem_ct,
                       keys.public)  # fmt: skip
    plaintext = aead_decrypt(key, nonce, copy[head:], ad)
    if plaintext is None:
        raise ControlCopyError("the control copy does not open with this key and message id")
    return plaintext


def parse_public(raw_dh: bytes, raw_kem: bytes) -> ControlPublicKey:
    return ControlPublicKey(DHPublicKey.from_bytes(raw_dh), KEMPublicKey.from_bytes(raw_kem))


def open_letter(keys: ControlKeyPair, message_id: bytes, copy: bytes,
                sender: IdentityPublic) -> Letter:  # fmt: skip
    """Open a control copy and check it is the signed letter it claims to be: a letter with
    this message id, naming `sender` as its author and signed by `sender`'s identity key."""
    try:
        content = decode_content(open_copy(keys, message_id, copy))
    except ControlCopyError:
        raise
    except BackchannelError as exc:
        raise ControlCopyError(f"the control copy: {exc}") from None
    if not isinstance(content, SignedLetter):
        raise ControlCopyError("the control copy is not a signed letter")
    letter = content.letter
    if letter.message_id != message_id or letter.sender_keys != sender.keys:
        raise ControlCopyError("the control copy names another message or another author")
    try:
        sender.signing.verify(content.signature,
                              labels.signing_input(labels.SIG_LETTER, letter.canonical()),
                              LetterSignatureError)  # fmt: skip
    except LetterSignatureError:
        raise ControlCopyError("the control copy's signature is not its author's") from None
    return letter
