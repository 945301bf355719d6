"""Re-derive published vectors from PROTOCOL.md alone, as another implementer would.

Nothing from `backchannel` is imported here: only the standard library and pyca/cryptography's
primitives, and the byte layouts as PROTOCOL.md writes them. If the text and the code ever part
ways, these tests fail where the vector-regeneration tests (tests/test_vectors.py) cannot.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VECTORS = Path(__file__).parent / "vectors"
PREFIX = b"Backchannel v1 "  # §1, note the trailing space


def vector(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text())
    return loaded


def h(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def labelled_hash(label: bytes, body: bytes) -> bytes:
    """§1: SHA-256(PREFIX ‖ label ‖ 0x00 ‖ body)."""
    return sha256(PREFIX + label + b"\x00" + body)


def signing_input(label: bytes, body: bytes) -> bytes:
    return PREFIX + label + b"\x00" + body


def hkdf(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    return HKDF(hashes.SHA256(), length, salt if salt is not None else bytes(32), info).derive(ikm)


def verify(public: bytes, signature: bytes, message: bytes) -> None:
    Ed25519PublicKey.from_public_bytes(public).verify(signature, message)  # raises if bad


def ed25519_public(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


class Cursor:
    """Reads the §1 encoding: big-endian integers, fixed and length-prefixed fields."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, size: int) -> bytes:
        chunk = self.data[self.at : self.at + size]
        assert len(chunk) == size, "truncated"
        self.at += size
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def var(self, size: int) -> bytes:
        return self.take(self.uint(size))

    def done(self) -> None:
        assert self.at == len(self.data), "trailing bytes"


def test_fingerprints_and_the_safety_number() -> None:
    """§2.1 to 2.2: Fingerprint = SHA256(FINGERPRINT ‖ 0x00 ‖ IdentityKeys); libsignal's numeric
    fingerprint over IdentityKeys and the name, 5,200 iterations, smaller half first."""
    v = vector("identity")
    halves = []
    for side in (v["alice"], v["bob"]):
        keys = h(side["signing_public"]) + h(side["dh_public"])
        assert labelled_hash(b"fingerprint", keys).hex() == side["fingerprint"]
        digest = hashlib.sha512(struct.pack(">H", 0) + keys + side["name"].encode() + keys).digest()
        for _ in range(5199):
            digest = hashlib.sha512(digest + keys).digest()
        halves.append(
            "".join(
                f"{int.from_bytes(digest[i * 5 : i * 5 + 5], 'big') % 100000:05d}" for i in range(6)
            )
        )
    assert "".join(sorted(halves)) == v["safety_number"]


def test_a_letter_its_signature_digest_and_formal_acknowledgement() -> None:
    """§7.1 and §7.4."""
    v = vector("letter")
    canonical = h(v["canonical"])
    sender = ed25519_public(h(v["sender_identity_private"])[:32])
    recipient = ed25519_public(h(v["recipient_identity_private"])[:32])
    assert signing_input(b"letter", canonical).hex() == v["signing_input"]
    verify(sender, h(v["signature"]), signing_input(b"letter", canonical))
    assert h(v["content"]) == b"\x01" + canonical + h(v["signature"])
    assert labelled_hash(b"letter digest", canonical).hex() == v["letter_digest"]
    ack = h(v["acknowledgement_canonical"])
    cursor = Cursor(ack)
    assert cursor.uint(1) == 1
    assert cursor.take(16) == canonical[1:17]  # the letter's message id
    assert cursor.take(32).hex() == v["letter_digest"]
    verify(
        recipient, h(v["acknowledgement_signature"]), signing_input(b"letter acknowledgement", ack)
    )
    assert h(v["acknowledgement_content"]) == b"\x03\x02" + ack + h(v["acknowledgement_signature"])


def test_a_proposal_its_commitment_statement_and_notary_log() -> None:
    """§14.1 to 14.3."""
    v = vector("proposal")
    canonical = h(v["canonical"])
    author = ed25519_public(h(v["author_identity_private"])[:32])
    addressee = ed25519_public(h(v["addressee_identity_private"])[:32])
    digest = labelled_hash(b"proposal digest", canonical)
    assert digest.hex() == v["digest"]
    verify(author, h(v["signature"]), signing_input(b"proposal", canonical))
    commitment = labelled_hash(b"proposal commitment", h(v["nonce"]) + digest)
    assert commitment.hex() == v["commitment"]
    assert h(v["sealed"]) == canonical + h(v["signature"]) + h(v["nonce"])

    statement = h(v["statement_canonical"])
    assert statement[2:34] == digest and statement[34:66] == commitment
    assert labelled_hash(b"statement digest", statement).hex() == v["statement_digest"]
    verify(addressee, h(v["statement_signature"]), signing_input(b"proposal statement", statement))

    previous = bytes(32)
    for seq, item in enumerate(v["log"], 1):
        receipt = Cursor(h(item["receipt"]))
        relay_id, entry, signature = receipt.take(16), receipt.take(113), receipt.take(64)
        receipt.done()
        assert relay_id.hex() == v["relay_id"] and entry.hex() == item["entry"]
        fields = Cursor(entry)
        assert fields.uint(8) == seq
        fields.uint(8)
        kind, subject, value, chained = (
            fields.uint(1),
            fields.take(32),
            fields.take(32),
            fields.take(32),
        )
        assert subject == commitment and chained == previous
        assert value == (commitment if kind == 1 else h(v["statement_digest"]))
        verify(h(v["notary_public"]), signature, signing_input(b"notary receipt", relay_id + entry))
        previous = labelled_hash(b"notary chain", entry)
        assert previous.hex() == item["chain_hash"]


def test_a_timed_proposal_opens_with_its_content_key() -> None:
    """§7.3: u8 2 ‖ u8 1 ‖ var16 Receipt ‖ fixed[32] digest ‖ u8 1 ‖ u64 reveal_at ‖
    var32 (nonce ‖ AES-256-GCM(key, nonce, Sealed, PREFIX ‖ "timed proposal" ‖ commitment))."""
    v = vector("proposal")
    content = Cursor(h(v["timed_content"]))
    assert (content.uint(1), content.uint(1)) == (2, 1)
    assert content.var(2).hex() == v["log"][0]["receipt"]
    assert content.take(32).hex() == v["digest"]
    assert content.uint(1) == 1
    content.uint(8)
    locked = content.var(4)
    content.done()
    assert locked[:12].hex() == v["lock_nonce"]
    ad = PREFIX + b"timed proposal" + h(v["commitment"])
    assert AESGCM(h(v["content_key"])).decrypt(locked[:12], locked[12:], ad) == h(v["sealed"])


def test_an_off_the_record_channel_and_its_forgeable_transcript() -> None:
    """§15: chains from the X25519 secret, message keys, the tag, AES-256-CTR and Padmé (§9)."""
    v = vector("otr")
    offer, answer = Cursor(h(v["offer_content"])), Cursor(h(v["answer_content"]))
    assert (offer.uint(1), offer.uint(1), answer.uint(1), answer.uint(1)) == (5, 1, 5, 2)
    channel_id, opener_key = offer.take(16), offer.take(32)
    assert answer.take(16) == channel_id
    responder_key = answer.take(32)
    info = PREFIX + b"otr root" + opener_key + responder_key
    okm = hkdf(h(v["shared_secret"]), channel_id, info, 64)
    assert (okm[:32].hex(), okm[32:].hex()) == (v["opener_chain"], v["responder_chain"])

    message_key = hmac.new(okm[:32], b"\x01", hashlib.sha256).digest()
    assert message_key.hex() == v["first_message_key"]
    keys = hkdf(message_key, None, PREFIX + b"otr message keys", 64)
    assert (keys[:32].hex(), keys[32:].hex()) == (v["first_enc_key"], v["first_mac_key"])

    for name, text in (("first_message", v["first_text"]), ("forged_message", v["forged_text"])):
        wire = h(v[name])
        body, tag = wire[:-32], wire[-32:]
        assert hmac.new(keys[32:], body, hashlib.sha256).digest() == tag  # both verify
        message = Cursor(body)
        assert message.uint(1) == 1 and message.take(16) == channel_id
        assert (message.uint(1), message.uint(4), message.uint(1)) == (0, 0, 0)
        ciphertext = message.var(4)
        message.done()
        decryptor = Cipher(algorithms.AES(keys[:32]), modes.CTR(bytes(16))).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        assert padded.rstrip(b"\x00")[:-1] == text.encode()  # Pad(m) = m ‖ 0x80 ‖ zeros
    second = Cursor(h(v["second_message"])[:-32])
    second.take(1 + 16)
    assert (second.uint(1), second.uint(4), second.uint(1)) == (1, 0, 1)
    assert second.take(32).hex() == v["first_mac_key"]  # the answer reveals it


def test_the_pqxdh_handshake_secrets() -> None:
    """§3 and §4.1 to 4.3: prekey signatures, DH1 to DH4, ML-KEM-768 decapsulation with the KEM
    prekey's seed, the HKDF input with Signal's 0xFF prefix, SK, HKA, NHKB, and AD."""
    from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    v = vector("handshake")
    bob = v["bob"]
    alice_private, bob_private = h(v["alice_identity_private"]), h(v["bob_identity_private"])

    def x25519(private: bytes, public: bytes) -> bytes:
        key = X25519PrivateKey.from_private_bytes(private)
        return key.exchange(X25519PublicKey.from_public_bytes(public))

    def x25519_public(private: bytes) -> bytes:
        return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()

    bob_signing = ed25519_public(bob_private[:32])
    signed, one_time, kem = bob["signed_prekey"], bob["one_time_prekey"], bob["kem_prekey"]
    body = struct.pack(">I", signed["id"]) + h(signed["public"])
    assert signing_input(b"signed prekey", body).hex() == signed["signing_input"]
    verify(bob_signing, h(signed["signature"]), signing_input(b"signed prekey", body))
    body = struct.pack(">IB", kem["id"], int(kem["last_resort"])) + h(kem["public"])
    verify(bob_signing, h(kem["signature"]), signing_input(b"kem prekey", body))

    ephemeral = h(v["alice_ephemeral_private"])
    assert x25519_public(ephemeral).hex() == v["alice_ephemeral_public"]
    dh = [
        x25519(alice_private[32:], h(signed["public"])),
        x25519(ephemeral, x25519_public(bob_private[32:])),
        x25519(ephemeral, h(signed["public"])),
        x25519(ephemeral, h(one_time["public"])),
    ]
    assert [d.hex() for d in dh] == [v["dh1"], v["dh2"], v["dh3"], v["dh4"]]
    # The responder's side agrees: Bob computes the same values from his private keys.
    assert x25519(h(signed["private"]), x25519_public(alice_private[32:])) == dh[0]
    assert x25519(h(one_time["private"]), x25519_public(ephemeral)) == dh[3]

    kem_key = MLKEM768PrivateKey.from_seed_bytes(h(kem["seed"]))
    assert kem_key.public_key().public_bytes_raw().hex() == kem["public"]
    secret = kem_key.decapsulate(h(v["kem_ciphertext"]))
    assert secret.hex() == v["kem_shared_secret"]

    ikm = b"\xff" * 32 + b"".join(dh) + secret
    assert ikm.hex() == v["kdf_input"]
    okm = hkdf(ikm, None, PREFIX + b"PQXDH X25519 SHA-256 ML-KEM-768", 96)
    assert [okm[:32].hex(), okm[32:64].hex(), okm[64:].hex()] == [v["sk"], v["hka"], v["nhkb"]]

    keys_a = ed25519_public(alice_private[:32]) + x25519_public(alice_private[32:])
    keys_b = bob_signing + x25519_public(bob_private[32:])
    names = [name.encode() for name in (v["alice_name"], v["bob_name"])]
    ad = keys_a + keys_b + b"".join(bytes([len(n)]) + n for n in names)
    assert ad.hex() == v["associated_data"]


def test_the_first_ratchet_messages() -> None:
    """§5.1 to 5.3: Alice's initialisation, KDF_RK_HE, KDF_CK, MessageKeys, HENCRYPT and ENCRYPT
    reproduce her first two messages byte for byte."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    v = vector("ratchet")
    bob_public = X25519PrivateKey.from_private_bytes(h(v["bob_ratchet_private"])).public_key()
    dhs = X25519PrivateKey.from_private_bytes(h(v["alice_initial_random"][0]))
    dh_out = dhs.exchange(X25519PublicKey.from_public_bytes(bob_public.public_bytes_raw()))
    okm = hkdf(dh_out, h(v["sk"]), PREFIX + b"ratchet root", 96)
    chain = okm[32:64]
    header_key = h(v["hka"])
    ad = h(v["associated_data"])
    sends = [e for e in v["events"] if e["action"] == "send" and e["party"] == "alice"][:2]
    for n, event in enumerate(sends):
        assert chain.hex() == event["chain_key"]  # the CKs the message key comes from
        message_key = hmac.new(chain, b"\x01", hashlib.sha256).digest()
        chain = hmac.new(chain, b"\x02", hashlib.sha256).digest()
        assert message_key.hex() == event["message_key"]
        assert header_key.hex() == event["header_key"]
        header = dhs.public_key().public_bytes_raw() + struct.pack(">II", 0, n)
        assert header.hex() == event["header"]["dh"] + f"{0:08x}{n:08x}"
        (nonce_hex,) = event["random"]
        nonce = h(nonce_hex)
        enc_header = nonce + AESGCM(header_key).encrypt(nonce, header, ad)
        keys = hkdf(message_key, None, PREFIX + b"message keys", 44)
        body = AESGCM(keys[:32]).encrypt(keys[32:], h(event["plaintext"]), ad + enc_header)
        assert (enc_header + body).hex() == event["ciphertext"]
