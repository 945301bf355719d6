"""Reading request bodies: JSON objects with typed fields, each mistake a specific 400."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from .appkeys import CONFIG
from .errors import BadRequest, PayloadTooLarge
from .names import text_problem


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"request body is larger than {request.app[CONFIG].max_body_bytes} bytes"
        ) from None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    return body


def text_field(body: dict[str, Any], key: str, max_bytes: int = 64) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"field {key!r} must be a non-empty string", code="invalid_field")
    problem = text_problem(value, max_bytes)
    if problem is not None:
        raise BadRequest(f"field {key!r} {problem}", code="invalid_field")
    return value


def int_field(body: dict[str, Any], key: str, default: int | None = None) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"field {key!r} must be a non-negative integer", code="invalid_field")
    return value


def decode_b64(value: Any, key: str) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"field {key!r} must be a base64 string", code="invalid_field")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"field {key!r} is not valid base64", code="invalid_field") from None


def bytes_field(body: dict[str, Any], key: str, size: int | None = None) -> bytes:
    """A base64 field; with `size`, exactly that many bytes."""
    value = decode_b64(body.get(key), key)
    if size is not None and len(value) != size:
        raise BadRequest(f"field {key!r} must be {size} bytes", code="invalid_field")
    return value


def bytes_list(body: dict[str, Any], key: str, max_items: int) -> list[bytes]:
    value = body.get(key, [])
    if not isinstance(value, list):
        raise BadRequest(f"field {key!r} must be a list", code="invalid_field")
    if len(value) > max_items:
        raise PayloadTooLarge(
            f"field {key!r} has more than {max_items} items", code="too_many_items"
        )
    return [decode_b64(item, f"{key}[{index}]") for index, item in enumerate(value)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def query_int(request: web.Request, key: str, default: int, maximum: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    if not raw.isdigit():
        raise BadRequest(
            f"query parameter {key!r} must be a non-negative integer", code="invalid_query"
        )
    return min(int(raw), maximum)


MAX_ID = 2**63 - 1
"""Envelope ids are 64-bit signed integers in both stores."""


def envelope_ids(value: object, max_items: int) -> list[int] | None:
    """A list of at most `max_items` envelope ids (1..MAX_ID), or None if it is not one."""
    if not isinstance(value, list) or len(value) > max_items:
        return None
    if not all(type(i) is int and 0 < i <= MAX_ID for i in value):
        return None
    return value
