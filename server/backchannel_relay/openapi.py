"""The OpenAPI 3.1 document of the relay's HTTP API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from backchannel import PROTOCOL_VERSION

B64 = {"type": "string", "format": "byte", "description": "standard base64"}
NAME = {"type": "string", "minLength": 1, "maxLength": 64}


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


ERROR = _obj(["error", "message"], error={"type": "string"}, message={"type": "string"})
PARTICIPANT = _obj(
    ["name", "role", "identity", "fingerprint"],
    name=NAME,
    role={"type": "string", "enum": ["party", "mediator", "observer"]},
    identity=B64,
    fingerprint={"type": "string"},
)
COUNTS = _obj(
    ["one_time_prekeys", "kem_prekeys"],
    one_time_prekeys={"type": "integer"},
    kem_prekeys={"type": "integer"},
)
PREKEY_PROPERTIES: dict[str, Any] = {
    "signed_prekey": B64,
    "kem_last_resort": B64,
    "one_time_prekeys": {"type": "array", "items": B64, "maxItems": 100},
    "kem_prekeys": {"type": "array", "items": B64, "maxItems": 100},
}
DIGEST = {**B64, "description": "standard base64 of 32 bytes"}
INT = {"type": "integer"}
NOTARY_RECEIPT = _obj(
    ["receipt", "seq", "at_ms"],
    receipt=B64,
    seq={"type": "integer"},
    at_ms={"type": "integer"},
)
PREKEY_UPLOAD: dict[str, Any] = {"type": "object", "properties": PREKEY_PROPERTIES}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ok(schema: dict[str, Any], status: str = "200", description: str = "OK") -> dict[str, Any]:
    return {
        status: {"description": description, "content": {"application/json": {"schema": schema}}}
    }


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Malformed request",
        401: "Not authenticated",
        403: "Forbidden",
        404: "Unknown name",
        409: "Conflict",
        410: "Gone",
        413: "Too large",
        429: "Rate limited or mailbox full (see Retry-After)",
    }
    return {
        str(s): {"description": reasons[s], "content": {"application/json": {"schema": ERROR}}}
        for s in statuses
    }


AUTHED = (400, 401, 429)


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    auth: bool = True,
    body: Any = None,
    parameters: list[Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        operation["requestBody"] = _body(body)
    if parameters:
        operation["parameters"] = parameters
    operation["security"] = [{"session": []}] if auth else []
    return operation


NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": NAME}


def openapi_document() -> dict[str, Any]:
    envelope_item = _obj(
        ["id", "received_at", "envelope"],
        id={"type": "integer"},
        received_at={"type": "integer"},
        envelope=B64,
    )
    receipt = _obj(
        ["message_id", "id", "received_at", "duplicate"],
        message_id={"type": "string"},
        id={"type": "integer"},
        received_at={"type": "integer"},
        duplicate={"type": "boolean"},
    )
    paths: dict[str, Any] = {
        "/healthz": {
            "get": _op("Liveness", _ok(_obj(["status"], status={"type": "string"})), auth=False)
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics (no identities in labels)",
                {
                    "200": {
                        "description": "OK",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                auth=False,
            )
        },
        "/openapi.json": {"get": _op("This document", _ok({"type": "object"}), auth=False)},
        "/v1/info": {
            "get": _op(
                "Relay id, protocol version and limits",
                _ok(
                    _obj(
                        ["relay_id", "notary_key", "protocol_version", "limits"],
                        relay_id=B64,
                        notary_key=B64,
                        protocol_version={"type": "integer"},
                        limits={"type": "object"},
                    )
                ),
                auth=False,
            )
        },
        "/v1/register": {
            "post": _op(
                "Register with an invite, identity keys and prekeys (PROTOCOL.md §13)",
                {**_ok(PARTICIPANT, "201", "Registered"), **_errors(400, 401, 403, 409, 413)},
                auth=False,
                body={
                    **_obj(
                        ["invite", "name", "identity", "proof", "signed_prekey", "kem_last_resort"],
                        invite={"type": "string"},
                        name=NAME,
                        identity=B64,
                        proof=B64,
                        **PREKEY_PROPERTIES,
                    )
                },
            )
        },
        "/v1/auth/challenge": {
            "post": _op(
                "A single-use challenge to sign",
                {
                    **_ok(
                        _obj(
                            ["challenge", "expires_in"],
                            challenge=B64,
                            expires_in={"type": "integer"},
                        )
                    ),
                    **_errors(400, 404),
                },
                auth=False,
                body=_obj(["name"], name=NAME),
            )
        },
        "/v1/auth/token": {
            "post": _op(
                "Exchange a signed challenge for a session token",
                {
                    **_ok(_obj(["token", "expires_at"], token=B64, expires_at={"type": "integer"})),
                    **_errors(400, 401, 404),
                },
                auth=False,
                body=_obj(
                    ["name", "challenge", "signature"], name=NAME, challenge=B64, signature=B64
                ),
            )
        },
        "/v1/admin/invites": {
            "post": _op(
                "Create an invite (admin token as bearer)",
                {
                    **_ok(
                        _obj(
                            ["name", "role", "invite", "expires_at"],
                            name=NAME,
                            role={"type": "string"},
                            invite={"type": "string"},
                            expires_at={"type": "integer"},
                        ),
                        "201",
                        "Created",
                    ),
                    **_errors(400, 401, 409),
                },
                auth=False,
                body=_obj(
                    ["name", "role"],
                    name=NAME,
                    role={"type": "string"},
                    ttl_seconds={"type": "integer", "minimum": 0},
                ),
            )
        },
        "/v1/directory": {
            "get": _op(
                "Every participant",
                {
                    **_ok(
                        _obj(["participants"], participants={"type": "array", "items": PARTICIPANT})
                    ),
                    **_errors(*AUTHED),
                },
            )
        },
        "/v1/directory/{name}": {
            "get": _op(
                "One participant",
                {**_ok(PARTICIPANT), **_errors(*AUTHED, 404)},
                parameters=[NAME_PARAM],
            )
        },
        "/v1/prekeys/{name}": {
            "get": _op(
                "Take a prekey bundle (consumes one-time prekeys)",
                {
                    **_ok(
                        _obj(
                            ["bundle", "one_time_prekeys_left"],
                            bundle=B64,
                            one_time_prekeys_left={"type": "integer"},
                        )
                    ),
                    **_errors(*AUTHED, 404),
                },
                parameters=[NAME_PARAM],
            )
        },
        "/v1/prekeys": {
            "get": _op("How many of my prekeys are left", {**_ok(COUNTS), **_errors(*AUTHED)}),
            "post": _op(
                "Upload prekeys", {**_ok(COUNTS), **_errors(*AUTHED, 409, 413)}, body=PREKEY_UPLOAD
            ),
        },
        "/v1/messages": {
            "post": _op(
                "Send envelopes; answers after they are durably stored",
                {
                    **_ok(_obj(["receipts"], receipts={"type": "array", "items": receipt})),
                    **_errors(*AUTHED, 403, 404, 413),
                },
                body=_obj(
                    ["envelopes"],
                    envelopes={"type": "array", "items": B64, "minItems": 1, "maxItems": 256},
                ),
            ),
            "get": _op(
                "A page of my mailbox, in arrival order",
                {
                    **_ok(
                        _obj(
                            ["envelopes", "more"],
                            envelopes={"type": "array", "items": envelope_item},
                            more={"type": "boolean"},
                        )
                    ),
                    **_errors(400),
                },
                parameters=[
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    },
                ],
            ),
        },
        "/v1/messages/ack": {
            "post": _op(
                "Acknowledge (delete) envelopes of my mailbox",
                {
                    **_ok(_obj(["acknowledged"], acknowledged={"type": "integer"})),
                    **_errors(*AUTHED),
                },
                body=_obj(
                    ["ids"],
                    ids={
                        "type": "array",
                        "maxItems": 500,
                        "items": {"type": "integer", "minimum": 1},
                    },
                ),
            )
        },
        "/v1/ws": {
            "get": _op(
                "WebSocket: pushes {type: envelope, id, received_at, envelope}; takes "
                "{type: ack, ids}",
                {"101": {"description": "Switching protocols"}, **_errors(*AUTHED)},
            )
        },
        "/v1/notary/commitments": {
            "post": _op(
                "Notarise a proposal's commitment (PROTOCOL.md §14.3); idempotent",
                {**_ok(NOTARY_RECEIPT, "201", "Notarised"), **_errors(*AUTHED, 404, 409)},
                body=_obj(
                    ["commitment", "addressees"],
                    commitment=DIGEST,
                    addressees={"type": "array", "items": NAME, "minItems": 1, "maxItems": 16},
                    expires_at_ms={"type": "integer", "minimum": 0},
                ),
            )
        },
        "/v1/notary/statements": {
            "post": _op(
                "Notarise a statement's digest; the first acceptance or withdrawal stands "
                "(409 already_decided carries the winner's receipt)",
                {**_ok(NOTARY_RECEIPT, "201", "Notarised"), **_errors(*AUTHED, 403, 404, 409)},
                body=_obj(
                    ["commitment", "kind", "digest"],
                    commitment=DIGEST,
                    kind={"type": "string", "enum": ["acceptance", "withdrawal", "statement"]},
                    digest=DIGEST,
                ),
            )
        },
        "/v1/notary/keys": {
            "post": _op(
                "Deposit a timed proposal's content key until its release time (author only)",
                {
                    **_ok(_obj(["release_at_ms"], release_at_ms=INT), "201", "Held"),
                    **_errors(*AUTHED, 403, 404, 409),
                },
                body=_obj(
                    ["commitment", "key", "release_at_ms"],
                    commitment=DIGEST,
                    key=DIGEST,
                    release_at_ms={"type": "integer", "minimum": 0},
                ),
            )
        },
        "/v1/notary/keys/{commitment}": {
            "get": _op(
                "A timed proposal's content key, once released (409 not_yet_released carries "
                "release_at_ms and Retry-After; 410 withdrawn)",
                {
                    **_ok(_obj(["key", "release_at_ms"], key=DIGEST, release_at_ms=INT)),
                    **_errors(*AUTHED, 403, 404, 409, 410),
                },
                parameters=[
                    {
                        "name": "commitment",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    }
                ],
            )
        },
        "/v1/notary/log": {
            "get": _op(
                "The notary log in seq order, each entry as its signed receipt",
                {
                    **_ok(
                        _obj(
                            ["entries", "more"],
                            entries={"type": "array", "items": NOTARY_RECEIPT},
                            more={"type": "boolean"},
                        )
                    ),
                    **_errors(400),
                },
                parameters=[
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                ],
                auth=False,
            )
        },
        "/v1/exercise": {
            "get": _op(
                "The caller's exercise: briefs, scenario clock, channels, injects due (§16.3)",
                {
                    **_ok(
                        _obj(
                            [
                                "exercise",
                                "title",
                                "brief",
                                "role",
                                "roles",
                                "clock",
                                "channels",
                                "injects",
                            ],
                            exercise=NAME,
                            title={"type": "string"},
                            brief={"type": "string"},
                            role={"type": "object"},
                            roles={"type": "array"},
                            clock={"type": "object"},
                            channels={"type": "object"},
                            injects={"type": "array"},
                        )
                    ),
                    **_errors(401, 404, 429),
                },
            )
        },
        "/v1/drops": {
            "post": _op(
                "Open a drop for an off-the-record channel (PROTOCOL.md §15.3)",
                {
                    **_ok(_obj(["expires_at"], expires_at=INT), "201", "Open"),
                    **_errors(*AUTHED, 409),
                },
                body=_obj(
                    ["address", "read_hash", "expires_at"],
                    address=DIGEST,
                    read_hash=DIGEST,
                    expires_at={"type": "integer", "minimum": 0},
                ),
            )
        },
        "/v1/drops/send": {
            "post": _op(
                "Leave a sealed-sender envelope in the drop the delivery token opens",
                {
                    **_ok(_obj(["duplicate"], duplicate={"type": "boolean"}), "201", "Stored"),
                    **_ok(
                        _obj(["duplicate"], duplicate={"type": "boolean"}), "200", "Held already"
                    ),
                    **_errors(400, 403, 413, 429),
                },
                body=_obj(["token", "envelope"], token=DIGEST, envelope=B64),
                auth=False,
            )
        },
        "/v1/drops/fetch": {
            "post": _op(
                "What waits in the drop the read key opens (ids above 'after', oldest first)",
                {
                    **_ok(
                        _obj(
                            ["messages", "more", "expires_at"],
                            messages={
                                "type": "array",
                                "items": _obj(["id", "envelope"], id=INT, envelope=B64),
                            },
                            more={"type": "boolean"},
                            expires_at=INT,
                        )
                    ),
                    **_errors(400, 404, 429),
                },
                body=_obj(
                    ["read_key"],
                    read_key=DIGEST,
                    after={"type": "integer", "minimum": 0},
                    limit={"type": "integer", "minimum": 1, "maximum": 500},
                ),
                auth=False,
            )
        },
        "/v1/drops/ack": {
            "post": _op(
                "Delete delivered messages from the drop",
                {**_ok(_obj(["acknowledged"], acknowledged=INT)), **_errors(400, 404, 429)},
                body=_obj(
                    ["read_key", "ids"],
                    read_key=DIGEST,
                    ids={"type": "array", "items": {"type": "integer", "minimum": 1}},
                ),
                auth=False,
            )
        },
        "/v1/drops/close": {
            "post": _op(
                "Delete the drop and whatever still waits in it",
                {**_ok(_obj(["closed"], closed={"type": "boolean"})), **_errors(400, 404, 429)},
                body=_obj(["read_key"], read_key=DIGEST),
                auth=False,
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Backchannel relay", "version": f"protocol v{PROTOCOL_VERSION}"},
        "components": {"securitySchemes": {"session": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }
