"""Envelopes: the strict binary encoding the relay routes on (PROTOCOL.md §8)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backchannel.encoding import Writer
from backchannel.envelope import MAX_CIPHERTEXT_BYTES, MAX_NAME_BYTES, Envelope, Route
from backchannel.errors import (
    DecodeError,
    FieldTooLargeError,
    InvalidFieldError,
    TrailingBytesError,
    TruncatedError,
    UnknownVersionError,
)

MESSAGE_ID = bytes(range(16))


def _envelope(route: Route = Route.DIRECT, ciphertext: bytes = b"opaque") -> Envelope:
    sender = None if route == Route.SEALED else "alice"
    return Envelope("bob", sender, MESSAGE_ID, route, 1_700_000_000, ciphertext)


def _raw(
    *,
    version: int = 1,
    flags: int = 1,
    recipient: bytes = b"bob",
    sender: bytes | None = b"alice",
    message_id: bytes = MESSAGE_ID,
    route: int = 1,
    expires_at: int = 1_700_000_000,
    ciphertext: bytes = b"opaque",
) -> bytes:
    """An envelope written field by field, so that each field can be made wrong on its own."""
    writer = Writer().u8(version).u8(flags).var8(recipient)
    if sender is not None:
        writer.var8(sender)
    writer.fixed(message_id, 16).u8(route).u64(expires_at).var32(ciphertext)
    return bytes(writer)


def test_field_by_field_writer_matches_the_encoder() -> None:
    assert _raw() == _envelope().to_bytes()


@pytest.mark.parametrize("route", list(Route))
def test_envelope_round_trips_for_each_route(route: Route) -> None:
    envelope = _envelope(route)
    decoded = Envelope.from_bytes(envelope.to_bytes())
    assert decoded == envelope
    assert decoded.route is route


def test_envelope_with_largest_ciphertext_and_names_round_trips() -> None:
    name = "é" * (MAX_NAME_BYTES // 2)
    envelope = Envelope(
        name, name, MESSAGE_ID, Route.FORWARD, 2**64 - 1, b"x" * MAX_CIPHERTEXT_BYTES
    )
    assert Envelope.from_bytes(envelope.to_bytes()) == envelope


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_version_is_refused(version: int) -> None:
    with pytest.raises(UnknownVersionError):
        Envelope.from_bytes(_raw(version=version))


@pytest.mark.parametrize("route", list(Route))
def test_every_truncation_is_refused_as_truncated(route: Route) -> None:
    encoded = _envelope(route).to_bytes()
    for size in range(len(encoded)):
        with pytest.raises(TruncatedError):
            Envelope.from_bytes(encoded[:size])


@pytest.mark.parametrize("extra", [b"\x00", b"\x01\x02\x03"])
def test_trailing_bytes_are_refused(extra: bytes) -> None:
    with pytest.raises(TrailingBytesError):
        Envelope.from_bytes(_envelope().to_bytes() + extra)


def test_ciphertext_length_over_the_limit_is_refused_before_reading_it() -> None:
    header = _raw(ciphertext=b"")[:-4]
    with pytest.raises(FieldTooLargeError):
        Envelope.from_bytes(header + struct.pack(">I", MAX_CIPHERTEXT_BYTES + 1))


def test_ciphertext_length_field_of_all_ones_is_field_too_large() -> None:
    header = _raw(ciphertext=b"")[:-4]
    with pytest.raises(FieldTooLargeError):
        Envelope.from_bytes(header + b"\xff\xff\xff\xff" + b"x" * 10)


def test_over_long_recipient_is_refused() -> None:
    with pytest.raises(FieldTooLargeError):
        Envelope.from_bytes(_raw(recipient=b"r" * (MAX_NAME_BYTES + 1)))


def test_over_long_sender_is_refused() -> None:
    with pytest.raises(FieldTooLargeError):
        Envelope.from_bytes(_raw(sender=b"s" * (MAX_NAME_BYTES + 1)))


@pytest.mark.parametrize("flags", [0x02, 0x03, 0x80, 0xFF])
def test_unknown_flag_bits_are_refused(flags: int) -> None:
    with pytest.raises(InvalidFieldError):
        Envelope.from_bytes(_raw(flags=flags))


@pytest.mark.parametrize("route", [0, 4, 255])
def test_unknown_route_is_refused(route: int) -> None:
    with pytest.raises(InvalidFieldError):
        Envelope.from_bytes(_raw(route=route))


def test_sealed_envelope_naming_its_sender_is_refused() -> None:
    with pytest.raises(InvalidFieldError):
        Envelope.from_bytes(_raw(route=Route.SEALED))


@pytest.mark.parametrize("route", [Route.DIRECT, Route.FORWARD])
def test_envelope_without_sender_on_a_route_that_needs_one_is_refused(route: Route) -> None:
    with pytest.raises(InvalidFieldError):
        Envelope.from_bytes(_raw(flags=0, sender=None, route=route))


def test_empty_ciphertext_is_refused() -> None:
    with pytest.raises(InvalidFieldError):
        Envelope.from_bytes(_raw(ciphertext=b""))


@pytest.mark.parametrize("field", ["recipient", "sender"])
def test_empty_name_is_refused(field: str) -> None:
    with pytest.raises(InvalidFieldError):
        Envelope.from_bytes(_raw(**{field: b""}))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [b"\xff", b"bo\xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
@pytest.mark.parametrize("field", ["recipient", "sender"])
def test_name_that_is_not_utf8_is_refused(field: str, name: bytes) -> None:
    with pytest.raises(InvalidFieldError):
        Envelope.from_bytes(_raw(**{field: name}))  # type: ignore[arg-type]


def test_encoder_refuses_a_message_id_of_the_wrong_size() -> None:
    with pytest.raises(ValueError):
        Envelope("bob", "alice", b"short", Route.DIRECT, 0, b"x").to_bytes()


def test_encoder_refuses_an_over_long_name() -> None:
    with pytest.raises(ValueError):
        Envelope("b" * 65, "alice", MESSAGE_ID, Route.DIRECT, 0, b"x").to_bytes()


def test_encoder_refuses_an_empty_ciphertext() -> None:
    """PROTOCOL.md §8: ciphertext is 1 to 98,304 bytes; the encoder must not emit what every
    decoder (the relay's included) refuses."""
    with pytest.raises(ValueError):
        Envelope("bob", "alice", MESSAGE_ID, Route.DIRECT, 0, b"").to_bytes()


def test_encoder_refuses_an_over_large_ciphertext() -> None:
    big = b"x" * (MAX_CIPHERTEXT_BYTES + 1)
    with pytest.raises(ValueError):
        Envelope("bob", "alice", MESSAGE_ID, Route.DIRECT, 0, big).to_bytes()


# --- properties -----------------------------------------------------------------------------------

names = st.text(min_size=1, max_size=MAX_NAME_BYTES // 4)


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    route = draw(st.sampled_from(Route))
    sender = None if route == Route.SEALED else draw(names)
    return Envelope(
        draw(names),
        sender,
        draw(st.binary(min_size=16, max_size=16)),
        route,
        draw(st.integers(0, 2**64 - 1)),
        draw(st.binary(min_size=1, max_size=300)),
    )


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> bytes:
    """A valid encoding with a few bytes overwritten, inserted or removed."""
    data = bytearray(draw(envelopes()).to_bytes())
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "insert" or position == len(data):
            data[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif action == "set":
            data[position] = draw(st.integers(0, 255))
        else:
            del data[position : position + draw(st.integers(1, 4))]
    return bytes(data)


@settings(max_examples=150)
@given(envelopes())
def test_every_envelope_the_encoder_emits_decodes_to_itself(envelope: Envelope) -> None:
    assert Envelope.from_bytes(envelope.to_bytes()) == envelope


@settings(max_examples=400)
@given(st.one_of(st.binary(max_size=200), mutated_envelopes()))
def test_any_bytes_decode_to_their_exact_encoding_or_raise_a_decode_error(data: bytes) -> None:
    try:
        envelope = Envelope.from_bytes(data)
    except DecodeError:
        return
    assert envelope.to_bytes() == data
