"""The benchmark runs, reports every figure, and its recipes are what the code really calls.

Nothing here asserts a speed: figures are measured by `python -m backchannel.bench`, never
checked by tests. What is checked is that each scenario's declared recipe (which primitive
calls, in which order) is exactly what an instrumented run of that scenario observes, so that a
change to the protocol that adds, drops or reorders a primitive call cannot leave the benchmark
comparing against the wrong sum.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backchannel import bench, labels, primitives
from backchannel.keys import (
    DHKeyPair,
    DHPublicKey,
    KEMKeyPair,
    KEMPublicKey,
    SigningKeyPair,
    SigningPublicKey,
)
from backchannel.primitives import system_random

_AEAD_ENCRYPT = {40: "aead_encrypt_header", 512: "aead_encrypt_body"}
_AEAD_ENCRYPT[544] = "aead_encrypt_session_body"
_AEAD_DECRYPT = {56: "aead_decrypt_header", 528: "aead_decrypt_body"}
_AEAD_DECRYPT[560] = "aead_decrypt_session_body"
_HKDF = {
    labels.MESSAGE_KEYS_INFO: "hkdf_message_keys",
    labels.RATCHET_ROOT_INFO: "hkdf_root",
    labels.PQXDH_INFO: "hkdf_pqxdh",
}
_SIGNED = {
    labels.SIG_IDENTITY: "ed25519_verify_identity",
    labels.SIG_SIGNED_PREKEY: "ed25519_verify_signed_prekey",
    labels.SIG_KEM_PREKEY: "ed25519_verify_kem_prekey",
}


class Recorder:
    """Notes each primitive call, by the bench's name for its shape, while switched on."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.on = False

    def add(self, name: str) -> None:
        if self.on:
            self.calls.append(name)

    def observe(self, action: Callable[[], object]) -> tuple[str, ...]:
        self.calls, self.on = [], True
        try:
            action()
        finally:
            self.on = False
        return tuple(self.calls)

    def random(self, size: int) -> bytes:
        self.add({12: "random_nonce", 32: "random_seed"}.get(size, f"random_{size}"))
        return system_random(size)

    def encapsulate(self, public: KEMPublicKey) -> tuple[bytes, bytes]:
        self.add("mlkem_encapsulate")
        return public.key.encapsulate()


def _count_method(
    monkeypatch: pytest.MonkeyPatch, cls: type, name: str, record: Callable[..., None]
) -> None:
    real = getattr(cls, name)

    def counted(self: Any, *args: Any) -> Any:
        record(*args)
        return real(self, *args)

    monkeypatch.setattr(cls, name, counted)


def _count_constructor(
    monkeypatch: pytest.MonkeyPatch, cls: type, name: str, recorder: Recorder, call: str
) -> None:
    real = getattr(cls, name)

    def counted(_cls: type, *args: Any) -> Any:
        recorder.add(call)
        return real(*args)

    monkeypatch.setattr(cls, name, classmethod(counted))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Counts at the last step before pyca: the classes `primitives.py` builds per call, and the
    methods of `keys.py` through which every public-key operation goes."""
    rec = Recorder()
    names = vars(primitives)  # the pyca names primitives.py looks up on each call
    real_aesgcm, real_hkdf, real_hmac = names["AESGCM"], names["HKDF"], names["_hmac"].HMAC
    real_hashes = names["hashes"]

    class CountingAESGCM:
        def __init__(self, key: bytes) -> None:
            self._aead: AESGCM = real_aesgcm(key)

        def encrypt(self, nonce: bytes, data: bytes, ad: bytes) -> bytes:
            rec.add(_AEAD_ENCRYPT.get(len(data), f"aead_encrypt_{len(data)}"))
            return self._aead.encrypt(nonce, data, ad)

        def decrypt(self, nonce: bytes, data: bytes, ad: bytes) -> bytes:
            name = _AEAD_DECRYPT.get(len(data), f"aead_decrypt_{len(data)}")
            try:
                plain = self._aead.decrypt(nonce, data, ad)
            except InvalidTag:
                rec.add(name + "_fail")
                raise
            rec.add(name)
            return plain

    def counting_hkdf(**kwargs: Any) -> Any:
        rec.add(_HKDF.get(kwargs["info"], "hkdf_other"))
        return real_hkdf(**kwargs)

    def counting_hmac(key: bytes, algorithm: Any) -> Any:
        rec.add("hmac")
        return real_hmac(key, algorithm)

    def counting_hash(algorithm: Any) -> Any:
        rec.add(f"hash_{algorithm.name}")
        return real_hashes.Hash(algorithm)

    hashes = SimpleNamespace(Hash=counting_hash, SHA512=real_hashes.SHA512)
    monkeypatch.setattr(primitives, "AESGCM", CountingAESGCM)
    monkeypatch.setattr(primitives, "HKDF", counting_hkdf)
    monkeypatch.setattr(primitives, "_hmac", SimpleNamespace(HMAC=counting_hmac))
    monkeypatch.setattr(primitives, "hashes", hashes)

    def verify(signature: bytes, message: bytes, *_: Any) -> None:
        label = message[len(labels.PREFIX) :].split(b"\x00", 1)[0]
        rec.add(_SIGNED.get(label, "ed25519_verify_other"))

    _count_method(monkeypatch, DHKeyPair, "dh", lambda *_: rec.add("x25519_dh"))
    _count_method(monkeypatch, SigningPublicKey, "verify", verify)
    _count_method(monkeypatch, SigningKeyPair, "sign", lambda *_: rec.add("ed25519_sign"))
    _count_method(monkeypatch, KEMKeyPair, "decapsulate", lambda *_: rec.add("mlkem_decapsulate"))
    _count_constructor(monkeypatch, DHKeyPair, "from_private_bytes", rec, "x25519_keygen")
    _count_constructor(monkeypatch, DHPublicKey, "from_bytes", rec, "x25519_load")
    _count_constructor(monkeypatch, SigningPublicKey, "from_bytes", rec, "ed25519_load")
    _count_constructor(monkeypatch, SigningKeyPair, "from_private_bytes", rec, "ed25519_keygen")
    _count_constructor(monkeypatch, KEMPublicKey, "from_bytes", rec, "mlkem_load")
    _count_constructor(monkeypatch, KEMKeyPair, "from_seed", rec, "mlkem_keygen")
    return rec


def test_every_recipe_names_only_measured_primitives() -> None:
    for calls in (
        bench.BURST_ENCRYPT,
        bench.BURST_DECRYPT,
        bench.PING_PONG_TURN,
        bench.SESSION_BURST,
        bench.HANDSHAKE,
    ):
        assert set(calls) <= set(bench.PRIMITIVE_LABELS)


def test_the_recorder_sees_the_calls_it_is_meant_to_see(recorder: Recorder) -> None:
    """Guard against a blind instrument: a wrapped primitive must be seen when called."""
    pair = DHKeyPair.generate(recorder.random)
    seen = recorder.observe(lambda: primitives.hmac_sha256(bytes(32), b"\x01"))
    assert seen == ("hmac",)
    assert recorder.observe(lambda: pair.dh(pair.public)) == ("x25519_dh",)
    assert recorder.observe(lambda: DHKeyPair.generate(recorder.random)) == (
        "random_seed",
        "x25519_keygen",
    )


def test_each_scenario_makes_exactly_the_calls_its_recipe_declares(recorder: Recorder) -> None:
    _, _, scenarios = bench.build_scenarios(recorder.random, recorder.encapsulate)
    assert [s.item.key for s in scenarios] == [
        "burst",
        "burst_encrypt",
        "burst_decrypt",
        "ping_pong",
        "handshake",
        "session_burst",
    ]
    for scenario in scenarios:
        item = scenario.item
        for _ in range(2):  # ping-pong alternates direction: check both
            if item.prepare is not None:
                item.prepare(1)
            observed = recorder.observe(lambda: item.batch(1))  # noqa: B023
            assert observed == scenario.calls, item.key


def test_a_tiny_run_reports_every_primitive_and_scenario_with_positive_figures() -> None:
    report = bench.run(rounds=1, batch_ms=0.05)
    assert [p.key for p in report.primitives] == list(bench.PRIMITIVE_LABELS)
    assert all(p.ns > 0 for p in report.primitives)
    assert {s.key for s in report.scenarios} == {
        "burst",
        "burst_encrypt",
        "burst_decrypt",
        "ping_pong",
        "handshake",
        "session_burst",
    }
    for s in report.scenarios:
        assert s.measured_ns > 0 and s.primitives_ns > 0 and s.back_to_back_ns > 0
        assert s.ratio > 0 and s.back_to_back_ratio > 0
    text = bench.format_report(report)
    assert all(s.label in text for s in report.scenarios)
    assert all(f"`{p.key}`" in text for p in report.primitives)


def test_main_quick_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench, "QUICK_ROUNDS", 1)
    monkeypatch.setattr(bench, "QUICK_BATCH_MS", 0.05)
    assert bench.main(["--quick", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rounds"] == 1
    assert [p["key"] for p in data["primitives"]] == list(bench.PRIMITIVE_LABELS)
    for scenario in data["scenarios"]:
        assert sum(scenario["recipe"].values()) == len(scenario["calls"])
        assert scenario["measured_ns"] > 0 and scenario["primitives_ns"] > 0
