"""Randomness for test vectors: a deterministic generator that records what it hands out.

`RecordingRandom` hands out SHA-512(label ‖ counter) prefixes and keeps every draw, so the vector
generator can write down exactly which random bytes each step consumed (PROTOCOL.md §10 says
which step draws what, and in which order).
"""

from __future__ import annotations

import hashlib


class RecordingRandom:
    def __init__(self, label: str) -> None:
        self._label = label.encode()
        self._counter = 0
        self.draws: list[bytes] = []

    def __call__(self, size: int) -> bytes:
        assert size <= 64, "vector draws are at most 64 bytes"
        block = hashlib.sha512(self._label + self._counter.to_bytes(4, "big")).digest()[:size]
        self._counter += 1
        self.draws.append(block)
        return block

    def take_new(self) -> list[str]:
        """The draws since the last call, as hex, and forget them."""
        new = [draw.hex() for draw in self.draws]
        self.draws.clear()
        return new
