"""Identities: fingerprints, safety numbers, the binding signature and public-key validation."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from backchannel.errors import DecodeError, IdentitySignatureError, InvalidPublicKeyError
from backchannel.identity import (
    IDENTITY_PUBLIC_SIZE,
    IdentityKeyPair,
    IdentityPublic,
    fingerprint,
    format_fingerprint,
    format_safety_number,
    safety_number,
)
from backchannel.keys import DHKeyPair, DHPublicKey, SigningPublicKey

from ._support import flip

P = 2**255 - 19
ED_D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

X25519_SMALL_ORDER_HEX = [
    "00" * 32,
    "01" + "00" * 31,
    (P - 1).to_bytes(32, "little").hex(),
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
]

ED25519_ORDER_8_Y = [
    2707385501144840649318225287225658788936804267575313519463743609750303402022,
    55188659117513257062467267217118295137698188065244968500265048394206261417927,
]
ED25519_SMALL_ORDER_Y = [0, 1, P - 1, *ED25519_ORDER_8_Y]


# --- a tiny reference implementation of edwards25519, to check the blocklist independently ---


def _ed_x(y: int, sign: int) -> int | None:
    """The x with this y and sign bit, or None when y is not on the curve (RFC 8032 §5.1.3)."""
    u, v = (y * y - 1) % P, (ED_D * y * y + 1) % P
    x2 = u * pow(v, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if x == 0 and sign:
        return None
    return P - x if x & 1 != sign else x


def _ed_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = ED_D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P
    return x3, y3


def _ed_times_8(point: tuple[int, int]) -> tuple[int, int]:
    for _ in range(3):
        point = _ed_add(point, point)
    return point


def _ed_encode(y: int, sign: int) -> bytes:
    return (y | (sign << 255)).to_bytes(32, "little")


# --- fingerprints and safety numbers ----------------------------------------------------------


@pytest.fixture(scope="module")
def alice() -> IdentityKeyPair:
    return IdentityKeyPair.generate()


@pytest.fixture(scope="module")
def bob() -> IdentityKeyPair:
    return IdentityKeyPair.generate()


def test_fingerprint_is_32_bytes_and_stable_across_encoding(alice: IdentityKeyPair) -> None:
    reparsed = IdentityPublic.from_bytes(alice.public.to_bytes())
    assert len(fingerprint(alice.public)) == 32
    assert fingerprint(reparsed) == fingerprint(alice.public) == alice.public.fingerprint()


def test_fingerprint_is_a_function_of_the_private_key(alice: IdentityKeyPair) -> None:
    again = IdentityKeyPair.from_private_bytes(alice.private_bytes())
    assert fingerprint(again.public) == fingerprint(alice.public)


def test_fingerprints_of_distinct_identities_differ(
    alice: IdentityKeyPair, bob: IdentityKeyPair
) -> None:
    assert fingerprint(alice.public) != fingerprint(bob.public)


def test_fingerprint_is_shown_as_groups_of_four_hex_digits() -> None:
    text = format_fingerprint(bytes(range(32)))
    assert text.split(" ")[:3] == ["0001", "0203", "0405"]
    assert len(text.split(" ")) == 16


def test_safety_number_is_the_same_whichever_side_computes_it(
    alice: IdentityKeyPair, bob: IdentityKeyPair
) -> None:
    ours = safety_number(alice.public, "alice", bob.public, "bob")
    theirs = safety_number(bob.public, "bob", alice.public, "alice")
    assert ours == theirs


def test_safety_number_is_sixty_decimal_digits(
    alice: IdentityKeyPair, bob: IdentityKeyPair
) -> None:
    number = safety_number(alice.public, "alice", bob.public, "bob")
    assert len(number) == 60
    assert number.isdigit() and number.isascii()


def test_safety_number_changes_when_either_key_changes(
    alice: IdentityKeyPair, bob: IdentityKeyPair
) -> None:
    mallory = IdentityKeyPair.generate()
    original = safety_number(alice.public, "alice", bob.public, "bob")
    assert safety_number(mallory.public, "alice", bob.public, "bob") != original
    assert safety_number(alice.public, "alice", mallory.public, "bob") != original


def test_safety_number_changes_when_either_name_changes(
    alice: IdentityKeyPair, bob: IdentityKeyPair
) -> None:
    original = safety_number(alice.public, "alice", bob.public, "bob")
    assert safety_number(alice.public, "alicia", bob.public, "bob") != original
    assert safety_number(alice.public, "alice", bob.public, "robert") != original


def test_safety_number_is_shown_as_twelve_groups_of_five() -> None:
    shown = format_safety_number("0123456789" * 6)
    assert shown.split(" ") == ["01234", "56789"] * 6


# --- the identity encoding and its binding signature -----------------------------------------


def test_identity_public_round_trips_through_its_encoding(alice: IdentityKeyPair) -> None:
    encoded = alice.public.to_bytes()
    assert len(encoded) == IDENTITY_PUBLIC_SIZE
    assert IdentityPublic.from_bytes(encoded) == alice.public


def test_identity_private_key_round_trips(alice: IdentityKeyPair) -> None:
    again = IdentityKeyPair.from_private_bytes(alice.private_bytes())
    assert again.public.to_bytes() == alice.public.to_bytes()


@pytest.mark.parametrize("offset", [0, 1, 31, 32, 63])
def test_tampered_binding_signature_is_refused(alice: IdentityKeyPair, offset: int) -> None:
    encoded = flip(alice.public.to_bytes(), 64 + offset)
    with pytest.raises(IdentitySignatureError):
        IdentityPublic.from_bytes(encoded)


def test_binding_does_not_cover_another_dh_key(
    alice: IdentityKeyPair, bob: IdentityKeyPair
) -> None:
    """Alice's signing key and binding with Bob's X25519 key: the binding names another key."""
    spliced = alice.public.signing.raw + bob.public.dh.raw + alice.public.binding
    with pytest.raises(IdentitySignatureError):
        IdentityPublic.from_bytes(spliced)


def test_identity_with_trailing_bytes_is_refused(alice: IdentityKeyPair) -> None:
    with pytest.raises(DecodeError):
        IdentityPublic.from_bytes(alice.public.to_bytes() + b"\x00")


def test_truncated_identity_is_refused(alice: IdentityKeyPair) -> None:
    with pytest.raises(DecodeError):
        IdentityPublic.from_bytes(alice.public.to_bytes()[:-1])


# --- Ed25519 public keys ------------------------------------------------------------------------


def test_reference_decoder_agrees_with_a_real_ed25519_key(alice: IdentityKeyPair) -> None:
    """Sanity check of the helper used below: a genuine key decodes to a point of large order."""
    raw = int.from_bytes(alice.public.signing.raw, "little")
    x = _ed_x(raw & ((1 << 255) - 1), raw >> 255)
    assert x is not None
    assert _ed_times_8((x, raw & ((1 << 255) - 1))) != (0, 1)


def test_blocklisted_ed25519_y_values_are_exactly_the_eight_small_order_points() -> None:
    points = {
        (x, y)
        for y in ED25519_SMALL_ORDER_Y
        for sign in (0, 1)
        if (x := _ed_x(y, sign)) is not None
    }
    assert len(points) == 8  # the whole torsion subgroup: edwards25519 has cofactor 8
    assert all(_ed_times_8(point) == (0, 1) for point in points)


@pytest.mark.parametrize("y", ED25519_SMALL_ORDER_Y)
@pytest.mark.parametrize("sign", [0, 1])
def test_small_order_ed25519_keys_are_refused(y: int, sign: int) -> None:
    with pytest.raises(InvalidPublicKeyError):
        SigningPublicKey.from_bytes(_ed_encode(y, sign))


def test_ed25519_identity_point_is_refused() -> None:
    with pytest.raises(InvalidPublicKeyError):
        SigningPublicKey.from_bytes(bytes.fromhex("01" + "00" * 31))


@pytest.mark.parametrize("y", [P, P + 1, P + 2, 2**255 - 1])
def test_non_canonical_ed25519_y_is_refused(y: int) -> None:
    with pytest.raises(InvalidPublicKeyError):
        SigningPublicKey.from_bytes(y.to_bytes(32, "little"))


def test_ed25519_encoding_that_is_not_a_curve_point_is_refused() -> None:
    """PROTOCOL.md §2.3: "the encoding must decode to a curve point"; y = 2 has no x."""
    assert _ed_x(2, 0) is None
    with pytest.raises(InvalidPublicKeyError):
        SigningPublicKey.from_bytes((2).to_bytes(32, "little"))


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_ed25519_key_of_wrong_length_is_refused(size: int) -> None:
    with pytest.raises(InvalidPublicKeyError):
        SigningPublicKey.from_bytes(b"\x09" * size)


def test_identity_with_small_order_signing_key_is_refused(alice: IdentityKeyPair) -> None:
    encoded = _ed_encode(1, 0) + alice.public.to_bytes()[32:]
    with pytest.raises(InvalidPublicKeyError):
        IdentityPublic.from_bytes(encoded)


# --- X25519 public keys -------------------------------------------------------------------------


def test_blocklisted_x25519_hex_values_are_the_documented_u_coordinates() -> None:
    documented = {
        0,
        1,
        P - 1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }
    assert {int.from_bytes(bytes.fromhex(h), "little") for h in X25519_SMALL_ORDER_HEX} == (
        documented
    )


@pytest.mark.parametrize("u_hex", X25519_SMALL_ORDER_HEX)
def test_pyca_x25519_with_small_order_point_yields_no_secret(u_hex: str) -> None:
    """Proves the blocklist is right: pyca refuses each as giving the all-zero shared secret."""
    peer = x25519.X25519PublicKey.from_public_bytes(bytes.fromhex(u_hex))
    with pytest.raises(ValueError):
        x25519.X25519PrivateKey.generate().exchange(peer)


@pytest.mark.parametrize("u_hex", X25519_SMALL_ORDER_HEX)
def test_small_order_x25519_keys_are_refused(u_hex: str) -> None:
    with pytest.raises(InvalidPublicKeyError):
        DHPublicKey.from_bytes(bytes.fromhex(u_hex))


@pytest.mark.parametrize("u", [P, P + 1, 2**255 - 1])
def test_non_canonical_x25519_u_is_refused(u: int) -> None:
    with pytest.raises(InvalidPublicKeyError):
        DHPublicKey.from_bytes(u.to_bytes(32, "little"))


def test_x25519_key_with_top_bit_set_is_refused() -> None:
    raw = bytearray(DHKeyPair.generate().public.raw)
    raw[31] |= 0x80
    with pytest.raises(InvalidPublicKeyError):
        DHPublicKey.from_bytes(bytes(raw))


@pytest.mark.parametrize("size", [0, 31, 33])
def test_x25519_key_of_wrong_length_is_refused(size: int) -> None:
    with pytest.raises(InvalidPublicKeyError):
        DHPublicKey.from_bytes(b"\x09" * size)


def test_genuine_x25519_key_is_accepted() -> None:
    pair = DHKeyPair.generate()
    assert DHPublicKey.from_bytes(pair.public.raw) == pair.public


def test_dh_with_small_order_key_that_bypassed_parsing_is_refused() -> None:
    """Defence in depth: even a key built without `from_bytes` cannot give a zero secret."""
    raw = bytes.fromhex(X25519_SMALL_ORDER_HEX[3])
    sneaked = DHPublicKey(raw, x25519.X25519PublicKey.from_public_bytes(raw))
    with pytest.raises(InvalidPublicKeyError):
        DHKeyPair.generate().dh(sneaked)


def test_identity_with_small_order_dh_key_is_refused(alice: IdentityKeyPair) -> None:
    public = alice.public.to_bytes()
    encoded = public[:32] + bytes(32) + public[64:]
    with pytest.raises(InvalidPublicKeyError):
        IdentityPublic.from_bytes(encoded)
