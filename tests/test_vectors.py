"""The published test vectors (tests/vectors/*.json) are what the code produces today.

Each vector is rebuilt from its fixed private keys and random draws and compared to the file, so
any change to an encoding, a KDF label or the order of operations shows up here as a named diff.
Separately, a few of the vectors' central claims are checked directly against pyca primitives.
"""

from __future__ import annotations

from typing import Any

import pytest

from backchannel import keystore, labels
from backchannel.envelope import Envelope
from backchannel.identity import IdentityKeyPair, IdentityPublic, numeric_safety_number
from backchannel.keys import KEMKeyPair
from backchannel.primitives import hkdf_sha256
from backchannel.session import parse_message

from .vectors.generate import (
    build_all,
    load,
    recorded_copy_kem_ciphertext,
    recorded_kem_ciphertext,
)

NAMES = [
    "identity",
    "handshake",
    "ratchet",
    "letter",
    "envelope",
    "keystore",
    "relay_auth",
    "receipt",
    "proposal",
    "otr",
    "mediation",
    "control_copy",
]


@pytest.fixture(scope="module")
def rebuilt() -> dict[str, dict[str, Any]]:
    return build_all(recorded_kem_ciphertext(), recorded_copy_kem_ciphertext())


def _diff(expected: Any, actual: Any, path: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        keys = sorted(set(expected) | set(actual))
        return [d for k in keys for d in _diff(expected.get(k), actual.get(k), f"{path}.{k}")]
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        pairs = enumerate(zip(expected, actual, strict=True))
        return [d for i, (e, a) in pairs for d in _diff(e, a, f"{path}[{i}]")]
    return [] if expected == actual else [path or "<root>"]


@pytest.mark.parametrize("name", NAMES)
def test_vector_file_matches_what_the_code_produces(name: str, rebuilt: dict[str, Any]) -> None:
    differences = _diff(load(name), rebuilt[name])
    assert not differences, f"{name}.json differs at {differences[:10]}"


def test_libsignal_safety_number_known_answer() -> None:
    compat = load("identity")["libsignal_compat"]
    number = numeric_safety_number(
        bytes.fromhex(compat["key_a"]), compat["id_a"].encode(),
        bytes.fromhex(compat["key_b"]), compat["id_b"].encode(), 5200,
    )  # fmt: skip
    assert number == compat["published"]
    assert number == "300354477692869396892869876765458257569162576843440918079131"


def test_identity_vector_public_keys_parse_and_bind() -> None:
    vector = load("identity")
    for side in ("alice", "bob"):
        pair = IdentityKeyPair.from_private_bytes(bytes.fromhex(vector[side]["private"]))
        parsed = IdentityPublic.from_bytes(bytes.fromhex(vector[side]["public"]))
        assert parsed == pair.public


def test_handshake_kem_ciphertext_decapsulates_to_the_recorded_secret() -> None:
    vector = load("handshake")
    kem = KEMKeyPair.from_seed(bytes.fromhex(vector["bob"]["kem_prekey"]["seed"]))
    assert kem.public.raw.hex() == vector["bob"]["kem_prekey"]["public"]
    secret = kem.decapsulate(bytes.fromhex(vector["kem_ciphertext"]))
    assert secret.hex() == vector["kem_shared_secret"]


def test_handshake_secrets_follow_from_the_kdf_input() -> None:
    vector = load("handshake")
    okm = hkdf_sha256(bytes.fromhex(vector["kdf_input"]), None, labels.PQXDH_INFO, 96)
    assert okm.hex() == vector["sk"] + vector["hka"] + vector["nhkb"]


def test_first_message_carries_the_initial_header() -> None:
    first = load("handshake")["first_message"]
    parsed = parse_message(bytes.fromhex(first["session_message"]))
    assert parsed.header is not None
    assert parsed.header.to_bytes().hex() == first["initial_header"]


def test_envelope_vectors_decode_to_their_fields() -> None:
    for kind in ("direct", "sealed"):
        vector = load("envelope")[kind]
        envelope = Envelope.from_bytes(bytes.fromhex(vector["encoded"]))
        assert envelope.recipient == vector["recipient"]
        assert envelope.sender == vector["sender"]
        assert envelope.message_id.hex() == vector["message_id"]
        assert envelope.ciphertext.hex() == vector["ciphertext"]


def test_keystore_vector_opens_with_its_passphrase() -> None:
    vector = load("keystore")
    opened = keystore.open_sealed(bytes.fromhex(vector["sealed"]), vector["passphrase"])
    assert opened.hex() == vector["plaintext"]


def test_proposal_vector_parses_verifies_and_its_log_chains() -> None:
    from backchannel.identity import IdentityKeyPair
    from backchannel.keys import SigningPublicKey
    from backchannel.proposals import (
        NotaryReceipt,
        SealedProposal,
        SignedStatement,
        verify_log,
    )

    vector = load("proposal")
    author = IdentityKeyPair.from_private_bytes(bytes.fromhex(vector["author_identity_private"]))
    sealed = SealedProposal.from_bytes(bytes.fromhex(vector["sealed"]))
    sealed.verify(author.public)
    assert sealed.commitment.hex() == vector["commitment"]
    addressee = IdentityKeyPair.from_private_bytes(
        bytes.fromhex(vector["addressee_identity_private"])
    )
    statement = SignedStatement.from_bytes(
        bytes.fromhex(vector["statement_canonical"] + vector["statement_signature"])
    )
    statement.verify(addressee.public)
    notary = SigningPublicKey.from_bytes(bytes.fromhex(vector["notary_public"]))
    receipts = [NotaryReceipt.from_bytes(bytes.fromhex(e["receipt"])) for e in vector["log"]]
    for receipt in receipts:
        receipt.verify(notary)
    verify_log([r.entry for r in receipts])
    assert receipts[1].entry.value == statement.statement.digest()


def test_proposal_content_and_record_vectors_decode_open_and_verify() -> None:
    """The session encodings of §7.3 and the exported record of §14.6, read back independently
    of the generator: the timed form opens with the content key, the record verifies."""
    from backchannel.content import ProposalContent, StatementContent, decode_content
    from backchannel.proposals import SealedProposal, Status
    from backchannel.records import Export, verify_export

    vector = load("proposal")
    sealed = SealedProposal.from_bytes(bytes.fromhex(vector["sealed"]))
    timed = decode_content(bytes.fromhex(vector["timed_content"]))
    assert isinstance(timed, ProposalContent) and timed.sealed is None
    assert timed.locked[:12].hex() == vector["lock_nonce"]
    assert timed.unlock(bytes.fromhex(vector["content_key"])) == sealed
    opened = decode_content(bytes.fromhex(vector["open_content"]))
    assert isinstance(opened, ProposalContent) and opened.sealed == sealed
    assert opened.commitment.hex() == vector["commitment"]
    statement = decode_content(bytes.fromhex(vector["statement_content"]))
    assert isinstance(statement, StatementContent)
    assert statement.receipt.to_bytes().hex() == vector["log"][1]["receipt"]
    export = Export.from_json(vector["export"])
    assert export.to_json() == vector["export"]
    (verdict,) = verify_export(export, 1_800_000_000_000, bytes.fromhex(vector["notary_public"]))
    assert verdict.error == "" and verdict.replayed is not None
    assert verdict.replayed.status == Status.ACCEPTED


def test_letter_acknowledgement_vector_decodes_and_verifies() -> None:
    """§7.4: the acknowledgement names the letter's digest and is signed by its recipient."""
    from backchannel.content import SignedAcknowledgement, SignedLetter, decode_content
    from backchannel.identity import IdentityKeyPair

    vector = load("letter")
    letter = decode_content(bytes.fromhex(vector["content"]))
    assert isinstance(letter, SignedLetter)
    ack = decode_content(bytes.fromhex(vector["acknowledgement_content"]))
    assert isinstance(ack, SignedAcknowledgement)
    assert ack.acknowledgement.letter_digest.hex() == vector["letter_digest"]
    assert ack.acknowledgement.letter_id == letter.letter.message_id
    sender = IdentityKeyPair.from_private_bytes(bytes.fromhex(vector["sender_identity_private"]))
    recipient = IdentityKeyPair.from_private_bytes(
        bytes.fromhex(vector["recipient_identity_private"])
    )
    ack.verify(recipient.public, sender.public, vector["sender"])


def test_otr_vector_forgery_verifies_under_the_revealed_key() -> None:
    """§15: the answer reveals the first message's MAC key, and with it the forged message in the
    vector verifies exactly as the real one, while only the real one decrypts as sent."""
    from backchannel import otr

    vector = load("otr")
    mac_key = bytes.fromhex(vector["first_mac_key"])
    first, forged = bytes.fromhex(vector["first_message"]), bytes.fromhex(vector["forged_message"])
    second = otr.DataMessage.from_bytes(bytes.fromhex(vector["second_message"]))
    assert second.revealed == (mac_key,)
    assert otr.tag_verifies(mac_key, first) and otr.tag_verifies(mac_key, forged)
    enc_key, derived_mac = otr.message_keys(bytes.fromhex(vector["first_message_key"]))
    assert (enc_key.hex(), derived_mac) == (vector["first_enc_key"], mac_key)
