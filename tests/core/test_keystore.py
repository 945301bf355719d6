"""The keystore: scrypt and AES-256-GCM around local secrets (PROTOCOL.md §11)."""

from __future__ import annotations

import unicodedata

import pytest

from backchannel import keystore
from backchannel.errors import CorruptKeystoreError, KeystoreError, WrongPassphraseError
from backchannel.keystore import ScryptParams, is_protected, open_sealed, seal

FAST = ScryptParams(log2_n=10)
SECRET = b"identity private key and prekeys"
PASSPHRASE = "correct horse battery staple"
# magic, version, protection, log2_n, r, p, salt, nonce
PARAMS_AT = 4 + 1 + 1
HEADER_SIZE = PARAMS_AT + 3 + keystore.SALT_SIZE + 12


@pytest.fixture(scope="module")
def sealed() -> bytes:
    return seal(SECRET, PASSPHRASE, FAST)


def test_sealed_keystore_opens_with_its_passphrase(sealed: bytes) -> None:
    assert open_sealed(sealed, PASSPHRASE) == SECRET


def test_sealed_keystore_does_not_contain_the_plaintext(sealed: bytes) -> None:
    assert SECRET not in sealed
    assert sealed.startswith(keystore.MAGIC)


def test_each_seal_uses_a_fresh_salt_and_nonce() -> None:
    assert seal(SECRET, PASSPHRASE, FAST) != seal(SECRET, PASSPHRASE, FAST)


def test_wrong_passphrase_is_refused(sealed: bytes) -> None:
    with pytest.raises(WrongPassphraseError):
        open_sealed(sealed, PASSPHRASE + "!")


def test_protected_keystore_without_a_passphrase_is_refused(sealed: bytes) -> None:
    with pytest.raises(WrongPassphraseError):
        open_sealed(sealed, None)


def test_every_flipped_byte_is_refused(sealed: bytes) -> None:
    for index in range(len(sealed)):
        for mask in (0x01, 0x80):
            tampered = bytearray(sealed)
            tampered[index] ^= mask
            with pytest.raises((WrongPassphraseError, CorruptKeystoreError)):
                open_sealed(bytes(tampered), PASSPHRASE)


def test_flipped_ciphertext_byte_is_a_wrong_passphrase(sealed: bytes) -> None:
    """A file that parses but does not authenticate cannot be told apart from a wrong passphrase."""
    tampered = bytearray(sealed)
    tampered[-1] ^= 0x01
    with pytest.raises(WrongPassphraseError):
        open_sealed(bytes(tampered), PASSPHRASE)


def test_flipped_salt_byte_is_a_wrong_passphrase(sealed: bytes) -> None:
    tampered = bytearray(sealed)
    tampered[PARAMS_AT + 3] ^= 0x01
    with pytest.raises(WrongPassphraseError):
        open_sealed(bytes(tampered), PASSPHRASE)


def test_every_truncation_is_corrupt(sealed: bytes) -> None:
    for size in range(len(sealed)):
        with pytest.raises(CorruptKeystoreError):
            open_sealed(sealed[:size], PASSPHRASE)


def test_trailing_bytes_are_corrupt(sealed: bytes) -> None:
    with pytest.raises(CorruptKeystoreError):
        open_sealed(sealed + b"\x00", PASSPHRASE)


def test_wrong_magic_is_corrupt(sealed: bytes) -> None:
    with pytest.raises(CorruptKeystoreError):
        open_sealed(b"XXXX" + sealed[4:], PASSPHRASE)


@pytest.mark.parametrize(("offset", "value"), [(4, 0), (4, 2), (5, 2), (5, 255)])
def test_unknown_version_or_protection_is_corrupt(sealed: bytes, offset: int, value: int) -> None:
    tampered = bytearray(sealed)
    tampered[offset] = value
    with pytest.raises(CorruptKeystoreError):
        open_sealed(bytes(tampered), PASSPHRASE)


@pytest.mark.parametrize(
    ("log2_n", "r", "p"),
    [
        (0, 8, 1),
        (keystore.MAX_LOG2_N + 1, 8, 1),
        (255, 8, 1),
        (10, 0, 1),
        (10, keystore.MAX_R + 1, 1),
        (10, 8, 0),
        (10, 8, keystore.MAX_P + 1),
    ],
)
def test_out_of_range_scrypt_parameters_in_a_file_are_corrupt(
    sealed: bytes, log2_n: int, r: int, p: int
) -> None:
    tampered = sealed[:PARAMS_AT] + bytes([log2_n, r, p]) + sealed[PARAMS_AT + 3 :]
    with pytest.raises(CorruptKeystoreError):
        open_sealed(tampered, PASSPHRASE)


def test_out_of_range_scrypt_parameters_are_refused_when_sealing() -> None:
    with pytest.raises(KeystoreError):
        seal(SECRET, PASSPHRASE, ScryptParams(log2_n=keystore.MAX_LOG2_N + 1))


def test_unprotected_keystore_opens_without_a_passphrase() -> None:
    unprotected = seal(SECRET, None)
    assert open_sealed(unprotected, None) == SECRET


def test_is_protected_tells_the_two_forms_apart(sealed: bytes) -> None:
    assert is_protected(sealed)
    assert not is_protected(seal(SECRET, None))


def test_is_protected_refuses_a_file_that_is_not_a_keystore() -> None:
    with pytest.raises(CorruptKeystoreError):
        is_protected(b"not a keystore")


def test_every_truncation_of_an_unprotected_keystore_is_corrupt() -> None:
    unprotected = seal(SECRET, None)
    for size in range(len(unprotected)):
        with pytest.raises(CorruptKeystoreError):
            open_sealed(unprotected[:size], None)


def test_nfc_and_nfd_forms_of_a_passphrase_open_the_same_keystore() -> None:
    composed = unicodedata.normalize("NFC", "Ångström café")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    for sealing, opening in ((composed, decomposed), (decomposed, composed)):
        assert open_sealed(seal(SECRET, sealing, FAST), opening) == SECRET


def test_empty_plaintext_round_trips() -> None:
    assert open_sealed(seal(b"", PASSPHRASE, FAST), PASSPHRASE) == b""


def test_header_size_matches_the_documented_layout(sealed: bytes) -> None:
    assert len(sealed) == HEADER_SIZE + 4 + len(SECRET) + 16
