"""PQXDH and the session layer: opening, the repeated initial header, misbinding, tampering."""

from __future__ import annotations

import pytest

from backchannel.errors import (
    DecodeError,
    DecryptionError,
    DuplicateMessageError,
    IdentityMismatchError,
    InvalidFieldError,
    PrekeyReusedError,
    RemoteProtocolError,
    StateError,
    UnknownVersionError,
)
from backchannel.session import (
    MessageType,
    Session,
    accept_session,
    opens_new_session,
    parse_message,
    session_decrypt,
    session_encrypt,
    start_session,
)

from ._support import Party, flip, make_party


@pytest.fixture
def alice() -> Party:
    return make_party("alice", one_time=1, kem=1)


@pytest.fixture
def bob() -> Party:
    return make_party("bob")


def _open(alice: Party, bob: Party) -> tuple[Session, bytes]:
    """Alice starts a session to Bob and encrypts her first message."""
    session = start_session(alice.identity, alice.name, bob.bundle(), bob.name)
    return session_encrypt(session, b"hello bob")


def _header_length(message: bytes) -> int:
    parsed = parse_message(message)
    assert parsed.header is not None
    return len(parsed.header.to_bytes())


def test_session_carries_messages_both_ways(alice: Party, bob: Party) -> None:
    a_session, first = _open(alice, bob)
    _, b_session, plaintext = accept_session(bob.identity, "bob", bob.prekeys, first)
    assert plaintext == b"hello bob"
    b_session, reply = session_encrypt(b_session, b"hello alice")
    a_session, plaintext = session_decrypt(a_session, reply)
    assert plaintext == b"hello alice"
    a_session, second = session_encrypt(a_session, b"how are you")
    _, plaintext = session_decrypt(b_session, second)
    assert plaintext == b"how are you"


def test_accepted_session_names_the_initiator(alice: Party, bob: Party) -> None:
    _, first = _open(alice, bob)
    _, b_session, _ = accept_session(bob.identity, "bob", bob.prekeys, first)
    assert b_session.peer == alice.identity.public
    assert b_session.peer_name == "alice"


def test_initiator_attaches_the_same_initial_header_until_the_first_reply(
    alice: Party, bob: Party
) -> None:
    a_session, first = _open(alice, bob)
    a_session, second = session_encrypt(a_session, b"still there?")
    one, two = parse_message(first), parse_message(second)
    assert one.type == two.type == MessageType.PREKEY
    assert one.header == two.header == a_session.pending_header


def test_initiator_stops_attaching_the_header_after_the_first_reply(
    alice: Party, bob: Party
) -> None:
    a_session, first = _open(alice, bob)
    _, b_session, _ = accept_session(bob.identity, "bob", bob.prekeys, first)
    _, reply = session_encrypt(b_session, b"ack")
    assert parse_message(reply).type == MessageType.RATCHET
    a_session, _ = session_decrypt(a_session, reply)
    assert a_session.pending_header is None
    _, after = session_encrypt(a_session, b"next")
    assert parse_message(after).type == MessageType.RATCHET


def test_prekey_message_opens_a_new_session_when_there_is_none(alice: Party, bob: Party) -> None:
    _, first = _open(alice, bob)
    assert opens_new_session(None, first)


def test_responder_recognises_a_repeat_of_the_initial_header(alice: Party, bob: Party) -> None:
    a_session, first = _open(alice, bob)
    _, second = session_encrypt(a_session, b"second")
    _, b_session, _ = accept_session(bob.identity, "bob", bob.prekeys, first)
    assert not opens_new_session(b_session, second)
    _, plaintext = session_decrypt(b_session, second)
    assert plaintext == b"second"


def test_prekey_message_with_another_handshake_opens_a_new_session(
    alice: Party, bob: Party
) -> None:
    _, first = _open(alice, bob)
    _, b_session, _ = accept_session(bob.identity, "bob", bob.prekeys, first)
    dave = make_party("dave", one_time=1, kem=1)
    other = start_session(dave.identity, "dave", bob.bundle(one_time=1, kem=1), "bob")
    _, from_dave = session_encrypt(other, b"hi")
    assert opens_new_session(b_session, from_dave)
    with pytest.raises(StateError):
        session_decrypt(b_session, from_dave)


def test_ratchet_message_never_opens_a_new_session(alice: Party, bob: Party) -> None:
    _, first = _open(alice, bob)
    _, b_session, _ = accept_session(bob.identity, "bob", bob.prekeys, first)
    _, reply = session_encrypt(b_session, b"ack")
    assert not opens_new_session(None, reply)
    with pytest.raises(StateError):
        accept_session(alice.identity, "alice", alice.prekeys, reply)


def test_responder_who_missed_the_first_message_opens_from_a_later_one(
    alice: Party, bob: Party
) -> None:
    a_session, first = _open(alice, bob)
    a_session, second = session_encrypt(a_session, b"second")
    _, b_session, plaintext = accept_session(bob.identity, "bob", bob.prekeys, second)
    assert plaintext == b"second"
    _, late = session_decrypt(b_session, first)
    assert late == b"hello bob"


def test_replayed_initial_message_after_its_one_time_prekey_was_used_is_refused(
    alice: Party, bob: Party
) -> None:
    _, first = _open(alice, bob)
    remaining, _, _ = accept_session(bob.identity, "bob", bob.prekeys, first)
    with pytest.raises(PrekeyReusedError):
        accept_session(bob.identity, "bob", remaining, first)


def test_replayed_initial_message_to_the_open_session_is_a_duplicate(
    alice: Party, bob: Party
) -> None:
    _, first = _open(alice, bob)
    _, b_session, _ = accept_session(bob.identity, "bob", bob.prekeys, first)
    assert not opens_new_session(b_session, first)
    with pytest.raises(DuplicateMessageError):
        session_decrypt(b_session, first)


def test_message_re_addressed_to_a_third_party_does_not_open(alice: Party, bob: Party) -> None:
    """Carol holds prekeys with the very same ids as Bob's; the keys differ, so nothing opens."""
    carol = make_party("carol")
    _, first = _open(alice, bob)
    before = carol.prekeys.to_bytes()
    with pytest.raises(DecryptionError):
        accept_session(carol.identity, "carol", carol.prekeys, first)
    assert carol.prekeys.to_bytes() == before


def test_responder_under_another_name_cannot_open(alice: Party, bob: Party) -> None:
    """Both names are in the associated data: a message meant for "bob" fails for "robert"."""
    _, first = _open(alice, bob)
    with pytest.raises(DecryptionError):
        accept_session(bob.identity, "robert", bob.prekeys, first)


def test_expected_peer_mismatch_is_refused(alice: Party, bob: Party) -> None:
    _, first = _open(alice, bob)
    pinned = make_party("alice", one_time=1, kem=1).identity.public
    with pytest.raises(IdentityMismatchError):
        accept_session(bob.identity, "bob", bob.prekeys, first, expected_peer=pinned)


def test_expected_peer_that_matches_is_accepted(alice: Party, bob: Party) -> None:
    _, first = _open(alice, bob)
    _, session, _ = accept_session(
        bob.identity, "bob", bob.prekeys, first, expected_peer=alice.identity.public
    )
    assert session.peer == alice.identity.public


def test_tampering_with_any_byte_of_the_initial_header_fails_and_consumes_nothing(
    alice: Party, bob: Party
) -> None:
    _, first = _open(alice, bob)
    before = bob.prekeys.to_bytes()
    accepted = []
    for index in range(1 + _header_length(first)):  # the type byte, then the header
        try:
            accept_session(bob.identity, "bob", bob.prekeys, flip(first, index, 0xFF))
        except RemoteProtocolError:
            continue
        accepted.append(index)
    assert accepted == [], f"tampered initial headers accepted at byte offsets {accepted}"
    assert bob.prekeys.to_bytes() == before
    _, _, plaintext = accept_session(bob.identity, "bob", bob.prekeys, first)
    assert plaintext == b"hello bob"


def test_initial_header_one_time_presence_byte_other_than_0_or_1_is_refused(
    alice: Party, bob: Party
) -> None:
    """PROTOCOL.md §1: one encoding per value; a presence byte other than 0/1 is `invalid_field`."""
    a_session, first = _open(alice, bob)
    header = a_session.pending_header
    assert header is not None and header.one_time_prekey_id is not None
    flag_at = 1 + 1 + 128 + 1 + len(b"alice") + 32 + 4
    assert first[flag_at] == 1
    tampered = first[:flag_at] + b"\x02" + first[flag_at + 1 :]
    with pytest.raises(InvalidFieldError):
        parse_message(tampered)


def test_tampered_ratchet_part_of_the_first_message_is_refused(alice: Party, bob: Party) -> None:
    _, first = _open(alice, bob)
    with pytest.raises(DecryptionError):
        accept_session(bob.identity, "bob", bob.prekeys, flip(first, len(first) - 1))


def test_unknown_session_message_type_is_refused() -> None:
    with pytest.raises(DecodeError):
        parse_message(b"\x03" + bytes(100))


def test_short_messages_are_padded_to_one_size(alice: Party, bob: Party) -> None:
    a_session, _ = _open(alice, bob)
    a_session, short = session_encrypt(a_session, b"x")
    _, longer = session_encrypt(a_session, b"y" * 200)
    assert len(short) == len(longer)


def test_session_state_round_trips_mid_conversation(alice: Party, bob: Party) -> None:
    a_session, first = _open(alice, bob)
    a_session, _ = session_encrypt(a_session, b"held back")
    _, b_session, _ = accept_session(bob.identity, "bob", bob.prekeys, first)
    for session in (a_session, b_session):
        restored = Session.from_bytes(session.to_bytes())
        assert restored.to_bytes() == session.to_bytes()
        assert restored.pending_header == session.pending_header
        assert restored.handshake_digest == session.handshake_digest


def test_restored_sessions_carry_on_the_conversation(alice: Party, bob: Party) -> None:
    a_session, first = _open(alice, bob)
    a_session, held = session_encrypt(a_session, b"held back")
    _, b_session, _ = accept_session(bob.identity, "bob", bob.prekeys, first)
    a_session = Session.from_bytes(a_session.to_bytes())
    b_session = Session.from_bytes(b_session.to_bytes())
    b_session, plaintext = session_decrypt(b_session, held)
    assert plaintext == b"held back"
    b_session, reply = session_encrypt(b_session, b"reply")
    _, plaintext = session_decrypt(a_session, reply)
    assert plaintext == b"reply"


def test_session_state_of_unknown_version_is_refused(alice: Party, bob: Party) -> None:
    a_session, _ = _open(alice, bob)
    with pytest.raises(UnknownVersionError):
        Session.from_bytes(b"\x02" + a_session.to_bytes()[1:])
