"""What the relay accepts as a participant name (or any other text it stores and shows)."""

from __future__ import annotations

import unicodedata

ROLES = ("party", "mediator", "observer")
"""What a participant registers as (an invite says which)."""


def text_problem(value: str, max_bytes: int = 64) -> str | None:
    """Why `value` cannot be a name or code the relay stores and others display, or None.

    No control characters (a name is printed in other people's terminals, and PostgreSQL
    refuses NUL) and no lone surrogates (they are not UTF-8)."""
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        return "contains control characters or invalid code points"
    if len(value.encode("utf-8")) > max_bytes:
        return f"is longer than {max_bytes} bytes"
    return None


def storable(name: str) -> bool:
    """Could a participant have this name? (Lookups of any other name find no one.)"""
    return bool(name) and text_problem(name) is None
