"""Proof of possession of an identity key, as the relay asks for it (PROTOCOL.md §13).

No passwords: a participant proves it holds its Ed25519 identity key by signing the invite at
registration and a fresh single-use challenge at every login. Both statements name the relay's
random id, so a signature made for one relay is worthless at another.
"""

from __future__ import annotations

from . import labels
from .encoding import Writer
from .errors import SignatureError
from .identity import IdentityKeyPair, IdentityPublic

RELAY_ID_SIZE = 16
CHALLENGE_SIZE = 32


class ProofError(SignatureError):
    code = "bad_proof"


def registration_body(relay_id: bytes, invite: str, name: str) -> bytes:
    writer = Writer().fixed(relay_id, RELAY_ID_SIZE)
    return bytes(writer.var8(invite.encode("utf-8")).var8(name.encode("utf-8")))


def login_body(relay_id: bytes, challenge: bytes, name: str) -> bytes:
    writer = Writer().fixed(relay_id, RELAY_ID_SIZE).fixed(challenge, CHALLENGE_SIZE)
    return bytes(writer.var8(name.encode("utf-8")))


def sign_registration(identity: IdentityKeyPair, relay_id: bytes, invite: str, name: str) -> bytes:
    return identity.sign(labels.SIG_RELAY_REGISTER, registration_body(relay_id, invite, name))


def verify_registration(
    identity: IdentityPublic, signature: bytes, relay_id: bytes, invite: str, name: str
) -> None:
    identity.signing.verify(
        signature,
        labels.signing_input(labels.SIG_RELAY_REGISTER, registration_body(relay_id, invite, name)),
        ProofError,
    )


def sign_login(identity: IdentityKeyPair, relay_id: bytes, challenge: bytes, name: str) -> bytes:
    return identity.sign(labels.SIG_RELAY_LOGIN, login_body(relay_id, challenge, name))


def verify_login(
    identity: IdentityPublic, signature: bytes, relay_id: bytes, challenge: bytes, name: str
) -> None:
    identity.signing.verify(
        signature,
        labels.signing_input(labels.SIG_RELAY_LOGIN, login_body(relay_id, challenge, name)),
        ProofError,
    )
