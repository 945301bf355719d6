"""Off-the-record channels (PROTOCOL.md §15): agreement, messages both ways, loss and reordering,
replays and tampering refused, and the point of it all: a forgery from revealed MAC keys that
verifies, so a transcript proves nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backchannel import drops, otr
from backchannel.encoding import Reader
from backchannel.errors import (
    DecodeError,
    DecryptionError,
    DuplicateMessageError,
    InvalidFieldError,
    TooManySkippedError,
)
from backchannel.padding import pad
from backchannel.primitives import hmac_sha256

NOW = 1_793_059_200_000


def pair() -> tuple[otr.OtrChannel, otr.OtrChannel]:
    sent, ephemeral = otr.offer(NOW + 3_600_000)
    carried = otr.OtrControl.read(Reader(sent.to_content()[1:], "offer"))
    assert carried == sent
    answer, responder = otr.accept(carried, NOW)
    opener = otr.complete(sent, ephemeral, otr.OtrControl.read(Reader(answer.to_content()[1:])))
    return opener, responder


def test_both_sides_agree_and_talk_both_ways() -> None:
    robert, dobrynin = pair()
    assert robert.send_chain == dobrynin.recv_chain and robert.recv_chain == dobrynin.send_chain
    robert, wire = otr.encrypt(robert, b"The Jupiters will be gone in four to five months.")
    dobrynin, text, revealed = otr.decrypt(dobrynin, wire)
    assert text == b"The Jupiters will be gone in four to five months." and revealed == ()
    dobrynin, reply = otr.encrypt(dobrynin, b"Understood; not to be made public.")
    robert, text, revealed = otr.decrypt(robert, reply)
    assert text == b"Understood; not to be made public."
    # The reply revealed the MAC key of the message it answers.
    assert len(revealed) == 1 and otr.tag_verifies(revealed[0], wire)


def test_lost_and_reordered_messages_within_the_skip_limit() -> None:
    robert, dobrynin = pair()
    wires = []
    for i in range(5):
        robert, wire = otr.encrypt(robert, f"m{i}".encode())
        wires.append(wire)
    for i in (3, 0, 4, 1):
        dobrynin, text, _ = otr.decrypt(dobrynin, wires[i])
        assert text == f"m{i}".encode()
    assert set(dobrynin.skipped) == {2}
    with pytest.raises(DuplicateMessageError):
        otr.decrypt(dobrynin, wires[3])
    far = robert
    for _ in range(otr.MAX_SKIP + 1):
        far, _ = otr.encrypt(far, b"x")
    far, too_far = otr.encrypt(far, b"too far ahead")
    with pytest.raises(TooManySkippedError):
        otr.decrypt(dobrynin, too_far)


def test_tampering_and_misdirection_are_refused() -> None:
    robert, dobrynin = pair()
    robert, wire = otr.encrypt(robert, b"a private assurance")
    for index in (20, len(wire) // 2, len(wire) - 1):
        bad = bytearray(wire)
        bad[index] ^= 1
        with pytest.raises((DecryptionError, DecodeError, TooManySkippedError)):
            otr.decrypt(dobrynin, bytes(bad))
    with pytest.raises(DecryptionError):
        otr.decrypt(robert, wire)  # one's own message is not for one's own side
    other, _ = pair()
    with pytest.raises(DecryptionError):
        otr.decrypt(other, wire)
    with pytest.raises(DecodeError):
        otr.decrypt(dobrynin, wire + b"\x00")


def test_expired_offers_and_wrong_answers_are_refused() -> None:
    sent, ephemeral = otr.offer(NOW)
    with pytest.raises(InvalidFieldError):
        otr.accept(sent, NOW)
    fresh, _ = otr.offer(NOW + 1)
    answer, _ = otr.accept(fresh, NOW)
    with pytest.raises(InvalidFieldError):
        otr.complete(sent, ephemeral, answer)


def test_a_transcript_with_revealed_mac_keys_can_be_forged() -> None:
    """Anyone holding the transcript and the MAC keys it revealed can produce a different message
    that verifies exactly as the real one did: AES-CTR is malleable, and the tag key is public."""
    robert, dobrynin = pair()
    original = b"We agree to remove the missiles from Turkey."
    robert, wire = otr.encrypt(robert, original)
    before = dobrynin
    dobrynin, _, _ = otr.decrypt(dobrynin, wire)
    dobrynin, reply = otr.encrypt(dobrynin, b"Noted.")
    _, _, revealed = otr.decrypt(robert, reply)
    (mac_key,) = revealed

    # The forger knows (or guesses) the plaintext; it never needs the encryption key.
    message = otr.DataMessage.from_bytes(wire)
    forged_text = b"We refuse to remove the missiles from Turkey."
    padded_old, padded_new = pad(original), pad(forged_text)
    assert len(padded_old) == len(padded_new)  # the same padded size class
    difference = bytes(a ^ b for a, b in zip(padded_old, padded_new, strict=True))
    ciphertext = bytes(c ^ d for c, d in zip(message.ciphertext, difference, strict=True))
    unsigned = replace(message, ciphertext=ciphertext, tag=b"")
    forged = replace(unsigned, tag=hmac_sha256(mac_key, unsigned.body())).to_bytes()

    assert forged != wire
    assert otr.tag_verifies(mac_key, wire) and otr.tag_verifies(mac_key, forged)
    # Had it arrived instead, the recipient would have accepted it just the same: authentication
    # meant only "someone holding this key", which at the time was the correspondent alone.
    _, text, _ = otr.decrypt(before, forged)
    assert text == forged_text


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=20))
def test_any_interleaving_delivers_every_message_once(
    turns: list[tuple[bool, bytes]],
) -> None:
    robert, dobrynin = pair()
    for from_robert, text in turns:
        if from_robert:
            robert, wire = otr.encrypt(robert, text)
            dobrynin, got, _ = otr.decrypt(dobrynin, wire)
        else:
            dobrynin, wire = otr.encrypt(dobrynin, text)
            robert, got, _ = otr.decrypt(robert, wire)
        assert got == text
        with pytest.raises(DuplicateMessageError):
            otr.decrypt(dobrynin if from_robert else robert, wire)


@given(
    st.integers(min_value=1_700_000_000_000, max_value=1_900_000_000_000),
    st.integers(min_value=1, max_value=48 * 3600 * 1000),
    st.binary(min_size=8, max_size=8),
)
def test_drop_expiries_fall_after_the_channel_and_before_its_sealed_expiry(
    now_ms: int, ttl_ms: int, draw: bytes
) -> None:
    """PROTOCOL.md §15.3: a drop never ends before its channel, outlives it by at most an hour
    and at most its remaining life, and every sealed envelope outlives every drop (so the relay
    keeps the drop's own expiry), on the hour grid."""
    expires_ms = now_ms + ttl_ms
    end = -(-expires_ms // 1000)
    drop = drops.drop_expiry(expires_ms, now_ms, lambda _n: draw)
    assert end <= drop < end + max(1, min(drops.EXPIRY_SPREAD, end - now_ms // 1000))
    sealed = drops.sealed_expiry(expires_ms)
    assert drop < sealed and sealed % drops.EXPIRY_SPREAD == 0
    assert sealed - end <= 2 * drops.EXPIRY_SPREAD


def test_each_side_draws_its_own_drop_expiry() -> None:
    """Two drops of one channel: drawn apart, so the relay sees no shared value (§15.3)."""
    expires_ms, now_ms = 1_793_062_800_000, 1_793_059_200_000
    drawn = {drops.drop_expiry(expires_ms, now_ms) for _ in range(50)}
    assert len(drawn) > 40  # 50 draws from 3,600 seconds: a few coincide at most
