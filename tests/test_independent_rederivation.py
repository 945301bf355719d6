"""Re-derive the published test vectors from PROTOCOL.md alone.

This file is a second, independent implementation of the protocol's constructions, written from the
text of PROTOCOL.md and the JSON vector files only. It deliberately imports nothing from
`backchannel`, `backchannel_relay`, `backchannel_cli` or `tests.vectors.generate`: only the standard
library and pyca/cryptography primitives. Every check compares recomputed bytes with the vector's
bytes, so a passing run shows the specification is precise enough to interoperate.

Ed25519 is deterministic (RFC 8032), so each signature is both re-made from the private seed and
compared byte for byte, and verified with the public key the spec says to use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

VECTORS = Path(__file__).parent / "vectors"

# --- §1 Conventions: encodings ------------------------------------------------------------------

PREFIX = b"Backchannel v1 "


def u8(n: int) -> bytes:
    return struct.pack(">B", n)


def u16(n: int) -> bytes:
    return struct.pack(">H", n)


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def var8(b: bytes) -> bytes:
    return u8(len(b)) + b


def var16(b: bytes) -> bytes:
    return u16(len(b)) + b


def var32(b: bytes) -> bytes:
    return u32(len(b)) + b


def opt(b: bytes | None) -> bytes:
    return b"\x00" if b is None else b"\x01" + b


def name(s: str) -> bytes:
    raw = s.encode("utf-8")
    assert 1 <= len(raw) <= 64
    return var8(raw)


class Reader:
    """A strict decoder for the §1 encoding (used where a vector gives only the encoded bytes)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fixed(self, n: int) -> bytes:
        assert self.pos + n <= len(self.data), "truncated"
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.fixed(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.fixed(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.fixed(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.fixed(8), "big")

    def var8(self) -> bytes:
        return self.fixed(self.u8())

    def var16(self) -> bytes:
        return self.fixed(self.u16())

    def opt(self, n: int) -> bytes | None:
        presence = self.u8()
        assert presence in (0, 1), "invalid_field"
        return self.fixed(n) if presence else None

    def name(self) -> str:
        raw = self.var8()
        assert 1 <= len(raw) <= 64
        return raw.decode("utf-8")

    def done(self) -> None:
        assert self.pos == len(self.data), "trailing_bytes"


def signing_input(label: str, body: bytes) -> bytes:
    """§1: SigningInput(label, body) = PREFIX ‖ label ‖ 0x00 ‖ body."""
    return PREFIX + label.encode("ascii") + b"\x00" + body


def labelled_hash(label: str, data: bytes) -> bytes:
    """§1: hashes over a label put 0x00 between the label and what follows."""
    return hashlib.sha256(PREFIX + label.encode("ascii") + b"\x00" + data).digest()


# --- §1 Conventions: primitives -----------------------------------------------------------------


def hkdf(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    """HKDF-SHA-256; `salt = none` means 32 zero bytes."""
    salt = bytes(32) if salt is None else salt
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def x25519(private: bytes, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(public)
    )


def x25519_public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def ed25519_public(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def check_signature(seed: bytes, public: bytes, message: bytes, expected: bytes) -> None:
    """Re-sign (Ed25519 is deterministic), compare bytes, then verify with `public`."""
    assert Ed25519PrivateKey.from_private_bytes(seed).sign(message) == expected
    Ed25519PublicKey.from_public_bytes(public).verify(expected, message)


def load(name_: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"{name_}.json").read_text())


def h(hex_string: str) -> bytes:
    return bytes.fromhex(hex_string)


# --- §2 Identities ------------------------------------------------------------------------------


class Identity:
    """IdentityPrivate = fixed[32] Ed25519 seed ‖ fixed[32] X25519 private key (§2.1)."""

    def __init__(self, private: bytes) -> None:
        assert len(private) == 64
        self.seed, self.dh_private = private[:32], private[32:]
        self.sig_public = ed25519_public(self.seed)
        self.dh_public = x25519_public(self.dh_private)
        self.binding_input = signing_input("identity", self.dh_public)
        self.binding = Ed25519PrivateKey.from_private_bytes(self.seed).sign(self.binding_input)

    @property
    def keys(self) -> bytes:
        """IdentityKeys = IK_sig.public ‖ IK_dh.public (64 bytes)."""
        return self.sig_public + self.dh_public

    @property
    def public(self) -> bytes:
        """IdentityPublic = IK_sig.public ‖ IK_dh.public ‖ binding (128 bytes)."""
        return self.sig_public + self.dh_public + self.binding


def fingerprint(keys: bytes) -> bytes:
    return labelled_hash("fingerprint", keys)


def safety_half(key: bytes, ident: bytes) -> str:
    digest = hashlib.sha512(u16(0) + key + ident + key).digest()
    for _ in range(5199):
        digest = hashlib.sha512(digest + key).digest()
    return "".join(
        f"{int.from_bytes(digest[5 * i : 5 * i + 5], 'big') % 100000:05d}" for i in range(6)
    )


def safety_number(key_a: bytes, id_a: bytes, key_b: bytes, id_b: bytes) -> str:
    return "".join(sorted([safety_half(key_a, id_a), safety_half(key_b, id_b)]))


# --- §5 Double Ratchet with header encryption ---------------------------------------------------

RATCHET_ROOT_INFO = PREFIX + b"ratchet root"
MESSAGE_KEYS_INFO = PREFIX + b"message keys"
ENC_HEADER_LEN = 12 + 40 + 16


def kdf_rk_he(rk: bytes, dh_out: bytes) -> tuple[bytes, bytes, bytes]:
    okm = hkdf(dh_out, rk, RATCHET_ROOT_INFO, 96)
    return okm[:32], okm[32:64], okm[64:]


def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
    return hmac_sha256(ck, b"\x02"), hmac_sha256(ck, b"\x01")


def message_keys(mk: bytes) -> tuple[bytes, bytes]:
    okm = hkdf(mk, None, MESSAGE_KEYS_INFO, 44)
    return okm[:32], okm[32:]


def encrypt(mk: bytes, plaintext: bytes, ad: bytes) -> bytes:
    key, nonce = message_keys(mk)
    return AESGCM(key).encrypt(nonce, plaintext, ad)


def decrypt(mk: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    key, nonce = message_keys(mk)
    return AESGCM(key).decrypt(nonce, ciphertext, ad)


def hencrypt(hk: bytes, nonce: bytes, header: bytes, ad: bytes) -> bytes:
    return nonce + AESGCM(hk).encrypt(nonce, header, ad)


def hdecrypt(hk: bytes | None, enc_header: bytes, ad: bytes) -> bytes | None:
    if hk is None:
        return None
    try:
        return AESGCM(hk).decrypt(enc_header[:12], enc_header[12:], ad)
    except Exception:
        return None


def ratchet_header(dh: bytes, pn: int, n: int) -> bytes:
    return dh + u32(pn) + u32(n)


class Ratchet:
    """The §5 state machine; random draws are supplied by the caller, as the vectors record them."""

    def __init__(self, ad: bytes) -> None:
        self.ad = ad
        self.dhs = b""
        self.dhr: bytes | None = None
        self.rk = b""
        self.cks: bytes | None = None
        self.ckr: bytes | None = None
        self.ns = self.nr = self.pn = 0
        self.hks: bytes | None = None
        self.hkr: bytes | None = None
        self.nhks = b""
        self.nhkr = b""
        self.earlier_hkr: list[bytes] = []
        self.skipped: dict[tuple[bytes, int], bytes] = {}

    @classmethod
    def alice(cls, sk: bytes, hka: bytes, nhkb: bytes, spk_b: bytes, dhs: bytes, ad: bytes):
        """§5.2 RatchetInitAliceHE."""
        st = cls(ad)
        st.dhs, st.dhr = dhs, spk_b
        st.rk, st.cks, st.nhks = kdf_rk_he(sk, x25519(dhs, spk_b))
        st.hks, st.nhkr = hka, nhkb
        return st

    @classmethod
    def bob(cls, sk: bytes, hka: bytes, nhkb: bytes, spk_private: bytes, ad: bytes):
        """§5.2 RatchetInitBobHE."""
        st = cls(ad)
        st.dhs, st.rk = spk_private, sk
        st.nhks, st.nhkr = nhkb, hka
        return st

    def encrypt(self, plaintext: bytes, header_nonce: bytes) -> dict[str, Any]:
        """§5.3 RatchetEncrypt; returns the intermediate values the vector records."""
        assert self.cks is not None and self.hks is not None
        chain_key = self.cks
        self.cks, mk = kdf_ck(self.cks)
        header = ratchet_header(x25519_public(self.dhs), self.pn, self.ns)
        enc_header = hencrypt(self.hks, header_nonce, header, self.ad)
        self.ns += 1
        return {
            "header": header,
            "header_key": self.hks,
            "chain_key": chain_key,
            "message_key": mk,
            "message": enc_header + encrypt(mk, plaintext, self.ad + enc_header),
        }

    def _skip(self, until: int) -> None:
        if self.ckr is None:
            return
        assert self.hkr is not None
        while self.nr < until:
            self.ckr, mk = kdf_ck(self.ckr)
            self.skipped[(self.hkr, self.nr)] = mk
            self.nr += 1

    def _receive_in_chain(self, n: int, enc_header: bytes, body: bytes) -> bytes:
        assert self.ckr is not None
        self._skip(n)
        self.ckr, mk = kdf_ck(self.ckr)
        self.nr = n + 1
        return decrypt(mk, body, self.ad + enc_header)

    def decrypt(self, message: bytes, draws: Iterator[bytes]) -> bytes:
        """§5.4 RatchetDecrypt: trials HKr, then NHKr, then the remembered earlier HKr."""
        enc_header, body = message[:ENC_HEADER_LEN], message[ENC_HEADER_LEN:]
        header = hdecrypt(self.hkr, enc_header, self.ad)
        if header is not None:
            n = int.from_bytes(header[36:40], "big")
            if n < self.nr:
                assert self.hkr is not None
                return decrypt(self.skipped.pop((self.hkr, n)), body, self.ad + enc_header)
            return self._receive_in_chain(n, enc_header, body)
        header = hdecrypt(self.nhkr, enc_header, self.ad)
        if header is not None:
            dh = header[:32]
            pn = int.from_bytes(header[32:36], "big")
            n = int.from_bytes(header[36:40], "big")
            self._skip(pn)
            # DHRatchetHE
            if self.hkr is not None:
                self.earlier_hkr.insert(0, self.hkr)
                del self.earlier_hkr[5:]
            self.pn, self.ns, self.nr = self.ns, 0, 0
            self.hks, self.hkr, self.dhr = self.nhks, self.nhkr, dh
            self.rk, self.ckr, self.nhkr = kdf_rk_he(self.rk, x25519(self.dhs, dh))
            self.dhs = next(draws)
            self.rk, self.cks, self.nhks = kdf_rk_he(self.rk, x25519(self.dhs, dh))
            return self._receive_in_chain(n, enc_header, body)
        for hk in self.earlier_hkr:
            header = hdecrypt(hk, enc_header, self.ad)
            if header is not None:
                n = int.from_bytes(header[36:40], "big")
                return decrypt(self.skipped.pop((hk, n)), body, self.ad + enc_header)
        raise AssertionError("decryption_failed")


# --- §9 Padding ---------------------------------------------------------------------------------


def padme(length: int) -> int:
    if length < 2:
        return length
    e = length.bit_length() - 1  # floor(log2 L)
    s = e.bit_length()  # floor(log2 E) + 1
    mask = (1 << (e - s)) - 1
    return (length + mask) & ~mask


def padded_size(n: int) -> int:
    return padme(max(n + 1, 256))


def pad(m: bytes) -> bytes:
    return m + b"\x80" + bytes(padded_size(len(m)) - len(m) - 1)


# --- §14 Proposals ------------------------------------------------------------------------------


def party(name_: str, keys: bytes) -> bytes:
    assert len(keys) == 64
    return name(name_) + keys


def read_party(r: Reader) -> tuple[str, bytes]:
    return r.name(), r.fixed(64)


def listed_party(listed: dict[str, str]) -> tuple[str, bytes]:
    """A vector's `{"name", "keys"}` as the (name, keys) pair the decoders return."""
    return listed["name"], h(listed["keys"])


def decode_proposal(data: bytes) -> dict[str, Any]:
    """§14.1 Proposal, decoded field by field (the vector gives only the canonical bytes)."""
    r = Reader(data)
    p: dict[str, Any] = {"version": r.u8(), "id": r.fixed(16), "author": read_party(r)}
    p["addressees"] = [read_party(r) for _ in range(r.u8())]
    p["mediator"] = read_party(r) if r.u8() == 1 else None
    p["title"] = r.var16().decode("utf-8")
    p["terms"] = [r.var16().decode("utf-8") for _ in range(r.u8())]
    p["conditions"] = [r.fixed(32) for _ in range(r.u8())]
    p["answers"] = r.opt(32)
    p["created_at"], p["expires_at"] = r.u64(), r.u64()
    p["reveal"] = r.u8()
    p["reveal_arg"] = {0: None, 1: r.u64, 2: lambda: r.fixed(16)}[p["reveal"]]
    if p["reveal_arg"] is not None:
        p["reveal_arg"] = p["reveal_arg"]()
    if p["version"] == 2:  # a u16 mask: the conditions an understood clause may meet
        p["understood_mask"] = r.u16()
    r.done()
    return p


def encode_proposal(p: dict[str, Any]) -> bytes:
    assert 1 <= len(p["addressees"]) <= 16 and 1 <= len(p["terms"]) <= 64
    out = u8(p["version"]) + p["id"] + party(*p["author"])
    out += u8(len(p["addressees"])) + b"".join(party(*a) for a in p["addressees"])
    out += b"\x00" if p["mediator"] is None else b"\x01" + party(*p["mediator"])
    out += var16(p["title"].encode("utf-8"))
    out += u8(len(p["terms"])) + b"".join(var16(t.encode("utf-8")) for t in p["terms"])
    out += u8(len(p["conditions"])) + b"".join(p["conditions"])
    out += opt(p["answers"]) + u64(p["created_at"]) + u64(p["expires_at"]) + u8(p["reveal"])
    if p["reveal"] == 1:
        out += u64(p["reveal_arg"])
    elif p["reveal"] == 2:
        out += p["reveal_arg"]
    if p["version"] == 2:
        out += u16(p["understood_mask"])
    return out


def decode_statement(data: bytes) -> dict[str, Any]:
    """§14.2 Statement."""
    r = Reader(data)
    s: dict[str, Any] = {"version": r.u8(), "kind": r.u8(), "digest": r.fixed(32)}
    s["commitment"] = r.fixed(32)
    s["author"] = read_party(r)
    s["at"] = r.u64()
    s["accepted_with"] = [r.fixed(32) for _ in range(r.u8())]
    s["counter"] = r.opt(32)
    s["reason"] = r.var16().decode("utf-8")
    r.done()
    return s


def encode_statement(s: dict[str, Any]) -> bytes:
    return (
        u8(s["version"])
        + u8(s["kind"])
        + s["digest"]
        + s["commitment"]
        + party(*s["author"])
        + u64(s["at"])
        + u8(len(s["accepted_with"]))
        + b"".join(s["accepted_with"])
        + opt(s["counter"])
        + var16(s["reason"].encode("utf-8"))
    )


def unpad(padded: bytes) -> bytes:
    """§9: strip trailing zeros, require 0x80, require the total to be PaddedSize of the rest."""
    stripped = padded.rstrip(b"\x00")
    assert stripped.endswith(b"\x80")
    m = stripped[:-1]
    assert len(padded) == padded_size(len(m))
    return m


def notary_entry(seq: int, at: int, kind: int, subject: bytes, value: bytes, prev: bytes) -> bytes:
    """§14.3 Entry."""
    return u64(seq) + u64(at) + u8(kind) + subject + value + prev


def notary_link(seq: int, at: int, kind: int, subject: bytes, value: bytes, prev: bytes) -> bytes:
    """§14.3 Link: seq, BodyHash, previous."""
    body_hash = labelled_hash("notary entry", u64(at) + u8(kind) + subject + value)
    return u64(seq) + body_hash + prev


def notary_terms(
    commitment: bytes, author: tuple[str, bytes], addressees: list[tuple[str, bytes]],
    expires_at: int, mediator: tuple[str, bytes] | None,
) -> bytes:  # fmt: skip
    """§14.3 Terms, the value of a commitment entry."""
    terms = commitment + party(*author) + u64(expires_at) + u8(len(addressees))
    terms += b"".join(party(*a) for a in addressees)
    terms += u8(0) if mediator is None else u8(1) + party(*mediator)
    return labelled_hash("notary terms", terms)


# --- §15 Off-the-record channels ----------------------------------------------------------------


def aes_ctr(key: bytes, data: bytes) -> bytes:
    """AES-256-CTR with the initial counter block 16 zero bytes (§15.2); its own inverse."""
    cipher = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    return cipher.update(data) + cipher.finalize()


def otr_message_keys(ck: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """§15.2: returns (CK_next, MK, EK, MACK)."""
    mk = hmac_sha256(ck, b"\x01")
    okm = hkdf(mk, None, PREFIX + b"otr message keys", 64)
    return hmac_sha256(ck, b"\x02"), mk, okm[:32], okm[32:]


def otr_body(channel_id: bytes, sender: int, n: int, revealed: list[bytes], ct: bytes) -> bytes:
    """§15.2 Body = u8 1 ‖ channel id ‖ u8 sender ‖ u32 n ‖ u8 r ‖ r MAC keys ‖ var32 ct."""
    header = u8(1) + channel_id + u8(sender) + u32(n)
    return header + u8(len(revealed)) + b"".join(revealed) + var32(ct)


# --- The tests ----------------------------------------------------------------------------------


def test_identity() -> None:
    """PROTOCOL.md §2.1 (encodings), §2.2 (fingerprint, safety number): identity.json."""
    v = load("identity")
    ids = {}
    for who in ("alice", "bob"):
        side = v[who]
        ident = Identity(h(side["private"]))
        ids[who] = ident
        assert ident.sig_public == h(side["signing_public"])
        assert ident.dh_public == h(side["dh_public"])
        assert ident.binding_input == h(side["binding_signing_input"])
        binding = h(side["binding_signature"])
        check_signature(ident.seed, ident.sig_public, ident.binding_input, binding)
        assert ident.public == h(side["public"])
        assert len(ident.public) == 128
        fp = fingerprint(ident.keys)
        assert fp == h(side["fingerprint"])
        hex_fp = fp.hex()
        display = " ".join(hex_fp[i : i + 4] for i in range(0, 64, 4))
        assert display == side["fingerprint_display"]

    number = safety_number(
        ids["alice"].keys,
        v["alice"]["name"].encode("utf-8"),
        ids["bob"].keys,
        v["bob"]["name"].encode("utf-8"),
    )
    assert number == v["safety_number"]
    assert len(number) == 60
    # Symmetric: the same whichever side computes it.
    assert number == safety_number(ids["bob"].keys, b"khrushchev", ids["alice"].keys, b"kennedy")

    compat = v["libsignal_compat"]
    libsignal = safety_number(
        h(compat["key_a"]),
        compat["id_a"].encode("utf-8"),
        h(compat["key_b"]),
        compat["id_b"].encode("utf-8"),
    )
    assert libsignal == compat["published"] == compat["safety_number"]


def test_handshake() -> None:
    """PROTOCOL.md §3 (prekeys, bundle), §4.1-§4.3 (PQXDH, initial header, AD), §6, §9:
    handshake.json, up to the whole first PREKEY session message."""
    v = load("handshake")
    alice = Identity(h(v["alice_identity_private"]))
    bob = Identity(h(v["bob_identity_private"]))
    b = v["bob"]

    # §3 SignedPrekey.
    spk = b["signed_prekey"]
    spk_private, spk_public = h(spk["private"]), h(spk["public"])
    assert x25519_public(spk_private) == spk_public
    spk_input = signing_input("signed prekey", u32(spk["id"]) + spk_public)
    assert spk_input == h(spk["signing_input"])
    check_signature(bob.seed, bob.sig_public, spk_input, h(spk["signature"]))
    signed_prekey = u32(spk["id"]) + spk_public + h(spk["signature"])

    # §3 OneTimePrekey.
    opk = b["one_time_prekey"]
    assert x25519_public(h(opk["private"])) == h(opk["public"])
    one_time_prekey = u32(opk["id"]) + h(opk["public"])

    # §3 KemPrekey: the private key is the 64-byte seed d ‖ z (§1).
    kem = b["kem_prekey"]
    kem_private = mlkem.MLKEM768PrivateKey.from_seed_bytes(h(kem["seed"]))
    kem_public = kem_private.public_key().public_bytes_raw()
    assert kem_public == h(kem["public"]) and len(kem_public) == 1184
    last_resort = u8(1 if kem["last_resort"] else 0)
    kem_input = signing_input("kem prekey", u32(kem["id"]) + last_resort + kem_public)
    assert kem_input == h(kem["signing_input"])
    check_signature(bob.seed, bob.sig_public, kem_input, h(kem["signature"]))
    kem_prekey = u32(kem["id"]) + last_resort + kem_public + h(kem["signature"])

    # §3 PrekeyBundle.
    bundle = u8(1) + bob.public + signed_prekey + u8(1) + one_time_prekey + kem_prekey
    assert bundle == h(b["bundle"])

    # §4.1 steps 1-4, from Alice's side.
    ek = h(v["alice_ephemeral_private"])
    assert x25519_public(ek) == h(v["alice_ephemeral_public"])
    dh1 = x25519(alice.dh_private, spk_public)
    dh2 = x25519(ek, bob.dh_public)
    dh3 = x25519(ek, spk_public)
    dh4 = x25519(ek, h(opk["public"]))
    assert [dh1, dh2, dh3, dh4] == [h(v[k]) for k in ("dh1", "dh2", "dh3", "dh4")]
    # ... and the same values from Bob's side (§4.4).
    ek_public = h(v["alice_ephemeral_public"])
    assert x25519(spk_private, alice.dh_public) == dh1
    assert x25519(bob.dh_private, ek_public) == dh2
    assert x25519(spk_private, ek_public) == dh3
    assert x25519(h(opk["private"]), ek_public) == dh4

    # Encapsulation is randomised; the fixed (CT, SS) pair is checked by decapsulation (§10).
    ct = h(v["kem_ciphertext"])
    assert len(ct) == 1088
    ss = kem_private.decapsulate(ct)
    assert ss == h(v["kem_shared_secret"])

    ikm = b"\xff" * 32 + dh1 + dh2 + dh3 + dh4 + ss
    assert ikm == h(v["kdf_input"])
    okm = hkdf(ikm, None, PREFIX + b"PQXDH X25519 SHA-256 ML-KEM-768", 96)
    sk, hka, nhkb = okm[:32], okm[32:64], okm[64:]
    assert (sk, hka, nhkb) == (h(v["sk"]), h(v["hka"]), h(v["nhkb"]))

    # §4.3 AD.
    ad = alice.keys + bob.keys + name(v["alice_name"]) + name(v["bob_name"])
    assert ad == h(v["associated_data"])

    # §4.2 InitialHeader and HandshakeDigest.
    first = v["first_message"]
    initial_header = (
        u8(1)
        + alice.public
        + name(v["alice_name"])
        + ek_public
        + u32(spk["id"])
        + u8(1)
        + u32(opk["id"])
        + u32(kem["id"])
        + ct
    )
    assert initial_header == h(first["initial_header"])
    assert hashlib.sha256(initial_header).digest() == h(first["bob_handshake_digest"])

    # §9 padding of the content, §5.2/§5.3 Alice's first ratchet message, §6 PREKEY message.
    padded = pad(h(first["plaintext"]))
    assert padded == h(first["padded_plaintext"])
    state = Ratchet.alice(sk, hka, nhkb, spk_public, h(v["alice_ratchet_private"]), ad)
    sent = state.encrypt(padded, h(first["header_nonce"]))
    session_message = u8(1) + initial_header + sent["message"]
    assert session_message == h(first["session_message"])

    # Bob, initialised per §5.2 with the same SK/HKA/NHKB, reads it back (§4.4, §5.4 trial NHKr).
    bob_state = Ratchet.bob(sk, hka, nhkb, spk_private, ad)
    # (Bob's new DHs after the DH step is not in the vector and does not affect this decryption.)
    assert bob_state.decrypt(sent["message"], iter([bytes(range(32))])) == padded


def test_ratchet() -> None:
    """PROTOCOL.md §5.1-§5.5 (KDF_RK_HE, KDF_CK, MessageKeys, HENCRYPT, sending, receiving with
    skipped keys): every event of ratchet.json, replayed by an independent state machine."""
    v = load("ratchet")
    sk, hka, nhkb, ad = h(v["sk"]), h(v["hka"]), h(v["nhkb"]), h(v["associated_data"])
    bob_spk = h(v["bob_ratchet_private"])
    (alice_dhs,) = v["alice_initial_random"]
    parties = {
        "alice": Ratchet.alice(sk, hka, nhkb, x25519_public(bob_spk), h(alice_dhs), ad),
        "bob": Ratchet.bob(sk, hka, nhkb, bob_spk, ad),
    }

    # The first send event, step by step from the §5.1 definitions.
    first = v["events"][0]
    _, ck, _ = kdf_rk_he(sk, x25519(h(alice_dhs), x25519_public(bob_spk)))
    assert ck == h(first["chain_key"])
    next_ck, mk = kdf_ck(ck)
    assert mk == h(first["message_key"])
    assert hmac_sha256(ck, b"\x01") == mk and next_ck == h(v["events"][1]["chain_key"])
    header = ratchet_header(h(first["header"]["dh"]), first["header"]["pn"], first["header"]["n"])
    assert header[:32] == x25519_public(h(alice_dhs))
    enc_header = hencrypt(hka, h(first["random"][0]), header, ad)
    message = enc_header + encrypt(mk, h(first["plaintext"]), ad + enc_header)
    assert message == h(first["ciphertext"])
    assert len(enc_header) == 68

    # Then all twenty events through the state machine.
    sent: dict[str, bytes] = {}
    for event in v["events"]:
        st = parties[event["party"]]
        draws = [h(x) for x in event["random"]]
        if event["action"] == "send":
            (nonce,) = draws
            out = st.encrypt(h(event["plaintext"]), nonce)
            hd = event["header"]
            assert out["header"] == ratchet_header(h(hd["dh"]), hd["pn"], hd["n"])
            assert out["header_key"] == h(event["header_key"])
            assert out["chain_key"] == h(event["chain_key"])
            assert out["message_key"] == h(event["message_key"])
            assert out["message"] == h(event["ciphertext"])
            sent[event["message"]] = out["message"]
        else:
            it = iter(draws)
            plaintext = st.decrypt(sent[event["message"]], it)
            assert next(it, None) is None, "every recorded random draw is consumed"
            assert plaintext == h(event["plaintext"])
            assert len(st.skipped) == event["skipped_keys_after"]
            assert st.rk == h(event["root_key_after"])


def test_letter_and_padding() -> None:
    """PROTOCOL.md §7.1 (LetterCanonical, signature, Content), §7.4 (LetterDigest, LetterAck),
    §9 (Pad, PaddedSize): letter.json and envelope.json's padded_sizes."""
    v = load("letter")
    sender = Identity(h(v["sender_identity_private"]))
    recipient = Identity(h(v["recipient_identity_private"]))
    canonical = (
        u8(1)
        + h(v["message_id"])
        + name(v["sender"])
        + sender.keys
        + name(v["recipient"])
        + recipient.keys
        + u64(v["sent_at_ms"])
        + opt(h(v["in_reply_to"]))
        + var32(v["text"].encode("utf-8"))
    )
    assert canonical == h(v["canonical"])
    letter_input = signing_input("letter", canonical)
    assert letter_input == h(v["signing_input"])
    check_signature(sender.seed, sender.sig_public, letter_input, h(v["signature"]))
    content = u8(1) + canonical + h(v["signature"])
    assert content == h(v["content"])
    assert pad(content) == h(v["padded_content"])

    # §7.4: the formal acknowledgement, built from its listed fields.
    digest = labelled_hash("letter digest", canonical)
    assert digest == h(v["letter_digest"])
    ack_at = v["acknowledged_at_ms"]
    ack = (
        u8(1)
        + h(v["message_id"])
        + digest
        + name(v["recipient"])
        + recipient.keys
        + name(v["sender"])
        + sender.keys
        + u64(ack_at)
    )
    assert ack == h(v["acknowledgement_canonical"])
    ack_input = signing_input("letter acknowledgement", ack)
    ack_signature = h(v["acknowledgement_signature"])
    check_signature(recipient.seed, recipient.sig_public, ack_input, ack_signature)
    assert u8(3) + u8(2) + ack + ack_signature == h(v["acknowledgement_content"])

    # §9 PaddedSize samples, and the examples the text lists.
    sizes = load("envelope")["padded_sizes"]
    assert {int(n): padded_size(int(n)) for n in sizes} == {int(n): s for n, s in sizes.items()}
    examples = {0: 256, 255: 256, 256: 272, 1000: 1024, 5000: 5120, 70000: 71680}
    assert {n: padded_size(n) for n in examples} == examples
    for n in (0, 1, 100, 255, 256, 257, 1000):
        padded = pad(bytes(n))
        assert len(padded) == padded_size(n) and padded[n] == 0x80


def test_envelope_and_receipt() -> None:
    """PROTOCOL.md §8 (Envelope) and §7.2 (receipt Content): envelope.json, receipt.json."""
    v = load("envelope")
    for kind in ("direct", "sealed"):
        e = v[kind]
        flags = 0 if e["sender"] is None else 1
        encoded = (
            u8(1)
            + u8(flags)
            + name(e["recipient"])
            + (b"" if e["sender"] is None else name(e["sender"]))
            + h(e["message_id"])
            + u8(e["route"])
            + u64(e["expires_at"])
            + var32(h(e["ciphertext"]))
        )
        assert encoded == h(e["encoded"])
    # The direct envelope carries the handshake's PREKEY message.
    assert h(v["direct"]["ciphertext"]) == h(load("handshake")["first_message"]["session_message"])

    r = load("receipt")
    ids = [h(m) for m in r["message_ids"]]
    content = u8(4) + u8(1) + u8(r["type"]) + u64(r["at_ms"]) + u16(len(ids)) + b"".join(ids)
    assert content == h(r["content"])


def test_keystore() -> None:
    """PROTOCOL.md §11 (Protected keystore): keystore.json."""
    v = load("keystore")
    salt, nonce = (h(x) for x in v["random"])
    header = b"BCKS" + u8(1) + u8(1) + u8(v["log2_n"]) + u8(v["r"]) + u8(v["p"]) + salt + nonce
    key = Scrypt(salt=salt, length=32, n=2 ** v["log2_n"], r=v["r"], p=v["p"]).derive(
        v["passphrase"].encode("utf-8")
    )
    sealed = AESGCM(key).encrypt(nonce, h(v["plaintext"]), PREFIX + b"keystore" + header)
    assert header + var32(sealed) == h(v["sealed"])


def test_relay_auth() -> None:
    """PROTOCOL.md §13.2 (registration proof) and §13.3 (login signature): relay_auth.json."""
    v = load("relay_auth")
    ident = Identity(h(v["identity_private"]))
    relay_id = h(v["relay_id"])
    assert len(relay_id) == 16
    # The invite is used as ASCII text (the 32 characters as written), not hex-decoded.
    register = signing_input(
        "relay register", relay_id + var8(v["invite"].encode("ascii")) + var8(v["name"].encode())
    )
    assert register == h(v["registration_signing_input"])
    check_signature(ident.seed, ident.sig_public, register, h(v["registration_signature"]))

    challenge = h(v["challenge"])
    assert len(challenge) == 32
    login = signing_input("relay login", relay_id + challenge + name(v["name"]))
    assert login == h(v["login_signing_input"])
    check_signature(ident.seed, ident.sig_public, login, h(v["login_signature"]))


def test_proposal_and_notary() -> None:
    """PROTOCOL.md §14.1 (Proposal, digest, signature, commitment, Sealed), §14.2 (Statement),
    §14.3 (notary Entry, ChainHash, Receipt), §7.3 (session contents), §14.6 (export):
    proposal.json."""
    v = load("proposal")
    author = Identity(h(v["author_identity_private"]))
    addressee = Identity(h(v["addressee_identity_private"]))

    # §14.1: built from the listed fields, and decoded back per the grammar.
    canonical = h(v["canonical"])
    f = v["proposal"]
    built = {
        "version": f["version"],
        "id": h(f["proposal_id"]),
        "author": listed_party(f["author"]),
        "addressees": [listed_party(a) for a in f["addressees"]],
        "mediator": None if f["mediator"] is None else listed_party(f["mediator"]),
        "title": f["title"],
        "terms": f["terms"],
        "conditions": [h(c) for c in f["conditions"]],
        "answers": None if f["answers"] is None else h(f["answers"]),
        "created_at": f["created_at_ms"],
        "expires_at": f["expires_at_ms"],
        "reveal": f["reveal"],
        "reveal_arg": f["reveal_at_ms"],
    }
    assert encode_proposal(built) == canonical
    p = decode_proposal(canonical)
    assert p == built
    assert p["author"] == ("khrushchev", author.keys)
    assert p["addressees"] == [("kennedy", addressee.keys)]
    assert p["reveal"] == 1  # §14.3: "a conditional proposal with a timed reveal"
    assert len(p["conditions"]) >= 1

    # §14.1 version 2: the same fields, a trailing mask; the digest is computed the same way.
    understood = dict(built, version=2, understood_mask=1)
    assert [h(c) for c in v["understood"]["allow_understood"]] == p["conditions"][:1]
    assert encode_proposal(understood) == h(v["understood"]["canonical"])
    assert decode_proposal(h(v["understood"]["canonical"])) == understood
    assert labelled_hash("proposal digest", h(v["understood"]["canonical"])) == h(
        v["understood"]["digest"]
    )

    # §14.7: an off-the-record clause is 0x00 ‖ form ‖ the unsigned Proposal, or its digest.
    c = v["clause"]
    clause = decode_proposal(h(c["proposal_canonical"]))
    assert clause["version"] == 1 and clause["reveal"] == 0 and clause["conditions"] == []
    assert h(c["propose_plaintext"]) == b"\x00\x01" + h(c["proposal_canonical"])
    assert labelled_hash("proposal digest", h(c["proposal_canonical"])) == h(c["digest"])
    assert h(c["accept_plaintext"]) == b"\x00\x02" + h(c["digest"])
    assert h(c["withdraw_plaintext"]) == b"\x00\x03" + h(c["digest"])

    digest = labelled_hash("proposal digest", canonical)
    assert digest == h(v["digest"])
    proposal_input = signing_input("proposal", canonical)
    assert proposal_input == h(v["signing_input"])
    # Verified with the Ed25519 key inside the author's Party (§14.6 step 1).
    author_key = p["author"][1][:32]
    check_signature(author.seed, author_key, proposal_input, h(v["signature"]))
    nonce = h(v["nonce"])
    commitment = labelled_hash("proposal commitment", nonce + digest)
    assert commitment == h(v["commitment"])
    sealed = canonical + h(v["signature"]) + nonce
    assert sealed == h(v["sealed"])

    # §14.2: the acceptance statement, built from its listed fields.
    statement = h(v["statement_canonical"])
    g = v["statement"]
    s = decode_statement(statement)
    assert s == {
        "version": g["version"],
        "kind": g["kind"],
        "digest": digest,
        "commitment": commitment,
        "author": listed_party(g["author"]),
        "at": g["at_ms"],
        "accepted_with": [h(d) for d in g["accepted_with"]],
        "counter": None if g["counter"] is None else h(g["counter"]),
        "reason": g["reason"],
    }
    assert encode_statement(s) == statement
    assert (s["version"], s["kind"]) == (1, 4)  # accepted
    assert (s["digest"], s["commitment"]) == (digest, commitment)
    assert s["author"] == ("kennedy", addressee.keys)
    assert s["accepted_with"] == p["conditions"]  # "an acceptance naming its condition"
    assert s["counter"] is None
    statement_digest = labelled_hash("statement digest", statement)
    assert statement_digest == h(v["statement_digest"])
    statement_input = signing_input("proposal statement", statement)
    check_signature(
        addressee.seed, s["author"][1][:32], statement_input, h(v["statement_signature"])
    )

    # §14.3: the two-entry log and its receipts.
    notary_seed = h(v["notary_private"])
    notary_public = ed25519_public(notary_seed)
    assert notary_public == h(v["notary_public"])
    relay_id = h(v["relay_id"])
    terms = notary_terms(commitment, p["author"], p["addressees"], p["expires_at"], p["mediator"])
    assert terms == h(v["notary_terms"])
    values = [(1, terms), (2, statement_digest)]  # kind 1 commitment, 2 acceptance
    previous, last_at = bytes(32), 0
    receipts = []
    for seq, (logged, (kind, value)) in enumerate(zip(v["log"], values, strict=True), start=1):
        assert (logged["seq"], logged["kind"]) == (seq, kind)
        at = logged["at_ms"]
        assert at >= last_at
        entry = notary_entry(seq, at, kind, commitment, value, previous)
        assert entry == h(logged["entry"])
        link = notary_link(seq, at, kind, commitment, value, previous)
        assert link == h(logged["link"]) and link[8:40] == h(logged["body_hash"])
        chain_hash = labelled_hash("notary chain", link)
        assert chain_hash == h(logged["chain_hash"])
        receipt_input = signing_input("notary receipt", relay_id + entry)
        signature = Ed25519PrivateKey.from_private_bytes(notary_seed).sign(receipt_input)
        Ed25519PublicKey.from_public_bytes(notary_public).verify(signature, receipt_input)
        receipt = relay_id + entry + signature
        assert receipt == h(logged["receipt"])
        receipts.append(receipt)
        previous, last_at = chain_hash, at

    # §7.3: the proposal's session content, open and timed, and the statement's.
    open_content = u8(2) + u8(1) + var16(receipts[0]) + digest + u8(0) + var32(sealed)
    assert open_content == h(v["open_content"])
    lock_nonce, content_key = h(v["lock_nonce"]), h(v["content_key"])
    locked = AESGCM(content_key).encrypt(
        lock_nonce, sealed, PREFIX + b"timed proposal" + commitment
    )
    timed_content = (
        u8(2)
        + u8(1)
        + var16(receipts[0])
        + digest
        + u8(1)
        + u64(p["reveal_arg"])
        + var32(lock_nonce + locked)
    )
    assert timed_content == h(v["timed_content"])
    statement_content = (
        u8(3) + u8(1) + var16(statement + h(v["statement_signature"])) + var16(receipts[1])
    )
    assert statement_content == h(v["statement_content"])

    # §14.6: the exported record (binary fields standard base64).
    b64 = lambda data: base64.b64encode(data).decode("ascii")  # noqa: E731
    assert v["export"] == {
        "format": "backchannel-proposal-record/1",
        "notary_key": b64(notary_public),
        "records": [
            {
                "sealed": b64(sealed),
                "receipt": b64(receipts[0]),
                "statements": [
                    {
                        "statement": b64(statement + h(v["statement_signature"])),
                        "receipt": b64(receipts[1]),
                    }
                ],
            }
        ],
    }


def test_off_the_record_channel() -> None:
    """PROTOCOL.md §15.1 (offer, answer, chains) and §15.2 (message keys, Body, tag, revealed MAC
    keys, the forgery the revealed key allows): otr.json."""
    v = load("otr")
    draws = [h(x) for x in v["random_draws"]]
    channel_id, ea, token_o, eb, token_r, read_key, message_id, expiry_draw = draws
    ea_public, eb_public = x25519_public(ea), x25519_public(eb)

    # §15.1: the offer and the answer, each carrying its sender's delivery token.
    expires_at = v["expires_at_ms"]
    offer = h(v["offer_content"])
    assert offer == u8(5) + u8(1) + channel_id + ea_public + token_o + u64(expires_at)
    assert h(v["answer_content"]) == u8(5) + u8(2) + channel_id + eb_public + token_r
    secret = x25519(ea, eb_public)
    assert secret == x25519(eb, ea_public) == h(v["shared_secret"])
    chains = hkdf(secret, channel_id, PREFIX + b"otr root" + ea_public + eb_public, 64)
    opener_chain, responder_chain = chains[:32], chains[32:]
    assert opener_chain == h(v["opener_chain"]) and responder_chain == h(v["responder_chain"])

    # §15.2: the opener's first message (n = 0, nothing revealed yet).
    _, mk, ek, mack = otr_message_keys(opener_chain)
    assert mk == h(v["first_message_key"])
    assert (ek, mack) == (h(v["first_enc_key"]), h(v["first_mac_key"]))
    padded_first = pad(v["first_text"].encode("utf-8"))
    body = otr_body(channel_id, 0, 0, [], aes_ctr(ek, padded_first))
    assert body + hmac_sha256(mack, body) == h(v["first_message"])

    # The responder's answer (its n = 0) reveals the first message's MAC key.
    _, _, ek2, mack2 = otr_message_keys(responder_chain)
    second = h(v["second_message"])
    r = Reader(second[:-32])
    assert (r.u8(), r.fixed(16), r.u8(), r.u32(), r.u8()) == (1, channel_id, 1, 0, 1)
    assert r.fixed(32) == mack
    ciphertext = r.fixed(r.u32())
    r.done()
    assert unpad(aes_ctr(ek2, ciphertext)).decode("utf-8") == v["second_text"]
    body2 = otr_body(channel_id, 1, 0, [mack], aes_ctr(ek2, pad(v["second_text"].encode())))
    assert body2 + hmac_sha256(mack2, body2) == second

    # The forgery: anyone holding the transcript and the revealed key rewrites the first message.
    padded_forged = pad(v["forged_text"].encode("utf-8"))
    assert len(padded_forged) == len(padded_first)
    first_ct = aes_ctr(ek, padded_first)
    forged_ct = bytes(
        c ^ a ^ b for c, a, b in zip(first_ct, padded_first, padded_forged, strict=True)
    )
    forged_body = otr_body(channel_id, 0, 0, [], forged_ct)
    assert forged_body + hmac_sha256(h(v["first_mac_key"]), forged_body) == h(v["forged_message"])

    # §15.3: the responder's drop, and the first message sealed for it (padded again).
    sha = hashlib.sha256
    assert sha(PREFIX + b"drop address\x00" + token_r).digest() == h(v["responder_drop_address"])
    assert sha(PREFIX + b"drop read key\x00" + read_key).digest() == h(v["responder_read_hash"])
    # The expiries the relay stores (§15.3): the sealed one on the hour grid past every drop's,
    # the responder's drop a random second of the hour (or the remaining life) after the end.
    end = -(-expires_at // 1000)
    assert v["sealed_expires_at"] == -(-(end + 3600) // 3600) * 3600
    window = max(1, min(3600, end - v["drop_opened_ms"] // 1000))
    drop_expiry = end + int.from_bytes(expiry_draw, "big") % window
    assert v["responder_drop_expires_at"] == drop_expiry
    assert end <= drop_expiry < v["sealed_expires_at"]
    sealed = u8(1) + message_id + u64(v["sealed_expires_at"]) + var32(pad(h(v["first_message"])))
    assert sealed == h(v["sealed_envelope"])

    # §15.5: the opener's stored state after one message each way (both chains stepped once,
    # nothing skipped, the answer's MAC key waiting to be revealed).
    next_opener, next_responder = (
        otr_message_keys(opener_chain)[0],
        otr_message_keys(responder_chain)[0],
    )
    state = u8(1) + channel_id + u8(0) + next_opener + u32(1) + next_responder + u32(1)
    state += u64(expires_at) + u16(0) + u16(1) + mack2
    assert state == h(v["opener_state_after"])


def test_mediation_and_exercise_statements() -> None:
    """PROTOCOL.md §16.3 (inject), §16.5 (introduction), §16.6 (forwarded letter) and §16.7
    (exchange release): mediation.json."""
    v = load("mediation")
    seed = h(v["mediator_identity_private"])[:32]
    public = ed25519_public(seed)

    # §16.5: the mediator's signature over the introduction, and the content around it.
    canonical = h(v["introduction_canonical"])
    message = signing_input("introduction", canonical)
    check_signature(seed, public, message, h(v["introduction_signature"]))
    assert h(v["introduction_content"]) == u8(6) + canonical + h(v["introduction_signature"])
    r = Reader(canonical)
    assert r.u8() == 1 and r.fixed(r.u8()) == b"u-thant" and r.fixed(64)[:32] == public
    assert r.fixed(r.u8()) == b"kennedy"
    r.fixed(64)
    assert r.fixed(r.u8()) == b"khrushchev"
    r.fixed(128)
    assert r.u64() == v["introduced_at_ms"]
    r.done()

    # §16.6: u8 8 ‖ version 2 ‖ form 1 ‖ var32 (LetterCanonical ‖ signature), signed by its
    # author ‖ var16 (ConsentCanonical ‖ signature), the author's consent (§16.8).
    forwarded = h(v["forwarded_content"])
    r = Reader(forwarded)
    assert (r.u8(), r.u8(), r.u8()) == (8, 2, 1)
    inner = r.fixed(r.u32())
    consent_signed = r.fixed(r.u16())
    r.done()
    letter, signature = inner[:-64], inner[-64:]
    lr = Reader(letter)
    lr.u8(), lr.fixed(16)
    assert lr.fixed(lr.u8()) == b"khrushchev"
    author_keys = lr.fixed(64)
    Ed25519PublicKey.from_public_bytes(author_keys[:32]).verify(
        signature, signing_input("letter", letter)
    )

    # §16.8: the consent: version ‖ Party author ‖ Party mediator ‖ fixed[32] digest of the
    # letter (labelled hash "letter digest") ‖ var8 to ‖ u64 at, signed by the author.
    consent = h(v["consent_canonical"])
    assert consent_signed == consent + h(v["consent_signature"])
    assert h(v["consent_content"]) == u8(10) + consent_signed
    cr = Reader(consent)
    assert cr.u8() == 1
    assert cr.fixed(cr.u8()) == b"khrushchev" and cr.fixed(64) == author_keys
    assert cr.fixed(cr.u8()) == b"u-thant" and cr.fixed(64)[:32] == public
    assert cr.fixed(32) == labelled_hash("letter digest", letter)
    assert cr.fixed(cr.u8()) == b"kennedy"
    assert cr.u64() == v["consent_at_ms"]
    cr.done()
    Ed25519PublicKey.from_public_bytes(author_keys[:32]).verify(
        h(v["consent_signature"]), signing_input("forward consent", consent)
    )

    # §16.7: the release body and the mediator's signature over it.
    body = h(v["release_body"])
    check_signature(seed, public, signing_input("exchange release", body),
                    h(v["release_signature"]))  # fmt: skip
    assert len(body) == 16 + 32 + 8 + 32 + 8 + 8
    content = h(v["release_content"])
    assert content[:2] == u8(9) + u8(1) and content[2:18] == body[:16]
    assert content.endswith(body[-8:] + h(v["release_signature"]))
    # §14.3: the released offer's commitment entry binds its mediator into the Terms.
    r = Reader(content[18:])
    assert r.fixed(r.u8()) == b"u-thant" and r.fixed(64)[:32] == public
    sealed, receipt = r.fixed(r.u32()), r.fixed(r.u16())
    offer = decode_proposal(sealed[:-96])
    assert offer["mediator"] is not None and offer["mediator"][0] == "u-thant"
    released = labelled_hash(
        "proposal commitment", sealed[-32:] + labelled_hash("proposal digest", sealed[:-96])
    )
    assert receipt[16 + 17 : 16 + 49] == released == body[16:48]
    assert receipt[16 + 49 : 16 + 81] == notary_terms(
        released, offer["author"], offer["addressees"], offer["expires_at"], offer["mediator"]
    )

    # §16.3: InjectBody from its fields (a negative i64 time: 1962), signed by the control key.
    at = -227_304_000_000
    expected = (
        var8(v["inject_exercise"].encode()) + u32(1) + at.to_bytes(8, "big", signed=True)
        + u8(1) + var8(b"all") + var16(b"The quarantine")
        + var32(b"The President has announced a quarantine of Cuba.")
    )  # fmt: skip
    assert h(v["inject_body"]) == expected
    control = h(v["control_private"])
    check_signature(control, ed25519_public(control), signing_input("exercise inject", expected),
                    h(v["inject_signature"]))  # fmt: skip

    # §16.9: CommuniqueBody from its fields, signed by its author's (Khrushchev's) identity key.
    at = -226_929_600_000
    expected = (
        var8(b"cuba-1962") + var8(b"khrushchev") + at.to_bytes(8, "big", signed=True)
        + var32(b"The missiles will be crated and returned.")
    )  # fmt: skip
    assert h(v["communique_body"]) == expected
    author = Identity(h(load("handshake")["bob_identity_private"]))
    check_signature(author.seed, author.sig_public,
                    signing_input("exercise communique", expected),
                    h(v["communique_signature"]))  # fmt: skip


def test_control_key_and_control_copy() -> None:
    """PROTOCOL.md §16.11: control_copy.json. The published key body and control's signature
    over it; the copy opened from the key secret alone: X25519 with the ephemeral key, ML-KEM
    decapsulation, HKDF over both, AES-256-GCM with the message id as associated data; and the
    letter inside signed by its author."""
    v = load("control_copy")
    secret = h(v["control_key_secret"])
    x_private, kem_seed = secret[:32], secret[32:]
    x_public = x25519_public(x_private)
    kem_private = mlkem.MLKEM768PrivateKey.from_seed_bytes(kem_seed)
    kem_public = kem_private.public_key().public_bytes_raw()
    body = var8(v["exercise"].encode()) + x_public + var16(kem_public)
    assert h(v["control_key_body"]) == body
    signer = h(v["control_signing_private"])
    check_signature(signer, ed25519_public(signer), signing_input("exercise control key", body),
                    h(v["control_key_signature"]))  # fmt: skip

    copy = h(v["control_copy"])
    ephemeral, ct_kem, sealed = copy[:32], copy[32 : 32 + 1088], copy[32 + 1088 :]
    assert ct_kem == h(v["kem_ciphertext"])
    dh = x25519(x_private, ephemeral)
    ss = kem_private.decapsulate(ct_kem)
    info = PREFIX + b"control copy X25519 ML-KEM-768"
    okm = hkdf(dh + ss, None, info + ephemeral + ct_kem + x_public + kem_public, 44)
    message_id = h(v["message_id"])
    content = AESGCM(okm[:32]).decrypt(okm[32:], sealed, info + message_id)
    assert content == h(v["letter_content"])
    assert content[0] == 1  # a letter (§7), its message id the one bound in
    letter, signature = content[1:-64], content[-64:]
    r = Reader(letter)
    assert r.u8() == 1 and r.fixed(16) == message_id
    assert r.fixed(r.u8()) == b"kennedy"
    author = Identity(h(load("handshake")["alice_identity_private"]))
    assert r.fixed(64) == author.keys
    Ed25519PublicKey.from_public_bytes(author.sig_public).verify(
        signature, signing_input("letter", letter)
    )
