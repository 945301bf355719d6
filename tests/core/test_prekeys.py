"""Prekeys: bundle encoding and signatures, and one-time prekeys consumed exactly once."""

from __future__ import annotations

import pytest

from backchannel import labels
from backchannel.errors import (
    BundleSignatureError,
    InvalidFieldError,
    InvalidPublicKeyError,
    PrekeyReusedError,
    RemoteProtocolError,
    TrailingBytesError,
    UnknownPrekeyError,
    UnknownVersionError,
)
from backchannel.keys import KEM_PUBLIC_KEY_SIZE, DHKeyPair, DHPublicKey, KEMPublicKey
from backchannel.prekeys import (
    OneTimePrekey,
    PrekeyBundle,
    PrekeySecrets,
    SignedPrekey,
    signed_prekey_body,
)
from backchannel.session import accept_session, session_encrypt, start_session

from ._support import Party, flip, make_party

# Byte offsets inside an encoded bundle (PROTOCOL.md §3).
SIGNED_PREKEY_AT = 1 + 128
SIGNED_PREKEY_SIGNATURE_AT = SIGNED_PREKEY_AT + 4 + 32
ONE_TIME_FLAG_AT = SIGNED_PREKEY_SIGNATURE_AT + 64


@pytest.fixture(scope="module")
def bob() -> Party:
    return make_party("bob")


@pytest.fixture(scope="module")
def carol() -> Party:
    return make_party("carol")


def _first_message(sender: Party, bundle: PrekeyBundle, peer_name: str) -> bytes:
    session = start_session(sender.identity, sender.name, bundle, peer_name)
    return session_encrypt(session, b"first")[1]


# --- bundles ----------------------------------------------------------------------------------


def test_bundle_with_one_time_prekey_round_trips(bob: Party) -> None:
    bundle = bob.bundle()
    assert PrekeyBundle.from_bytes(bundle.to_bytes()) == bundle


def test_bundle_without_one_time_prekey_round_trips(bob: Party) -> None:
    bundle = bob.bundle(one_time=None, kem=None)
    decoded = PrekeyBundle.from_bytes(bundle.to_bytes())
    assert decoded == bundle
    assert decoded.one_time_prekey is None
    assert decoded.kem_prekey.last_resort


@pytest.mark.parametrize("offset", [0, 31, 63])
def test_bundle_with_bad_signed_prekey_signature_is_refused(bob: Party, offset: int) -> None:
    encoded = flip(bob.bundle().to_bytes(), SIGNED_PREKEY_SIGNATURE_AT + offset)
    with pytest.raises(BundleSignatureError):
        PrekeyBundle.from_bytes(encoded)


@pytest.mark.parametrize("offset", [0, 31, 63])
def test_bundle_with_bad_kem_prekey_signature_is_refused(bob: Party, offset: int) -> None:
    encoded = bob.bundle().to_bytes()
    with pytest.raises(BundleSignatureError):
        PrekeyBundle.from_bytes(flip(encoded, len(encoded) - 64 + offset))


def test_bundle_with_signed_prekey_id_changed_is_refused(bob: Party) -> None:
    encoded = flip(bob.bundle().to_bytes(), SIGNED_PREKEY_AT + 3)
    with pytest.raises(BundleSignatureError):
        PrekeyBundle.from_bytes(encoded)


def test_bundle_with_kem_last_resort_flag_flipped_is_refused(bob: Party) -> None:
    encoded = bob.bundle().to_bytes()
    flag_at = len(encoded) - 64 - KEM_PUBLIC_KEY_SIZE - 1
    with pytest.raises(BundleSignatureError):
        PrekeyBundle.from_bytes(flip(encoded, flag_at))


def test_bundle_swapping_in_another_identitys_signed_prekey_is_refused(
    bob: Party, carol: Party
) -> None:
    forged = PrekeyBundle(bob.identity.public, carol.signed, bob.one_time[0], bob.kem[0])
    with pytest.raises(BundleSignatureError):
        PrekeyBundle.from_bytes(forged.to_bytes())


def test_bundle_swapping_in_another_identitys_kem_prekey_is_refused(
    bob: Party, carol: Party
) -> None:
    forged = PrekeyBundle(bob.identity.public, bob.signed, bob.one_time[0], carol.kem[0])
    with pytest.raises(BundleSignatureError):
        PrekeyBundle.from_bytes(forged.to_bytes())


def test_initiator_refuses_a_forged_bundle_object(bob: Party, carol: Party) -> None:
    """`start_session` verifies the bundle itself, even one that never went through bytes."""
    alice = make_party("alice", one_time=1, kem=1, last_resort=False)
    forged = PrekeyBundle(bob.identity.public, carol.signed, None, bob.kem[0])
    with pytest.raises(BundleSignatureError):
        start_session(alice.identity, "alice", forged, "bob")


def test_signature_made_for_a_kem_prekey_does_not_sign_a_signed_prekey(bob: Party) -> None:
    pair = DHKeyPair.generate()
    body = signed_prekey_body(7, pair.public.raw)
    wrong_label = bob.identity.sign(labels.SIG_KEM_PREKEY, body)
    with pytest.raises(BundleSignatureError):
        SignedPrekey(7, pair.public, wrong_label).verify(bob.identity.public)


def test_x25519_key_is_refused_where_the_ml_kem_key_belongs() -> None:
    dh = DHKeyPair.from_private_bytes(bytes(range(32))).public.raw
    with pytest.raises(InvalidPublicKeyError):
        KEMPublicKey.from_bytes(dh)


def test_x25519_key_stretched_to_ml_kem_length_is_refused() -> None:
    """Fixed key: its 37 repetitions fill 1,184 bytes but fail FIPS 203's modulus check."""
    dh = DHKeyPair.from_private_bytes(bytes(range(32))).public.raw
    assert len(dh * 37) == KEM_PUBLIC_KEY_SIZE
    with pytest.raises(InvalidPublicKeyError):
        KEMPublicKey.from_bytes(dh * 37)


def test_ml_kem_key_is_refused_where_an_x25519_key_belongs(bob: Party) -> None:
    with pytest.raises(InvalidPublicKeyError):
        DHPublicKey.from_bytes(bob.kem[0].key.raw)


def test_bundle_of_unknown_version_is_refused(bob: Party) -> None:
    encoded = bob.bundle().to_bytes()
    with pytest.raises(UnknownVersionError):
        PrekeyBundle.from_bytes(b"\x02" + encoded[1:])


def test_bundle_with_trailing_bytes_is_refused(bob: Party) -> None:
    with pytest.raises(TrailingBytesError):
        PrekeyBundle.from_bytes(bob.bundle().to_bytes() + b"\x00")


def test_bundle_one_time_presence_byte_other_than_0_or_1_is_invalid_field(bob: Party) -> None:
    """PROTOCOL.md §1: a presence byte other than 0/1 is `invalid_field`."""
    encoded = bytearray(bob.bundle().to_bytes())
    assert encoded[ONE_TIME_FLAG_AT] == 1
    encoded[ONE_TIME_FLAG_AT] = 2
    with pytest.raises(InvalidFieldError):
        PrekeyBundle.from_bytes(bytes(encoded))


def test_kem_last_resort_flag_other_than_0_or_1_is_refused(bob: Party) -> None:
    encoded = bytearray(bob.bundle().to_bytes())
    encoded[len(encoded) - 64 - KEM_PUBLIC_KEY_SIZE - 1] = 2
    with pytest.raises(RemoteProtocolError):
        PrekeyBundle.from_bytes(bytes(encoded))


# --- issuing ------------------------------------------------------------------------------------


def test_prekey_ids_grow_across_issues(bob: Party) -> None:
    secrets, more = bob.prekeys.add_one_time_prekeys(2)
    assert [p.id for p in bob.one_time] == [1, 2, 3]
    assert [p.id for p in more] == [4, 5]
    assert secrets.next_one_time_id == 6


def test_kem_prekeys_are_signed_with_their_last_resort_flag(bob: Party) -> None:
    assert bob.last_resort is not None and bob.last_resort.last_resort
    for prekey in [*bob.kem, bob.last_resort]:
        prekey.verify(bob.identity.public)
    assert not any(p.last_resort for p in bob.kem)


@pytest.mark.parametrize("count", [0, 101])
def test_one_upload_issues_1_to_100_prekeys(bob: Party, count: int) -> None:
    with pytest.raises(ValueError):
        bob.prekeys.add_one_time_prekeys(count)


def test_retiring_signed_prekeys_keeps_the_newest(bob: Party) -> None:
    secrets, _ = bob.prekeys.add_signed_prekey(bob.identity)
    secrets, newest = secrets.add_signed_prekey(bob.identity)
    retired = secrets.retire_signed_prekeys(keep=1)
    assert list(retired.signed) == [newest.id]
    with pytest.raises(UnknownPrekeyError):
        retired.take(bob.signed.id, None, bob.kem[0].id)


# --- consuming ----------------------------------------------------------------------------------


def test_take_hands_out_the_private_halves_of_the_named_prekeys(bob: Party) -> None:
    _, used = bob.prekeys.take(bob.signed.id, bob.one_time[1].id, bob.kem[2].id)
    assert used.signed.public == bob.signed.key
    assert used.one_time is not None and used.one_time.public == bob.one_time[1].key
    assert used.kem.public == bob.kem[2].key


def test_take_removes_the_one_time_prekeys_from_the_returned_state(bob: Party) -> None:
    remaining, _ = bob.prekeys.take(bob.signed.id, bob.one_time[0].id, bob.kem[0].id)
    assert bob.one_time[0].id not in remaining.one_time
    assert bob.kem[0].id not in remaining.kem_one_time
    assert bob.signed.id in remaining.signed


def test_take_leaves_its_input_untouched(bob: Party) -> None:
    before = bob.prekeys.to_bytes()
    bob.prekeys.take(bob.signed.id, bob.one_time[0].id, bob.kem[0].id)
    assert bob.prekeys.to_bytes() == before


def test_second_use_of_a_one_time_prekey_is_prekey_reused(bob: Party) -> None:
    remaining, _ = bob.prekeys.take(bob.signed.id, bob.one_time[0].id, bob.last_resort_id)
    with pytest.raises(PrekeyReusedError):
        remaining.take(bob.signed.id, bob.one_time[0].id, bob.last_resort_id)


def test_second_use_of_a_one_time_kem_prekey_is_prekey_reused(bob: Party) -> None:
    remaining, _ = bob.prekeys.take(bob.signed.id, None, bob.kem[0].id)
    with pytest.raises(PrekeyReusedError):
        remaining.take(bob.signed.id, None, bob.kem[0].id)


@pytest.mark.parametrize("prekey_id", [0, 4, 2**32 - 1])
def test_never_issued_one_time_prekey_is_unknown_not_reused(bob: Party, prekey_id: int) -> None:
    with pytest.raises(UnknownPrekeyError) as caught:
        bob.prekeys.take(bob.signed.id, prekey_id, bob.kem[0].id)
    assert not isinstance(caught.value, PrekeyReusedError)


def test_never_issued_kem_prekey_is_unknown_not_reused(bob: Party) -> None:
    with pytest.raises(UnknownPrekeyError) as caught:
        bob.prekeys.take(bob.signed.id, None, 999)
    assert not isinstance(caught.value, PrekeyReusedError)


def test_unknown_signed_prekey_is_refused(bob: Party) -> None:
    with pytest.raises(UnknownPrekeyError):
        bob.prekeys.take(99, None, bob.kem[0].id)


def test_last_resort_kem_prekey_can_be_used_again_and_again(bob: Party) -> None:
    secrets = bob.prekeys
    for _ in range(3):
        secrets, used = secrets.take(bob.signed.id, None, bob.last_resort_id)
        assert bob.last_resort is not None and used.kem.public == bob.last_resort.key
    assert bob.last_resort_id in secrets.kem_last_resort


# --- serialisation ------------------------------------------------------------------------------


def test_prekey_secrets_round_trip_through_bytes(bob: Party) -> None:
    remaining, _ = bob.prekeys.take(bob.signed.id, bob.one_time[1].id, bob.kem[1].id)
    restored = PrekeySecrets.from_bytes(remaining.to_bytes())
    assert restored.to_bytes() == remaining.to_bytes()
    assert (restored.next_one_time_id, restored.next_kem_id) == (4, 5)


def test_restored_prekey_secrets_still_remember_what_was_consumed(bob: Party) -> None:
    remaining, _ = bob.prekeys.take(bob.signed.id, bob.one_time[1].id, bob.kem[1].id)
    restored = PrekeySecrets.from_bytes(remaining.to_bytes())
    with pytest.raises(PrekeyReusedError):
        restored.take(bob.signed.id, bob.one_time[1].id, bob.kem[0].id)
    _, used = restored.take(bob.signed.id, bob.one_time[2].id, bob.kem[2].id)
    assert used.kem.public == bob.kem[2].key


def test_prekey_secrets_of_unknown_version_are_refused(bob: Party) -> None:
    with pytest.raises(UnknownVersionError):
        PrekeySecrets.from_bytes(b"\x09" + bob.prekeys.to_bytes()[1:])


def test_prekey_secrets_with_trailing_bytes_are_refused(bob: Party) -> None:
    with pytest.raises(TrailingBytesError):
        PrekeySecrets.from_bytes(bob.prekeys.to_bytes() + b"\x00")


# --- handshakes and consumption -----------------------------------------------------------------


def test_successful_handshake_consumes_its_one_time_prekeys(bob: Party) -> None:
    alice = make_party("alice", one_time=1, kem=1, last_resort=False)
    message = _first_message(alice, bob.bundle(one_time=2, kem=2), "bob")
    remaining, _, _ = accept_session(bob.identity, "bob", bob.prekeys, message)
    assert bob.one_time[2].id not in remaining.one_time
    assert bob.kem[2].id not in remaining.kem_one_time


def test_failed_handshake_consumes_nothing(bob: Party) -> None:
    alice = make_party("alice", one_time=1, kem=1, last_resort=False)
    message = _first_message(alice, bob.bundle(one_time=0, kem=0), "bob")
    before = bob.prekeys.to_bytes()
    with pytest.raises(RemoteProtocolError):
        accept_session(bob.identity, "bob", bob.prekeys, flip(message, len(message) - 1))
    assert bob.prekeys.to_bytes() == before
    remaining, _, plaintext = accept_session(bob.identity, "bob", bob.prekeys, message)
    assert plaintext == b"first"
    assert bob.one_time[0].id not in remaining.one_time


def test_substituted_one_time_prekey_parses_but_its_handshake_fails(bob: Party) -> None:
    """One-time prekeys are unsigned (X3DH): a forged one survives parsing, not the handshake."""
    alice = make_party("alice", one_time=1, kem=1, last_resort=False)
    impostor = OneTimePrekey(bob.one_time[0].id, DHKeyPair.generate().public)
    forged = PrekeyBundle(bob.identity.public, bob.signed, impostor, bob.kem[0])
    parsed = PrekeyBundle.from_bytes(forged.to_bytes())
    message = _first_message(alice, parsed, "bob")
    with pytest.raises(RemoteProtocolError):
        accept_session(bob.identity, "bob", bob.prekeys, message)
