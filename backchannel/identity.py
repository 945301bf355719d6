"""Long-term identities, fingerprints and safety numbers.

An identity is an Ed25519 signing key plus an X25519 key for the handshake, bound together by a
signature of the former over the latter. Signal gets by with one key through XEdDSA; pyca offers no
XEdDSA, and two keys with a binding signature need nothing beyond RFC 8032 and RFC 7748.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import labels
from .encoding import Reader, Writer
from .errors import IdentitySignatureError
from .keys import (
    DH_KEY_SIZE,
    SIGNATURE_SIZE,
    SIGNING_KEY_SIZE,
    DHKeyPair,
    DHPublicKey,
    SigningKeyPair,
    SigningPublicKey,
)
from .primitives import RandomSource, sha256, sha512, system_random

IDENTITY_PUBLIC_SIZE = SIGNING_KEY_SIZE + DH_KEY_SIZE + SIGNATURE_SIZE
IDENTITY_PRIVATE_SIZE = SIGNING_KEY_SIZE + DH_KEY_SIZE

SAFETY_NUMBER_ITERATIONS = 5200
"""As libsignal's NumericFingerprint: 5,200 rounds of SHA-512 make a 112-bit search costly."""
SAFETY_NUMBER_VERSION = 0


@dataclass(frozen=True, slots=True)
class IdentityPublic:
    """What everyone may know of an identity: both public keys and their binding signature."""

    signing: SigningPublicKey
    dh: DHPublicKey
    binding: bytes

    @property
    def keys(self) -> bytes:
        """The 64 bytes that name this identity: Ed25519 key ‖ X25519 key."""
        return self.signing.raw + self.dh.raw

    def to_bytes(self) -> bytes:
        return self.keys + self.binding

    @classmethod
    def from_bytes(cls, data: bytes) -> IdentityPublic:
        """Parse and check the binding signature; a bad one is `IdentitySignatureError`."""
        reader = Reader(data, "identity key")
        identity = cls.read(reader)
        reader.finish()
        return identity

    @classmethod
    def read(cls, reader: Reader) -> IdentityPublic:
        signing = SigningPublicKey.from_bytes(reader.fixed(SIGNING_KEY_SIZE))
        dh = DHPublicKey.from_bytes(reader.fixed(DH_KEY_SIZE))
        binding = reader.fixed(SIGNATURE_SIZE)
        signing.verify(
            binding, labels.signing_input(labels.SIG_IDENTITY, dh.raw), IdentitySignatureError
        )
        return cls(signing, dh, binding)

    def fingerprint(self) -> bytes:
        return fingerprint(self)


@dataclass(frozen=True, slots=True)
class IdentityKeyPair:
    signing: SigningKeyPair
    dh: DHKeyPair
    public: IdentityPublic

    @classmethod
    def from_private_bytes(cls, data: bytes) -> IdentityKeyPair:
        reader = Reader(data, "identity private key")
        signing = SigningKeyPair.from_private_bytes(reader.fixed(SIGNING_KEY_SIZE))
        dh = DHKeyPair.from_private_bytes(reader.fixed(DH_KEY_SIZE))
        reader.finish()
        binding = signing.sign(labels.signing_input(labels.SIG_IDENTITY, dh.public.raw))
        return cls(signing, dh, IdentityPublic(signing.public, dh.public, binding))

    @classmethod
    def generate(cls, random: RandomSource = system_random) -> IdentityKeyPair:
        return cls.from_private_bytes(random(IDENTITY_PRIVATE_SIZE))

    def private_bytes(self) -> bytes:
        return self.signing.private_bytes() + self.dh.private_bytes()

    def sign(self, label: bytes, body: bytes) -> bytes:
        return self.signing.sign(labels.signing_input(label, body))


def fingerprint(identity: IdentityPublic) -> bytes:
    """SHA-256 over the label and both public keys: 32 bytes that name one identity."""
    return sha256(labels.FINGERPRINT + b"\x00" + identity.keys)


def format_fingerprint(digest: bytes) -> str:
    """Lower-case hex in groups of four, as people read them aloud."""
    text = digest.hex()
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def _safety_half(key: bytes, stable_id: bytes, iterations: int) -> str:
    digest = sha512(bytes(Writer().u16(SAFETY_NUMBER_VERSION)) + key + stable_id + key)
    for _ in range(iterations - 1):
        digest = sha512(digest + key)
    chunks = (int.from_bytes(digest[i : i + 5], "big") % 100_000 for i in range(0, 30, 5))
    return "".join(f"{chunk:05d}" for chunk in chunks)


def safety_number(
    ours: IdentityPublic,
    our_name: str,
    theirs: IdentityPublic,
    their_name: str,
    iterations: int = SAFETY_NUMBER_ITERATIONS,
) -> str:
    """Sixty digits, the same on both sides: libsignal's NumericFingerprint over our keys.

    Each half hashes one identity's 64 key bytes with its name as the stable id; the halves are
    concatenated in sorted order so the result does not depend on who computes it.
    """
    return numeric_safety_number(
        ours.keys, our_name.encode("utf-8"), theirs.keys, their_name.encode("utf-8"), iterations
    )


def numeric_safety_number(
    key_a: bytes, id_a: bytes, key_b: bytes, id_b: bytes, iterations: int
) -> str:
    """The construction on raw bytes, so libsignal's own test vector can check it."""
    halves = sorted((_safety_half(key_a, id_a, iterations), _safety_half(key_b, id_b, iterations)))
    return halves[0] + halves[1]


def format_safety_number(number: str) -> str:
    """Twelve groups of five digits, as Signal shows them."""
    return " ".join(number[i : i + 5] for i in range(0, len(number), 5))
