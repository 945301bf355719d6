"""The Reader and Writer every structure is built on: one canonical form, strictly decoded."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backchannel.encoding import Reader, Writer
from backchannel.errors import (
    DecodeError,
    FieldTooLargeError,
    InvalidFieldError,
    TrailingBytesError,
    TruncatedError,
)

ReadField = Callable[[Reader], object]


def test_integers_are_big_endian_of_fixed_width() -> None:
    data = bytes(Writer().u8(1).u16(0x0203).u32(0x04050607).u64(0x08090A0B0C0D0E0F))
    assert data == bytes(range(1, 16))
    reader = Reader(data)
    assert (reader.u8(), reader.u16(), reader.u32(), reader.u64()) == (
        1,
        0x0203,
        0x04050607,
        0x08090A0B0C0D0E0F,
    )
    reader.finish()


def test_length_prefixed_fields_round_trip() -> None:
    data = bytes(Writer().var8(b"a").var16(b"bc").var32(b"def").text("é"))
    assert data == b"\x01a" + b"\x00\x02bc" + b"\x00\x00\x00\x03def" + b"\x00\x02\xc3\xa9"
    reader = Reader(data)
    assert (reader.var8(), reader.var16(), reader.var32(), reader.text()) == (
        b"a",
        b"bc",
        b"def",
        "é",
    )
    reader.finish()


def test_optional_is_a_presence_byte_then_the_value() -> None:
    data = bytes(Writer().optional(None, 2).optional(b"xy", 2))
    assert data == b"\x00\x01xy"
    reader = Reader(data)
    assert (reader.optional(2), reader.optional(2)) == (None, b"xy")


@pytest.mark.parametrize(
    ("data", "read"),
    [
        (b"", Reader.u8),
        (b"\x01", Reader.u16),
        (b"\x01\x02\x03", Reader.u32),
        (b"\x01" * 7, Reader.u64),
        (b"\x01" * 8, lambda r: r.fixed(9)),
    ],
)
def test_reading_past_the_end_is_truncated(data: bytes, read: ReadField) -> None:
    with pytest.raises(TruncatedError):
        read(Reader(data))


def test_length_prefix_longer_than_the_data_is_truncated() -> None:
    with pytest.raises(TruncatedError):
        Reader(b"\x05abc").var8()


def test_missing_length_prefix_is_truncated() -> None:
    with pytest.raises(TruncatedError):
        Reader(b"\x00").var16()


def test_optional_present_but_missing_its_value_is_truncated() -> None:
    with pytest.raises(TruncatedError):
        Reader(b"\x01ab").optional(4)


def test_leftover_bytes_are_trailing() -> None:
    reader = Reader(b"\x01\x02")
    reader.u8()
    with pytest.raises(TrailingBytesError):
        reader.finish()


def test_finish_accepts_fully_consumed_data() -> None:
    reader = Reader(b"\x01\x02")
    assert reader.u16() == 0x0102
    assert reader.remaining() == 0
    reader.finish()


@pytest.mark.parametrize(
    ("data", "read"),
    [
        (b"\x04abcd", lambda r: r.var8(limit=3)),
        (b"\x00\x04abcd", lambda r: r.var16(limit=3)),
        (b"\x00\x00\x00\x04abcd", lambda r: r.var32(limit=3)),
        (b"\x00\x04abcd", lambda r: r.text(limit=3)),
    ],
)
def test_length_above_the_limit_is_field_too_large(data: bytes, read: ReadField) -> None:
    with pytest.raises(FieldTooLargeError):
        read(Reader(data))


def test_limit_is_checked_before_the_data_is_needed() -> None:
    with pytest.raises(FieldTooLargeError):
        Reader(b"\xff\xff\xff\xff").var32(limit=100)


def test_length_at_the_limit_is_accepted() -> None:
    assert Reader(b"\x03abc").var8(limit=3) == b"abc"


@pytest.mark.parametrize("raw", [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"a\x80"])
def test_text_that_is_not_utf8_is_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidFieldError):
        Reader(bytes(Writer().var16(raw))).text()


@pytest.mark.parametrize("flag", [2, 0x80, 0xFF])
def test_presence_flag_other_than_0_or_1_is_invalid(flag: int) -> None:
    with pytest.raises(InvalidFieldError):
        Reader(bytes([flag]) + b"ab").optional(2)


def test_rest_takes_everything_left() -> None:
    reader = Reader(b"\x01rest")
    reader.u8()
    assert reader.rest() == b"rest"
    reader.finish()


def test_every_decode_error_is_a_decode_error() -> None:
    for error in (TruncatedError, TrailingBytesError, FieldTooLargeError, InvalidFieldError):
        assert issubclass(error, DecodeError)
    assert len({e.code for e in (TruncatedError, TrailingBytesError, FieldTooLargeError)}) == 3


@pytest.mark.parametrize(
    "write",
    [
        lambda w: w.var8(b"x" * 256),
        lambda w: w.var16(b"x" * 65536),
        lambda w: w.fixed(b"abc", 4),
        lambda w: w.optional(b"abc", 4),
    ],
)
def test_writer_refuses_values_that_do_not_fit(write: Callable[[Writer], object]) -> None:
    with pytest.raises(ValueError):
        write(Writer())


@given(st.lists(st.binary(max_size=300), max_size=10))
def test_var_fields_round_trip(values: list[bytes]) -> None:
    writer = Writer()
    for value in values:
        writer.var16(value).var32(value)
    reader = Reader(bytes(writer))
    for value in values:
        assert reader.var16() == value
        assert reader.var32() == value
    reader.finish()
