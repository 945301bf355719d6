"""Passphrase encryption of local secrets: scrypt (RFC 7914) and AES-256-GCM.

The scrypt parameters and salt are written in the clear at the head of the file and bound into
the AEAD's associated data, so a file says how to open itself and cannot be downgraded silently.
An explicitly unencrypted form exists for `--no-passphrase`; it is marked as such in the header.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from . import labels
from .encoding import Reader, Writer
from .errors import CorruptKeystoreError, DecodeError, WrongPassphraseError
from .primitives import AEAD_NONCE_SIZE, RandomSource, aead_decrypt, aead_encrypt, system_random

MAGIC = b"BCKS"
KEYSTORE_VERSION = 1
SALT_SIZE = 16
KEY_SIZE = 32
MAX_LOG2_N = 20
MAX_R = 16
MAX_P = 4
MAX_MEMORY = 1 << 30
"""scrypt needs 128·r·N bytes: a file asking for more than 1 GiB is refused, not obeyed."""


class Protection(IntEnum):
    NONE = 0
    SCRYPT_AES256GCM = 1


@dataclass(frozen=True, slots=True)
class ScryptParams:
    log2_n: int = 17
    """2^17 with r=8 needs 128 MiB and about half a second: age's order of magnitude."""
    r: int = 8
    p: int = 1

    def check(self) -> None:
        if not (1 <= self.log2_n <= MAX_LOG2_N and 1 <= self.r <= MAX_R and 1 <= self.p <= MAX_P):
            raise CorruptKeystoreError("keystore's scrypt parameters are out of range")
        if 128 * self.r * (1 << self.log2_n) > MAX_MEMORY:
            raise CorruptKeystoreError("keystore's scrypt parameters ask for more than 1 GiB")


def _derive(passphrase: str, salt: bytes, params: ScryptParams) -> bytes:
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    kdf = Scrypt(salt=salt, length=KEY_SIZE, n=1 << params.log2_n, r=params.r, p=params.p)
    return kdf.derive(secret)


def seal(
    plaintext: bytes,
    passphrase: str | None,
    params: ScryptParams = ScryptParams(),
    random: RandomSource = system_random,
) -> bytes:
    """Encrypt `plaintext`; `passphrase=None` writes the explicitly unprotected form."""
    if passphrase is None:
        return bytes(
            Writer().fixed(MAGIC, 4).u8(KEYSTORE_VERSION).u8(Protection.NONE).var32(plaintext)
        )
    params.check()
    salt, nonce = random(SALT_SIZE), random(AEAD_NONCE_SIZE)
    header = bytes(
        Writer()
        .fixed(MAGIC, 4)
        .u8(KEYSTORE_VERSION)
        .u8(Protection.SCRYPT_AES256GCM)
        .u8(params.log2_n)
        .u8(params.r)
        .u8(params.p)
        .fixed(salt, SALT_SIZE)
        .fixed(nonce, AEAD_NONCE_SIZE)
    )
    key = _derive(passphrase, salt, params)
    ciphertext = aead_encrypt(key, nonce, plaintext, labels.KEYSTORE_AD + header)
    return header + bytes(Writer().var32(ciphertext))


def is_protected(data: bytes) -> bool:
    """Whether opening `data` needs a passphrase (so a CLI knows whether to prompt)."""
    return _read_header(data)[1] == Protection.SCRYPT_AES256GCM


def _read_header(data: bytes) -> tuple[Reader, Protection]:
    reader = Reader(data, "keystore")
    try:
        if reader.fixed(4) != MAGIC:
            raise CorruptKeystoreError("not a Backchannel keystore")
        version = reader.u8()
        if version != KEYSTORE_VERSION:
            raise CorruptKeystoreError(f"keystore version {version} is not supported")
        return reader, Protection(reader.u8())
    except CorruptKeystoreError:
        raise
    except ValueError:
        raise CorruptKeystoreError("keystore protection scheme is unknown") from None
    except DecodeError as exc:
        raise CorruptKeystoreError(f"keystore is damaged: {exc}") from exc


def open_sealed(data: bytes, passphrase: str | None) -> bytes:
    """Decrypt a keystore; a wrong passphrase (or any alteration) is `WrongPassphraseError`."""
    reader, protection = _read_header(data)
    try:
        if protection == Protection.NONE:
            stored = reader.var32()
            reader.finish()
            return stored
        params = ScryptParams(reader.u8(), reader.u8(), reader.u8())
        params.check()
        salt, nonce = reader.fixed(SALT_SIZE), reader.fixed(AEAD_NONCE_SIZE)
        header_size = len(data) - reader.remaining()
        ciphertext = reader.var32()
        reader.finish()
    except CorruptKeystoreError:
        raise
    except DecodeError as exc:
        raise CorruptKeystoreError(f"keystore is damaged: {exc}") from exc
    if passphrase is None:
        raise WrongPassphraseError("this keystore is protected by a passphrase")
    key = _derive(passphrase, salt, params)
    plaintext = aead_decrypt(key, nonce, ciphertext, labels.KEYSTORE_AD + data[:header_size])
    if plaintext is None:
        raise WrongPassphraseError("wrong passphrase, or the keystore was altered")
    return plaintext
