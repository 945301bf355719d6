"""Length hiding: Padmé padding with an ISO/IEC 7816-4 terminator.

Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and Communication with
PURBs", PETS 2019) rounds a length L so that at most O(log log L) bits of it remain, for at most
12% overhead. A floor of 256 bytes puts every short message in one size class.
"""

from __future__ import annotations

from .errors import InvalidFieldError

MIN_PADDED_SIZE = 256
TERMINATOR = 0x80


def padme(length: int) -> int:
    """Padmé(L): keep the top floor(log2(E))+1 bits of L's E=floor(log2 L), round the rest up."""
    if length < 2:
        return length
    exponent = length.bit_length() - 1
    significant = exponent.bit_length()
    mask = (1 << (exponent - significant)) - 1
    return (length + mask) & ~mask


def padded_size(length: int) -> int:
    """The size a plaintext of `length` bytes is padded to (the terminator counts)."""
    return padme(max(length + 1, MIN_PADDED_SIZE))


def pad(plaintext: bytes) -> bytes:
    size = padded_size(len(plaintext))
    return plaintext + bytes((TERMINATOR,)) + bytes(size - len(plaintext) - 1)


def unpad(padded: bytes) -> bytes:
    """Strict: the terminator must be present and the size exactly what `pad` would produce."""
    end = len(padded.rstrip(b"\x00"))
    if end == 0 or padded[end - 1] != TERMINATOR:
        raise InvalidFieldError("padding has no terminator")
    plaintext = padded[: end - 1]
    if padded_size(len(plaintext)) != len(padded):
        raise InvalidFieldError("padding is not of the canonical size")
    return plaintext
