"""Hypothesis inputs for the fuzz targets: arbitrary bytes, and mutations of valid encodings.

Arbitrary bytes find the decoder's first checks; mutations keep most of a valid encoding, so
they reach the deep fields (a length prefix made huge or zero, a flag byte out of range, a
field cut short, a signature or key with one bit flipped, trailing bytes).
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

INTERESTING_BYTES = (0x00, 0x01, 0x02, 0x7F, 0x80, 0xFE, 0xFF)
INTERESTING_WORDS = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF)


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """One of `seeds` with one to four mutations: flip, set, insert, delete, truncate, splice."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(
            st.sampled_from(("flip", "set", "word", "insert", "delete", "truncate", "splice"))
        )
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and at < len(data):
            data[at] = draw(st.sampled_from(INTERESTING_BYTES) | st.integers(0, 255))
        elif op == "word":  # a length prefix or counter, 1, 2, 4 or 8 bytes wide
            width = draw(st.sampled_from((1, 2, 4, 8)))
            value = draw(st.sampled_from(INTERESTING_WORDS) | st.integers(0, 2**64 - 1))
            data[at : at + width] = (value % (1 << (8 * width))).to_bytes(width, "big")
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[at:]
        elif op == "splice":  # a piece of another (or the same) valid encoding
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, len(other)))
            data[at:at] = other[start : start + draw(st.integers(1, 128))]
    return bytes(data)


def fuzz_input(seeds: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """Mostly mutations of valid encodings, sometimes arbitrary bytes, sometimes a seed as is."""
    return st.one_of(
        mutated(seeds),
        mutated(seeds),
        mutated(seeds),
        st.binary(max_size=2048),
        st.sampled_from(seeds),
    )
