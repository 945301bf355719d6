"""Proof of possession of an identity key, as the relay asks for it (PROTOCOL.md §13).

No passwords: a participant proves it holds its Ed25519 identity key by signing the invite at
registration and a fresh single-use challenge at every login. Both statements name the relay's
random id, so a signature made for one relay is worthless at another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from . import labels
from .encoding import Writer
from .errors import SignatureError
from .identity import IdentityKeyPair, IdentityPublic

RELAY_ID_SIZE = 16
CHALLENGE_SIZE = 32
T = TypeVar("T", bytes, str)


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
    body = _claimed(registration_body, relay_id, invite, name)
    identity.signing.verify(
        signature, labels.signing_input(labels.SIG_RELAY_REGISTER, body), ProofError
    )


def sign_login(identity: IdentityKeyPair, relay_id: bytes, challenge: bytes, name: str) -> bytes:
    return identity.sign(labels.SIG_RELAY_LOGIN, login_body(relay_id, challenge, name))


def verify_login(
    identity: IdentityPublic, signature: bytes, relay_id: bytes, challenge: bytes, name: str
) -> None:
    body = _claimed(login_body, relay_id, challenge, name)
    identity.signing.verify(
        signature, labels.signing_input(labels.SIG_RELAY_LOGIN, body), ProofError
    )


def _claimed(body: Callable[[bytes, T, str], bytes], relay_id: bytes, value: T, name: str) -> bytes:
    """The statement a proof claims to sign. Its fields come from a request: a challenge of the
    wrong size, or text that is not UTF-8 or is over 255 bytes, cannot have been signed, so it
    is a `ProofError` like a bad signature, not the encoder's `ValueError`."""
    try:
        return body(relay_id, value, name)
    except ValueError:  # UnicodeEncodeError included
        raise ProofError("the proof names fields that cannot be encoded") from None
