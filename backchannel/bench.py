"""`python -m backchannel.bench`: the protocol's cost next to the raw cost of its primitives.

Scenarios: a 512-byte message through the ratchet in a one-direction burst (encrypt + decrypt,
and each side alone), the same in ping-pong so that every message received is a DH ratchet step,
a full PQXDH handshake from bundle bytes to both ratchet states, and (supplementary) the burst
through the session layer with padding and the type byte. For each, `Calls` below is its
*recipe*: every pyca/cryptography call one unit makes, by call shape, in order.
`tests/bench/test_bench_smoke.py` runs each scenario instrumented and checks that it makes
exactly those calls, so the recipes cannot drift from the code.

Every primitive is timed alone in this process with the call shape the protocol uses (object
construction included, e.g. `AESGCM(key).encrypt(...)`), without our wrappers. The goal (issue:
within 1.3x) compares a scenario with the sum of its recipe's primitives: `ratio` is the median
over rounds of (scenario time / sum of primitive times) in the same round. As a diagnostic, each
recipe is also run "back to back": its primitive calls in order with no protocol code between
them, which shows how much of the gap is the primitives costing more in sequence than alone.

Timing: `time.perf_counter_ns`; the garbage collector off during a batch (as `timeit`); each item
calibrated to batches of about `batch_ms`, each batch preceded by one untimed unit to warm up;
`rounds` rounds that run every item once, in a shuffled order, so load drift on a shared machine
hits all items alike; figures are medians over rounds. The loop's own cost per call is
subtracted from primitive figures only, so it counts against the protocol, never for it.

This is the one module of `backchannel` that prints.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random
from time import perf_counter_ns
from typing import Any

import cryptography
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import labels
from .encoding import Reader
from .handshake import Encapsulate, InitialHeader, initiate, respond, system_encapsulate
from .identity import IdentityKeyPair
from .padding import padded_size
from .prekeys import PrekeyBundle, PrekeySecrets
from .primitives import AEAD_NONCE_SIZE, RandomSource, system_random
from .ratchet import (
    ENCRYPTED_HEADER_SIZE,
    HEADER_SIZE,
    RatchetState,
    ratchet_decrypt,
    ratchet_encrypt,
)
from .session import accept_session, session_decrypt, session_encrypt, start_session

LETTER_SIZE = 512
GOAL = 1.3
DEFAULT_ROUNDS = 61
DEFAULT_BATCH_MS = 5.0
QUICK_ROUNDS = 7
QUICK_BATCH_MS = 1.0
MAX_REPS = 1_000_000

Batch = Callable[[int], int]
"""Runs `reps` units and returns the nanoseconds the timed part took."""

# --- the primitives --------------------------------------------------------------------------

PRIMITIVE_LABELS: dict[str, str] = {
    "hmac": "HMAC-SHA256, 32-byte key, 1-byte input (kdf_ck)",
    "hkdf_message_keys": "HKDF-SHA256 -> 44 bytes, no salt (message key -> AES key, nonce)",
    "hkdf_root": "HKDF-SHA256 -> 96 bytes, 32-byte salt (kdf_rk_he)",
    "hkdf_pqxdh": "HKDF-SHA256 -> 96 bytes from 192 bytes, no salt (PQXDH)",
    "aead_encrypt_header": "AES-256-GCM encrypt, 40-byte header (AESGCM(key).encrypt)",
    "aead_decrypt_header": "AES-256-GCM decrypt, 56-byte header, tag verifies",
    "aead_decrypt_header_fail": "AES-256-GCM decrypt, 56-byte header, wrong key (InvalidTag)",
    "aead_encrypt_body": "AES-256-GCM encrypt, 512-byte body",
    "aead_decrypt_body": "AES-256-GCM decrypt, 528-byte body",
    "aead_encrypt_session_body": "AES-256-GCM encrypt, 544-byte body (512 padded)",
    "aead_decrypt_session_body": "AES-256-GCM decrypt, 560-byte body (512 padded)",
    "random_nonce": "os.urandom(12) (header nonce)",
    "random_seed": "os.urandom(32) (X25519 private key)",
    "x25519_keygen": "X25519 private key from 32 bytes, derive and export public",
    "x25519_dh": "X25519 exchange",
    "x25519_load": "X25519 public key from bytes",
    "ed25519_load": "Ed25519 public key from bytes (pyca; keys.py's point check is ours)",
    "ed25519_sign": "Ed25519 sign, 65-byte statement (in no scenario: for reference)",
    "ed25519_verify_identity": "Ed25519 verify, 56-byte identity binding",
    "ed25519_verify_signed_prekey": "Ed25519 verify, 65-byte signed-prekey statement",
    "ed25519_verify_kem_prekey": "Ed25519 verify, 1215-byte KEM-prekey statement",
    "mlkem_load": "ML-KEM-768 public key from bytes",
    "mlkem_encapsulate": "ML-KEM-768 encapsulate",
    "mlkem_decapsulate": "ML-KEM-768 decapsulate",
}

# --- the recipes: the calls one unit of each scenario makes, in order, read off the code -------

Calls = tuple[str, ...]

BURST_ENCRYPT: Calls = (
    # ratchet_encrypt: kdf_ck, then HENCRYPT (random nonce, AEAD), then ENCRYPT (HKDF, AEAD)
    "hmac",
    "hmac",
    "random_nonce",
    "aead_encrypt_header",
    "hkdf_message_keys",
    "aead_encrypt_body",
)
BURST_DECRYPT: Calls = (
    # ratchet_decrypt, next message of the current chain: HDECRYPT(HKr), kdf_ck, DECRYPT
    "aead_decrypt_header",
    "hmac",
    "hmac",
    "hkdf_message_keys",
    "aead_decrypt_body",
)
PING_PONG_TURN: Calls = (
    *BURST_ENCRYPT,
    # the receiver: HDECRYPT(HKr) fails, HDECRYPT(NHKr) succeeds, DHr is parsed, DHRatchetHE
    # (DH, kdf_rk_he, new key pair, DH, kdf_rk_he), then kdf_ck and DECRYPT
    "aead_decrypt_header_fail",
    "aead_decrypt_header",
    "x25519_load",
    "x25519_dh",
    "hkdf_root",
    "random_seed",
    "x25519_keygen",
    "x25519_dh",
    "hkdf_root",
    "hmac",
    "hmac",
    "hkdf_message_keys",
    "aead_decrypt_body",
)
SESSION_BURST: Calls = (
    # session_encrypt + session_decrypt: the burst, with the body padded from 512 to 544 bytes
    "hmac",
    "hmac",
    "random_nonce",
    "aead_encrypt_header",
    "hkdf_message_keys",
    "aead_encrypt_session_body",
    "aead_decrypt_header",
    "hmac",
    "hmac",
    "hkdf_message_keys",
    "aead_decrypt_session_body",
)
HANDSHAKE: Calls = (
    # Alice, PrekeyBundle.from_bytes: Bob's identity (keys parsed, binding verified), signed,
    # one-time and KEM prekeys parsed, then bundle.verify() (signed and KEM prekey signatures)
    "ed25519_load",
    "x25519_load",
    "ed25519_verify_identity",
    "x25519_load",
    "x25519_load",
    "mlkem_load",
    "ed25519_verify_signed_prekey",
    "ed25519_verify_kem_prekey",
    # initiate(): bundle.verify() again, ephemeral key pair, DH1..DH4, ML-KEM, KDF
    "ed25519_verify_signed_prekey",
    "ed25519_verify_kem_prekey",
    "random_seed",
    "x25519_keygen",
    "x25519_dh",
    "x25519_dh",
    "x25519_dh",
    "x25519_dh",
    "mlkem_encapsulate",
    "hkdf_pqxdh",
    # init_initiator: the first ratchet key pair, DH, kdf_rk_he
    "random_seed",
    "x25519_keygen",
    "x25519_dh",
    "hkdf_root",
    # Bob, InitialHeader.read: Alice's identity (binding verified), her ephemeral key
    "ed25519_load",
    "x25519_load",
    "ed25519_verify_identity",
    "x25519_load",
    # respond(): DH1..DH4, ML-KEM decapsulation, KDF (init_responder calls nothing)
    "x25519_dh",
    "x25519_dh",
    "x25519_dh",
    "x25519_dh",
    "mlkem_decapsulate",
    "hkdf_pqxdh",
)


def recipe(calls: Calls) -> dict[str, int]:
    """How many calls of each primitive, in order of first use."""
    counts: dict[str, int] = {}
    for call in calls:
        counts[call] = counts.get(call, 0) + 1
    return counts


# --- fixtures ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parties:
    """Two identities and Bob's prekeys, with a bundle (one-time prekey included) on the wire."""

    alice: IdentityKeyPair
    bob: IdentityKeyPair
    bob_prekeys: PrekeySecrets
    bundle_wire: bytes


def make_parties(random: RandomSource = system_random) -> Parties:
    alice = IdentityKeyPair.generate(random)
    bob = IdentityKeyPair.generate(random)
    prekeys, signed = PrekeySecrets().add_signed_prekey(bob, random)
    prekeys, one_time = prekeys.add_one_time_prekeys(1, random)
    prekeys, kem = prekeys.add_kem_prekeys(bob, 1, random=random)
    bundle = PrekeyBundle(bob.public, signed, one_time[0], kem[0])
    return Parties(alice, bob, prekeys, bundle.to_bytes())


def _handshake(
    parties: Parties, random: RandomSource, encapsulate: Encapsulate
) -> tuple[RatchetState, RatchetState]:
    bundle = PrekeyBundle.from_bytes(parties.bundle_wire)
    initiated = initiate(parties.alice, "alice", bundle, "bob", random, encapsulate)
    responded = respond(parties.bob, "bob", parties.bob_prekeys, initiated.header)
    return initiated.state, responded.state


# --- measurement items -----------------------------------------------------------------------


@dataclass(slots=True)
class Item:
    """Something timed: `batch(reps)` runs `reps` units and returns the ns they took."""

    key: str
    label: str
    batch: Batch
    prepare: Callable[[int], None] | None = None
    """Untimed work that `n` units need first (e.g. the messages they will decrypt)."""
    calls_per_rep: int = 0
    """Closure calls per unit whose loop cost is subtracted (primitives, back-to-back runs)."""
    reps: int = 1
    samples: list[float] = field(default_factory=list)


@dataclass(slots=True)
class Scenario:
    item: Item
    calls: Calls
    back_to_back: Item | None = None
    """The scenario's primitive calls alone, run back to back in its order (filled in by `run`)."""


def _loop(fn: Callable[[], object]) -> Batch:
    def batch(reps: int) -> int:
        loop = range(reps)
        start = perf_counter_ns()
        for _ in loop:
            fn()
        return perf_counter_ns() - start

    return batch


def _sequence(fns: tuple[Callable[[], object], ...]) -> Batch:
    def batch(reps: int) -> int:
        loop = range(reps)
        start = perf_counter_ns()
        for _ in loop:
            for fn in fns:
                fn()
        return perf_counter_ns() - start

    return batch


def build_primitives(parties: Parties, ad: bytes) -> dict[str, Callable[[], object]]:
    """One closure per primitive: the call the protocol makes, with inputs of the sizes it uses.

    Each closure is the call and nothing else: the protocol's wrappers (`primitives.py`,
    `keys.py`) are not used, so their cost is counted as ours, not as the primitive's.
    """
    sha256 = hashes.SHA256()
    key, other_key, ikm = os.urandom(32), os.urandom(32), os.urandom(32)
    nonce = os.urandom(AEAD_NONCE_SIZE)
    header = os.urandom(HEADER_SIZE)
    body_ad = ad + os.urandom(ENCRYPTED_HEADER_SIZE)
    body = os.urandom(LETTER_SIZE)
    session_body = os.urandom(padded_size(LETTER_SIZE))
    enc_header = AESGCM(key).encrypt(nonce, header, ad)
    enc_body = AESGCM(key).encrypt(nonce, body, body_ad)
    enc_session_body = AESGCM(key).encrypt(nonce, session_body, body_ad)
    pqxdh_ikm = os.urandom(32 * 6)
    seed = os.urandom(32)

    bundle = PrekeyBundle.from_bytes(parties.bundle_wire)
    identity = bundle.identity
    x_private = x25519.X25519PrivateKey.from_private_bytes(os.urandom(32))
    x_peer = bundle.signed_prekey.key.key
    x_raw = bundle.signed_prekey.key.raw
    ed_raw = identity.signing.raw
    ed_public = identity.signing.key
    ed_private = ed25519.Ed25519PrivateKey.from_private_bytes(parties.bob.signing.private_bytes())
    binding = identity.binding
    binding_msg = labels.signing_input(labels.SIG_IDENTITY, identity.dh.raw)
    spk_sig = bundle.signed_prekey.signature
    spk_msg = labels.signing_input(labels.SIG_SIGNED_PREKEY, bundle.signed_prekey.signed_body())
    kem_sig = bundle.kem_prekey.signature
    kem_msg = labels.signing_input(labels.SIG_KEM_PREKEY, bundle.kem_prekey.signed_body())
    kem_public = bundle.kem_prekey.key.key
    kem_raw = bundle.kem_prekey.key.raw
    kem_private = next(iter(parties.bob_prekeys.kem_one_time.values())).private
    _, kem_ciphertext = kem_public.encapsulate()
    message_keys_info, root_info, pqxdh_info = (
        labels.MESSAGE_KEYS_INFO,
        labels.RATCHET_ROOT_INFO,
        labels.PQXDH_INFO,
    )
    chain_byte = labels.CHAIN_MESSAGE_KEY
    mlkem_from_bytes = mlkem.MLKEM768PublicKey.from_public_bytes
    x25519_from_bytes = x25519.X25519PublicKey.from_public_bytes
    x25519_from_private = x25519.X25519PrivateKey.from_private_bytes
    ed25519_from_bytes = ed25519.Ed25519PublicKey.from_public_bytes

    def hmac_sha256() -> bytes:
        mac = hmac.HMAC(key, sha256)
        mac.update(chain_byte)
        return mac.finalize()

    def hkdf_message_keys() -> bytes:
        return HKDF(algorithm=sha256, length=44, salt=None, info=message_keys_info).derive(ikm)

    def hkdf_root() -> bytes:
        return HKDF(algorithm=sha256, length=96, salt=key, info=root_info).derive(ikm)

    def hkdf_pqxdh() -> bytes:
        return HKDF(algorithm=sha256, length=96, salt=None, info=pqxdh_info).derive(pqxdh_ikm)

    # The decrypts keep `primitives.aead_decrypt`'s shape: constructor, call, InvalidTag caught.
    def aead_decrypt_header() -> bytes | None:
        try:
            return AESGCM(key).decrypt(nonce, enc_header, ad)
        except InvalidTag:
            return None

    def aead_decrypt_header_fail() -> bytes | None:
        try:
            return AESGCM(other_key).decrypt(nonce, enc_header, ad)
        except InvalidTag:
            return None

    def aead_decrypt_body() -> bytes | None:
        try:
            return AESGCM(key).decrypt(nonce, enc_body, body_ad)
        except InvalidTag:
            return None

    def aead_decrypt_session_body() -> bytes | None:
        try:
            return AESGCM(key).decrypt(nonce, enc_session_body, body_ad)
        except InvalidTag:
            return None

    def x25519_keygen() -> bytes:
        return x25519_from_private(seed).public_key().public_bytes_raw()

    fns: dict[str, Callable[[], object]] = {
        "hmac": hmac_sha256,
        "hkdf_message_keys": hkdf_message_keys,
        "hkdf_root": hkdf_root,
        "hkdf_pqxdh": hkdf_pqxdh,
        "aead_encrypt_header": lambda: AESGCM(key).encrypt(nonce, header, ad),
        "aead_decrypt_header": aead_decrypt_header,
        "aead_decrypt_header_fail": aead_decrypt_header_fail,
        "aead_encrypt_body": lambda: AESGCM(key).encrypt(nonce, body, body_ad),
        "aead_decrypt_body": aead_decrypt_body,
        "aead_encrypt_session_body": lambda: AESGCM(key).encrypt(nonce, session_body, body_ad),
        "aead_decrypt_session_body": aead_decrypt_session_body,
        "random_nonce": lambda: system_random(AEAD_NONCE_SIZE),
        "random_seed": lambda: system_random(32),
        "x25519_keygen": x25519_keygen,
        "x25519_dh": lambda: x_private.exchange(x_peer),
        "x25519_load": lambda: x25519_from_bytes(x_raw),
        "ed25519_load": lambda: ed25519_from_bytes(ed_raw),
        "ed25519_sign": lambda: ed_private.sign(spk_msg),
        "ed25519_verify_identity": lambda: ed_public.verify(binding, binding_msg),
        "ed25519_verify_signed_prekey": lambda: ed_public.verify(spk_sig, spk_msg),
        "ed25519_verify_kem_prekey": lambda: ed_public.verify(kem_sig, kem_msg),
        "mlkem_load": lambda: mlkem_from_bytes(kem_raw),
        "mlkem_encapsulate": kem_public.encapsulate,
        "mlkem_decapsulate": lambda: kem_private.decapsulate(kem_ciphertext),
    }
    assert fns.keys() == PRIMITIVE_LABELS.keys()
    return fns


def build_scenarios(
    random: RandomSource = system_random, encapsulate: Encapsulate = system_encapsulate
) -> tuple[Parties, bytes, list[Scenario]]:
    """The scenarios, each already in its steady state; also the parties and the session AD.

    `random` and `encapsulate` are what the protocol calls; the smoke test injects counting ones.
    """
    parties = make_parties(random)
    letter = os.urandom(LETTER_SIZE)
    encrypt, decrypt = ratchet_encrypt, ratchet_decrypt

    # Burst: Alice's chain is established at Bob (HKr set), each message is the next in order.
    a, b = _handshake(parties, random, encapsulate)
    for _ in range(3):
        a, message = encrypt(a, letter, random)
        b, _ = decrypt(b, message, random)
    ad = a.ad
    burst = [a, b]

    def burst_batch(reps: int) -> int:
        a, b = burst
        out = b""
        start = perf_counter_ns()
        for _ in range(reps):
            a, message = encrypt(a, letter, random)
            b, out = decrypt(b, message, random)
        elapsed = perf_counter_ns() - start
        burst[:] = [a, b]
        _check(out, letter)
        return elapsed

    # The burst one side at a time: a sender alone, and a receiver fed ahead of each batch.
    sender = [encrypt(_handshake(parties, random, encapsulate)[0], letter, random)[0]]

    def encrypt_batch(reps: int) -> int:
        a = sender[0]
        start = perf_counter_ns()
        for _ in range(reps):
            a, _ = encrypt(a, letter, random)
        elapsed = perf_counter_ns() - start
        sender[0] = a
        return elapsed

    a, b = _handshake(parties, random, encapsulate)
    a, message = encrypt(a, letter, random)
    b, _ = decrypt(b, message, random)
    receiver = [a, b]
    queue: list[bytes] = []

    def decrypt_prepare(count: int) -> None:
        a = receiver[0]
        queue.clear()
        for _ in range(count):
            a, message = encrypt(a, letter, random)
            queue.append(message)
        queue.reverse()  # popped from the end: in the order sent
        receiver[0] = a

    def decrypt_batch(reps: int) -> int:
        b = receiver[1]
        batch = [queue.pop() for _ in range(reps)]
        out = b""
        start = perf_counter_ns()
        for message in batch:
            b, out = decrypt(b, message, random)
        elapsed = perf_counter_ns() - start
        receiver[1] = b
        _check(out, letter)
        return elapsed

    # Ping-pong: each message answers the last, so each one received is a DH ratchet step.
    s, r = _handshake(parties, random, encapsulate)
    for _ in range(12):
        s, message = encrypt(s, letter, random)
        r, _ = decrypt(r, message, random)
        s, r = r, s
    pingpong = [s, r]

    def pingpong_batch(reps: int) -> int:
        s, r = pingpong
        out = b""
        start = perf_counter_ns()
        for _ in range(reps):
            s, message = encrypt(s, letter, random)
            r, out = decrypt(r, message, random)
            s, r = r, s
        elapsed = perf_counter_ns() - start
        pingpong[:] = [s, r]
        _check(out, letter)
        return elapsed

    # Full handshake, from bytes to ratchet states: Alice parses and verifies Bob's bundle and
    # initiates; Bob parses her initial header and responds (his prekeys are reused each time).
    alice, bob, prekeys = parties.alice, parties.bob, parties.bob_prekeys
    bundle_wire = parties.bundle_wire

    def handshake_batch(reps: int) -> int:
        initiated = responded = None
        start = perf_counter_ns()
        for _ in range(reps):
            bundle = PrekeyBundle.from_bytes(bundle_wire)
            initiated = initiate(alice, "alice", bundle, "bob", random, encapsulate)
            reader = Reader(initiated.header.to_bytes(), "initial header")
            header = InitialHeader.read(reader)
            reader.finish()
            responded = respond(bob, "bob", prekeys, header)
        elapsed = perf_counter_ns() - start
        assert initiated is not None and responded is not None
        if responded.state.nhkr != initiated.state.hks:
            raise AssertionError("the handshake's two sides disagree")
        return elapsed

    # Session level: the burst plus padding, the type byte and the session object.
    bundle = PrekeyBundle.from_bytes(bundle_wire)
    alice_session = start_session(alice, "alice", bundle, "bob", random, encapsulate)
    alice_session, wire = session_encrypt(alice_session, b"hello", random)
    _, bob_session, _ = accept_session(bob, "bob", prekeys, wire, random)
    bob_session, wire = session_encrypt(bob_session, b"hello", random)
    alice_session, _ = session_decrypt(alice_session, wire, random)
    for _ in range(3):
        alice_session, wire = session_encrypt(alice_session, letter, random)
        bob_session, _ = session_decrypt(bob_session, wire, random)
    sessions = [alice_session, bob_session]

    def session_batch(reps: int) -> int:
        sa, sb = sessions
        out = b""
        start = perf_counter_ns()
        for _ in range(reps):
            sa, wire = session_encrypt(sa, letter, random)
            sb, out = session_decrypt(sb, wire, random)
        elapsed = perf_counter_ns() - start
        sessions[:] = [sa, sb]
        _check(out, letter)
        return elapsed

    scenarios = [
        Scenario(
            Item("burst", "ratchet burst: encrypt + decrypt, 512 B", burst_batch),
            BURST_ENCRYPT + BURST_DECRYPT,
        ),
        Scenario(Item("burst_encrypt", "- of which encrypt", encrypt_batch), BURST_ENCRYPT),
        Scenario(
            Item("burst_decrypt", "- of which decrypt", decrypt_batch, decrypt_prepare),
            BURST_DECRYPT,
        ),
        Scenario(
            Item("ping_pong", "ratchet ping-pong: encrypt + DH step + decrypt", pingpong_batch),
            PING_PONG_TURN,
        ),
        Scenario(Item("handshake", "full PQXDH handshake, both sides", handshake_batch), HANDSHAKE),
        Scenario(
            Item(
                "session_burst",
                "(supplementary) session burst: pad, encrypt, decrypt, unpad",
                session_batch,
            ),
            SESSION_BURST,
        ),
    ]
    return parties, ad, scenarios


def _check(out: bytes, expected: bytes) -> None:
    if out != expected:
        raise AssertionError("a benchmark message did not round-trip")


# --- running ---------------------------------------------------------------------------------


def _timed(item: Item, reps: int) -> int:
    """One batch of `reps` units, after one untimed unit of the same item to warm it up."""
    if item.prepare is not None:
        item.prepare(reps + 1)
    gc.disable()
    try:
        item.batch(1)
        return item.batch(reps)
    finally:
        gc.enable()


def _calibrate(item: Item, target_ns: int) -> None:
    reps = 1
    while True:
        elapsed = _timed(item, reps)
        if elapsed >= target_ns or reps >= MAX_REPS:
            break
        per_rep = max(elapsed / reps, 1.0)
        reps = min(MAX_REPS, max(2 * reps, int(1.1 * target_ns / per_rep) + 1))
    item.reps = reps


@dataclass(frozen=True, slots=True)
class PrimitiveFigure:
    key: str
    label: str
    ns: float


@dataclass(frozen=True, slots=True)
class ScenarioFigure:
    key: str
    label: str
    measured_ns: float
    primitives_ns: float
    """The sum of the recipe's primitives, each timed alone: the goal's yardstick."""
    ratio: float
    """Median over rounds of that round's measured time / that round's sum of primitives."""
    ratio_spread: tuple[float, float]
    """The per-round ratios' first and third quartiles: how much the machine's load moved it."""
    back_to_back_ns: float
    """The recipe's primitive calls run back to back in order, with no protocol code."""
    back_to_back_ratio: float
    """Median over rounds of measured / back to back, paired by round as `ratio`."""
    calls: Calls

    @property
    def passed(self) -> bool:
        return self.ratio <= GOAL

    @property
    def ratio_of_medians(self) -> float:
        """measured / sum from the median columns; load swings set it apart from `ratio`."""
        return self.measured_ns / self.primitives_ns


@dataclass(frozen=True, slots=True)
class Report:
    primitives: list[PrimitiveFigure]
    scenarios: list[ScenarioFigure]
    loop_ns: float
    rounds: int
    batch_ms: float

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "python -m backchannel.bench",
            "environment": environment(),
            "rounds": self.rounds,
            "batch_ms": self.batch_ms,
            "loop_overhead_ns": round(self.loop_ns, 1),
            "goal_ratio": GOAL,
            "primitives": [
                {"key": p.key, "label": p.label, "ns": round(p.ns, 1)} for p in self.primitives
            ],
            "scenarios": [
                {
                    "key": s.key,
                    "label": s.label,
                    "measured_ns": round(s.measured_ns, 1),
                    "primitives_ns": round(s.primitives_ns, 1),
                    "ratio": round(s.ratio, 3),
                    "ratio_quartiles": [round(q, 3) for q in s.ratio_spread],
                    "ratio_of_medians": round(s.ratio_of_medians, 3),
                    "passed": s.passed,
                    "back_to_back_ns": round(s.back_to_back_ns, 1),
                    "back_to_back_ratio": round(s.back_to_back_ratio, 3),
                    "recipe": recipe(s.calls),
                    "calls": list(s.calls),
                }
                for s in self.scenarios
            ],
        }


def run(
    rounds: int = DEFAULT_ROUNDS,
    batch_ms: float = DEFAULT_BATCH_MS,
    random: RandomSource = system_random,
    encapsulate: Encapsulate = system_encapsulate,
) -> Report:
    """Measure every primitive and every scenario, interleaved over `rounds` rounds.

    `batch_ms=0` runs each item once per round: the smoke test's setting.
    """
    parties, ad, scenarios = build_scenarios(random, encapsulate)
    fns = build_primitives(parties, ad)
    baseline = Item("loop", "empty loop", _loop(lambda: None))
    primitives = [Item(k, PRIMITIVE_LABELS[k], _loop(fn), calls_per_rep=1) for k, fn in fns.items()]
    for scenario in scenarios:
        scenario.back_to_back = Item(
            f"{scenario.item.key}_back_to_back",
            f"{scenario.item.label}: primitives back to back",
            _sequence(tuple(fns[call] for call in scenario.calls)),
            calls_per_rep=len(scenario.calls),
        )
    items = [baseline, *primitives]
    for scenario in scenarios:
        assert scenario.back_to_back is not None
        items += [scenario.item, scenario.back_to_back]
    target_ns = int(batch_ms * 1_000_000)
    for item in items:
        _calibrate(item, target_ns)
    order = Random(0)  # a fixed seed: the same run plan every time
    for _ in range(rounds):
        gc.collect()
        order.shuffle(items)  # no item always runs just after a heavy one
        for item in items:
            item.samples.append(_timed(item, item.reps) / item.reps)
    loop = baseline.samples

    def per_round(item: Item) -> list[float]:
        """The item's per-unit time in each round, less that round's loop cost per call."""
        return [t - item.calls_per_rep * lt for t, lt in zip(item.samples, loop, strict=True)]

    cost = {p.key: per_round(p) for p in primitives}
    prims = [
        PrimitiveFigure(p.key, p.label, max(statistics.median(cost[p.key]), 0.0))
        for p in primitives
    ]
    figures = []
    for scenario in scenarios:
        assert scenario.back_to_back is not None
        measured = scenario.item.samples
        sums = [sum(cost[call][r] for call in scenario.calls) for r in range(rounds)]
        back_to_back = per_round(scenario.back_to_back)
        ratios = [m / s for m, s in zip(measured, sums, strict=True)]
        figures.append(
            ScenarioFigure(
                scenario.item.key,
                scenario.item.label,
                statistics.median(measured),
                statistics.median(sums),
                statistics.median(ratios),
                _quartiles(ratios),
                statistics.median(back_to_back),
                statistics.median(m / b for m, b in zip(measured, back_to_back, strict=True)),
                scenario.calls,
            )
        )
    return Report(prims, figures, statistics.median(loop), rounds, batch_ms)


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4)
    return q1, q3


def environment() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cryptography": cryptography.__version__,
        "openssl": _openssl_version(),
        "machine": platform.machine(),
        "system": platform.system(),
        "cpus": str(os.cpu_count()),
    }


def _openssl_version() -> str:
    from cryptography.hazmat.backends.openssl.backend import backend

    return str(backend.openssl_version_text())


def _us(ns: float) -> str:
    return f"{ns / 1000:.2f}"


def format_report(report: Report) -> str:
    env = environment()
    lines = [
        "Backchannel benchmark: python -m backchannel.bench",
        f"Python {env['python']} ({env['implementation']}), cryptography {env['cryptography']}, "
        f"{env['openssl']}, {env['system']} {env['machine']}, {env['cpus']} CPUs",
        f"{report.rounds} rounds, each running every item once in a shuffled order; batches of "
        f"~{report.batch_ms:g} ms after one untimed unit; gc off in batches",
        "figures: medians over rounds; ratio (the goal's): median over rounds of that round's "
        "measured / sum, with its quartiles;",
        f"loop cost ({report.loop_ns:.0f} ns per call) subtracted from primitives only",
        "",
        "| primitive | call shape | us/call |",
        "|---|---|---:|",
    ]
    lines += [f"| `{p.key}` | {p.label} | {_us(p.ns)} |" for p in report.primitives]
    lines += [
        "",
        "| scenario (per message, turn or handshake) | measured us | sum of primitives us "
        f"| ratio | quartiles | goal <= {GOAL} | measured / sum of medians "
        "| primitives back to back us | measured / back to back |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for s in report.scenarios:
        verdict = "pass" if s.passed else "FAIL"
        lines.append(
            f"| {s.label} | {_us(s.measured_ns)} | {_us(s.primitives_ns)} | {s.ratio:.2f} "
            f"| {s.ratio_spread[0]:.2f}-{s.ratio_spread[1]:.2f} | {verdict} "
            f"| {s.ratio_of_medians:.2f} | {_us(s.back_to_back_ns)} | {s.back_to_back_ratio:.2f} |"
        )
    lines += ["", "Recipes (primitive calls per unit, in the order the code makes them):"]
    for s in report.scenarios:
        counts = ", ".join(f"{k} x{n}" for k, n in recipe(s.calls).items())
        lines.append(f"- {s.key} ({len(s.calls)} calls): {counts}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backchannel.bench",
        description="Time the protocol's scenarios next to the primitives they call.",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_ROUNDS} rounds of ~{QUICK_BATCH_MS:g} ms batches (a rough look)",
    )
    args = parser.parse_args(argv)
    report = run(QUICK_ROUNDS, QUICK_BATCH_MS) if args.quick else run()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
