"""Reading request bodies: JSON objects with typed fields, each mistake a specific 400.

A body is read in chunks against three bounds, so that no client can make the relay hold more
than it must: its route's size limit (checked against `Content-Length` before anything is read),
the time allowed to send it, and the bytes of bodies the whole process holds at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

from aiohttp import ClientPayloadError, web

from backchannel.content import MAX_NAME_BYTES, MESSAGE_ID_SIZE
from backchannel.control_copy import MAX_COPY_BYTES
from backchannel.envelope import MAX_CIPHERTEXT_BYTES
from backchannel.identity import IDENTITY_PUBLIC_SIZE
from backchannel.keys import DH_KEY_SIZE, KEM_PUBLIC_KEY_SIZE, SIGNATURE_SIZE
from backchannel.prekeys import MAX_PREKEYS_PER_UPLOAD

from .appkeys import BODY_BUDGET, BODY_HELD, CLIENT, CONFIG, PARTICIPANT
from .config import RelayConfig
from .errors import BadRequest, PayloadTooLarge, RequestTimeout
from .names import text_problem

MAX_ID = 2**63 - 1
"""Envelope ids are 64-bit signed integers in both stores; no integer field goes beyond."""


def b64_size(size: int) -> int:
    """Characters of standard base64 (with padding) for `size` bytes."""
    return 4 * -(-size // 3)


JSON_SLACK = 4096
"""Bytes a body may spend on field names, punctuation and whitespace beyond its values."""
MAX_ENVELOPE_BYTES = (
    2 + 2 * (1 + MAX_NAME_BYTES) + MESSAGE_ID_SIZE + 1 + 8 + 4 + MAX_CIPHERTEXT_BYTES
)
"""The longest §8 envelope: version, flags, both names, message id, route, expiry, ciphertext."""
MAX_SEALED_BYTES = 1 + MESSAGE_ID_SIZE + 8 + 4 + MAX_CIPHERTEXT_BYTES
"""The longest §15.3 sealed envelope."""
_KEM_PREKEY = 4 + 1 + KEM_PUBLIC_KEY_SIZE + SIGNATURE_SIZE
_PREKEYS = (
    b64_size(4 + DH_KEY_SIZE + SIGNATURE_SIZE)  # the signed prekey
    + b64_size(_KEM_PREKEY)  # the last-resort KEM prekey
    + MAX_PREKEYS_PER_UPLOAD * (b64_size(4 + DH_KEY_SIZE) + 4)  # one-time X25519, quoted
    + MAX_PREKEYS_PER_UPLOAD * (b64_size(_KEM_PREKEY) + 4)  # one-time KEM, quoted
)
REGISTER_BODY_BYTES = (
    _PREKEYS
    + b64_size(IDENTITY_PUBLIC_SIZE)
    + b64_size(SIGNATURE_SIZE)
    + 128  # the invite
    + 6 * MAX_NAME_BYTES  # the name, each byte possibly a JSON escape
    + JSON_SLACK
)
PREKEY_BODY_BYTES = _PREKEYS + JSON_SLACK
DROP_SEND_BODY_BYTES = b64_size(MAX_SEALED_BYTES) + b64_size(32) + JSON_SLACK
TRAFFIC_BODY_BYTES = b64_size(MAX_COPY_BYTES) + b64_size(MESSAGE_ID_SIZE) + 6 * MAX_NAME_BYTES \
    + JSON_SLACK  # fmt: skip
CONTROL_INJECT_BODY_BYTES = 6 * (20_000 + 200) + 64 * (6 * 64 + 4) + JSON_SLACK
"""An inject control adds or edits (issue 18): title and text at the scenario's limits, each
byte possibly a JSON escape, and up to 64 addresses."""
_LARGE_BODIES = {
    "/v1/register": REGISTER_BODY_BYTES,
    "/v1/prekeys": PREKEY_BODY_BYTES,
    "/v1/drops/send": DROP_SEND_BODY_BYTES,
    "/v1/exercise/traffic": TRAFFIC_BODY_BYTES,
    "/v1/control/injects": CONTROL_INJECT_BODY_BYTES,
    "/v1/control/injects/{number}": CONTROL_INJECT_BODY_BYTES,
}


def body_limits(config: RelayConfig) -> dict[str, int]:
    """Route template -> the largest body it takes, for the routes above the default."""
    return {"/v1/messages": config.max_send_body_bytes, **_LARGE_BODIES}


def body_limit(config: RelayConfig, template: str) -> int:
    if template == "/v1/messages":
        return config.max_send_body_bytes
    return _LARGE_BODIES.get(template, config.max_body_bytes)


def _template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else ""


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than {limit} bytes, this route's limit",
        extra={"limit_bytes": limit},
    )


def check_declared_size(request: web.Request) -> None:
    """Refuse a body whose `Content-Length` is over its route's limit, before reading any."""
    declared = request.content_length
    if declared is not None and request.body_exists:
        limit = body_limit(request.app[CONFIG], _template(request))
        if declared > limit:
            raise _too_large(limit)


async def read_body(request: web.Request) -> bytes:
    """The body, read chunk by chunk: 413 as soon as it passes its route's limit, 408 if it
    has not all arrived within `body_timeout`, 429 `relay_busy` if the process holds as many
    body bytes as it may (`body_memory`). The bytes held stay counted until the answer."""
    config = request.app[CONFIG]
    limit = body_limit(config, _template(request))
    check_declared_size(request)
    budget = request.app[BODY_BUDGET]

    who = request.get(PARTICIPANT)
    holder = ("participant", who.id) if who is not None else request.get(CLIENT, "")

    def hold(size: int) -> None:
        held: int = request.get(BODY_HELD, (holder, 0))[1]
        if size > held:
            budget.reserve(holder, size - held)
            request[BODY_HELD] = (holder, size)

    hold(request.content_length or 0)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(config.body_timeout):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                hold(size)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {config.body_timeout:g} seconds"
        ) from None
    except (ClientPayloadError, ConnectionError):
        raise BadRequest("the request body was cut off", code="incomplete_body") from None
    return b"".join(chunks)


async def json_body(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request body is not valid JSON", code="invalid_json") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply", code="invalid_json") from None
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


def int_field(
    body: dict[str, Any], key: str, default: int | None = None, maximum: int = MAX_ID
) -> int:
    """An integer from 0 to `maximum` (by default what a 64-bit column holds)."""
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise BadRequest(
            f"field {key!r} must be an integer from 0 to {maximum}", code="invalid_field"
        )
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
    if not (raw.isascii() and raw.isdigit()):  # isdigit alone takes '²' and '٣'
        raise BadRequest(
            f"query parameter {key!r} must be a non-negative integer", code="invalid_query"
        )
    digits = raw.lstrip("0")
    if len(digits) > len(str(maximum)):  # more digits than int() may read: over the maximum
        return maximum
    return min(int(digits or "0"), maximum)


def envelope_ids(value: object, max_items: int) -> list[int] | None:
    """A list of at most `max_items` envelope ids (1..MAX_ID), or None if it is not one."""
    if not isinstance(value, list) or len(value) > max_items:
        return None
    if not all(type(i) is int and 0 < i <= MAX_ID for i in value):
        return None
    return value
