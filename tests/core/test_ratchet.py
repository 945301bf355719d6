"""The Double Ratchet with header encryption: ordering, replay, tampering, limits, state."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace

import pytest

from backchannel import ratchet
from backchannel.errors import (
    DecodeError,
    DecryptionError,
    DuplicateMessageError,
    StateError,
    TooManySkippedError,
    UnknownVersionError,
)
from backchannel.ratchet import (
    ENCRYPTED_HEADER_SIZE,
    MIN_MESSAGE_SIZE,
    RatchetState,
    ratchet_decrypt,
    ratchet_encrypt,
)

from ._support import flip, ratchet_pair

_counter = itertools.count()


def send(state: RatchetState) -> tuple[RatchetState, bytes, bytes]:
    """Encrypt a fresh, unique plaintext: -> (new state, message, plaintext)."""
    plaintext = f"message {next(_counter)}".encode()
    state, message = ratchet_encrypt(state, plaintext)
    return state, message, plaintext


def send_many(state: RatchetState, count: int) -> tuple[RatchetState, list[tuple[bytes, bytes]]]:
    sent = []
    for _ in range(count):
        state, message, plaintext = send(state)
        sent.append((message, plaintext))
    return state, sent


def receive(state: RatchetState, sent: tuple[bytes, bytes]) -> RatchetState:
    message, expected = sent
    state, plaintext = ratchet_decrypt(state, message)
    assert plaintext == expected
    return state


def round_trip(alice: RatchetState, bob: RatchetState) -> tuple[RatchetState, RatchetState]:
    """Bob answers and Alice answers back: one DH ratchet step on each side."""
    bob, reply, text = send(bob)
    alice = receive(alice, (reply, text))
    alice, answer, text = send(alice)
    bob = receive(bob, (answer, text))
    return alice, bob


def conversation() -> tuple[RatchetState, RatchetState, list[bytes], list[bytes]]:
    """Three DH steps each way with out-of-order delivery: -> (alice, bob, to_alice, to_bob)."""
    alice, bob = ratchet_pair()
    to_alice: list[bytes] = []
    to_bob: list[bytes] = []

    def deliver_to_bob(*items: tuple[bytes, bytes]) -> None:
        nonlocal bob
        for item in items:
            bob = receive(bob, item)
            to_bob.append(item[0])

    def deliver_to_alice(*items: tuple[bytes, bytes]) -> None:
        nonlocal alice
        for item in items:
            alice = receive(alice, item)
            to_alice.append(item[0])

    alice, a = send_many(alice, 3)
    deliver_to_bob(a[2], a[0])
    bob, b = send_many(bob, 3)
    deliver_to_alice(b[1])
    alice, c = send_many(alice, 2)
    deliver_to_bob(c[1], a[1])
    deliver_to_alice(b[2], b[0])
    bob, d = send_many(bob, 2)
    deliver_to_bob(c[0])
    deliver_to_alice(d[0], d[1])
    alice, e = send_many(alice, 2)
    deliver_to_bob(e[1], e[0])
    return alice, bob, to_alice, to_bob


# --- ordinary delivery --------------------------------------------------------------------------


def test_messages_delivered_in_order_decrypt_both_ways() -> None:
    alice, bob = ratchet_pair()
    for _ in range(3):
        alice, sent = send_many(alice, 3)
        for item in sent:
            bob = receive(bob, item)
        bob, sent = send_many(bob, 3)
        for item in sent:
            alice = receive(alice, item)


def test_responder_cannot_send_before_it_has_received() -> None:
    _, bob = ratchet_pair()
    with pytest.raises(StateError):
        ratchet_encrypt(bob, b"too early")


def test_messages_out_of_order_within_a_chain_decrypt() -> None:
    alice, bob = ratchet_pair()
    alice, sent = send_many(alice, 5)
    for index in (3, 0, 4, 1, 2):
        bob = receive(bob, sent[index])
    assert not bob.skipped


def test_messages_out_of_order_across_dh_steps_decrypt() -> None:
    alice, bob = ratchet_pair()
    alice, first_chain = send_many(alice, 3)
    bob = receive(bob, first_chain[0])
    bob, reply, text = send(bob)
    alice = receive(alice, (reply, text))
    alice, second_chain = send_many(alice, 2)
    bob = receive(bob, second_chain[1])  # a DH step; first_chain[1:] and second_chain[0] skipped
    bob = receive(bob, first_chain[2])
    bob = receive(bob, second_chain[0])
    bob = receive(bob, first_chain[1])
    assert not bob.skipped


def test_the_scripted_conversation_leaves_no_skipped_keys() -> None:
    alice, bob, to_alice, to_bob = conversation()
    assert (len(to_alice), len(to_bob)) == (5, 7)
    assert not alice.skipped and not bob.skipped


# --- replay -------------------------------------------------------------------------------------


def test_replay_of_every_delivered_message_is_a_duplicate_and_changes_nothing() -> None:
    alice, bob, to_alice, to_bob = conversation()
    for state, delivered in ((alice, to_alice), (bob, to_bob)):
        before = state.to_bytes()
        for message in delivered:
            with pytest.raises(DuplicateMessageError):
                ratchet_decrypt(state, message)
            assert state.to_bytes() == before


def test_replay_of_a_message_decrypted_from_a_skipped_key_is_a_duplicate() -> None:
    alice, bob = ratchet_pair()
    alice, sent = send_many(alice, 2)
    bob = receive(bob, sent[1])
    bob = receive(bob, sent[0])
    with pytest.raises(DuplicateMessageError):
        ratchet_decrypt(bob, sent[0][0])


# --- tampering ----------------------------------------------------------------------------------


@pytest.fixture(params=["first of a chain", "within the current chain", "skipped key"])
def pending(request: pytest.FixtureRequest) -> Iterator[tuple[RatchetState, bytes, bytes]]:
    """(receiver state, message, plaintext) for a message the receiver has not yet decrypted."""
    alice, bob = ratchet_pair()
    alice, sent = send_many(alice, 3)
    if request.param == "within the current chain":
        bob = receive(bob, sent[0])
        yield bob, *sent[2]
    elif request.param == "skipped key":
        bob = receive(bob, sent[2])
        yield bob, *sent[1]
    else:
        yield bob, *sent[1]


def test_successful_decrypt_leaves_its_input_state_untouched(
    pending: tuple[RatchetState, bytes, bytes],
) -> None:
    """The caller persists the new state when it chooses; the old one must still work."""
    state, message, plaintext = pending
    before = state.to_bytes()
    ratchet_decrypt(state, message)
    assert state.to_bytes() == before
    assert ratchet_decrypt(state, message)[1] == plaintext


def test_encrypt_leaves_its_input_state_untouched() -> None:
    alice, _ = ratchet_pair()
    before = alice.to_bytes()
    ratchet_encrypt(alice, b"one")
    assert alice.to_bytes() == before


def test_every_flipped_header_byte_is_a_decryption_error_and_changes_nothing(
    pending: tuple[RatchetState, bytes, bytes],
) -> None:
    state, message, plaintext = pending
    before = state.to_bytes()
    for index in range(ENCRYPTED_HEADER_SIZE):
        with pytest.raises(DecryptionError):
            ratchet_decrypt(state, flip(message, index))
    assert state.to_bytes() == before
    assert ratchet_decrypt(state, message)[1] == plaintext


def test_every_flipped_body_byte_is_a_decryption_error_and_changes_nothing(
    pending: tuple[RatchetState, bytes, bytes],
) -> None:
    state, message, plaintext = pending
    before = state.to_bytes()
    for index in range(ENCRYPTED_HEADER_SIZE, len(message)):
        with pytest.raises(DecryptionError):
            ratchet_decrypt(state, flip(message, index, 0x80))
    assert state.to_bytes() == before
    assert ratchet_decrypt(state, message)[1] == plaintext


def test_changed_associated_data_is_a_decryption_error_and_changes_nothing(
    pending: tuple[RatchetState, bytes, bytes],
) -> None:
    state, message, _ = pending
    other = replace(state, ad=state.ad + b"!")
    before = other.to_bytes()
    with pytest.raises(DecryptionError):
        ratchet_decrypt(other, message)
    assert other.to_bytes() == before


def test_header_and_body_tampering_are_indistinguishable() -> None:
    """No oracle: the same error type, code and text whichever part was altered."""
    alice, bob = ratchet_pair()
    alice, sent = send_many(alice, 2)
    bob = receive(bob, sent[0])
    message = sent[1][0]
    errors = []
    for index in (0, ENCRYPTED_HEADER_SIZE - 1, ENCRYPTED_HEADER_SIZE, len(message) - 1):
        with pytest.raises(DecryptionError) as caught:
            ratchet_decrypt(bob, flip(message, index))
        errors.append((type(caught.value), caught.value.code, str(caught.value)))
    with pytest.raises(DecryptionError) as caught:
        ratchet_decrypt(replace(bob, ad=b"other"), message)
    errors.append((type(caught.value), caught.value.code, str(caught.value)))
    assert len(set(errors)) == 1


def test_every_truncation_of_a_message_is_a_decryption_error() -> None:
    alice, bob = ratchet_pair()
    alice, message, _ = send(alice)
    for size in range(len(message)):
        with pytest.raises(DecryptionError):
            ratchet_decrypt(bob, message[:size])


def test_message_shorter_than_header_and_tag_is_refused_before_any_trial() -> None:
    _, bob = ratchet_pair()
    with pytest.raises(DecryptionError):
        ratchet_decrypt(bob, bytes(MIN_MESSAGE_SIZE - 1))


def test_message_from_another_session_is_a_decryption_error() -> None:
    alice, _ = ratchet_pair()
    _, stranger = ratchet_pair()
    _, message, _ = send(alice)
    with pytest.raises(DecryptionError):
        ratchet_decrypt(stranger, message)


# --- limits ---------------------------------------------------------------------------------------


@pytest.fixture
def small_max_skip(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(ratchet, "MAX_SKIP", 10)
    return 10


def test_skipping_exactly_max_skip_keys_is_allowed(small_max_skip: int) -> None:
    alice, bob = ratchet_pair()
    alice, sent = send_many(alice, small_max_skip + 2)
    bob = receive(bob, sent[0])
    bob = receive(bob, sent[small_max_skip + 1])
    assert len(bob.skipped) == small_max_skip


def test_skipping_more_than_max_skip_in_the_current_chain_is_refused(small_max_skip: int) -> None:
    alice, bob = ratchet_pair()
    alice, sent = send_many(alice, small_max_skip + 3)
    bob = receive(bob, sent[0])
    before = bob.to_bytes()
    with pytest.raises(TooManySkippedError):
        ratchet_decrypt(bob, sent[small_max_skip + 2][0])
    assert bob.to_bytes() == before


def test_skipping_more_than_max_skip_in_a_new_chain_is_refused(small_max_skip: int) -> None:
    alice, bob = ratchet_pair()
    alice, sent = send_many(alice, small_max_skip + 2)
    before = bob.to_bytes()
    with pytest.raises(TooManySkippedError):
        ratchet_decrypt(bob, sent[small_max_skip + 1][0])
    assert bob.to_bytes() == before


def test_skipping_more_than_max_skip_of_the_previous_chain_is_refused(
    small_max_skip: int,
) -> None:
    alice, bob = ratchet_pair()
    alice, sent = send_many(alice, small_max_skip + 2)
    bob = receive(bob, sent[0])  # Bob now lacks sent[1:], i.e. MAX_SKIP + 1 keys of this chain
    bob, reply, text = send(bob)
    alice = receive(alice, (reply, text))
    alice, next_chain, _ = send(alice)  # its header says PN = MAX_SKIP + 2
    before = bob.to_bytes()
    with pytest.raises(TooManySkippedError):
        ratchet_decrypt(bob, next_chain)
    assert bob.to_bytes() == before


@pytest.fixture
def small_skipped_cap(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(ratchet, "MAX_SKIPPED_KEYS", 4)
    return 4


def test_skipped_keys_never_exceed_the_cap(small_skipped_cap: int) -> None:
    alice, bob = ratchet_pair()
    for _ in range(4):
        alice, sent = send_many(alice, 7)
        bob = receive(bob, sent[-1])
        assert len(bob.skipped) <= small_skipped_cap
        bob = receive(bob, sent[-2])
        assert len(bob.skipped) <= small_skipped_cap
        alice, bob = round_trip(alice, bob)
        assert len(bob.skipped) <= small_skipped_cap


def test_the_oldest_skipped_keys_are_evicted_first(small_skipped_cap: int) -> None:
    alice, bob = ratchet_pair()
    alice, sent = send_many(alice, 9)
    bob = receive(bob, sent[0])
    bob = receive(bob, sent[8])  # skips 1..7; only the newest four (4..7) are kept
    assert sorted(n for _, n in bob.skipped) == [4, 5, 6, 7]
    bob = receive(bob, sent[4])


def test_message_whose_skipped_key_was_evicted_is_a_duplicate(small_skipped_cap: int) -> None:
    alice, bob = ratchet_pair()
    alice, sent = send_many(alice, 9)
    bob = receive(bob, sent[0])
    bob = receive(bob, sent[8])
    before = bob.to_bytes()
    with pytest.raises(DuplicateMessageError):
        ratchet_decrypt(bob, sent[1][0])
    assert bob.to_bytes() == before


def _late_message_after_round_trips(steps: int) -> tuple[RatchetState, tuple[bytes, bytes]]:
    """Bob skipped one message of Alice's first chain, then `steps` DH round trips followed."""
    alice, bob = ratchet_pair()
    alice, sent = send_many(alice, 3)
    bob = receive(bob, sent[0])
    bob = receive(bob, sent[2])
    for _ in range(steps):
        alice, bob = round_trip(alice, bob)
    return bob, sent[1]


def test_late_message_of_the_oldest_remembered_chain_still_decrypts() -> None:
    bob, late = _late_message_after_round_trips(ratchet.MAX_RECEIVING_CHAINS)
    assert len(bob.previous_hkr) == ratchet.MAX_RECEIVING_CHAINS
    assert len(bob.skipped) == 1
    receive(bob, late)


def test_keys_of_chains_older_than_max_receiving_chains_are_dropped() -> None:
    bob, late = _late_message_after_round_trips(ratchet.MAX_RECEIVING_CHAINS + 1)
    assert len(bob.previous_hkr) == ratchet.MAX_RECEIVING_CHAINS
    assert not bob.skipped
    with pytest.raises(DecryptionError):
        ratchet_decrypt(bob, late[0])


def test_no_two_messages_share_a_message_key(monkeypatch: pytest.MonkeyPatch) -> None:
    derived: list[tuple[bytes, bytes]] = []
    real_kdf_ck = ratchet.kdf_ck

    def recording_kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
        out = real_kdf_ck(ck)
        derived.append(out)
        return out

    monkeypatch.setattr(ratchet, "kdf_ck", recording_kdf_ck)
    alice, bob = ratchet_pair()
    message_keys = []
    for burst in (3, 1, 4, 1, 5, 2):
        for _ in range(burst):
            start = len(derived)
            alice, message, text = send(alice)
            assert len(derived) == start + 1  # one chain step per message sent
            message_keys.append(derived[-1][1])
            bob = receive(bob, (message, text))
        alice, bob = bob, alice  # the other side speaks next: a DH step each turn
    assert len(message_keys) == 16
    assert len(set(message_keys)) == len(message_keys)
    assert not set(message_keys) & {ck for ck, _ in derived}


# --- state serialisation ------------------------------------------------------------------------


def test_state_round_trips_with_skipped_keys_in_order() -> None:
    alice, bob = ratchet_pair()
    alice, sent = send_many(alice, 6)
    bob = receive(bob, sent[5])
    restored = RatchetState.from_bytes(bob.to_bytes())
    assert restored.to_bytes() == bob.to_bytes()
    assert list(restored.skipped) == list(bob.skipped)


def test_restored_state_decrypts_skipped_and_new_messages() -> None:
    alice, bob = ratchet_pair()
    alice, sent = send_many(alice, 3)
    bob = receive(bob, sent[2])
    bob = RatchetState.from_bytes(bob.to_bytes())
    bob = receive(bob, sent[0])
    bob, reply, text = send(bob)
    receive(alice, (reply, text))


def test_state_of_unknown_version_is_refused() -> None:
    alice, _ = ratchet_pair()
    with pytest.raises(UnknownVersionError):
        RatchetState.from_bytes(b"\x02" + alice.to_bytes()[1:])


def test_state_remembering_too_many_chains_is_refused() -> None:
    alice, _ = ratchet_pair()
    bloated = replace(alice, previous_hkr=(bytes(32),) * (ratchet.MAX_RECEIVING_CHAINS + 1))
    with pytest.raises(DecodeError):
        RatchetState.from_bytes(bloated.to_bytes())


def test_state_holding_too_many_skipped_keys_is_refused() -> None:
    alice, _ = ratchet_pair()
    too_many = {(bytes(32), n): bytes(32) for n in range(ratchet.MAX_SKIPPED_KEYS + 1)}
    with pytest.raises(DecodeError):
        RatchetState.from_bytes(replace(alice, skipped=too_many).to_bytes())


def test_truncated_state_is_refused() -> None:
    alice, _ = ratchet_pair()
    with pytest.raises(DecodeError):
        RatchetState.from_bytes(alice.to_bytes()[:-1])
