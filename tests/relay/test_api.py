"""The relay's HTTP API as a participant meets it, on each backend."""

from __future__ import annotations

import asyncio
import base64
import os
import time

import aiohttp
import pytest

from backchannel.encoding import Writer
from backchannel.envelope import Envelope, Route
from backchannel.prekeys import PrekeyBundle
from backchannel_cli.relay import RelayClient, RelayRequestError, ack_on_socket, b64

from .conftest import Member, Relay, fresh_keys, join, make_relay, unique


def envelope(
    sender: str,
    recipient: str,
    *,
    expires_in: int = 3600,
    size: int = 512,
    message_id: bytes | None = None,
) -> bytes:
    return Envelope(
        recipient,
        sender,
        message_id or os.urandom(16),
        Route.DIRECT,
        int(time.time()) + expires_in,
        os.urandom(size),
    ).to_bytes()


async def refused(awaitable: object) -> RelayRequestError:
    with pytest.raises(RelayRequestError) as caught:
        await awaitable  # type: ignore[misc]
    error = caught.value
    assert error.code != "http_error", "every refusal has a JSON body with a code"
    assert error.message
    return error


async def raw(
    relay: Relay, method: str, path: str, **kwargs: object
) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, relay.url + path, **kwargs) as response,  # type: ignore[arg-type]
    ):
        return response.status, await response.json(content_type=None)


# --- public routes ------------------------------------------------------------------------------


async def test_health_info_and_openapi_answer(relay: Relay) -> None:
    assert (await raw(relay, "GET", "/healthz"))[1] == {"status": "ok"}
    async with RelayClient(relay.url) as client:
        info = await client.info()
    assert len(base64.b64decode(info["relay_id"])) == 16
    status, document = await raw(relay, "GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")  # type: ignore[union-attr]


def test_openapi_documents_every_route() -> None:
    from backchannel_relay.app import create_app
    from backchannel_relay.config import RelayConfig
    from backchannel_relay.openapi import openapi_document

    app = create_app(RelayConfig())
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {
        (method, path) for path, item in openapi_document()["paths"].items() for method in item
    }
    assert served == documented


async def test_unknown_path_is_a_json_404(relay: Relay) -> None:
    status, body = await raw(relay, "GET", "/v1/nothing-here")
    assert status == 404 and body["error"] == "not_found"


# --- registration and login ---------------------------------------------------------------------


async def test_registration_needs_a_valid_single_use_invite(relay: Relay) -> None:
    name = unique("reg")
    identity, secrets = fresh_keys()
    published = secrets.published(identity)
    invite = relay.invite(name)
    async with RelayClient(relay.url) as client:
        registered = await client.register(
            identity, name, invite, published.signed, published.kem_last_resort
        )
        assert registered["name"] == name and registered["role"] == "party"
        again = await refused(
            client.register(identity, name, invite, published.signed, published.kem_last_resort)
        )
        assert again.status == 403 and again.code == "invalid_invite"
        made_up = await refused(
            client.register(
                identity, unique("x"), "0" * 32, published.signed, published.kem_last_resort
            )
        )
        assert made_up.code == "invalid_invite"


async def test_an_invite_is_for_the_name_it_was_made_for(relay: Relay) -> None:
    identity, secrets = fresh_keys()
    published = secrets.published(identity)
    invite = relay.invite(unique("castro"))
    async with RelayClient(relay.url) as client:
        error = await refused(
            client.register(
                identity, unique("impostor"), invite, published.signed, published.kem_last_resort
            )
        )
    assert error.status == 403 and error.code == "invite_name_mismatch"


async def test_registration_proof_must_be_made_by_the_identity_key(relay: Relay) -> None:
    name = unique("proof")
    identity, secrets = fresh_keys()
    other, _ = fresh_keys()
    published = secrets.published(identity)
    async with RelayClient(relay.url) as client:
        relay_id = await client.relay_id()
        from backchannel.relay_auth import sign_registration

        status, body = await raw(
            relay,
            "POST",
            "/v1/register",
            json={
                "invite": (invite := relay.invite(name)),
                "name": name,
                "identity": b64(identity.public.to_bytes()),
                "proof": b64(sign_registration(other, relay_id, invite, name)),
                "signed_prekey": _enc(published.signed),
                "kem_last_resort": _enc(published.kem_last_resort),
            },
        )
    assert status == 401 and body["error"] == "bad_proof"


async def test_prekeys_signed_by_another_identity_are_refused(relay: Relay) -> None:
    name = unique("sig")
    identity, secrets = fresh_keys()
    other, other_secrets = fresh_keys()
    async with RelayClient(relay.url) as client:
        error = await refused(
            client.register(
                identity,
                name,
                relay.invite(name),
                other_secrets.published(other).signed,
                secrets.published(identity).kem_last_resort,
            )
        )
    assert error.status == 400 and error.code == "bad_prekey_signature"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"invite": 5}'])
async def test_malformed_registration_bodies_get_a_400(relay: Relay, body: bytes) -> None:
    status, answer = await raw(relay, "POST", "/v1/register", data=body)
    assert status == 400 and answer["error"] in {"invalid_json", "invalid_field"}


async def test_oversized_body_gets_a_413(relay: Relay) -> None:
    status, answer = await raw(relay, "POST", "/v1/register", data=b"x" * (9 * 1024 * 1024))
    assert status == 413 and answer["error"] == "payload_too_large"


async def test_a_login_challenge_is_single_use(relay: Relay, members: list[Member]) -> None:
    from backchannel.relay_auth import sign_login

    alice = members[0]
    async with RelayClient(relay.url) as client:
        relay_id = await client.relay_id()
        challenge = base64.b64decode(
            (await client.request("POST", "/v1/auth/challenge", {"name": alice.name}))["challenge"]
        )
        answer = {
            "name": alice.name,
            "challenge": b64(challenge),
            "signature": b64(sign_login(alice.identity, relay_id, challenge, alice.name)),
        }
        assert (await client.request("POST", "/v1/auth/token", answer))["token"]
        replay = await refused(client.request("POST", "/v1/auth/token", answer))
    assert replay.status == 401 and replay.code == "bad_challenge"


async def test_a_login_signed_by_another_key_is_refused(
    relay: Relay, members: list[Member]
) -> None:
    impostor, _ = fresh_keys()
    async with RelayClient(relay.url) as client:
        error = await refused(client.login(impostor, members[0].name))
    assert error.status == 401 and error.code == "bad_proof"


@pytest.mark.parametrize("path", ["/v1/directory", "/v1/prekeys", "/v1/messages"])
async def test_authenticated_routes_refuse_missing_and_bad_tokens(relay: Relay, path: str) -> None:
    assert (await raw(relay, "GET", path))[1]["error"] == "no_token"
    headers = {"Authorization": "Bearer " + b64(os.urandom(32))}
    status, body = await raw(relay, "GET", path, headers=headers)
    assert status == 401 and body["error"] == "bad_token"


async def test_admin_api_creates_invites_only_with_the_admin_token(relay: Relay) -> None:
    name = unique("admin")
    status, body = await raw(
        relay, "POST", "/v1/admin/invites", json={"name": name, "role": "observer"}
    )
    assert status == 401 and body["error"] == "admin_token_required"
    headers = {"Authorization": f"Bearer {relay.admin_token()}"}
    status, body = await raw(
        relay, "POST", "/v1/admin/invites", headers=headers, json={"name": name, "role": "observer"}
    )
    assert status == 201 and body["name"] == name and body["role"] == "observer" and body["invite"]
    status, body = await raw(
        relay, "POST", "/v1/admin/invites", headers=headers, json={"name": name, "role": "emperor"}
    )
    assert status == 400 and body["error"] == "invalid_role"


# --- directory and prekeys ----------------------------------------------------------------------


async def test_directory_lists_participants_with_keys(members: list[Member]) -> None:
    alice, bob = members
    listing = {entry["name"]: entry for entry in await alice.client.directory()}
    assert base64.b64decode(listing[bob.name]["identity"]) == bob.identity.public.to_bytes()
    assert listing[bob.name]["role"] == "party"


async def test_one_time_prekeys_are_handed_out_once_then_the_last_resort(
    members: list[Member],
) -> None:
    alice, bob = members
    seen = []
    for expected_left in (4, 3, 2, 1, 0, 0):
        raw_bundle, left = await alice.client.fetch_bundle(bob.name)
        bundle = PrekeyBundle.from_bytes(raw_bundle)
        assert bundle.identity.keys == bob.identity.public.keys
        assert left == expected_left
        seen.append(bundle.one_time_prekey.id if bundle.one_time_prekey else None)
    assert seen == [1, 2, 3, 4, 5, None]
    counts = await bob.client.prekey_counts()
    assert counts == {
        "one_time_prekeys": 0, "kem_prekeys": 0, "taken_last_hour": 6, "draining": True
    }  # fmt: skip
    _bob_secrets, fresh = bob.prekeys.add_one_time_prekeys(3)
    assert (await bob.client.upload_prekeys(fresh))["one_time_prekeys"] == 3
    reused = await refused(bob.client.upload_prekeys(fresh))
    assert reused.status == 409


async def test_fifty_concurrent_fetches_never_share_a_one_time_prekey(relay: Relay) -> None:
    owner = await join(relay, "popular", one_time=60)
    fetchers = [await join(relay, "fetcher", one_time=1) for _ in range(5)]
    try:
        tasks = [fetchers[i % 5].client.fetch_bundle(owner.name) for i in range(50)]
        bundles = [PrekeyBundle.from_bytes(raw) for raw, _ in await asyncio.gather(*tasks)]
        one_time_ids = [b.one_time_prekey.id for b in bundles if b.one_time_prekey]
        kem_ids = [b.kem_prekey.id for b in bundles if not b.kem_prekey.last_resort]
        assert len(one_time_ids) == 50 and len(set(one_time_ids)) == 50
        assert len(kem_ids) == len(set(kem_ids)) == 2
    finally:
        for member in [owner, *fetchers]:
            await member.client.close()


# --- envelopes ----------------------------------------------------------------------------------


async def test_send_fetch_acknowledge(members: list[Member]) -> None:
    alice, bob = members
    sent = [envelope(alice.name, bob.name) for _ in range(3)]
    receipts = await alice.client.send(sent)
    assert [r["duplicate"] for r in receipts] == [False] * 3
    assert all(r["received_at"] > 0 and r["id"] > 0 for r in receipts)
    page, more = await bob.client.mailbox()
    assert [p.envelope for p in page] == sent and not more
    assert await bob.client.acknowledge([p.id for p in page[:2]]) == 2
    remaining, _ = await bob.client.mailbox()
    assert [p.envelope for p in remaining] == sent[2:]


async def test_nobody_reads_or_deletes_another_mailbox(members: list[Member]) -> None:
    alice, bob = members
    await alice.client.send([envelope(alice.name, bob.name)])
    assert (await alice.client.mailbox())[0] == []
    page, _ = await bob.client.mailbox()
    assert await alice.client.acknowledge([p.id for p in page]) == 0
    assert len((await bob.client.mailbox())[0]) == 1


async def test_a_resend_is_stored_once_even_after_acknowledgement(members: list[Member]) -> None:
    alice, bob = members
    message = envelope(alice.name, bob.name)
    first = (await alice.client.send([message]))[0]
    again = await alice.client.send([message, message])
    assert [r["duplicate"] for r in again] == [True, True]
    assert {r["id"] for r in again} == {first["id"]}
    page, _ = await bob.client.mailbox()
    assert len(page) == 1
    await bob.client.acknowledge([page[0].id])
    after_ack = (await alice.client.send([message]))[0]
    assert after_ack["duplicate"] and after_ack["id"] == first["id"]
    assert (await bob.client.mailbox())[0] == []


async def test_send_refusals_are_specific_and_store_nothing(members: list[Member]) -> None:
    alice, bob = members
    cases = {
        "sender_mismatch": [envelope(bob.name, bob.name)],
        "unknown_recipient": [envelope(alice.name, unique("ghost"))],
        "invalid_envelope": [b"\x01\x00\x05"],
        "bad_expiry": [envelope(alice.name, bob.name, expires_in=-10)],
    }
    for code, batch in cases.items():
        error = await refused(alice.client.send([envelope(alice.name, bob.name), *batch]))
        assert error.code == code and 400 <= error.status < 500
    sealed = Envelope(
        bob.name, None, os.urandom(16), Route.SEALED, int(time.time()) + 60, b"x"
    ).to_bytes()
    assert (await refused(alice.client.send([sealed]))).code == "sealed_sender_unavailable"
    assert (await refused(alice.client.send([]))).code == "invalid_field"
    assert (await bob.client.mailbox())[0] == []


async def test_live_delivery_pushes_on_arrival_and_resumes_after_reconnect(
    members: list[Member],
) -> None:
    alice, bob = members
    backlog = envelope(alice.name, bob.name)
    await alice.client.send([backlog])
    received: list[bytes] = []

    async def listen(count: int, ack: bool) -> None:
        async for pushed, socket in bob.client.live():
            received.append(pushed.envelope)
            if ack:
                await ack_on_socket(socket, [pushed.id])
            if len(received) >= count:
                return

    listener = asyncio.create_task(listen(2, ack=False))
    await asyncio.sleep(0.3)
    live = envelope(alice.name, bob.name)
    await alice.client.send([live])
    await asyncio.wait_for(listener, 10)
    assert received == [backlog, live]
    received.clear()
    await asyncio.wait_for(listen(2, ack=True), 10)  # reconnect: both again, unacknowledged
    assert received == [backlog, live]
    await asyncio.sleep(0.3)
    assert (await bob.client.mailbox())[0] == []


async def test_expired_envelopes_are_swept(members: list[Member]) -> None:
    alice, bob = members
    await alice.client.send([envelope(alice.name, bob.name, expires_in=1)])
    await asyncio.sleep(2.5)
    assert (await bob.client.mailbox())[0] == []


async def test_rate_limit_answers_429_with_retry_after(backend: object, relay: Relay) -> None:
    limited = make_relay(backend, "--rate-burst", "3", "--rate-per-second", "0.1")  # type: ignore[arg-type]
    try:
        member = await join(limited)
        for _ in range(3):  # the burst; authenticated requests only
            await member.client.directory()
        error = await refused(member.client.directory())
        assert error.status == 429 and error.code == "rate_limited"
        assert error.retry_after is not None and error.retry_after >= 1
        await member.client.close()
    finally:
        limited.kill()


def _enc(prekey: object) -> str:
    writer = Writer()
    prekey.write(writer)  # type: ignore[attr-defined]
    return b64(bytes(writer))


async def test_unauthenticated_posts_are_rate_limited_per_address(backend: object) -> None:
    limited = make_relay(backend, "--public-rate-burst", "12", "--public-rate-per-second", "0.1")  # type: ignore[arg-type]
    try:
        for _ in range(2):  # counted whatever the answer, and a refusal costs 5 more
            status, _ = await raw(limited, "POST", "/v1/auth/challenge", json={"name": "nobody"})
            assert status == 404
        status, body = await raw(limited, "POST", "/v1/auth/challenge", json={"name": "nobody"})
        assert status == 429 and body["error"] == "rate_limited"
        status, _ = await raw(limited, "GET", "/v1/info")  # reading public documents is not
        assert status == 200
    finally:
        limited.kill()
