"""The one binary encoding every structure on the wire or on disk uses.

Big-endian fixed-width integers and length-prefixed byte strings, in the manner of TLS's
presentation language: one canonical form per value, so that what is signed or hashed is exactly
what is sent. `Reader` is strict: it refuses truncation, trailing bytes and over-long fields with
distinct errors, because a lenient parser is where two implementations start to disagree.
"""

from __future__ import annotations

import struct

from .errors import FieldTooLargeError, InvalidFieldError, TrailingBytesError, TruncatedError

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")


class Writer:
    """Accumulates fields; `bytes(writer)` is the encoding."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        self._parts.append(bytes((value,)))
        return self

    def u16(self, value: int) -> Writer:
        self._parts.append(_U16.pack(value))
        return self

    def u32(self, value: int) -> Writer:
        self._parts.append(_U32.pack(value))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(_U64.pack(value))
        return self

    def i64(self, value: int) -> Writer:
        """Two's complement: scenario times before 1970 are negative."""
        self._parts.append(_I64.pack(value))
        return self

    def fixed(self, value: bytes, size: int) -> Writer:
        if len(value) != size:
            raise ValueError(f"expected {size} bytes, got {len(value)}")
        self._parts.append(value)
        return self

    def var8(self, value: bytes) -> Writer:
        """Up to 255 bytes, one-byte length prefix."""
        if len(value) > 0xFF:
            raise ValueError("field longer than 255 bytes")
        self._parts.append(bytes((len(value),)) + value)
        return self

    def var16(self, value: bytes) -> Writer:
        if len(value) > 0xFFFF:
            raise ValueError("field longer than 65535 bytes")
        self._parts.append(_U16.pack(len(value)) + value)
        return self

    def var32(self, value: bytes) -> Writer:
        self._parts.append(_U32.pack(len(value)) + value)
        return self

    def text(self, value: str) -> Writer:
        """UTF-8 text with a two-byte length prefix."""
        return self.var16(value.encode("utf-8"))

    def optional(self, value: bytes | None, size: int) -> Writer:
        """A presence byte (0 or 1) followed, if present, by `size` bytes."""
        if value is None:
            return self.u8(0)
        return self.u8(1).fixed(value, size)

    def __bytes__(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads fields in order; `finish()` insists that nothing is left over."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str = "data") -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def _take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise TruncatedError(f"{self._what} is truncated")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self._take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self._take(8))[0]
        return value

    def i64(self) -> int:
        value: int = _I64.unpack(self._take(8))[0]
        return value

    def fixed(self, size: int) -> bytes:
        return self._take(size)

    def _bounded(self, length: int, limit: int | None, field: str) -> bytes:
        if limit is not None and length > limit:
            raise FieldTooLargeError(f"{self._what}: {field} is {length} bytes, limit {limit}")
        return self._take(length)

    def var8(self, limit: int | None = None, field: str = "field") -> bytes:
        return self._bounded(self.u8(), limit, field)

    def var16(self, limit: int | None = None, field: str = "field") -> bytes:
        return self._bounded(self.u16(), limit, field)

    def var32(self, limit: int | None = None, field: str = "field") -> bytes:
        return self._bounded(self.u32(), limit, field)

    def text(self, limit: int | None = None, field: str = "text") -> str:
        raw = self.var16(limit, field)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidFieldError(f"{self._what}: {field} is not valid UTF-8") from exc

    def optional(self, size: int, field: str = "field") -> bytes | None:
        flag = self.u8()
        if flag == 0:
            return None
        if flag != 1:
            raise InvalidFieldError(f"{self._what}: presence flag of {field} must be 0 or 1")
        return self._take(size)

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def finish(self) -> None:
        if self._pos != len(self._data):
            extra = len(self._data) - self._pos
            raise TrailingBytesError(f"{self._what} has {extra} trailing bytes")
