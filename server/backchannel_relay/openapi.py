"""The OpenAPI 3.1 document of the relay's HTTP API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from backchannel import PROTOCOL_VERSION

from .openapi_parts import ERROR, INT, NAME, _body, _errors, _obj, _ok, _refused

B64 = {"type": "string", "format": "byte", "description": "standard base64"}
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
NOTARY_RECEIPT = _obj(
    ["receipt", "seq", "at_ms"],
    receipt=B64,
    seq={"type": "integer"},
    at_ms={"type": "integer"},
)
PREKEY_UPLOAD: dict[str, Any] = {"type": "object", "properties": PREKEY_PROPERTIES}


AUTHED = (400, 401, 429)
SEND_REFUSED = {
    "description": "429 send_rate_limited: the send budget, one token per envelope (256 in a "
    "burst, 1 per second); sender_share_full: the sender already has its share of the "
    "recipient's mailbox waiting (1,250 envelopes or 8 MiB; Retry-After: 60); mailbox_full "
    "(10,000 envelopes or 64 MiB). PROTOCOL.md §13.6",
    "content": {"application/json": {"schema": ERROR}},
}
READ_REFUSED = {
    "description": "429 rate_limited: the read budget (1,000 in a burst, 20 per second), apart "
    "from the send budget and the per-request limit. PROTOCOL.md §13.6",
    "content": {"application/json": {"schema": ERROR}},
}


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


ROLE_FORBIDS = "role_forbids: the caller registered as an observer, and observers only receive"
POLICY_FORBIDS = (
    "policy_forbids: the exercise gives the caller no direct channel to a party it would reach "
    "(PROTOCOL.md §16.1)"
)
OWN_COUNTS = _obj(
    ["one_time_prekeys", "kem_prekeys", "taken_last_hour", "draining"],
    one_time_prekeys={"type": "integer"},
    kem_prekeys={"type": "integer"},
    taken_last_hour={
        "type": "integer",
        "description": "bundles of mine handed out in the last hour (this relay process)",
    },
    draining={
        "type": "boolean",
        "description": "one fetcher took more than 3 in the hour, or 50 were taken in all",
    },
)
NOTARY_LINK = _obj(
    ["seq", "link"],
    seq={"type": "integer"},
    link={**B64, "description": "u64 seq ‖ BodyHash ‖ previous (PROTOCOL.md §14.3)"},
)


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
                        limits={
                            "type": "object",
                            "description": "Among others: max_batch (envelopes per send "
                            "request), rate_burst/rate_per_second (requests), send_burst/"
                            "send_per_second (envelopes), read_burst/read_per_second (mailbox "
                            "reads and acknowledgements), max_share_envelopes/max_share_bytes "
                            "(one sender's share of one mailbox)",
                        },
                    )
                ),
                auth=False,
            )
        },
        "/v1/register": {
            "post": _op(
                "Register with an invite, identity keys and prekeys (PROTOCOL.md §13; 400 "
                "duplicate_prekey_id: an id twice in one id space, §3; 409 name_taken)",
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
        "/v1/auth/logout": {
            "post": _op(
                "Revoke the session token this request presents (PROTOCOL.md §13.3)",
                {
                    **_ok(_obj(["revoked"], revoked={"type": "boolean"})),
                    **_errors(400, 401, 429),
                },
                body={"type": "object"},
            )
        },
        "/v1/auth/token": {
            "post": _op(
                "Exchange a signed challenge for a session token (401 bad_proof: a signature "
                "that does not verify, or a challenge that is not 32 bytes)",
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
                "Take a prekey bundle (consumes one-time prekeys), if the caller may write to "
                "the owner (PROTOCOL.md §13.5)",
                {
                    **_ok(
                        _obj(
                            ["bundle", "one_time_prekeys_left"],
                            bundle=B64,
                            one_time_prekeys_left={"type": "integer"},
                        )
                    ),
                    **_errors(400, 401, 404),
                    **_refused(403, f"{ROLE_FORBIDS}; policy_forbids: the exercise gives the "
                               "caller no way to write to the owner"),
                    **_refused(429, "prekey_fetch_limited: bundle fetches per pair (4 in a "
                               "burst, then one every 10 minutes), per fetcher and per owner (64 "
                               "in a burst); rate_limited"),
                },
                parameters=[NAME_PARAM],
            )
        },
        "/v1/prekeys": {
            "get": _op(
                "How many of my prekeys are left, and how many were taken lately",
                {**_ok(OWN_COUNTS), **_errors(*AUTHED)},
            ),
            "post": _op(
                "Upload prekeys (400 duplicate_prekey_id: an id twice in the request; 409 "
                "prekey_id_reused: an id the relay holds already; PROTOCOL.md §3)",
                {**_ok(COUNTS), **_errors(*AUTHED, 409, 413)},
                body=PREKEY_UPLOAD,
            ),
        },
        "/v1/messages": {
            "post": _op(
                "Send envelopes; answers after they are durably stored",
                {
                    **_ok(_obj(["receipts"], receipts={"type": "array", "items": receipt})),
                    **_errors(400, 401, 404, 413),
                    **_refused(403, f"{ROLE_FORBIDS}; {POLICY_FORBIDS}; sender_mismatch"),
                    "429": SEND_REFUSED,
                },
                body=_obj(
                    ["envelopes"],
                    envelopes={
                        "type": "array",
                        "items": B64,
                        "minItems": 1,
                        "maxItems": 256,
                        "description": "at most max_batch of /v1/info (256, or the send burst "
                        "if smaller); more: 413 too_many_items",
                    },
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
                    **_errors(400, 401),
                    "429": READ_REFUSED,
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
                    "429": READ_REFUSED,
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
                {
                    "101": {"description": "Switching protocols"},
                    **_errors(*AUTHED),
                    "429": READ_REFUSED,
                },
            )
        },
        "/v1/notary/commitments": {
            "post": _op(
                "Notarise a proposal's commitment with its terms: the entry's value binds the "
                "author, the addressees in this order, the expiry and the mediator (PROTOCOL.md "
                "§14.3-14.4); idempotent (409 already_committed: by someone else, or with other "
                "terms)",
                {
                    **_ok(NOTARY_RECEIPT, "201", "Notarised"),
                    **_errors(*AUTHED, 404, 409),
                    **_refused(403, f"{ROLE_FORBIDS}; {POLICY_FORBIDS} (every addressee: "
                               "directly, or through the pair's own mediator given as via)"),
                },
                body=_obj(
                    ["commitment", "addressees"],
                    commitment=DIGEST,
                    addressees={
                        "type": "array",
                        "items": NAME,
                        "minItems": 1,
                        "maxItems": 16,
                        "uniqueItems": True,
                        "description": "the proposal's addressees, in its order",
                    },
                    expires_at_ms={"type": "integer", "minimum": 0},
                    via={
                        **NAME,
                        "description": "the proposal's mediator, when it names one: neither its "
                        "author nor an addressee (400 invalid_field); unknown: 404",
                    },
                ),
            )
        },
        "/v1/notary/statements": {
            "post": _op(
                "Notarise a statement's digest; the first acceptance or withdrawal stands "
                "(409 already_decided carries the winner's receipt, unless its submitter may "
                "not write to the caller directly)",
                {
                    **_ok(NOTARY_RECEIPT, "201", "Notarised"),
                    **_errors(*AUTHED, 404, 409),
                    **_refused(403, f"not_the_author, not_an_addressee, not_a_party; "
                               f"{ROLE_FORBIDS}; {POLICY_FORBIDS} (the proposal's other "
                               "parties, directly or through its mediator)"),
                },
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
                    **_errors(*AUTHED, 404, 409),
                    **_refused(403, f"not_the_author; {ROLE_FORBIDS}; {POLICY_FORBIDS} (the "
                               "addressees, directly: not through a mediator)"),
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
                "The notary log in seq order: entries about the caller's own proposals (as "
                "author, addressee or mediator) made by the caller or by someone who may write "
                "to it directly as signed receipts, every other entry as a link that checks the "
                "chain and shows nothing of the entry (PROTOCOL.md §13.7, §14.3)",
                {
                    **_ok(
                        _obj(
                            ["entries", "more"],
                            entries={
                                "type": "array",
                                "items": {"oneOf": [NOTARY_RECEIPT, NOTARY_LINK]},
                            },
                            more={"type": "boolean"},
                        )
                    ),
                    **_errors(*AUTHED),
                },
                parameters=[
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                ],
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
                                "control_sees",
                                "control_key",
                                "communiques",
                                "injects",
                            ],
                            exercise=NAME,
                            title={"type": "string"},
                            brief={"type": "string"},
                            role={"type": "object"},
                            roles={"type": "array"},
                            clock={"type": "object"},
                            channels={"type": "object"},
                            control_sees={"type": "object"},
                            control_key=_obj(["x25519", "mlkem", "signature"], x25519=B64,
                                             mlkem=B64, signature=B64),
                            communiques={"type": "array"},
                            injects={"type": "array"},
                        )
                    ),
                    **_errors(401, 404, 429),
                },
            )
        },
        "/v1/exercise/observed": {
            "get": _op(
                "An observer's view of one party's traffic, as control may see it (§16.10)",
                {
                    **_ok(_obj(["exercise", "party", "control_sees", "letters", "truncated"],
                               exercise=NAME, party=NAME, control_sees={"type": "object"},
                               letters={"type": "array", "items": {"type": "object"}},
                               truncated={"type": "boolean"})),
                    **_refused(403, "no_view: control has given the caller no view"),
                    **_errors(401, 404, 429),
                },
            )
        },
        "/v1/exercise/traffic": {
            "post": _op(
                "Report a letter (or an opened off-the-record channel) to control as its pair's "
                "class lets control see it, before sending it; with the sealed control copy "
                "where control sees content (§16.11)",
                {
                    **_ok(_obj(["class", "control_sees"], **{"class": {"type": "string"}},
                               control_sees={"type": "string"}), "201", "Kept"),
                    **_refused(400, "invalid_field; unknown_role: `to` is no other role of the "
                               "caller's exercise; copy_required: control sees content; "
                               "copy_refused: control sees less than content"),
                    **_errors(401, 404, 409, 413),
                    **_refused(403, f"{ROLE_FORBIDS}"),
                },
                body=_obj(["to"], to=NAME, message_id=B64, copy=B64,
                          **{"class": {"type": "string", "enum": ["off_the_record"]}}),
            )
        },
        "/v1/exercise/communiques": {
            "post": _op(
                "Publish a signed communiqué to every role of the caller's exercise (§16.9)",
                {
                    **_ok(_obj(["number"], number=INT), "201", "Kept"),
                    **_refused(400, "invalid_field; invalid_communique: an empty or too long "
                               "text, or a signature that is not the caller's"),
                    **_errors(401, 404, 409),
                    **_refused(403, f"{ROLE_FORBIDS}; communiques_full: the exercise holds "
                               "100 communiqués"),
                },
                body=_obj(["at", "text", "signature"], at=INT,
                          text={"type": "string", "minLength": 1, "maxLength": 8000},
                          signature=B64),
            )
        },
        "/v1/drops": {
            "post": _op(
                "Open a drop for an off-the-record channel (PROTOCOL.md §15.3)",
                {
                    **_ok(_obj(["expires_at"], expires_at=INT), "201", "Open"),
                    **_errors(400, 401, 409),
                    **_refused(403, f"{ROLE_FORBIDS}; policy_forbids: the exercise gives the "
                               "caller no direct channel to anyone"),
                    **_refused(429, "too_many_drops_opened: the caller opened 200 drops within "
                               "the longest a drop lives (Retry-After: when one counts no more); "
                               "too_many_drops: the relay's cap; rate_limited"),
                },
                body=_obj(
                    ["address", "read_hash", "expires_at"],
                    address=DIGEST,
                    read_hash=DIGEST,
                    expires_at={
                        "type": "integer",
                        "minimum": 0,
                        "description": "Unix seconds, in the future and at most "
                        "max_drop_ttl_seconds + 3600 (the spread of drop expiries) from now; "
                        "else 400 bad_expiry",
                    },
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
    from .control_openapi import SECURITY_SCHEMES, control_paths  # exercise control, §16.12

    paths |= control_paths()
    from .control_page import page_paths  # the control page and its live channel

    paths |= page_paths()
    _bound_inputs(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Backchannel relay", "version": f"protocol v{PROTOCOL_VERSION}"},
        "components": {"securitySchemes": {"session": {"type": "http", "scheme": "bearer"},
                                           **SECURITY_SCHEMES}},
        "paths": paths,
    }


UNLIMITED = {"/healthz", "/metrics", "/openapi.json", "/v1/info"}
BODY_REFUSED = {
    "408": {
        "description": "408 body_timeout: the body did not arrive within 30 s (--body-timeout); "
        "the connection is closed. PROTOCOL.md §13.6",
        "content": {"application/json": {"schema": ERROR}},
    },
    "413": {
        "description": "413 payload_too_large (with limit_bytes): the body is over this route's "
        "limit, refused from its Content-Length before it is read; the connection is closed",
        "content": {"application/json": {"schema": ERROR}},
    },
}
LIMITED = {
    "description": "429 rate_limited: the per-identity limits, or for a stranger the per-address "
    "limit (300 in a burst, 5 a second; a refused request costs 5 more); relay_busy: the relay "
    "holds as many request bodies as it may (Retry-After: 1). PROTOCOL.md §13.6",
    "content": {"application/json": {"schema": ERROR}},
}


def _bound_inputs(paths: dict[str, Any]) -> None:
    """Every route with a body states its size limit and the 408 and 413 refusals; every route
    but monitoring and the constant documents may answer 429 (PROTOCOL.md §13.6)."""
    from .config import RelayConfig
    from .wire import body_limit

    config = RelayConfig()
    for template, operations in paths.items():
        for operation in operations.values():
            responses = operation["responses"]
            if "requestBody" in operation:
                limit = body_limit(config, template)
                operation["requestBody"]["description"] = f"At most {limit} bytes"
                for status, response in BODY_REFUSED.items():
                    responses.setdefault(status, response)
                bad = responses.get("400", {"description": "400: bad input",
                                            "content": {"application/json": {"schema": ERROR}}})
                cut = "; incomplete_body: the client cut the body off"
                responses["400"] = {**bad, "description": bad["description"] + cut}
            if template not in UNLIMITED:
                responses.setdefault("429", LIMITED)
