"""Bad input never gets a 5xx (issue 16, item 8): every route, and the WebSocket, answers hostile
input with a 4xx and the JSON error body, or a close code, on each backend.

The sweep walks the relay's own OpenAPI document, so a route added later is swept too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from backchannel.identity import IdentityKeyPair
from backchannel.prekeys import PrekeySecrets, PublishedPrekeys
from backchannel_cli.relay import RelayClient, RelayRequestError, b64

from .conftest import Member, Relay, fresh_keys, join, unique
from .test_api import envelope, raw, refused
from .test_drops import open_drop, sealed

NESTED_LIST = "[" * 30_000 + "]" * 30_000  # within every route's body limit, past any recursion
NESTED_OBJECT = '{"a":' * 10_000 + "1" + "}" * 10_000
HUGE_NUMBER = "1" + "0" * 5_000  # more digits than Python's int() reads from text
RAW_BODIES: list[bytes] = [
    NESTED_LIST.encode(),
    NESTED_OBJECT.encode(),
    HUGE_NUMBER.encode(),
    b'{"x": ' + HUGE_NUMBER.encode() + b"}",
    b'{"a": "\xff\xfe"}',  # not UTF-8
    b"NaN",
    b"null",
    b"[]",
    b'"text"',
    b"",
    b"{",
]
HOSTILE_VALUES: list[Any] = [
    10**30,
    2**63,
    -1,
    1.5,
    float("1e308"),
    "²",
    "٣",
    "",
    "x" * 1000,
    [],
    [[[[]]]],
    {},
    None,
    True,
    [10**30],
    ["²"],
]
HOSTILE_QUERIES = ["²", "٣", "1" * 5_000, "-1", "", "0x10", "1e3", "9" * 20, " 1"]
HOSTILE_PATH_VALUES = ["²", "x" * 300, "%00", "..%2F..", "%FF", "0" * 64, "g" * 64]


def _sample(schema: dict[str, Any], member: Member, other: Member) -> Any:
    """A plausible value for a schema property, so that one hostile field goes deep."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "integer":
        return 1
    if kind == "array":
        item = schema.get("items", {})
        return [other.name] if item.get("maxLength") == 64 else []
    if schema.get("format") == "byte":
        return b64(os.urandom(32))
    if schema.get("maxLength") == 64:
        return other.name
    return "x"


async def _bases(relay: Relay, member: Member, other: Member) -> dict[str, dict[str, Any]]:
    """Request bodies that the relay would accept (or nearly), per route template."""
    token, read_key = await open_drop(other)
    now_ms = int(time.time() * 1000)
    return {
        "/v1/messages": {"envelopes": [b64(envelope(member.name, other.name))]},
        "/v1/messages/ack": {"ids": [1]},
        "/v1/notary/commitments": {
            "commitment": b64(os.urandom(32)),
            "addressees": [other.name],
            "expires_at_ms": now_ms + 60_000,
        },
        "/v1/notary/keys": {
            "commitment": b64(os.urandom(32)),
            "key": b64(os.urandom(32)),
            "release_at_ms": now_ms + 60_000,
        },
        "/v1/drops": {
            "address": b64(os.urandom(32)),
            "read_hash": b64(os.urandom(32)),
            "expires_at": int(time.time()) + 60,
        },
        "/v1/drops/send": {"token": b64(token), "envelope": b64(sealed())},
        "/v1/drops/fetch": {"read_key": b64(read_key), "after": 0, "limit": 10},
        "/v1/drops/ack": {"read_key": b64(read_key), "ids": [1]},
        "/v1/admin/invites": {"name": unique("invitee"), "role": "party", "ttl_seconds": 60},
        "/v1/auth/challenge": {"name": member.name},
        "/v1/auth/token": {
            "name": member.name,
            "challenge": b64(os.urandom(32)),
            "signature": b64(os.urandom(64)),
        },
    }


def _bodies(base: dict[str, Any]) -> list[bytes | dict[str, Any]]:
    """The raw hostile bodies, then the base with each field in turn made hostile."""
    cases: list[bytes | dict[str, Any]] = list(RAW_BODIES)
    for key in base:
        cases.extend({**base, key: value} for value in HOSTILE_VALUES)
        cases.append(f'{{"{key}": {HUGE_NUMBER}}}'.encode())
    return cases


async def test_every_route_answers_hostile_input_with_a_4xx_json_error(relay: Relay) -> None:
    member, other = await join(relay, "sweeper"), await join(relay, "swept")
    status, document = await raw(relay, "GET", "/openapi.json")
    assert status == 200
    paths: dict[str, dict[str, Any]] = document["paths"]  # type: ignore[assignment]
    bases = await _bases(relay, member, other)
    log_before = len(relay.log())
    bearer = {"Authorization": f"Bearer {member.client.token}"}
    admin = {"Authorization": f"Bearer {relay.admin_token()}"}
    hostile_tokens = ["Bearer ²²", "Bearer " + "A" * 4000, "Bearer", "Basic eA==", "Bearer ===="]
    failures: list[str] = []
    seen = 0

    async def check(
        session: aiohttp.ClientSession, method: str, url: str, case: str, **kwargs: Any
    ) -> None:
        nonlocal seen
        seen += 1
        async with session.request(method, relay.url + url, **kwargs) as response:
            text = await response.text(errors="replace")
            if response.status >= 500:
                failures.append(f"{method} {url} [{case}] -> {response.status}: {text[:120]}")
            elif response.status >= 400 and response.content_type == "application/json":
                body = await response.json()
                if not (
                    isinstance(body.get("error"), str) and isinstance(body.get("message"), str)
                ):
                    failures.append(f"{method} {url} [{case}] -> {response.status}: {text[:120]}")
            elif response.status >= 400:
                failures.append(f"{method} {url} [{case}] -> {response.status} not JSON")

    # Revoking the sweeper's token would blind the rest of the sweep: logout goes last.
    routes = sorted(paths.items(), key=lambda item: "logout" in item[0])
    async with aiohttp.ClientSession() as session:
        for template, operations in routes:
            for method, operation in operations.items():
                method = method.upper()
                if template == "/v1/ws":
                    continue  # swept below, as a WebSocket
                headers = admin if template == "/v1/admin/invites" else bearer
                urls = [template]
                if "{" in template:
                    urls = [template.split("{")[0] + value for value in HOSTILE_PATH_VALUES]
                for url in urls:
                    for bad in hostile_tokens:
                        await check(session, method, url, bad, headers={"Authorization": bad})
                    if method == "GET":
                        for parameter in operation.get("parameters", []):
                            if parameter["in"] != "query":
                                continue
                            for value in HOSTILE_QUERIES:
                                await check(
                                    session, method, url, f"{parameter['name']}={value[:24]!r}",
                                    headers=headers, params={parameter["name"]: value},
                                )  # fmt: skip
                        await check(session, method, url, "plain", headers=headers)
                        continue
                    schema = (
                        operation.get("requestBody", {})
                        .get("content", {})
                        .get("application/json", {})
                        .get("schema", {})
                    )
                    base = bases.get(template) or {
                        key: _sample(value, member, other)
                        for key, value in schema.get("properties", {}).items()
                    }
                    for case in _bodies(base):
                        kwargs: dict[str, Any] = {"data": case}
                        label = repr(case[:24]) if isinstance(case, bytes) else "json"
                        if not isinstance(case, bytes):
                            kwargs = {"json": case}
                        await check(
                            session, method, url, label,
                            headers={**headers, "Content-Type": "application/json"}, **kwargs,
                        )  # fmt: skip
    assert seen > 1000
    assert failures == [], "\n".join(failures[:40])
    assert "internal error" not in relay.log()[log_before:]
    for who in (member, other):
        await who.client.close()


async def test_hostile_websocket_frames_get_error_frames_then_a_policy_close(
    relay: Relay, members: list[Member]
) -> None:
    """A frame nested past any parser's depth used to end in an HTTP 500 written into the
    upgraded socket. Each invalid frame now gets an error frame; past eight the socket is closed
    with 1008 (policy violation). A valid acknowledgement in between is taken as ever."""
    member, _ = members
    headers = {"Authorization": f"Bearer {member.client.token}"}
    hostile: list[str | bytes] = [
        "[" * 200_000 + "]" * 200_000,
        '{"type": "ack", "ids": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"type": "ack", "ids": [' + HUGE_NUMBER + "]}",
        '{"type": "ack", "ids": [100000000000000000000000000000]}',
        '{"type": "ack", "ids": "²"}',
        "[]",
        b"\x00binary",
        "not json",
    ]
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(relay.url.replace("http", "ws") + "/v1/ws", headers=headers) as ws,
    ):
        for frame in hostile:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
            answer = await ws.receive_json(timeout=10)
            assert (answer["type"], answer["error"]) == ("error", "invalid_frame")
        await ws.send_json({"type": "ack", "ids": [1]})  # valid: no answer, socket stays open
        await ws.send_str("one too many")
        closing = await ws.receive(timeout=10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1008
    assert (await member.client.mailbox())[0] == []  # the participant is otherwise untouched


async def test_nested_json_on_a_drop_route_is_a_400_and_leaves_no_log_line(relay: Relay) -> None:
    """It used to be a 500 whose error line named /v1/drops/send: a route that must leave none."""
    before = len(relay.log())
    for path in ("/v1/drops/send", "/v1/drops/fetch", "/v1/drops/ack", "/v1/drops/close"):
        status, body = await raw(relay, "POST", path, data=NESTED_LIST.encode())
        assert (status, body["error"]) == (400, "invalid_json"), path
    await asyncio.sleep(0.2)
    assert "drops" not in relay.log()[before:]


async def test_query_integers_take_ascii_digits_only(relay: Relay, members: list[Member]) -> None:
    member, _ = members
    bearer = {"Authorization": f"Bearer {member.client.token}"}
    for path in ("/v1/notary/log", "/v1/messages"):
        for value in ("²", "٣", "1e3", "-1", ""):
            status, body = await raw(relay, "GET", path, params={"after": value}, headers=bearer)
            assert (status, body["error"]) == (400, "invalid_query"), (path, value)
        for key in ("after", "limit"):  # taken as the maximum (an absurd after: nothing)
            status, body = await raw(relay, "GET", path, params={key: HUGE_NUMBER}, headers=bearer)
            assert status == 200, (path, key, body)


async def test_integer_fields_are_bounded(relay: Relay, members: list[Member]) -> None:
    """`expires_at_ms` of 10**30 on a commitment was an OverflowError (500)."""
    member, other = members
    for field, value in (("expires_at_ms", 10**30), ("expires_at_ms", 2**63)):
        refusal = await refused(
            member.client.request(
                "POST",
                "/v1/notary/commitments",
                {"commitment": b64(os.urandom(32)), "addressees": [other.name], field: value},
            )
        )
        assert (refusal.status, refusal.code) == (400, "invalid_field")
    admin = {"Authorization": f"Bearer {relay.admin_token()}"}
    status, body = await raw(
        relay,
        "POST",
        "/v1/admin/invites",
        json={"name": unique("late"), "role": "party", "ttl_seconds": 10**18},
        headers=admin,
    )
    assert (status, body["error"]) == (400, "invalid_field")


# --- prekey ids (PROTOCOL.md §3: one-time X25519 ids are one space; KEM ids, one-time and
# last-resort, another) -------------------------------------------------------------------------


async def register_raw(
    relay: Relay,
    tweak: Callable[[IdentityKeyPair, PublishedPrekeys], tuple[list[Any], list[Any]]],
) -> RelayRequestError | None:
    """Register a new name with fresh keys, its one-time prekeys (X25519, KEM) from `tweak`."""
    identity, secrets = fresh_keys(one_time=3, kem=2)
    published = secrets.published(identity)
    one_time, kem_one_time = tweak(identity, published)
    name = unique("collider")
    async with RelayClient(relay.url) as client:
        try:
            await client.register(
                identity, name, relay.invite(name), published.signed, published.kem_last_resort,
                one_time, kem_one_time,
            )  # fmt: skip
        except RelayRequestError as exc:
            return exc
    return None


async def test_colliding_prekey_ids_are_refused_with_a_4xx(relay: Relay) -> None:
    """Registration with one id twice (IntegrityError, 500, before) is 400 duplicate_prekey_id;
    an upload repeating a held id is 409 prekey_id_reused; the same number in the two spaces
    is fine."""
    doubled = await register_raw(relay, lambda _, p: ([*p.one_time, p.one_time[0]], []))
    assert doubled is not None and (doubled.status, doubled.code) == (400, "duplicate_prekey_id")
    # The last-resort KEM prekey has id 1: a one-time KEM prekey with id 1 collides with it.
    clash = await register_raw(
        relay, lambda identity, p: (p.one_time, PrekeySecrets().add_kem_prekeys(identity, 1)[1])
    )
    assert clash is not None and (clash.status, clash.code) == (400, "duplicate_prekey_id")
    # Id 1 in both spaces at once (the X25519 one-time and the KEM last resort) is no collision.
    assert await register_raw(relay, lambda _, p: (p.one_time, p.kem_one_time)) is None

    member = await join(relay, "uploader")  # one-time X25519 1..5; KEM 1 (last resort), 2..3
    _, again = member.prekeys.add_one_time_prekeys(1)  # id 6: new
    assert (await member.client.upload_prekeys(one_time=again))["one_time_prekeys"] == 6
    held = member.prekeys.published(member.identity).one_time[0]
    refusal = await refused(member.client.upload_prekeys(one_time=[held]))
    assert (refusal.status, refusal.code) == (409, "prekey_id_reused")
    _, kem = member.prekeys.add_kem_prekeys(member.identity, 1)  # id 4: new in the KEM space
    assert (await member.client.upload_prekeys(kem_one_time=kem))["kem_prekeys"] == 3
    last_resort = member.prekeys.published(member.identity).kem_last_resort
    refusal = await refused(member.client.upload_prekeys(kem_last_resort=last_resort))
    assert (refusal.status, refusal.code) == (409, "prekey_id_reused")
    refusal = await refused(member.client.upload_prekeys(one_time=[held, held]))
    assert (refusal.status, refusal.code) == (400, "duplicate_prekey_id")
    await member.client.close()


def test_the_body_limits_fit_the_largest_legitimate_bodies() -> None:
    """The route limits are derived from the protocol's maxima: the largest sealed envelope and
    prekey upload fit, base64 and JSON included, and a send carries a largest envelope."""
    from backchannel.encoding import Writer
    from backchannel_relay.config import RelayConfig
    from backchannel_relay.wire import MAX_ENVELOPE_BYTES, MAX_SEALED_BYTES, body_limit

    def encoded(prekey: Any) -> str:
        writer = Writer()
        prekey.write(writer)
        return base64.b64encode(bytes(writer)).decode()

    config = RelayConfig()
    drop = json.dumps({"token": b64(bytes(32)), "envelope": b64(bytes(MAX_SEALED_BYTES))})
    assert len(drop) <= body_limit(config, "/v1/drops/send")
    identity, secrets = fresh_keys(one_time=100, kem=100)
    published = secrets.published(identity)
    prekeys = {
        "signed_prekey": encoded(published.signed),
        "kem_last_resort": encoded(published.kem_last_resort),
        "one_time_prekeys": [encoded(p) for p in published.one_time],
        "kem_prekeys": [encoded(p) for p in published.kem_one_time],
    }
    assert len(json.dumps(prekeys)) <= body_limit(config, "/v1/prekeys")
    registration = {
        "invite": "x" * 128,
        "name": "é" * 32,
        "identity": b64(identity.public.to_bytes()),
        "proof": b64(bytes(64)),
        **prekeys,
    }
    assert len(json.dumps(registration)) <= body_limit(config, "/v1/register")
    send = json.dumps({"envelopes": [b64(bytes(MAX_ENVELOPE_BYTES))] * 60})
    assert len(send) <= body_limit(config, "/v1/messages")
    assert body_limit(config, "/v1/auth/challenge") == 64 * 1024
