"""PQXDH: the asynchronous, post-quantum hybrid key agreement that opens a session.

Follows Signal's PQXDH specification (revision 3): four X25519 Diffie-Hellmans and one
ML-KEM-768 encapsulation into one HKDF, prefixed with 32 0xFF bytes. Where Signal uses one XEdDSA
key, our identity carries a separate X25519 key bound by an Ed25519 signature (`identity.py`).
The initiator's `InitialHeader` travels with every message until the responder answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import labels
from .encoding import Reader, Writer
from .errors import HandshakeError, InvalidFieldError, UnknownVersionError
from .identity import IDENTITY_PUBLIC_SIZE, IdentityKeyPair, IdentityPublic
from .keys import (
    DH_KEY_SIZE,
    KEM_CIPHERTEXT_SIZE,
    KEM_SHARED_SECRET_SIZE,
    DHKeyPair,
    DHPublicKey,
    KEMPublicKey,
)
from .letters import encode_name
from .prekeys import PrekeyBundle, PrekeySecrets
from .primitives import RandomSource, hkdf_sha256, sha256, system_random
from .ratchet import RatchetState, init_initiator, init_responder

INITIAL_HEADER_VERSION = 1
MAX_NAME_BYTES = 64
DISCONTINUITY_BYTES = b"\xff" * 32
"""Signal's prefix: keeps the KDF input from ever equalling an XEdDSA/X25519 secret alone."""

Encapsulate = Callable[[KEMPublicKey], tuple[bytes, bytes]]
"""ML-KEM-768 Encaps: public key -> (shared secret, ciphertext). Injected for test vectors."""


def system_encapsulate(public: KEMPublicKey) -> tuple[bytes, bytes]:
    return public.key.encapsulate()


@dataclass(frozen=True, slots=True)
class InitialHeader:
    """What the responder needs to repeat the initiator's key agreement."""

    initiator: IdentityPublic
    initiator_name: str
    ephemeral: DHPublicKey
    signed_prekey_id: int
    one_time_prekey_id: int | None
    kem_prekey_id: int
    kem_ciphertext: bytes

    def to_bytes(self) -> bytes:
        writer = Writer().u8(INITIAL_HEADER_VERSION)
        writer.fixed(self.initiator.to_bytes(), IDENTITY_PUBLIC_SIZE)
        writer.var8(encode_name(self.initiator_name))
        writer.fixed(self.ephemeral.raw, DH_KEY_SIZE)
        writer.u32(self.signed_prekey_id)
        if self.one_time_prekey_id is None:
            writer.u8(0)
        else:
            writer.u8(1).u32(self.one_time_prekey_id)
        writer.u32(self.kem_prekey_id)
        writer.fixed(self.kem_ciphertext, KEM_CIPHERTEXT_SIZE)
        return bytes(writer)

    @classmethod
    def read(cls, reader: Reader) -> InitialHeader:
        version = reader.u8()
        if version != INITIAL_HEADER_VERSION:
            raise UnknownVersionError(f"initial header version {version} is not supported")
        initiator = IdentityPublic.read(reader)
        name = decode_name(reader.var8(MAX_NAME_BYTES, "initiator name"))
        ephemeral = DHPublicKey.from_bytes(reader.fixed(DH_KEY_SIZE))
        signed_id = reader.u32()
        has_one_time = reader.u8()
        if has_one_time > 1:
            raise InvalidFieldError("initial header's one-time presence byte must be 0 or 1")
        one_time_id = reader.u32() if has_one_time else None
        kem_id = reader.u32()
        ciphertext = reader.fixed(KEM_CIPHERTEXT_SIZE)
        return cls(initiator, name, ephemeral, signed_id, one_time_id, kem_id, ciphertext)

    def digest(self) -> bytes:
        """Names this handshake, so a responder recognises repeats of the same initial header."""
        return sha256(self.to_bytes())


def decode_name(raw: bytes) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HandshakeError("name is not valid UTF-8") from exc
    if not name:
        raise HandshakeError("name is empty")
    return name


def associated_data(
    initiator: IdentityPublic, initiator_name: str, responder: IdentityPublic, responder_name: str
) -> bytes:
    """AD = IK_A ‖ IK_B ‖ name_A ‖ name_B (X3DH §3.3, widened per §4.8 against misbinding)."""
    writer = Writer().fixed(initiator.keys, 64).fixed(responder.keys, 64)
    return bytes(writer.var8(encode_name(initiator_name)).var8(encode_name(responder_name)))


def derive_secrets(dh_outputs: list[bytes], kem_secret: bytes) -> tuple[bytes, bytes, bytes]:
    """KDF(0xFF*32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS) -> (SK, HKA, NHKB), 96 bytes of HKDF."""
    if len(kem_secret) != KEM_SHARED_SECRET_SIZE:
        raise HandshakeError("ML-KEM shared secret has the wrong length")
    ikm = DISCONTINUITY_BYTES + b"".join(dh_outputs) + kem_secret
    okm = hkdf_sha256(ikm, None, labels.PQXDH_INFO, 96)
    return okm[:32], okm[32:64], okm[64:]


@dataclass(frozen=True, slots=True)
class Initiated:
    """The initiator's result: a ratchet ready to send, and the header to attach."""

    state: RatchetState
    header: InitialHeader
    associated_data: bytes


def initiate(
    identity: IdentityKeyPair,
    identity_name: str,
    bundle: PrekeyBundle,
    peer_name: str,
    random: RandomSource = system_random,
    encapsulate: Encapsulate = system_encapsulate,
) -> Initiated:
    """Alice's side: verify Bob's bundle, agree on SK, and initialise the sending ratchet."""
    bundle.verify()
    ephemeral = DHKeyPair.generate(random)
    spk = bundle.signed_prekey.key
    dh_outputs = [
        identity.dh.dh(spk),  # DH1 = DH(IK_A, SPK_B)
        ephemeral.dh(bundle.identity.dh),  # DH2 = DH(EK_A, IK_B)
        ephemeral.dh(spk),  # DH3 = DH(EK_A, SPK_B)
    ]
    if bundle.one_time_prekey is not None:
        dh_outputs.append(ephemeral.dh(bundle.one_time_prekey.key))  # DH4 = DH(EK_A, OPK_B)
    kem_secret, kem_ciphertext = encapsulate(bundle.kem_prekey.key)
    sk, hka, nhkb = derive_secrets(dh_outputs, kem_secret)
    ad = associated_data(identity.public, identity_name, bundle.identity, peer_name)
    state = init_initiator(sk, hka, nhkb, spk, ad, random)
    header = InitialHeader(
        initiator=identity.public,
        initiator_name=identity_name,
        ephemeral=ephemeral.public,
        signed_prekey_id=bundle.signed_prekey.id,
        one_time_prekey_id=bundle.one_time_prekey.id if bundle.one_time_prekey else None,
        kem_prekey_id=bundle.kem_prekey.id,
        kem_ciphertext=kem_ciphertext,
    )
    return Initiated(state, header, ad)


@dataclass(frozen=True, slots=True)
class Responded:
    """The responder's result: prekeys with the one-time ones removed, and a receiving ratchet."""

    prekeys: PrekeySecrets
    state: RatchetState


def respond(
    identity: IdentityKeyPair, identity_name: str, prekeys: PrekeySecrets, header: InitialHeader
) -> Responded:
    """Bob's side: repeat the agreement from his private prekeys.

    The caller must decrypt the first message with the returned state before persisting either
    result: only a handshake whose first message authenticates may consume a one-time prekey.
    """
    remaining, used = prekeys.take(
        header.signed_prekey_id, header.one_time_prekey_id, header.kem_prekey_id
    )
    ik_a = header.initiator.dh
    dh_outputs = [
        used.signed.dh(ik_a),  # DH1
        identity.dh.dh(header.ephemeral),  # DH2
        used.signed.dh(header.ephemeral),  # DH3
    ]
    if used.one_time is not None:
        dh_outputs.append(used.one_time.dh(header.ephemeral))  # DH4
    kem_secret = used.kem.decapsulate(header.kem_ciphertext)
    sk, hka, nhkb = derive_secrets(dh_outputs, kem_secret)
    ad = associated_data(header.initiator, header.initiator_name, identity.public, identity_name)
    return Responded(remaining, init_responder(sk, hka, nhkb, used.signed, ad))
