"""Shared builders for the core tests: parties with published prekeys, and ratchet pairs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from backchannel.identity import IdentityKeyPair
from backchannel.keys import DHKeyPair
from backchannel.prekeys import KemPrekey, OneTimePrekey, PrekeyBundle, PrekeySecrets, SignedPrekey
from backchannel.ratchet import RatchetState, init_initiator, init_responder


@dataclass
class Party:
    """A party that has published a signed prekey, one-time prekeys and KEM prekeys."""

    name: str
    identity: IdentityKeyPair
    prekeys: PrekeySecrets
    signed: SignedPrekey
    one_time: list[OneTimePrekey] = field(default_factory=list)
    kem: list[KemPrekey] = field(default_factory=list)
    last_resort: KemPrekey | None = None

    @property
    def last_resort_id(self) -> int:
        assert self.last_resort is not None
        return self.last_resort.id

    def bundle(self, one_time: int | None = 0, kem: int | None = 0) -> PrekeyBundle:
        """A bundle with the `one_time`-th one-time prekey (None: none) and the `kem`-th one-time
        KEM prekey (None: the last-resort KEM prekey)."""
        otk = None if one_time is None else self.one_time[one_time]
        if kem is None:
            assert self.last_resort is not None
            kem_prekey = self.last_resort
        else:
            kem_prekey = self.kem[kem]
        return PrekeyBundle(self.identity.public, self.signed, otk, kem_prekey)


def make_party(name: str, one_time: int = 3, kem: int = 3, last_resort: bool = True) -> Party:
    identity = IdentityKeyPair.generate()
    prekeys, signed = PrekeySecrets().add_signed_prekey(identity)
    prekeys, otks = prekeys.add_one_time_prekeys(one_time)
    prekeys, kems = prekeys.add_kem_prekeys(identity, kem)
    resort = None
    if last_resort:
        prekeys, resorts = prekeys.add_kem_prekeys(identity, 1, last_resort=True)
        resort = resorts[0]
    return Party(name, identity, prekeys, signed, otks, kems, resort)


def ratchet_pair(ad: bytes = b"associated data") -> tuple[RatchetState, RatchetState]:
    """(Alice, Bob) ratchets as a PQXDH handshake would leave them, from random secrets."""
    sk, hka, nhkb = os.urandom(32), os.urandom(32), os.urandom(32)
    bob_ratchet_key = DHKeyPair.generate()
    alice = init_initiator(sk, hka, nhkb, bob_ratchet_key.public, ad)
    bob = init_responder(sk, hka, nhkb, bob_ratchet_key, ad)
    return alice, bob


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    """`data` with the byte at `index` XORed with `mask`."""
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)
