"""Builds the deterministic test vectors of PROTOCOL.md §10 and writes them as JSON.

`python -m tests.vectors.generate` (or `make vectors`) rewrites `tests/vectors/*.json`;
`tests/test_vectors.py` rebuilds them in memory and compares field by field. Every input is
fixed: private keys and random draws come from `RecordingRandom`, and the one randomised
primitive pyca does not let us seed, ML-KEM encapsulation, is pinned by keeping the recorded
ciphertext (its shared secret is re-derived by decapsulation on every run).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from backchannel import drops, keystore, labels, otr, padding, relay_auth
from backchannel.agreements import ClauseForm, OffRecordClause
from backchannel.content import (
    Letter,
    LetterAcknowledgement,
    ProposalContent,
    Receipt,
    ReceiptType,
    StatementContent,
    letter_digest,
    lock_proposal,
    sign_acknowledgement,
    sign_letter,
)
from backchannel.control_copy import ControlKeyPair, open_letter
from backchannel.control_copy import seal as seal_copy
from backchannel.envelope import Envelope, Route
from backchannel.exercise import Communique, Inject, inject_body, sign_communique, sign_inject
from backchannel.handshake import (
    DISCONTINUITY_BYTES,
    associated_data,
    derive_secrets,
)
from backchannel.identity import (
    IdentityKeyPair,
    format_fingerprint,
    numeric_safety_number,
    safety_number,
)
from backchannel.keys import DHPublicKey, KEMPublicKey, SigningKeyPair
from backchannel.mediation import (
    ForwardConsent,
    Forwarded,
    Introduction,
    ReleasedOffer,
    sign_consent,
    sign_introduction,
    sign_release,
)
from backchannel.padding import pad
from backchannel.prekeys import PrekeyBundle, PrekeySecrets
from backchannel.primitives import hmac_sha256
from backchannel.proposals import (
    EntryKind,
    Party,
    Proposal,
    Reveal,
    Statement,
    StatementKind,
    next_entry,
    notarise,
    seal,
    sign_statement,
)
from backchannel.ratchet import (
    RatchetState,
    init_initiator,
    init_responder,
    kdf_ck,
    ratchet_decrypt,
    ratchet_encrypt,
)
from backchannel.records import Export, Notarised, ProposalRecord
from backchannel.session import accept_session, session_encrypt, start_session

from .randomness import RecordingRandom

HERE = Path(__file__).parent
ALICE, BOB, MEDIATOR = "kennedy", "khrushchev", "u-thant"
Vector = dict[str, Any]


def _identity(label: str) -> tuple[IdentityKeyPair, str]:
    private = RecordingRandom(label)(64)
    return IdentityKeyPair.from_private_bytes(private), private.hex()


def build_identity() -> Vector:
    alice, alice_private = _identity("identity-alice")
    bob, bob_private = _identity("identity-bob")

    def describe(pair: IdentityKeyPair, private: str, name: str) -> Vector:
        return {
            "name": name,
            "private": private,
            "signing_public": pair.public.signing.raw.hex(),
            "dh_public": pair.public.dh.raw.hex(),
            "binding_signing_input": labels.signing_input(
                labels.SIG_IDENTITY, pair.public.dh.raw
            ).hex(),
            "binding_signature": pair.public.binding.hex(),
            "public": pair.public.to_bytes().hex(),
            "fingerprint": pair.public.fingerprint().hex(),
            "fingerprint_display": format_fingerprint(pair.public.fingerprint()),
        }

    return {
        "description": "Identities, fingerprints and the pairwise safety number (PROTOCOL.md §2)",
        "alice": describe(alice, alice_private, ALICE),
        "bob": describe(bob, bob_private, BOB),
        "safety_number": safety_number(alice.public, ALICE, bob.public, BOB),
        "libsignal_compat": {
            "description": "libsignal fingerprint.rs known-answer test for the same construction",
            **LIBSIGNAL_SAFETY_NUMBER,
            "safety_number": numeric_safety_number(
                bytes.fromhex(LIBSIGNAL_SAFETY_NUMBER["key_a"]),
                LIBSIGNAL_SAFETY_NUMBER["id_a"].encode(),
                bytes.fromhex(LIBSIGNAL_SAFETY_NUMBER["key_b"]),
                LIBSIGNAL_SAFETY_NUMBER["id_b"].encode(),
                5200,
            ),
        },
    }


# libsignal rust/protocol/src/fingerprint.rs, DISPLAYABLE_FINGERPRINT_V1: same construction,
# Signal's 33-byte keys. Our function must reproduce libsignal's published answer.
LIBSIGNAL_SAFETY_NUMBER: dict[str, str] = {
    "key_a": "0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868",
    "id_a": "+14152222222",
    "key_b": "05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b",
    "id_b": "+14153333333",
    "published": "300354477692869396892869876765458257569162576843440918079131",
}


def _bob_prekeys(bob: IdentityKeyPair) -> tuple[PrekeySecrets, PrekeyBundle, Vector]:
    rng = RecordingRandom("prekeys-bob")
    secrets = PrekeySecrets()
    secrets, signed = secrets.add_signed_prekey(bob, rng)
    spk_private = rng.take_new()
    secrets, one_time = secrets.add_one_time_prekeys(1, rng)
    opk_private = rng.take_new()
    secrets, kem = secrets.add_kem_prekeys(bob, 1, last_resort=True, random=rng)
    kem_seed = rng.take_new()
    bundle = PrekeyBundle(bob.public, signed, one_time[0], kem[0])
    described = {
        "signed_prekey": {
            "id": signed.id,
            "private": spk_private[0],
            "public": signed.key.raw.hex(),
            "signing_input": labels.signing_input(
                labels.SIG_SIGNED_PREKEY, signed.signed_body()
            ).hex(),
            "signature": signed.signature.hex(),
        },
        "one_time_prekey": {
            "id": one_time[0].id,
            "private": opk_private[0],
            "public": one_time[0].key.raw.hex(),
        },
        "kem_prekey": {
            "id": kem[0].id,
            "last_resort": kem[0].last_resort,
            "seed": kem_seed[0],
            "public": kem[0].key.raw.hex(),
            "signing_input": labels.signing_input(
                labels.SIG_KEM_PREKEY, kem[0].signed_body()
            ).hex(),
            "signature": kem[0].signature.hex(),
        },
        "bundle": bundle.to_bytes().hex(),
    }
    return secrets, bundle, described


def build_handshake(kem_ciphertext: bytes | None) -> Vector:
    alice, _ = _identity("identity-alice")
    bob, _ = _identity("identity-bob")
    bob_secrets, bundle, bob_described = _bob_prekeys(bob)
    kem_pair = bob_secrets.kem_last_resort[bundle.kem_prekey.id]

    def encapsulate(public: KEMPublicKey) -> tuple[bytes, bytes]:
        if kem_ciphertext is None:  # first generation: a real, randomised encapsulation
            return public.key.encapsulate()
        return kem_pair.decapsulate(kem_ciphertext), kem_ciphertext

    rng = RecordingRandom("handshake-alice")
    session = start_session(alice, ALICE, bundle, BOB, rng, encapsulate)
    draws = rng.take_new()  # EK_A private, then Alice's first ratchet key
    header = session.pending_header
    assert header is not None
    ephemeral_private, ratchet_private = draws
    ciphertext = header.kem_ciphertext
    shared_secret = kem_pair.decapsulate(ciphertext)
    spk = bob_secrets.signed[bundle.signed_prekey.id]
    opk = bob_secrets.one_time[bundle.one_time_prekey.id]  # type: ignore[union-attr]
    dhs = [
        alice.dh.dh(bundle.signed_prekey.key),
        bob.dh.dh(header.ephemeral),
        spk.dh(header.ephemeral),
        opk.dh(header.ephemeral),
    ]
    sk, hka, nhkb = derive_secrets(dhs, shared_secret)
    plaintext = b"Kennedy to Khrushchev: opening the channel."
    session, wire = session_encrypt(session, plaintext, rng)
    header_nonce = rng.take_new()
    _, bob_session, received = accept_session(bob, BOB, bob_secrets, wire, RecordingRandom("x"))
    assert received == plaintext
    return {
        "description": "PQXDH handshake and the first (PREKEY) message (PROTOCOL.md §4, §6)",
        "alice_name": ALICE,
        "bob_name": BOB,
        "alice_identity_private": alice.private_bytes().hex(),
        "bob_identity_private": bob.private_bytes().hex(),
        "bob": bob_described,
        "alice_ephemeral_private": ephemeral_private,
        "alice_ephemeral_public": header.ephemeral.raw.hex(),
        "kem_ciphertext": ciphertext.hex(),
        "kem_shared_secret": shared_secret.hex(),
        "dh1": dhs[0].hex(),
        "dh2": dhs[1].hex(),
        "dh3": dhs[2].hex(),
        "dh4": dhs[3].hex(),
        "kdf_input": (DISCONTINUITY_BYTES + b"".join(dhs) + shared_secret).hex(),
        "sk": sk.hex(),
        "hka": hka.hex(),
        "nhkb": nhkb.hex(),
        "associated_data": associated_data(alice.public, ALICE, bob.public, BOB).hex(),
        "alice_ratchet_private": ratchet_private,
        "first_message": {
            "plaintext": plaintext.hex(),
            "padded_plaintext": padding.pad(plaintext).hex(),
            "header_nonce": header_nonce[0],
            "initial_header": header.to_bytes().hex(),
            "session_message": wire.hex(),
            "bob_handshake_digest": (bob_session.handshake_digest or b"").hex(),
        },
    }


RATCHET_SCHEDULE: list[tuple[str, str, str]] = [
    # (action, party, message id). Ids name messages by sender: a* from Alice, b* from Bob.
    ("send", "alice", "a0"), ("send", "alice", "a1"), ("send", "alice", "a2"),
    ("receive", "bob", "a0"), ("receive", "bob", "a2"), ("receive", "bob", "a1"),
    ("send", "bob", "b0"), ("send", "bob", "b1"),
    ("receive", "alice", "b1"), ("receive", "alice", "b0"),
    ("send", "alice", "a3"), ("send", "alice", "a4"),
    ("send", "bob", "b2"),
    ("receive", "bob", "a3"), ("receive", "bob", "a4"),
    ("receive", "alice", "b2"),
    ("send", "bob", "b3"), ("send", "bob", "b4"),
    ("receive", "alice", "b3"), ("receive", "alice", "b4"),
]  # fmt: skip


def build_ratchet(handshake: Vector) -> Vector:
    sk, hka, nhkb = (bytes.fromhex(handshake[k]) for k in ("sk", "hka", "nhkb"))
    ad = bytes.fromhex(handshake["associated_data"])
    bob_prekeys = _bob_prekeys(_identity("identity-bob")[0])[0]
    bob_ratchet_pair = bob_prekeys.signed[handshake["bob"]["signed_prekey"]["id"]]
    rngs = {"alice": RecordingRandom("ratchet-alice"), "bob": RecordingRandom("ratchet-bob")}
    states: dict[str, RatchetState] = {
        "alice": init_initiator(sk, hka, nhkb, bob_ratchet_pair.public, ad, rngs["alice"]),
        "bob": init_responder(sk, hka, nhkb, bob_ratchet_pair, ad),
    }
    initial = rngs["alice"].take_new()
    messages: dict[str, bytes] = {}
    events: list[Vector] = []
    for action, party, message_id in RATCHET_SCHEDULE:
        state, rng = states[party], rngs[party]
        if action == "send":
            assert state.cks is not None and state.hks is not None
            plaintext = f"{party} message {message_id}".encode()
            header = {"dh": state.dhs.public.raw.hex(), "pn": state.pn, "n": state.ns}
            event = {
                "action": "send", "party": party, "message": message_id,
                "plaintext": plaintext.hex(), "header": header,
                "header_key": state.hks.hex(), "chain_key": state.cks.hex(),
                "message_key": kdf_ck(state.cks)[1].hex(),
            }  # fmt: skip
            states[party], messages[message_id] = ratchet_encrypt(state, plaintext, rng)
            event["random"] = rng.take_new()
            event["ciphertext"] = messages[message_id].hex()
        else:
            states[party], plaintext = ratchet_decrypt(state, messages[message_id], rng)
            new = states[party]
            event = {
                "action": "receive", "party": party, "message": message_id,
                "random": rng.take_new(), "plaintext": plaintext.hex(),
                "skipped_keys_after": len(new.skipped), "root_key_after": new.rk.hex(),
            }  # fmt: skip
        events.append(event)
    return {
        "description": "Double Ratchet with header encryption: five messages each way, two of "
        "them out of order (PROTOCOL.md §5)",
        "sk": handshake["sk"],
        "hka": handshake["hka"],
        "nhkb": handshake["nhkb"],
        "associated_data": handshake["associated_data"],
        "bob_ratchet_private": bob_ratchet_pair.private_bytes().hex(),
        "alice_initial_random": initial,
        "events": events,
    }


def build_letter() -> Vector:
    alice, _ = _identity("identity-alice")
    bob, _ = _identity("identity-bob")
    rng = RecordingRandom("letter")
    letter = Letter(
        message_id=rng(16),
        sender=ALICE,
        sender_keys=alice.public.keys,
        recipient=BOB,
        recipient_keys=bob.public.keys,
        sent_at_ms=1_793_059_200_000,
        text="As I read your letter, the key elements of your proposals seem generally "
        "acceptable as I understand them.",
        in_reply_to=rng(16),
    )
    signed = sign_letter(alice, letter)
    signed.verify(alice.public, bob.public, BOB)
    ack = sign_acknowledgement(
        bob,
        LetterAcknowledgement(
            letter.message_id, letter_digest(letter), BOB, bob.public.keys, ALICE,
            alice.public.keys, 1_793_059_260_000,
        ),
    )  # fmt: skip
    ack.verify(bob.public, alice.public, ALICE)
    return {
        "description": "A letter's canonical encoding and Ed25519 signature, and the "
        "recipient's formal acknowledgement of it (PROTOCOL.md §7.1, §7.4)",
        "sender": ALICE,
        "recipient": BOB,
        "sender_identity_private": alice.private_bytes().hex(),
        "message_id": letter.message_id.hex(),
        "in_reply_to": (letter.in_reply_to or b"").hex(),
        "sent_at_ms": letter.sent_at_ms,
        "text": letter.text,
        "canonical": letter.canonical().hex(),
        "signing_input": labels.signing_input(labels.SIG_LETTER, letter.canonical()).hex(),
        "signature": signed.signature.hex(),
        "content": signed.to_content().hex(),
        "padded_content": padding.pad(signed.to_content()).hex(),
        "recipient_identity_private": bob.private_bytes().hex(),
        "letter_digest": letter_digest(letter).hex(),
        "acknowledged_at_ms": ack.acknowledgement.at_ms,
        "acknowledgement_canonical": ack.acknowledgement.canonical().hex(),
        "acknowledgement_signature": ack.signature.hex(),
        "acknowledgement_content": ack.to_content().hex(),
    }


def build_receipt() -> Vector:
    rng = RecordingRandom("receipt")
    receipt = Receipt(ReceiptType.READ, 1_793_059_260_000, (rng(16), rng(16)))
    return {
        "description": "A read receipt naming two letters (PROTOCOL.md §7.2)",
        "type": int(receipt.type),
        "at_ms": receipt.at_ms,
        "message_ids": [m.hex() for m in receipt.message_ids],
        "content": receipt.to_content().hex(),
    }


def build_envelope(handshake: Vector) -> Vector:
    rng = RecordingRandom("envelope")
    ciphertext = bytes.fromhex(handshake["first_message"]["session_message"])
    direct = Envelope(BOB, ALICE, rng(16), Route.DIRECT, 1_793_145_600, ciphertext)
    sealed = Envelope(BOB, None, rng(16), Route.SEALED, 1_793_062_800, rng(64) * 5)
    lengths = [0, 1, 100, 255, 256, 257, 1000, 5000, 70_000]
    return {
        "description": "Envelope encoding and Padmé padding (PROTOCOL.md §8, §9)",
        "direct": _describe_envelope(direct),
        "sealed": _describe_envelope(sealed),
        "padded_sizes": {str(n): padding.padded_size(n) for n in lengths},
    }


def _describe_envelope(envelope: Envelope) -> Vector:
    return {
        "recipient": envelope.recipient,
        "sender": envelope.sender,
        "message_id": envelope.message_id.hex(),
        "route": int(envelope.route),
        "expires_at": envelope.expires_at,
        "ciphertext": envelope.ciphertext.hex(),
        "encoded": envelope.to_bytes().hex(),
    }


def build_keystore() -> Vector:
    rng = RecordingRandom("keystore")
    params = keystore.ScryptParams(log2_n=10, r=8, p=1)
    plaintext = _identity("identity-alice")[0].private_bytes()
    sealed = keystore.seal(plaintext, "Thirteen Days", params, rng)
    return {
        "description": "Keystore sealed with scrypt and AES-256-GCM (PROTOCOL.md §11)",
        "passphrase": "Thirteen Days",
        "log2_n": params.log2_n,
        "r": params.r,
        "p": params.p,
        "random": rng.take_new(),
        "plaintext": plaintext.hex(),
        "sealed": sealed.hex(),
    }


def build_relay_auth() -> Vector:
    alice, _ = _identity("identity-alice")
    rng = RecordingRandom("relay-auth")
    relay_id, challenge = rng(16), rng(32)
    invite = rng(16).hex()
    registration = relay_auth.registration_body(relay_id, invite, ALICE)
    login = relay_auth.login_body(relay_id, challenge, ALICE)
    return {
        "description": "Proof of possession at registration and login (PROTOCOL.md §13)",
        "identity_private": alice.private_bytes().hex(),
        "name": ALICE,
        "relay_id": relay_id.hex(),
        "invite": invite,
        "challenge": challenge.hex(),
        "registration_signing_input": labels.signing_input(
            labels.SIG_RELAY_REGISTER, registration
        ).hex(),
        "registration_signature": relay_auth.sign_registration(
            alice, relay_id, invite, ALICE
        ).hex(),
        "login_signing_input": labels.signing_input(labels.SIG_RELAY_LOGIN, login).hex(),
        "login_signature": relay_auth.sign_login(alice, relay_id, challenge, ALICE).hex(),
    }


def _party_json(party: Party) -> dict[str, str]:
    return {"name": party.name, "keys": party.keys.hex()}


def build_proposal() -> Vector:
    """A conditional proposal, its commitment, an acceptance naming its condition, and the
    notary's receipts and log for both (PROTOCOL.md §14)."""
    alice, _ = _identity("identity-alice")
    bob, _ = _identity("identity-bob")
    rng = RecordingRandom("proposal")
    kennedy, khrushchev = Party.of(ALICE, alice.public), Party.of(BOB, bob.public)
    proposal = Proposal(
        proposal_id=rng(16),
        author=khrushchev,
        addressees=(kennedy,),
        title="Missiles out of Cuba",
        terms=(
            "The Soviet missiles in Cuba are removed under United Nations supervision.",
            "The United States pledges not to invade Cuba.",
        ),
        created_at_ms=1_793_059_200_000,
        expires_at_ms=1_793_066_400_000,
        conditions=(rng(32),),
        reveal=Reveal.AT_TIME,
        reveal_at_ms=1_793_062_800_000,
    )
    sealed = seal(bob, proposal, rng(32))
    sealed.verify(bob.public)
    acceptance = sign_statement(
        alice,
        Statement(
            StatementKind.ACCEPTED, sealed.digest, sealed.commitment, kennedy,
            1_793_063_000_000, accepted_with=proposal.conditions,
        ),
    )  # fmt: skip
    notary = SigningKeyPair.from_private_bytes(rng(32))
    relay_id = rng(16)
    first = next_entry(
        None, 1_793_059_200_500, EntryKind.COMMITMENT, sealed.commitment, sealed.terms
    )
    second = next_entry(
        first, 1_793_063_000_400, EntryKind.ACCEPTANCE, sealed.commitment,
        acceptance.statement.digest(),
    )  # fmt: skip
    receipts = [notarise(notary, relay_id, entry) for entry in (first, second)]
    content_key, lock_nonce = rng(32), rng(12)
    locked = lock_proposal(sealed, content_key, lock_nonce)
    timed = ProposalContent(receipts[0], sealed.digest, None, proposal.reveal_at_ms, locked)
    assert timed.unlock(content_key) == sealed
    record = ProposalRecord(sealed, receipts[0], (Notarised(acceptance, receipts[1]),))
    understood = replace(proposal, allow_understood=proposal.conditions)
    jupiters = replace(
        proposal, title="Jupiters out of Turkey", terms=("Within months, never public.",),
        author=kennedy, addressees=(khrushchev,), conditions=(), reveal=Reveal.IMMEDIATE,
        reveal_at_ms=0, expires_at_ms=0,
    )  # fmt: skip
    return {
        "description": "A sealed proposal, its commitment, an acceptance, and notary receipts "
        "for both over a hash-chained log (PROTOCOL.md §14)",
        "author_identity_private": bob.private_bytes().hex(),
        "addressee_identity_private": alice.private_bytes().hex(),
        "proposal": {  # every field of §14.1, to build the canonical bytes from
            "version": 1,
            "proposal_id": proposal.proposal_id.hex(),
            "author": _party_json(proposal.author),
            "addressees": [_party_json(a) for a in proposal.addressees],
            "mediator": None,
            "title": proposal.title,
            "terms": list(proposal.terms),
            "conditions": [c.hex() for c in proposal.conditions],
            "answers": None,
            "created_at_ms": proposal.created_at_ms,
            "expires_at_ms": proposal.expires_at_ms,
            "reveal": int(proposal.reveal),
            "reveal_at_ms": proposal.reveal_at_ms,
        },
        "canonical": proposal.canonical().hex(),
        "digest": sealed.digest.hex(),
        "signing_input": labels.signing_input(labels.SIG_PROPOSAL, proposal.canonical()).hex(),
        "signature": sealed.signature.hex(),
        "nonce": sealed.nonce.hex(),
        "commitment": sealed.commitment.hex(),
        "notary_terms": sealed.terms.hex(),
        "sealed": sealed.to_bytes().hex(),
        "statement": {  # every field of §14.2 but the digest and commitment above
            "version": 1,
            "kind": int(acceptance.statement.kind),
            "author": _party_json(acceptance.statement.author),
            "at_ms": acceptance.statement.at_ms,
            "accepted_with": [d.hex() for d in acceptance.statement.accepted_with],
            "counter": None,
            "reason": acceptance.statement.reason,
        },
        "statement_canonical": acceptance.statement.canonical().hex(),
        "statement_digest": acceptance.statement.digest().hex(),
        "statement_signature": acceptance.signature.hex(),
        "notary_private": notary.private_bytes().hex(),
        "notary_public": notary.public.raw.hex(),
        "relay_id": relay_id.hex(),
        "log": [
            {
                "seq": r.entry.seq,
                "at_ms": r.entry.at_ms,
                "kind": int(r.entry.kind),
                "entry": r.entry.to_bytes().hex(),
                "body_hash": r.entry.body_hash().hex(),
                "link": r.entry.link().to_bytes().hex(),
                "chain_hash": r.entry.chain_hash().hex(),
                "receipt": r.to_bytes().hex(),
            }
            for r in receipts
        ],
        "content_key": content_key.hex(),
        "lock_nonce": lock_nonce.hex(),
        "timed_content": timed.to_content().hex(),
        "open_content": ProposalContent(receipts[0], sealed.digest, sealed).to_content().hex(),
        "statement_content": StatementContent(acceptance, receipts[1]).to_content().hex(),
        "export": Export(notary.public.raw, (record,)).to_json(),
        # §14.1 version 2: the same offer letting an understood clause meet its condition.
        "understood": {
            "allow_understood": [c.hex() for c in proposal.conditions],
            "canonical": understood.canonical().hex(),
            "digest": understood.digest().hex(),
        },
        # §14.7: a clause proposed, accepted and withdrawn inside an off-the-record channel.
        "clause": {
            "proposal_canonical": jupiters.canonical().hex(),
            "propose_plaintext": OffRecordClause(ClauseForm.PROPOSE, jupiters).to_plaintext().hex(),
            "accept_plaintext": OffRecordClause(ClauseForm.ACCEPT, digest=jupiters.digest())
            .to_plaintext()
            .hex(),
            "withdraw_plaintext": OffRecordClause(ClauseForm.WITHDRAW, digest=jupiters.digest())
            .to_plaintext()
            .hex(),
            "digest": jupiters.digest().hex(),
        },
    }


OTR_NOW_MS = 1_793_059_200_000
OTR_EXPIRES_AT_MS = OTR_NOW_MS + 3_600_000


def build_otr() -> Vector:
    """An off-the-record channel: offer, answer, chains, a message each way (the answer revealing
    the first one's MAC key), a forgery of the first that verifies (PROTOCOL.md §15.1-15.2), and
    the first message as it travels to the responder's drop (§15.3)."""
    rng = RecordingRandom("otr")
    sent, ephemeral = otr.offer(OTR_EXPIRES_AT_MS, rng)
    answer, responder = otr.accept(sent, OTR_NOW_MS, rng)
    opener = otr.complete(sent, ephemeral, answer)
    shared = ephemeral.dh(DHPublicKey.from_bytes(answer.public))
    first_text = b"The Jupiter missiles will be gone within four to five months."
    second_text = b"Understood. Not a word in public."
    start_chain, responder_chain = otr.chain_keys(shared, sent, answer.public)
    assert start_chain == opener.send_chain == responder.recv_chain
    opener, first = otr.encrypt(opener, first_text)
    _, first_key = otr.step(start_chain)
    enc_key, mac_key = otr.message_keys(first_key)
    responder, _, _ = otr.decrypt(responder, first)
    responder, second = otr.encrypt(responder, second_text)
    opener, _, revealed = otr.decrypt(opener, second)
    assert revealed == (mac_key,)
    message = otr.DataMessage.from_bytes(first)
    forged_text = b"The Jupiter missiles will stay in Turkey for as long as we see fit."
    difference = bytes(a ^ b for a, b in zip(pad(first_text), pad(forged_text), strict=True))
    unsigned = replace(
        message, ciphertext=bytes(c ^ d for c, d in zip(message.ciphertext, difference,
                                                       strict=True)), tag=b""
    )  # fmt: skip
    forged = replace(unsigned, tag=hmac_sha256(mac_key, unsigned.body())).to_bytes()
    assert otr.tag_verifies(mac_key, forged)
    read_key = drops.new_read_key(rng)
    message_id = rng(16)
    sealed_expires_at = drops.sealed_expiry(OTR_EXPIRES_AT_MS)
    sealed = drops.SealedEnvelope(message_id, sealed_expires_at, first)
    drop_expires_at = drops.drop_expiry(OTR_EXPIRES_AT_MS, OTR_NOW_MS + 1_000, rng)
    return {
        "description": "An off-the-record channel: agreement, a message each way, the MAC key "
        "revealed by the answer, a forgery of the first message that verifies, and the first "
        "message sealed for the responder's drop (§15)",
        "random_draws": rng.take_new(),
        "random_draw_order": "channel id, opener's ephemeral private key, opener's delivery "
        "token, responder's ephemeral private key, responder's delivery token, responder's read "
        "key, sealed envelope's message id, responder's drop expiry (8 bytes, drawn at "
        "drop_opened_ms)",
        "now_ms": OTR_NOW_MS,
        "expires_at_ms": OTR_EXPIRES_AT_MS,
        "offer_content": sent.to_content().hex(),
        "answer_content": answer.to_content().hex(),
        "shared_secret": shared.hex(),
        "opener_chain": start_chain.hex(),
        "responder_chain": responder_chain.hex(),
        "first_text": first_text.decode(),
        "first_message_key": first_key.hex(),
        "first_enc_key": enc_key.hex(),
        "first_mac_key": mac_key.hex(),
        "first_message": first.hex(),
        "second_text": second_text.decode(),
        "second_message": second.hex(),
        "forged_text": forged_text.decode(),
        "forged_message": forged.hex(),
        "responder_drop_address": drops.drop_address(answer.token).hex(),
        "responder_read_hash": drops.read_hash(read_key).hex(),
        "sealed_expires_at": sealed_expires_at,
        "drop_opened_ms": OTR_NOW_MS + 1_000,
        "responder_drop_expires_at": drop_expires_at,
        "sealed_envelope": sealed.to_bytes().hex(),
        "opener_state_after": opener.to_bytes().hex(),
    }


def build_mediation() -> Vector:
    """A mediator's introduction, a letter forwarded verbatim, both sides of a simultaneous
    exchange released, and a signed inject (PROTOCOL.md §16)."""
    alice, _ = _identity("identity-alice")
    bob, _ = _identity("identity-bob")
    thant, _ = _identity("identity-thant")
    rng = RecordingRandom("mediation")
    kennedy, khrushchev = Party.of(ALICE, alice.public), Party.of(BOB, bob.public)
    mediator = Party.of(MEDIATOR, thant.public)
    introduction = sign_introduction(
        thant, Introduction(mediator, kennedy, BOB, bob.public.to_bytes(), 1_793_059_200_000)
    )
    introduction.verify(thant.public, alice.public, ALICE)
    letter = sign_letter(
        bob,
        Letter(rng(16), BOB, bob.public.keys, MEDIATOR, thant.public.keys, 1_793_059_300_000,
               "Tell them we will consider inspection."),
    )  # fmt: skip
    consent = sign_consent(
        bob,
        ForwardConsent(khrushchev, mediator, letter_digest(letter.letter), ALICE,
                       1_793_059_350_000),
    )  # fmt: skip
    consent.verify_as_mediator(bob.public, mediator)
    forwarded = Forwarded(consent, letter=letter)
    forwarded.verify_author()
    forwarded.verify_consent(mediator, ALICE)
    notary = SigningKeyPair.from_private_bytes(rng(32))
    relay_id = rng(16)
    offers, entries = [], []
    previous = None
    for author, identity, to, title in (
        (kennedy, alice, khrushchev, "No invasion of Cuba"),
        (khrushchev, bob, kennedy, "Missiles out of Cuba"),
    ):
        proposal = Proposal(
            rng(16), author, (to,), title, ("As agreed through the Secretary-General.",),
            1_793_059_400_000, mediator=mediator, reveal=Reveal.SIMULTANEOUS,
            exchange_id=rng(16),
        )  # fmt: skip
        sealed = seal(identity, proposal, rng(32))
        at = 1_793_059_400_500 + len(entries)
        subject = sealed.commitment
        previous = next_entry(previous, at, EntryKind.COMMITMENT, subject, sealed.terms)
        entries.append(previous)
        offers.append((sealed, notarise(notary, relay_id, previous)))
    (kennedy_offer, kennedy_receipt), (khrushchev_offer, khrushchev_receipt) = offers
    exchange_id = kennedy_offer.proposal.exchange_id
    assert exchange_id is not None
    release = sign_release(
        thant,
        ReleasedOffer(exchange_id, mediator, khrushchev_offer, khrushchev_receipt,
                      kennedy_receipt, 1_793_059_500_000),
    )  # fmt: skip
    release.verify(thant.public, notary.public)
    control = SigningKeyPair.from_private_bytes(rng(32))
    inject = Inject(1, -227_304_000_000, ("all",), "The quarantine",
                    "The President has announced a quarantine of Cuba.")  # fmt: skip
    communique = Communique("cuba-1962", BOB, -226_929_600_000,
                            "The missiles will be crated and returned.")  # fmt: skip
    return {
        "description": "A mediator's introduction (kind 6), the author's consent to forwarding "
        "(kind 10), the letter forwarded verbatim (kind 8), a simultaneous exchange's release "
        "to Kennedy (kind 9), an inject signed by the control key, and a communiqué signed by "
        "its author's identity key (PROTOCOL.md §16)",
        "random_draws": rng.take_new(),
        "mediator": MEDIATOR,
        "mediator_identity_private": thant.private_bytes().hex(),
        "introduction_canonical": introduction.introduction.canonical().hex(),
        "introduction_signature": introduction.signature.hex(),
        "introduction_content": introduction.to_content().hex(),
        "introduced_at_ms": introduction.introduction.at_ms,
        "consent_at_ms": consent.consent.at_ms,
        "consent_canonical": consent.consent.canonical().hex(),
        "consent_signature": consent.signature.hex(),
        "consent_content": consent.to_content().hex(),
        "forwarded_content": forwarded.to_content().hex(),
        "notary_private": notary.private_bytes().hex(),
        "relay_id": relay_id.hex(),
        "kennedy_offer_sealed": kennedy_offer.to_bytes().hex(),
        "khrushchev_offer_sealed": khrushchev_offer.to_bytes().hex(),
        "release_body": release.body().hex(),
        "release_signature": release.signature.hex(),
        "release_content": release.to_content().hex(),
        "control_private": control.private_bytes().hex(),
        "inject_exercise": "cuba-1962",
        "inject_body": inject_body("cuba-1962", inject).hex(),
        "inject_signature": sign_inject(control, "cuba-1962", inject).hex(),
        "communique_body": communique.body().hex(),
        "communique_signature": sign_communique(bob.signing, communique).hex(),
    }


def build_control_copy(kem_ciphertext: bytes | None) -> Vector:
    """The control encryption key published under the control signing key, and a letter's
    control copy sealed to it (PROTOCOL.md §16.11)."""
    alice, _ = _identity("identity-alice")
    bob, _ = _identity("identity-bob")
    rng = RecordingRandom("control-copy")
    signer = SigningKeyPair.from_private_bytes(rng(32))
    secret = rng(32) + rng(64)
    control = ControlKeyPair.from_secret(secret)

    def encapsulate(public: KEMPublicKey) -> tuple[bytes, bytes]:
        if kem_ciphertext is None:  # first generation: a real, randomised encapsulation
            return public.key.encapsulate()
        return control.kem.decapsulate(kem_ciphertext), kem_ciphertext

    letter = sign_letter(
        alice,
        Letter(rng(16), ALICE, alice.public.keys, BOB, bob.public.keys, 1_793_059_600_000,
               "On the Jupiters: privately, in four to five months."),
    )  # fmt: skip
    content = letter.to_content()
    message_id = letter.letter.message_id
    copy = seal_copy(control.public, message_id, content, rng, encapsulate)
    assert open_letter(control, message_id, copy, alice.public).text == letter.letter.text
    return {
        "description": "The control encryption key (X25519 ‖ ML-KEM-768 seed) and its "
        "publication signed by the control signing key; a letter's content sealed to it as a "
        "control copy: ephemeral X25519 ‖ ML-KEM-768 ciphertext ‖ AES-256-GCM, HKDF-SHA256 over "
        "both secrets, the message id in the associated data (PROTOCOL.md §16.11)",
        "random_draws": rng.take_new(),
        "control_signing_private": signer.private_bytes().hex(),
        "control_key_secret": secret.hex(),
        "exercise": "cuba-1962",
        "control_key_body": control.public.body("cuba-1962").hex(),
        "control_key_signature": control.public.sign(signer, "cuba-1962").hex(),
        "message_id": message_id.hex(),
        "letter_content": content.hex(),
        "kem_ciphertext": copy[32 : 32 + 1088].hex(),
        "control_copy": copy.hex(),
    }


def build_all(kem_ciphertext: bytes | None, copy_kem: bytes | None = None) -> dict[str, Vector]:
    handshake = build_handshake(kem_ciphertext)
    return {
        "control_copy": build_control_copy(copy_kem),
        "identity": build_identity(),
        "handshake": handshake,
        "ratchet": build_ratchet(handshake),
        "letter": build_letter(),
        "envelope": build_envelope(handshake),
        "keystore": build_keystore(),
        "relay_auth": build_relay_auth(),
        "receipt": build_receipt(),
        "proposal": build_proposal(),
        "otr": build_otr(),
        "mediation": build_mediation(),
    }


def load(name: str) -> Vector:
    loaded: Vector = json.loads((HERE / f"{name}.json").read_text())
    return loaded


def recorded_kem_ciphertext() -> bytes | None:
    path = HERE / "handshake.json"
    return bytes.fromhex(load("handshake")["kem_ciphertext"]) if path.exists() else None


def recorded_copy_kem_ciphertext() -> bytes | None:
    path = HERE / "control_copy.json"
    return bytes.fromhex(load("control_copy")["kem_ciphertext"]) if path.exists() else None


def main() -> None:
    built = build_all(recorded_kem_ciphertext(), recorded_copy_kem_ciphertext())
    for name, vector in built.items():
        (HERE / f"{name}.json").write_text(json.dumps(vector, indent=2) + "\n")
        print(f"wrote tests/vectors/{name}.json")


if __name__ == "__main__":
    main()
