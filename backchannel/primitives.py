"""Thin, named wrappers over the pyca/cryptography primitives the protocol composes.

Nothing here is a new primitive: each function is one call into pyca/cryptography with the
parameters PROTOCOL.md fixes. Keeping them in one module means the benchmark can measure exactly
the calls the protocol makes, and a reader can see every primitive the protocol depends on.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

RandomSource = Callable[[int], bytes]
"""Returns n uniformly random bytes. Injected everywhere so test vectors can fix it."""

system_random: RandomSource = os.urandom

_SHA256 = hashes.SHA256()
ZERO_SALT = bytes(32)
AEAD_NONCE_SIZE = 12
AEAD_TAG_SIZE = 16


def hkdf_sha256(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869). A `None` salt is HashLen zero bytes, as the RFC specifies."""
    return HKDF(algorithm=_SHA256, length=length, salt=salt, info=info).derive(ikm)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    mac = _hmac.HMAC(key, _SHA256)
    mac.update(data)
    return mac.finalize()


def hmac_sha256_verify(key: bytes, data: bytes, tag: bytes) -> bool:
    """Constant-time check of an HMAC-SHA256 tag."""
    mac = _hmac.HMAC(key, _SHA256)
    mac.update(data)
    try:
        mac.verify(tag)
    except Exception:
        return False
    return True


def sha256(data: bytes) -> bytes:
    digest = hashes.Hash(_SHA256)
    digest.update(data)
    return digest.finalize()


def sha512(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA512())
    digest.update(data)
    return digest.finalize()


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-256-GCM; returns ciphertext with the 16-byte tag appended."""
    return AESGCM(key).encrypt(nonce, plaintext, associated_data)


def aead_decrypt(
    key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes
) -> bytes | None:
    """AES-256-GCM; `None` when the tag does not verify (the caller raises its own error)."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, associated_data)
    except InvalidTag:
        return None


def aes256_ctr(key: bytes, counter_block: bytes, data: bytes) -> bytes:
    """AES-256 in counter mode: a malleable stream cipher, on purpose (off-the-record channels
    authenticate separately with HMAC, as OTR does, so a transcript can be forged)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    encryptor = Cipher(algorithms.AES(key), modes.CTR(counter_block)).encryptor()
    return encryptor.update(data) + encryptor.finalize()
