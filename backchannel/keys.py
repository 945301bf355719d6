"""Typed key wrappers with strict validation of public keys.

Loose `bytes` make it easy to pass a prekey where an identity key belongs; these wrappers make that
a type error. Public keys are checked when they are parsed, so that a small-order or non-canonical
point is refused at the door (PROTOCOL.md §2.3) and never reaches a Diffie-Hellman or a verifier.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from .errors import InvalidPublicKeyError, SignatureError
from .primitives import RandomSource, system_random

DH_KEY_SIZE = 32
SIGNING_KEY_SIZE = 32
SIGNATURE_SIZE = 64
KEM_PUBLIC_KEY_SIZE = 1184
KEM_SEED_SIZE = 64
KEM_CIPHERTEXT_SIZE = 1088
KEM_SHARED_SECRET_SIZE = 32

_P = 2**255 - 19

# u-coordinates of the points of small order on Curve25519 (RFC 7748 §7 warns of them). A DH with
# any of these yields the all-zero secret; we refuse them when parsing rather than at first use.
_X25519_SMALL_ORDER_U = frozenset(
    {
        0,
        1,
        _P - 1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }
)

# y-coordinates of the eight points of small order on edwards25519 (the x sign bit picks between
# a point and its negation, both of small order). A key among them would verify forged signatures.
_ED25519_SMALL_ORDER_Y = frozenset(
    {
        0,
        1,
        _P - 1,
        2707385501144840649318225287225658788936804267575313519463743609750303402022,
        55188659117513257062467267217118295137698188065244968500265048394206261417927,
    }
)


_D = (-121665 * pow(121666, -1, _P)) % _P


@functools.lru_cache(maxsize=4096)
def _decodes_to_point(y: int, sign: int) -> bool:
    """RFC 8032 §5.1.3's decoding test, without the square root: x² = (y²-1)/(d·y²+1) must be
    a square mod p (Euler's criterion), and x = 0 may not carry the sign bit. pyca defers this
    check to verification; we want a bad key refused when it is parsed. The exponentiation costs
    about 0.2 ms in Python, and the same few identities are parsed again and again, hence the
    cache (a pure function of its arguments)."""
    y2 = y * y % _P
    x2 = (y2 - 1) * pow(_D * y2 + 1, -1, _P) % _P
    if x2 == 0:
        return sign == 0
    return pow(x2, (_P - 1) // 2, _P) == 1


def _check_length(raw: bytes, size: int, what: str) -> None:
    if len(raw) != size:
        raise InvalidPublicKeyError(f"{what} must be {size} bytes, got {len(raw)}")


@dataclass(frozen=True, slots=True)
class DHPublicKey:
    """An X25519 public key: canonical (u < p, top bit clear) and not of small order."""

    raw: bytes
    key: x25519.X25519PublicKey = field(repr=False, compare=False)

    @classmethod
    def from_bytes(cls, raw: bytes) -> DHPublicKey:
        raw = bytes(raw)
        _check_length(raw, DH_KEY_SIZE, "X25519 public key")
        u = int.from_bytes(raw, "little")
        if u >= _P:
            raise InvalidPublicKeyError("X25519 public key is not canonically encoded")
        if u in _X25519_SMALL_ORDER_U:
            raise InvalidPublicKeyError("X25519 public key is of small order")
        return cls(raw, x25519.X25519PublicKey.from_public_bytes(raw))


@dataclass(frozen=True, slots=True)
class DHKeyPair:
    private: x25519.X25519PrivateKey = field(repr=False)
    public: DHPublicKey

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> DHKeyPair:
        private = x25519.X25519PrivateKey.from_private_bytes(raw)
        pub = private.public_key()
        return cls(private, DHPublicKey(pub.public_bytes_raw(), pub))

    @classmethod
    def generate(cls, random: RandomSource = system_random) -> DHKeyPair:
        return cls.from_private_bytes(random(DH_KEY_SIZE))

    def private_bytes(self) -> bytes:
        return self.private.private_bytes_raw()

    def dh(self, peer: DHPublicKey) -> bytes:
        """X25519(self, peer). A zero output (a small-order peer) is refused."""
        try:
            return self.private.exchange(peer.key)
        except ValueError as exc:
            raise InvalidPublicKeyError("X25519 produced the all-zero secret") from exc


@dataclass(frozen=True, slots=True)
class SigningPublicKey:
    """An Ed25519 public key: canonical y (< p) and not of small order."""

    raw: bytes
    key: ed25519.Ed25519PublicKey = field(repr=False, compare=False)

    @classmethod
    def from_bytes(cls, raw: bytes) -> SigningPublicKey:
        raw = bytes(raw)
        _check_length(raw, SIGNING_KEY_SIZE, "Ed25519 public key")
        y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
        if y >= _P:
            raise InvalidPublicKeyError("Ed25519 public key is not canonically encoded")
        if y in _ED25519_SMALL_ORDER_Y:
            raise InvalidPublicKeyError("Ed25519 public key is of small order")
        if not _decodes_to_point(y, raw[31] >> 7):
            raise InvalidPublicKeyError("Ed25519 public key is not a point on the curve")
        try:
            key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as exc:
            raise InvalidPublicKeyError("Ed25519 public key is not a point on the curve") from exc
        return cls(raw, key)

    def verify(
        self, signature: bytes, message: bytes, error: type[SignatureError] = SignatureError
    ) -> None:
        """Raise `error` unless `signature` is this key's Ed25519 signature over `message`."""
        if len(signature) != SIGNATURE_SIZE:
            raise error(f"signature must be {SIGNATURE_SIZE} bytes")
        try:
            self.key.verify(signature, message)
        except InvalidSignature as exc:
            raise error("signature does not verify") from exc


@dataclass(frozen=True, slots=True)
class SigningKeyPair:
    private: ed25519.Ed25519PrivateKey = field(repr=False)
    public: SigningPublicKey

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> SigningKeyPair:
        private = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
        pub = private.public_key()
        return cls(private, SigningPublicKey(pub.public_bytes_raw(), pub))

    @classmethod
    def generate(cls, random: RandomSource = system_random) -> SigningKeyPair:
        return cls.from_private_bytes(random(SIGNING_KEY_SIZE))

    def private_bytes(self) -> bytes:
        return self.private.private_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        """Ed25519 (RFC 8032): deterministic, so vectors can fix the signature."""
        return self.private.sign(message)


@dataclass(frozen=True, slots=True)
class KEMPublicKey:
    """An ML-KEM-768 encapsulation key (FIPS 203), checked by pyca on import."""

    raw: bytes
    key: mlkem.MLKEM768PublicKey = field(repr=False, compare=False)

    @classmethod
    def from_bytes(cls, raw: bytes) -> KEMPublicKey:
        raw = bytes(raw)
        _check_length(raw, KEM_PUBLIC_KEY_SIZE, "ML-KEM-768 public key")
        try:
            key = mlkem.MLKEM768PublicKey.from_public_bytes(raw)
        except ValueError as exc:
            raise InvalidPublicKeyError("ML-KEM-768 public key is malformed") from exc
        return cls(raw, key)


@dataclass(frozen=True, slots=True)
class KEMKeyPair:
    """An ML-KEM-768 key pair, stored as its 64-byte seed (d ‖ z, FIPS 203)."""

    seed: bytes = field(repr=False)
    private: mlkem.MLKEM768PrivateKey = field(repr=False, compare=False)
    public: KEMPublicKey

    @classmethod
    def from_seed(cls, seed: bytes) -> KEMKeyPair:
        private = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
        pub = private.public_key()
        return cls(bytes(seed), private, KEMPublicKey(pub.public_bytes_raw(), pub))

    @classmethod
    def generate(cls, random: RandomSource = system_random) -> KEMKeyPair:
        return cls.from_seed(random(KEM_SEED_SIZE))

    def decapsulate(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) != KEM_CIPHERTEXT_SIZE:
            raise InvalidPublicKeyError(
                f"ML-KEM-768 ciphertext must be {KEM_CIPHERTEXT_SIZE} bytes"
            )
        return self.private.decapsulate(ciphertext)
