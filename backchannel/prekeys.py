"""Prekeys: what a party publishes so that others can start a session while it is offline.

As PQXDH: a signed X25519 prekey, one-time X25519 prekeys, and signed ML-KEM-768 prekeys, of
which one-time ones are used first and a last-resort one when they run out. The public halves are
value objects with their wire encoding; the private halves live in `PrekeySecrets`, whose
transitions return a new object, so that a one-time key is consumed exactly once and a failed
handshake consumes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from . import labels
from .encoding import Reader, Writer
from .errors import (
    BundleSignatureError,
    InvalidFieldError,
    PrekeyReusedError,
    UnknownPrekeyError,
    UnknownVersionError,
)
from .identity import IdentityKeyPair, IdentityPublic
from .keys import (
    DH_KEY_SIZE,
    KEM_PUBLIC_KEY_SIZE,
    KEM_SEED_SIZE,
    SIGNATURE_SIZE,
    DHKeyPair,
    DHPublicKey,
    KEMKeyPair,
    KEMPublicKey,
)
from .primitives import RandomSource, system_random

BUNDLE_VERSION = 1
SECRETS_VERSION = 1
MAX_PREKEYS_PER_UPLOAD = 100
"""Signal-Server's bound on one upload of one-time keys, for each kind."""


@dataclass(frozen=True, slots=True)
class SignedPrekey:
    """An X25519 prekey signed by the identity's Ed25519 key."""

    id: int
    key: DHPublicKey
    signature: bytes

    def signed_body(self) -> bytes:
        return signed_prekey_body(self.id, self.key.raw)

    def verify(self, identity: IdentityPublic) -> None:
        identity.signing.verify(
            self.signature,
            labels.signing_input(labels.SIG_SIGNED_PREKEY, self.signed_body()),
            BundleSignatureError,
        )

    def write(self, writer: Writer) -> None:
        writer.u32(self.id).fixed(self.key.raw, DH_KEY_SIZE).fixed(self.signature, SIGNATURE_SIZE)

    @classmethod
    def read(cls, reader: Reader) -> SignedPrekey:
        return cls(
            reader.u32(),
            DHPublicKey.from_bytes(reader.fixed(DH_KEY_SIZE)),
            reader.fixed(SIGNATURE_SIZE),
        )


@dataclass(frozen=True, slots=True)
class OneTimePrekey:
    """An unsigned X25519 one-time prekey (as in X3DH: forging one only drops DH4)."""

    id: int
    key: DHPublicKey

    def write(self, writer: Writer) -> None:
        writer.u32(self.id).fixed(self.key.raw, DH_KEY_SIZE)

    @classmethod
    def read(cls, reader: Reader) -> OneTimePrekey:
        return cls(reader.u32(), DHPublicKey.from_bytes(reader.fixed(DH_KEY_SIZE)))


@dataclass(frozen=True, slots=True)
class KemPrekey:
    """A signed ML-KEM-768 prekey; `last_resort` ones are reused when one-time ones run out."""

    id: int
    last_resort: bool
    key: KEMPublicKey
    signature: bytes

    def signed_body(self) -> bytes:
        return kem_prekey_body(self.id, self.last_resort, self.key.raw)

    def verify(self, identity: IdentityPublic) -> None:
        identity.signing.verify(
            self.signature,
            labels.signing_input(labels.SIG_KEM_PREKEY, self.signed_body()),
            BundleSignatureError,
        )

    def write(self, writer: Writer) -> None:
        writer.fixed(self.signed_body(), 4 + 1 + KEM_PUBLIC_KEY_SIZE)
        writer.fixed(self.signature, SIGNATURE_SIZE)

    @classmethod
    def read(cls, reader: Reader) -> KemPrekey:
        prekey_id = reader.u32()
        flag = reader.u8()
        if flag > 1:
            raise InvalidFieldError("KEM prekey's last-resort flag must be 0 or 1")
        key = KEMPublicKey.from_bytes(reader.fixed(KEM_PUBLIC_KEY_SIZE))
        return cls(prekey_id, flag == 1, key, reader.fixed(SIGNATURE_SIZE))


def signed_prekey_body(prekey_id: int, key: bytes) -> bytes:
    return bytes(Writer().u32(prekey_id).fixed(key, DH_KEY_SIZE))


def kem_prekey_body(prekey_id: int, last_resort: bool, key: bytes) -> bytes:
    return bytes(Writer().u32(prekey_id).u8(int(last_resort)).fixed(key, KEM_PUBLIC_KEY_SIZE))


@dataclass(frozen=True, slots=True)
class PrekeyBundle:
    """What the relay hands an initiator: everything needed for one PQXDH handshake."""

    identity: IdentityPublic
    signed_prekey: SignedPrekey
    one_time_prekey: OneTimePrekey | None
    kem_prekey: KemPrekey

    def verify(self) -> None:
        """Check both prekey signatures; the identity's own binding was checked on parsing."""
        self.signed_prekey.verify(self.identity)
        self.kem_prekey.verify(self.identity)

    def to_bytes(self) -> bytes:
        writer = Writer().u8(BUNDLE_VERSION).fixed(self.identity.to_bytes(), 128)
        self.signed_prekey.write(writer)
        if self.one_time_prekey is None:
            writer.u8(0)
        else:
            writer.u8(1)
            self.one_time_prekey.write(writer)
        self.kem_prekey.write(writer)
        return bytes(writer)

    @classmethod
    def from_bytes(cls, data: bytes) -> PrekeyBundle:
        """Parse and verify every signature; a bad one raises `BundleSignatureError`."""
        reader = Reader(data, "prekey bundle")
        version = reader.u8()
        if version != BUNDLE_VERSION:
            raise UnknownVersionError(f"prekey bundle version {version} is not supported")
        identity = IdentityPublic.read(reader)
        signed = SignedPrekey.read(reader)
        has_one_time = reader.u8()
        if has_one_time > 1:
            raise InvalidFieldError("prekey bundle's one-time flag must be 0 or 1")
        one_time = OneTimePrekey.read(reader) if has_one_time else None
        kem = KemPrekey.read(reader)
        reader.finish()
        bundle = cls(identity, signed, one_time, kem)
        bundle.verify()
        return bundle


@dataclass(frozen=True, slots=True)
class ConsumedPrekeys:
    """The private keys one handshake uses, handed out by `PrekeySecrets.take`."""

    signed: DHKeyPair
    one_time: DHKeyPair | None
    kem: KEMKeyPair


@dataclass(frozen=True, slots=True)
class PublishedPrekeys:
    """Everything a party uploads: what `PrekeySecrets.published` derives from the secrets."""

    signed: SignedPrekey
    kem_last_resort: KemPrekey
    one_time: list[OneTimePrekey]
    kem_one_time: list[KemPrekey]


@dataclass(frozen=True, slots=True)
class PrekeySecrets:
    """The private halves of a party's prekeys, with id counters.

    Ids only grow, so an id below the counter that is no longer held was consumed: that lets us
    tell a replayed initial message (`PrekeyReusedError`) from a made-up one.
    """

    signed: Mapping[int, DHKeyPair] = field(default_factory=dict)
    one_time: Mapping[int, DHKeyPair] = field(default_factory=dict)
    kem_one_time: Mapping[int, KEMKeyPair] = field(default_factory=dict)
    kem_last_resort: Mapping[int, KEMKeyPair] = field(default_factory=dict)
    next_signed_id: int = 1
    next_one_time_id: int = 1
    next_kem_id: int = 1

    # --- issuing --------------------------------------------------------------------------

    def add_signed_prekey(
        self, identity: IdentityKeyPair, random: RandomSource = system_random
    ) -> tuple[PrekeySecrets, SignedPrekey]:
        """A fresh signed prekey. Older ones are kept until `retire_signed_prekeys`."""
        pair = DHKeyPair.generate(random)
        prekey_id = self.next_signed_id
        signature = identity.sign(
            labels.SIG_SIGNED_PREKEY, signed_prekey_body(prekey_id, pair.public.raw)
        )
        new = replace(self, signed={**self.signed, prekey_id: pair}, next_signed_id=prekey_id + 1)
        return new, SignedPrekey(prekey_id, pair.public, signature)

    def add_one_time_prekeys(
        self, count: int, random: RandomSource = system_random
    ) -> tuple[PrekeySecrets, list[OneTimePrekey]]:
        _check_count(count)
        pairs = {self.next_one_time_id + i: DHKeyPair.generate(random) for i in range(count)}
        new = replace(
            self,
            one_time={**self.one_time, **pairs},
            next_one_time_id=self.next_one_time_id + count,
        )
        return new, [OneTimePrekey(i, pair.public) for i, pair in pairs.items()]

    def add_kem_prekeys(
        self,
        identity: IdentityKeyPair,
        count: int,
        last_resort: bool = False,
        random: RandomSource = system_random,
    ) -> tuple[PrekeySecrets, list[KemPrekey]]:
        _check_count(count)
        pairs = {self.next_kem_id + i: KEMKeyPair.generate(random) for i in range(count)}
        prekeys = [
            KemPrekey(
                i,
                last_resort,
                pair.public,
                identity.sign(
                    labels.SIG_KEM_PREKEY, kem_prekey_body(i, last_resort, pair.public.raw)
                ),
            )
            for i, pair in pairs.items()
        ]
        if last_resort:
            new = replace(self, kem_last_resort={**self.kem_last_resort, **pairs})
        else:
            new = replace(self, kem_one_time={**self.kem_one_time, **pairs})
        return replace(new, next_kem_id=self.next_kem_id + count), prekeys

    def retire_signed_prekeys(self, keep: int) -> PrekeySecrets:
        """Forget all but the `keep` newest signed prekeys (forward secrecy for old handshakes)."""
        newest = sorted(self.signed)[-keep:] if keep > 0 else []
        return replace(self, signed={i: self.signed[i] for i in newest})

    def published(self, identity: IdentityKeyPair) -> PublishedPrekeys:
        """The public halves, re-signed (Ed25519 is deterministic, so the signatures match)."""
        newest = max(self.signed)
        pair = self.signed[newest]
        signed = SignedPrekey(
            newest,
            pair.public,
            identity.sign(labels.SIG_SIGNED_PREKEY, signed_prekey_body(newest, pair.public.raw)),
        )

        def kem(prekey_id: int, kem_pair: KEMKeyPair, last_resort: bool) -> KemPrekey:
            body = kem_prekey_body(prekey_id, last_resort, kem_pair.public.raw)
            signature = identity.sign(labels.SIG_KEM_PREKEY, body)
            return KemPrekey(prekey_id, last_resort, kem_pair.public, signature)

        last_resort = max(self.kem_last_resort)
        return PublishedPrekeys(
            signed,
            kem(last_resort, self.kem_last_resort[last_resort], True),
            [OneTimePrekey(i, p.public) for i, p in sorted(self.one_time.items())],
            [kem(i, p, False) for i, p in sorted(self.kem_one_time.items())],
        )

    # --- consuming ------------------------------------------------------------------------

    def take(
        self, signed_id: int, one_time_id: int | None, kem_id: int
    ) -> tuple[PrekeySecrets, ConsumedPrekeys]:
        """The keys an initial message names; one-time ones leave the returned state."""
        signed = self.signed.get(signed_id)
        if signed is None:
            raise UnknownPrekeyError(f"signed prekey {signed_id} is not held")
        one_time: DHKeyPair | None = None
        remaining_one_time = self.one_time
        if one_time_id is not None:
            one_time = self.one_time.get(one_time_id)
            if one_time is None:
                raise self._missing("one-time prekey", one_time_id, self.next_one_time_id)
            remaining_one_time = {k: v for k, v in self.one_time.items() if k != one_time_id}
        remaining_kem = self.kem_one_time
        kem = self.kem_last_resort.get(kem_id)
        if kem is None:
            kem = self.kem_one_time.get(kem_id)
            if kem is None:
                raise self._missing("KEM prekey", kem_id, self.next_kem_id)
            remaining_kem = {k: v for k, v in self.kem_one_time.items() if k != kem_id}
        new = replace(self, one_time=remaining_one_time, kem_one_time=remaining_kem)
        return new, ConsumedPrekeys(signed, one_time, kem)

    @staticmethod
    def _missing(what: str, prekey_id: int, next_id: int) -> UnknownPrekeyError:
        if 0 < prekey_id < next_id:
            return PrekeyReusedError(f"{what} {prekey_id} was already used")
        return UnknownPrekeyError(f"{what} {prekey_id} was never issued")

    # --- serialisation --------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        writer = Writer().u8(SECRETS_VERSION)
        writer.u32(self.next_signed_id).u32(self.next_one_time_id).u32(self.next_kem_id)
        for dh_keys in (self.signed, self.one_time):
            writer.u32(len(dh_keys))
            for prekey_id, pair in sorted(dh_keys.items()):
                writer.u32(prekey_id).fixed(pair.private_bytes(), DH_KEY_SIZE)
        for kem_keys in (self.kem_one_time, self.kem_last_resort):
            writer.u32(len(kem_keys))
            for prekey_id, kem in sorted(kem_keys.items()):
                writer.u32(prekey_id).fixed(kem.seed, KEM_SEED_SIZE)
        return bytes(writer)

    @classmethod
    def from_bytes(cls, data: bytes) -> PrekeySecrets:
        reader = Reader(data, "prekey secrets")
        version = reader.u8()
        if version != SECRETS_VERSION:
            raise UnknownVersionError(f"prekey secrets version {version} is not supported")
        next_signed, next_one_time, next_kem = reader.u32(), reader.u32(), reader.u32()
        dh_maps = [
            {
                reader.u32(): DHKeyPair.from_private_bytes(reader.fixed(DH_KEY_SIZE))
                for _ in range(reader.u32())
            }
            for _ in range(2)
        ]
        kem_maps = [
            {
                reader.u32(): KEMKeyPair.from_seed(reader.fixed(KEM_SEED_SIZE))
                for _ in range(reader.u32())
            }
            for _ in range(2)
        ]
        reader.finish()
        return cls(
            dh_maps[0], dh_maps[1], kem_maps[0], kem_maps[1], next_signed, next_one_time, next_kem
        )


def _check_count(count: int) -> None:
    if not 0 < count <= MAX_PREKEYS_PER_UPLOAD:
        raise ValueError(f"prekeys are issued 1 to {MAX_PREKEYS_PER_UPLOAD} at a time")
