"""HTTP handlers: parse and validate, call one store function, answer. Nothing else.

Authentication, rate limits and error rendering are middlewares (`app.py`); the JSON shapes are
in the OpenAPI document (`openapi.py`) and PROTOCOL.md §13.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web
from prometheus_client import generate_latest

from backchannel import PROTOCOL_VERSION
from backchannel.content import MESSAGE_ID_SIZE
from backchannel.control_copy import MAX_COPY_BYTES
from backchannel.encoding import Reader
from backchannel.envelope import MAX_CIPHERTEXT_BYTES, Envelope, Route
from backchannel.errors import BackchannelError
from backchannel.identity import IdentityPublic, format_fingerprint
from backchannel.keys import SIGNATURE_SIZE
from backchannel.prekeys import (
    MAX_PREKEYS_PER_UPLOAD,
    KemPrekey,
    OneTimePrekey,
    PrekeyBundle,
    SignedPrekey,
)
from backchannel.proposals import EntryKind, NotaryLink, NotaryReceipt
from backchannel.relay_auth import verify_login, verify_registration

from .access import require_sender
from .appkeys import (
    ADMIN_TOKEN_HASH,
    BUNDLES,
    COMMITTER,
    CONFIG,
    DROPS,
    EXERCISES,
    HUB,
    METRICS,
    NOTARY,
    RELAY_ID,
    SEND_LIMITER,
    SOCKETS,
    STORE,
    participant,
)
from .delivery import GroupCommitter
from .errors import (
    BadRequest,
    Forbidden,
    NotFound,
    RelayError,
    TooManyRequests,
    Unauthorized,
)
from .limits import RateLimit, RateLimiter
from .notary import Direct
from .openapi import openapi_document
from .store import NewEnvelope, ParticipantInfo, StoredEnvelope, digest
from .wire import (
    MAX_ID,
    b64,
    body_limits,
    bytes_field,
    bytes_list,
    envelope_ids,
    int_field,
    json_body,
    query_int,
    text_field,
)

T = TypeVar("T")
log = logging.getLogger("backchannel_relay")
routes = web.RouteTableDef()
PUBLIC = {
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/v1/info",
    "/v1/register",
    "/v1/auth/challenge",
    "/v1/auth/token",
    "/v1/admin/invites",
}
SEALED = {"/v1/drops/send", "/v1/drops/fetch", "/v1/drops/ack", "/v1/drops/close"}
"""Sealed-sender routes: the token or read key in the body is the credential, and nobody logs in,
so the relay does not learn who writes or reads (PROTOCOL.md §15.3)."""
PUBLIC |= SEALED
SILENT = SEALED | {"/v1/drops"}
"""Routes that leave no access-log line and no metric: off-the-record traffic."""
MAX_PAGE = 500
MAILBOX_READS = {("GET", "/v1/messages"), ("POST", "/v1/messages/ack"), ("GET", "/v1/ws")}
"""Reading and acknowledging one's own mailbox: paid from the read budget (`RelayConfig.
read_rate`), so that no amount of sending, one's own or anyone's, keeps a participant from it."""
SENDS = {("POST", "/v1/messages")}
"""Paid per envelope from the send budget by the handler (`RelayConfig.send_rate`)."""


def _parsed(parse: Callable[[Reader], T], data: bytes, what: str) -> T:
    """Run a strict core parser; its error becomes a 400 naming the field and the fault."""
    try:
        reader = Reader(data, what)
        value = parse(reader)
        reader.finish()
    except BackchannelError as exc:
        raise BadRequest(f"{what}: {exc}", code=exc.code) from None
    return value


def _participant_json(info: ParticipantInfo) -> dict[str, object]:
    identity = IdentityPublic.from_bytes(info.identity)
    return {
        "name": info.name,
        "role": info.role,
        "identity": b64(info.identity),
        "fingerprint": format_fingerprint(identity.fingerprint()),
    }


# --- public ----------------------------------------------------------------------------------


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


@routes.get("/v1/info")
async def info(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    return web.json_response(
        {
            "relay_id": b64(request.app[RELAY_ID]),
            "notary_key": b64(request.app[NOTARY].key.public.raw),
            "control_key": b64(request.app[EXERCISES].control_key.public.raw),
            "protocol_version": PROTOCOL_VERSION,
            "limits": {
                "max_envelope_bytes": MAX_CIPHERTEXT_BYTES,
                "max_batch": config.batch_limit,
                "max_body_bytes": config.max_body_bytes,
                "body_limits": body_limits(config),
                "body_timeout_seconds": config.body_timeout,
                "max_queue_envelopes": config.limits.max_queue_envelopes,
                "max_queue_bytes": config.limits.max_queue_bytes,
                "max_expiry_seconds": config.limits.max_expiry_seconds,
                "max_drop_ttl_seconds": config.drops.max_ttl,
                "rate_burst": config.rate.burst,
                "rate_per_second": config.rate.per_second,
                "send_burst": config.send_rate.burst,
                "send_per_second": config.send_rate.per_second,
                "read_burst": config.read_rate.burst,
                "read_per_second": config.read_rate.per_second,
                "max_share_envelopes": config.limits.max_share_envelopes,
                "max_share_bytes": config.limits.max_share_bytes,
            },
        }
    )


@routes.post("/v1/register")
async def register(request: web.Request) -> web.Response:
    body = await json_body(request)
    invite = text_field(body, "invite", 128)
    name = text_field(body, "name")
    identity_raw = bytes_field(body, "identity")
    identity = _parsed(IdentityPublic.read, identity_raw, "identity")
    try:
        verify_registration(
            identity, bytes_field(body, "proof"), request.app[RELAY_ID], invite, name
        )
    except BackchannelError:
        raise Unauthorized("the registration proof does not verify", code="bad_proof") from None
    signed_raw = bytes_field(body, "signed_prekey")
    kem_raw = bytes_field(body, "kem_last_resort")
    one_time_raw = bytes_list(body, "one_time_prekeys", MAX_PREKEYS_PER_UPLOAD)
    kem_one_time_raw = bytes_list(body, "kem_prekeys", MAX_PREKEYS_PER_UPLOAD)
    one_time, kem_one_time, last_resort = _checked_prekeys(
        identity, signed_raw, kem_raw, one_time_raw, kem_one_time_raw
    )
    assert last_resort is not None
    registered = await request.app[STORE].register(
        invite, name, identity_raw, signed_raw, last_resort, one_time, kem_one_time
    )
    return web.json_response(_participant_json(registered), status=201)


def _checked_prekeys(
    identity: IdentityPublic,
    signed_raw: bytes | None,
    kem_raw: bytes | None,
    one_time_raw: list[bytes],
    kem_one_time_raw: list[bytes],
) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]], tuple[int, bytes] | None]:
    """Parse and verify every uploaded prekey against the uploader's identity."""
    try:
        if signed_raw is not None:
            _parsed(SignedPrekey.read, signed_raw, "signed_prekey").verify(identity)
        last_resort = None
        if kem_raw is not None:
            kem: KemPrekey = _parsed(KemPrekey.read, kem_raw, "kem_last_resort")
            kem.verify(identity)
            if not kem.last_resort:
                raise BadRequest("kem_last_resort must be marked last-resort", code="invalid_field")
            last_resort = (kem.id, kem_raw)
        one_time = [
            (_parsed(OneTimePrekey.read, raw, "one_time_prekeys").id, raw) for raw in one_time_raw
        ]
        kem_one_time = []
        for raw in kem_one_time_raw:
            prekey: KemPrekey = _parsed(KemPrekey.read, raw, "kem_prekeys")
            prekey.verify(identity)
            if prekey.last_resort:
                raise BadRequest("kem_prekeys must be one-time keys", code="invalid_field")
            kem_one_time.append((prekey.id, raw))
    except BackchannelError as exc:
        raise BadRequest(f"prekey: {exc}", code=exc.code) from None
    _distinct([i for i, _ in one_time], "one-time X25519 prekey")
    _distinct([i for i, _ in [*kem_one_time, *([last_resort] if last_resort else [])]],
              "KEM prekey (one-time and last-resort KEM prekeys share one id space)")  # fmt: skip
    return one_time, kem_one_time, last_resort


def _distinct(ids: list[int], what: str) -> None:
    """PROTOCOL.md §3: an initial message names a prekey by its id alone, so within its id space
    an id is never given twice (in one request here; across requests the store refuses it)."""
    seen: set[int] = set()
    for prekey_id in ids:
        if prekey_id in seen:
            raise BadRequest(f"{what} id {prekey_id} appears twice", code="duplicate_prekey_id")
        seen.add(prekey_id)


@routes.post("/v1/auth/challenge")
async def challenge(request: web.Request) -> web.Response:
    body = await json_body(request)
    store = request.app[STORE]
    who = await store.participant(text_field(body, "name"))
    value = await store.create_challenge(who.id)
    return web.json_response({"challenge": b64(value), "expires_in": store.limits.challenge_ttl})


@routes.post("/v1/auth/token")
async def token(request: web.Request) -> web.Response:
    body = await json_body(request)
    store = request.app[STORE]
    name = text_field(body, "name")
    value = bytes_field(body, "challenge")
    who = await store.participant(name)
    try:
        verify_login(
            IdentityPublic.from_bytes(who.identity),
            bytes_field(body, "signature"),
            request.app[RELAY_ID],
            value,
            name,
        )
    except BackchannelError:
        raise Unauthorized("the challenge signature does not verify", code="bad_proof") from None
    session_token, expires_at = await store.redeem_challenge(who.id, value)
    return web.json_response({"token": b64(session_token), "expires_at": expires_at})


@routes.post("/v1/auth/logout")
async def logout(request: web.Request) -> web.Response:
    """Revoke the session token this request presents (PROTOCOL.md §13.3)."""
    token = base64.b64decode(request.headers["Authorization"][7:].strip())
    await request.app[STORE].revoke_token(token)
    return web.json_response({"revoked": True})


MAX_INVITE_TTL = 366 * 24 * 3600


@routes.post("/v1/admin/invites")
async def admin_invite(request: web.Request) -> web.Response:
    header = request.headers.get("Authorization", "")
    presented = header.removeprefix("Bearer ").strip().encode()
    if not presented or not hmac.compare_digest(digest(presented), request.app[ADMIN_TOKEN_HASH]):
        raise Unauthorized("a valid admin token is required", code="admin_token_required")
    body = await json_body(request)
    ttl = int_field(body, "ttl_seconds", request.app[CONFIG].invite_ttl, MAX_INVITE_TTL)
    name, role = text_field(body, "name"), text_field(body, "role", 16)
    code, expires_at = await request.app[STORE].create_invite(name, role, ttl)
    return web.json_response(
        {"name": name, "role": role, "invite": code, "expires_at": expires_at}, status=201
    )


# --- authenticated ---------------------------------------------------------------------------


@routes.get("/v1/directory")
async def directory(request: web.Request) -> web.Response:
    everyone = await request.app[STORE].directory()
    return web.json_response({"participants": [_participant_json(p) for p in everyone]})


@routes.get("/v1/directory/{name}")
async def directory_entry(request: web.Request) -> web.Response:
    who = await request.app[STORE].participant(request.match_info["name"])
    return web.json_response(_participant_json(who))


@routes.get("/v1/prekeys/{name}")
async def fetch_bundle(request: web.Request) -> web.Response:
    """Hand out a bundle (and so one of the target's one-time prekeys) only to whom may write
    to the target, at a limited pace, and remember it for the target's own count."""
    me, store, guard = participant(request), request.app[STORE], request.app[BUNDLES]
    require_sender(me, "start sessions, so they fetch no prekey bundles")
    target = await store.participant(request.match_info["name"])
    await request.app[EXERCISES].may_reach(
        me.name, target.name, "its prekey bundle goes to whoever may write to it"
    )
    guard.admit(me.id, target)
    identity, signed, one_time, kem, left = await store.take_bundle_parts(target.name)
    guard.taken(me.id, target.id)
    bundle = PrekeyBundle(
        IdentityPublic.from_bytes(identity),
        _parsed(SignedPrekey.read, signed, "stored signed prekey"),
        _parsed(OneTimePrekey.read, one_time, "stored one-time prekey") if one_time else None,
        _parsed(KemPrekey.read, kem, "stored KEM prekey"),
    )
    return web.json_response({"bundle": b64(bundle.to_bytes()), "one_time_prekeys_left": left})


@routes.get("/v1/prekeys")
async def own_prekeys(request: web.Request) -> web.Response:
    """The caller's counts, and how many of its bundles were taken lately (drain warning)."""
    me = participant(request)
    counts = await request.app[STORE].prekey_counts(me.id)
    return web.json_response({**counts, **request.app[BUNDLES].report(me.id)})


@routes.post("/v1/prekeys")
async def upload_prekeys(request: web.Request) -> web.Response:
    body = await json_body(request)
    me = participant(request)
    signed_raw = bytes_field(body, "signed_prekey") if "signed_prekey" in body else None
    kem_raw = bytes_field(body, "kem_last_resort") if "kem_last_resort" in body else None
    one_time, kem_one_time, last_resort = _checked_prekeys(
        IdentityPublic.from_bytes(me.identity),
        signed_raw,
        kem_raw,
        bytes_list(body, "one_time_prekeys", MAX_PREKEYS_PER_UPLOAD),
        bytes_list(body, "kem_prekeys", MAX_PREKEYS_PER_UPLOAD),
    )
    store = request.app[STORE]
    await store.add_prekeys(me.id, signed_raw, last_resort, one_time, kem_one_time)
    return web.json_response(await store.prekey_counts(me.id))


async def _pay_for_envelopes(request: web.Request, who: ParticipantInfo, count: int) -> None:
    """One token of the sender's send budget per envelope, before any is looked at: a batch
    of 256 costs 256, and refused envelopes cost as much as accepted ones."""
    try:
        await request.app[SEND_LIMITER].take_async(who.id, count)
    except TooManyRequests as exc:
        raise TooManyRequests(
            f"too many envelopes sent ({count} in this request); slow down",
            retry_after=exc.retry_after,
            code="send_rate_limited",
        ) from None


@routes.post("/v1/messages")
async def send(request: web.Request) -> web.Response:
    me = participant(request)
    require_sender(me, "send letters")
    config, store = request.app[CONFIG], request.app[STORE]
    try:
        raw = bytes_list(await json_body(request), "envelopes", config.batch_limit)
    except RelayError:
        await _pay_for_envelopes(request, me, 1)  # unreadable, yet not free
        raise
    await _pay_for_envelopes(request, me, max(1, len(raw)))
    if not raw:
        raise BadRequest("field 'envelopes' must hold at least one envelope", code="invalid_field")
    now = store.now()
    envelopes: list[Envelope] = []
    for index, data in enumerate(raw):
        try:
            envelope = Envelope.from_bytes(data)
        except BackchannelError as exc:
            raise BadRequest(f"envelopes[{index}]: {exc}", code="invalid_envelope") from None
        if envelope.route == Route.SEALED:
            raise BadRequest(
                "sealed-sender envelopes go to a drop (POST /v1/drops/send, PROTOCOL.md §15.3)",
                code="sealed_sender_unavailable",
            )
        if envelope.sender != me.name:
            raise Forbidden(f"envelopes[{index}] names another sender", code="sender_mismatch")
        if not now < envelope.expires_at <= now + config.limits.max_expiry_seconds:
            raise BadRequest(
                f"envelopes[{index}] expiry must be in the future and within "
                f"{config.limits.max_expiry_seconds} seconds",
                code="bad_expiry",
            )
        envelopes.append(envelope)
    ids = await store.participant_ids([e.recipient for e in envelopes])
    missing = sorted({e.recipient for e in envelopes} - ids.keys())
    if missing:
        raise NotFound(f"no participant named {missing[0]!r}", code="unknown_recipient")
    await request.app[EXERCISES].check(envelopes)
    items = [
        (ids[e.recipient], NewEnvelope(e.recipient, e.message_id, e.expires_at, data, me.id))
        for e, data in zip(envelopes, raw, strict=True)
    ]
    receipts = await request.app[COMMITTER].submit(items)
    request.app[METRICS].envelopes_accepted.inc(sum(not r.duplicate for r in receipts))
    return web.json_response(
        {
            "receipts": [
                {
                    "message_id": r.message_id.hex(),
                    "id": r.seq,
                    "received_at": r.received_at_ms,
                    "duplicate": r.duplicate,
                }
                for r in receipts
            ]
        }
    )


@routes.get("/v1/messages")
async def mailbox(request: web.Request) -> web.Response:
    after = query_int(request, "after", 0, MAX_ID)
    limit = query_int(request, "limit", 100, MAX_PAGE) or 1
    page = await request.app[STORE].mailbox_page(participant(request).id, after, limit)
    return web.json_response(
        {
            "envelopes": [
                {"id": e.seq, "received_at": e.received_at_ms, "envelope": b64(e.body)}
                for e in page
            ],
            "more": len(page) == limit,
        }
    )


@routes.post("/v1/messages/ack")
async def acknowledge(request: web.Request) -> web.Response:
    body = await json_body(request)
    ids = envelope_ids(body.get("ids"), MAX_PAGE)
    if ids is None:
        raise BadRequest(
            f"field 'ids' must be a list of at most {MAX_PAGE} positive integers",
            code="invalid_field",
        )
    count = await request.app[COMMITTER].acknowledge(participant(request).id, ids)
    return web.json_response({"acknowledged": count})


@routes.get("/v1/ws")
async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Live delivery: everything unacknowledged, then each arrival as it is committed."""
    me = participant(request)
    hub, store, config = request.app[HUB], request.app[STORE], request.app[CONFIG]
    if hub.connections_of(me.id) >= config.max_connections_per_participant:
        raise TooManyRequests(
            "too many open connections for this participant",
            retry_after=5,
            code="too_many_connections",
        )
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1024 * 1024)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    wake = hub.subscribe(me.id)
    gauge = request.app[METRICS].websockets
    gauge.inc()
    reader = asyncio.create_task(_read_acks(ws, request.app[COMMITTER], me.id))
    failed = False
    try:
        last = 0
        delivered = request.app[METRICS].envelopes_delivered
        while not ws.closed and not reader.done():
            page, from_store = wake.take()
            if from_store:
                page = await store.mailbox_page(me.id, last, MAX_PAGE)
                if len(page) == MAX_PAGE:  # more is waiting in the store: read on
                    wake.stale, wake.pending = True, []
                    wake.set()
            pushed = 0
            for envelope in page:
                if envelope.seq <= last:  # both read from the store and handed over
                    continue
                await ws.send_str(_push_frame(envelope))
                last = envelope.seq
                pushed += 1
            wake.cursor = max(wake.cursor, last)
            delivered.inc(pushed)
            if not wake.is_set():
                waiter = asyncio.create_task(wake.wait())
                await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    except Exception as exc:  # the socket is upgraded: it gets a close code, never an HTTP 500
        log.error("websocket failed: %s", type(exc).__name__)
        failed = True
    finally:
        reader.cancel()
        try:
            await reader
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            log.error("websocket reader failed: %s", type(exc).__name__)
            failed = True
        hub.unsubscribe(me.id, wake)
        sockets.discard(ws)
        gauge.dec()
        if failed:
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"relay error")
        await ws.close()
    return ws


def _push_frame(envelope: StoredEnvelope) -> str:
    """`{"type": "envelope", "id", "received_at", "envelope"}`, as json.dumps would write it
    (the values are integers and base64, which need no escaping)."""
    return (
        f'{{"type": "envelope", "id": {envelope.seq}, "received_at": {envelope.received_at_ms}, '
        f'"envelope": "{b64(envelope.body)}"}}'
    )


MAX_INVALID_FRAMES = 8
"""Invalid frames one socket may send, each answered with an error frame; the next closes the
socket with 1008 (policy violation)."""
FRAME_RATE = RateLimit(100.0, 20.0)
"""Frames one socket may send: a burst, then a steady rate. Beyond it the relay stops reading
the socket until the bucket refills: the client is slowed, never refused, since losing an
acknowledgement would only bring its envelopes back."""


def _ack_ids(message: WSMessage) -> list[int] | None:
    """The ids of an `{"type": "ack", "ids": [...]}` frame, or None for anything else."""
    if message.type != WSMsgType.TEXT:
        return None
    try:
        frame = json.loads(message.data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(frame, dict) or frame.get("type") != "ack":
        return None
    return envelope_ids(frame.get("ids"), MAX_PAGE)


async def _read_acks(ws: web.WebSocketResponse, committer: GroupCommitter, me: int) -> None:
    """The client's half of the socket: acknowledgements, which delete from its mailbox."""
    frames = RateLimiter(FRAME_RATE, max_keys=1)
    invalid = 0
    async for message in ws:
        if message.type == WSMsgType.ERROR:  # a frame over the size limit: aiohttp closes
            return
        while True:
            try:
                frames.take(None)
                break
            except TooManyRequests as exc:
                await asyncio.sleep(exc.retry_after)
        ids = _ack_ids(message)
        if ids is None:
            invalid += 1
            if invalid > MAX_INVALID_FRAMES:
                await ws.close(
                    code=WSCloseCode.POLICY_VIOLATION, message=b"too many invalid frames"
                )
                return
            await ws.send_json(
                {
                    "type": "error",
                    "error": "invalid_frame",
                    "message": f'expected {{"type": "ack", "ids": [at most {MAX_PAGE} ids]}}',
                }
            )
            continue
        await committer.acknowledge(me, ids)


# --- the notary (PROTOCOL.md §14.3) ---------------------------------------------------------------

MAX_ADDRESSEES = 16
NOTARY_KINDS = {
    "acceptance": EntryKind.ACCEPTANCE,
    "withdrawal": EntryKind.WITHDRAWAL,
    "statement": EntryKind.STATEMENT,
}


def _receipt(receipt: NotaryReceipt) -> dict[str, object]:
    entry = receipt.entry
    return {"receipt": b64(receipt.to_bytes()), "seq": entry.seq, "at_ms": entry.at_ms}


def _logged(item: NotaryReceipt | NotaryLink) -> dict[str, object]:
    if isinstance(item, NotaryLink):
        return {"seq": item.seq, "link": b64(item.to_bytes())}
    return _receipt(item)


async def _reaches_parties(
    request: web.Request, commitment: bytes, what: str, mediated: bool
) -> None:
    """A statement or a key about a notarised proposal reaches its other parties: refuse it
    where the policy gives no direct channel, nor (`mediated`: a statement, which the maker's
    client sends through the mediator, and the log shows the party only as a link) a route
    through the proposal's mediator. A key is handed out by the relay itself: direct only."""
    parties = await request.app[NOTARY].parties(commitment)
    if parties is not None:
        author, addressees, mediator = parties
        await request.app[EXERCISES].may_write(
            participant(request).name,
            [author, *addressees],
            what,
            via=mediator if mediated else None,
        )


def _direct_to(request: web.Request) -> Direct:
    """Whether a participant may write directly to the caller: whether the notary may show the
    caller what that participant notarised."""
    exercises, me = request.app[EXERCISES], participant(request).name
    return lambda name: exercises.direct(name, me)


@routes.post("/v1/notary/commitments")
async def notary_commit(request: web.Request) -> web.Response:
    """Sequence and sign a proposal's commitment with the terms the notary enforces: its
    author, who may accept it, and its expiry (PROTOCOL.md §14.4)."""
    me = participant(request)
    require_sender(me, "notarise proposals")
    body = await json_body(request)
    commitment = bytes_field(body, "commitment", 32)
    names = body.get("addressees")
    if (
        not isinstance(names, list)
        or not 0 < len(names) <= MAX_ADDRESSEES
        or not all(isinstance(name, str) for name in names)
        or len(set(names)) != len(names)
    ):
        raise BadRequest(
            f"field 'addressees' must list 1 to {MAX_ADDRESSEES} different names",
            code="invalid_field",
        )
    expires_at_ms = int_field(body, "expires_at_ms", 0)
    via = body.get("via")
    if via is not None and (not isinstance(via, str) or via == me.name or via in names):
        raise BadRequest(
            "field 'via' names the proposal's mediator: a participant other than its author "
            "and addressees",
            code="invalid_field",
        )
    await request.app[EXERCISES].may_write(
        me.name, names, "a proposal notarised for its addressees", via=via, advise=True
    )
    receipt = await request.app[NOTARY].commit(me, commitment, names, expires_at_ms, via)
    return web.json_response(_receipt(receipt), status=201)


@routes.post("/v1/notary/statements")
async def notary_statement(request: web.Request) -> web.Response:
    """Sequence and sign a statement's digest about a notarised proposal."""
    me = participant(request)
    require_sender(me, "make statements about proposals")
    body = await json_body(request)
    name = body.get("kind")
    kind = NOTARY_KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise BadRequest(
            f"field 'kind' must be one of {', '.join(NOTARY_KINDS)}", code="invalid_field"
        )
    commitment, digest = bytes_field(body, "commitment", 32), bytes_field(body, "digest", 32)
    await _reaches_parties(request, commitment, "a statement about a proposal", mediated=True)
    receipt = await request.app[NOTARY].record(
        me.id, kind, commitment, digest, _direct_to(request)
    )
    return web.json_response(_receipt(receipt), status=201)


MAX_RELEASE_AHEAD_MS = 366 * 24 * 3600 * 1000


@routes.post("/v1/notary/keys")
async def notary_deposit(request: web.Request) -> web.Response:
    """Hold a timed proposal's content key until its reveal time (PROTOCOL.md §14.5)."""
    me = participant(request)
    require_sender(me, "deposit content keys")
    body = await json_body(request)
    commitment = bytes_field(body, "commitment", 32)
    key = bytes_field(body, "key", 32)
    release_at_ms = int_field(body, "release_at_ms")
    notary = request.app[NOTARY]
    if not 0 <= release_at_ms <= notary.store.now_ms() + MAX_RELEASE_AHEAD_MS:
        raise BadRequest("field 'release_at_ms' must be a time within a year",
                         code="invalid_field")  # fmt: skip
    await _reaches_parties(request, commitment, "a content key for a proposal", mediated=False)
    await notary.deposit(me.id, commitment, key, release_at_ms)
    return web.json_response({"release_at_ms": release_at_ms}, status=201)


@routes.get("/v1/notary/keys/{commitment}")
async def notary_release(request: web.Request) -> web.Response:
    """A timed proposal's content key, to its author and addressees, once its time has come."""
    text = request.match_info["commitment"]
    if len(text) != 64 or text.strip("0123456789abcdef"):
        raise BadRequest("the commitment is 64 lower-case hex digits", code="invalid_field")
    key, release_at_ms = await request.app[NOTARY].release(
        participant(request).id, bytes.fromhex(text)
    )
    return web.json_response({"key": b64(key), "release_at_ms": release_at_ms})


@routes.get("/v1/notary/log")
async def notary_log(request: web.Request) -> web.Response:
    """The log in seq order: the entries of the caller's own proposals made by whoever may
    write to it directly as signed receipts, every other entry as a link, so that anyone logged
    in checks the whole chain."""
    after = query_int(request, "after", 0, MAX_ID)
    limit = query_int(request, "limit", 100, MAX_PAGE) or 1
    items = await request.app[NOTARY].log(
        participant(request).id, after, limit, _direct_to(request)
    )
    return web.json_response({"entries": [_logged(i) for i in items], "more": len(items) == limit})


# --- drops: sealed-sender delivery (PROTOCOL.md §15.3) ---------------------------------------


@routes.post("/v1/drops")
async def create_drop(request: web.Request) -> web.Response:
    """Open a drop (authenticated, so drops cannot be made by the million; nothing links the
    drop to its maker once this request is answered).

    The relay cannot know the drop's correspondent (that is the point of sealed sender), so the
    policy holds where it can: the role must send, the exercise must give it a direct channel
    to someone, and it may hold only so many drops (`DropQuota`, times only)."""
    me, drops = participant(request), request.app[DROPS]
    require_sender(me, "open off-the-record channels")
    if not await request.app[EXERCISES].has_direct_channel(me.name):
        raise Forbidden(
            f"the exercise gives {me.name} no direct channel to anyone, and an off-the-record "
            "channel needs one",
            code="policy_forbids",
        )
    body = await json_body(request)
    address, read_key_hash = bytes_field(body, "address", 32), bytes_field(body, "read_hash", 32)
    expires_at = int_field(body, "expires_at")
    drops.quota.take(me.id)
    try:
        expires_at = await drops.create(address, read_key_hash, expires_at)
    except RelayError:
        drops.quota.refund(me.id)
        raise
    return web.json_response({"expires_at": expires_at}, status=201)


@routes.post("/v1/drops/send")
async def drop_send(request: web.Request) -> web.Response:
    body = await json_body(request)
    token = bytes_field(body, "token", 32)
    envelope = bytes_field(body, "envelope")
    # A refusal (wrong token, bad envelope) costs the caller's address (`app.py`), in memory
    # only, so guessing is slow; a right one does not, so polling is not.
    duplicate = await request.app[DROPS].deliver(token, envelope)
    return web.json_response({"duplicate": duplicate}, status=200 if duplicate else 201)


def _read_key(body: dict[str, Any]) -> bytes:
    return bytes_field(body, "read_key", 32)


@routes.post("/v1/drops/fetch")
async def drop_fetch(request: web.Request) -> web.Response:
    body = await json_body(request)
    read_key = _read_key(body)
    after = int_field(body, "after", 0)
    limit = int_field(body, "limit", 100)
    if after > MAX_ID or not 1 <= limit <= MAX_PAGE:
        raise BadRequest(
            f"'after' is at most {MAX_ID} and 'limit' from 1 to {MAX_PAGE}", code="invalid_field"
        )
    messages, expires_at = await request.app[DROPS].fetch(read_key, after, limit)
    return web.json_response(
        {
            "messages": [{"id": m.id, "envelope": b64(m.body)} for m in messages],
            "more": len(messages) == limit,
            "expires_at": expires_at,
        }
    )


@routes.post("/v1/drops/ack")
async def drop_ack(request: web.Request) -> web.Response:
    body = await json_body(request)
    read_key = _read_key(body)
    ids = envelope_ids(body.get("ids"), MAX_PAGE)
    if ids is None:
        raise BadRequest(
            f"field 'ids' must be a list of at most {MAX_PAGE} positive integers",
            code="invalid_field",
        )
    count = await request.app[DROPS].acknowledge(read_key, ids)
    return web.json_response({"acknowledged": count})


@routes.post("/v1/drops/close")
async def drop_close(request: web.Request) -> web.Response:
    body = await json_body(request)
    await request.app[DROPS].close(_read_key(body))
    return web.json_response({"closed": True})


# --- exercises (PRODUCT.md §7) ----------------------------------------------------------------


@routes.get("/v1/exercise")
async def exercise(request: web.Request) -> web.Response:
    """The caller's exercise: briefs, scenario clock, channels, and the injects now due."""
    return web.json_response(await request.app[EXERCISES].view(participant(request).name))


@routes.get("/v1/exercise/observed")
async def observed(request: web.Request) -> web.Response:
    """An observer's read-only view of the party control named for it, within control_sees."""
    from .observing import view

    return web.json_response(await view(request.app[EXERCISES], participant(request).name))


@routes.post("/v1/exercise/traffic")
async def traffic(request: web.Request) -> web.Response:
    """A letter's report to control, as its pair's class lets control see it (§16.11): the
    sender's client posts it before the letter, with the sealed control copy when control
    sees content."""
    body = await json_body(request)
    to = text_field(body, "to")
    exercises = request.app[EXERCISES]
    if body.get("class") == "off_the_record":  # an opened channel: a count at most
        if "message_id" in body or "copy" in body:
            raise BadRequest("an off-the-record channel is reported by its class alone",
                             code="invalid_field")  # fmt: skip
        told = await exercises.report(participant(request), to, None, None)
        return web.json_response(told, status=201)
    if body.get("class") is not None:
        raise BadRequest("field 'class' is 'off_the_record' or absent (a letter)",
                         code="invalid_field")  # fmt: skip
    message_id = bytes_field(body, "message_id", MESSAGE_ID_SIZE)
    copy = bytes_field(body, "copy") if body.get("copy") is not None else None
    if copy is not None and len(copy) > MAX_COPY_BYTES:
        raise BadRequest(f"field 'copy' is longer than {MAX_COPY_BYTES} bytes",
                         code="invalid_field")  # fmt: skip
    told = await exercises.report(participant(request), to, message_id, copy)
    return web.json_response(told, status=201)


@routes.post("/v1/exercise/communiques")
async def communique(request: web.Request) -> web.Response:
    """A signed public statement to every role of the caller's exercise (PROTOCOL.md §16.9)."""
    body = await json_body(request)
    text = body.get("text")
    if not isinstance(text, str):
        raise BadRequest("field 'text' must be a string", code="invalid_field")
    at = body.get("at")
    if not isinstance(at, int) or isinstance(at, bool):
        raise BadRequest("field 'at' must be an integer (Unix ms)", code="invalid_field")
    signature = bytes_field(body, "signature", SIGNATURE_SIZE)
    number = await request.app[EXERCISES].communique(participant(request), at, text, signature)
    return web.json_response({"number": number}, status=201)
