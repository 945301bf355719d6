"""Drops, the relay's sealed-sender mailboxes (PROTOCOL.md §15.3), on each store: only a valid
delivery token writes, only the read key reads, nothing is kept after delivery or expiry, no row
names anyone, and no off-the-record request leaves an access-log line or a metric."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request

from backchannel.drops import EXPIRY_SPREAD, SealedEnvelope, drop_address, read_hash
from backchannel_cli.relay import RelayClient, b64

from .conftest import Backend, Member, Relay, join, make_relay
from .test_api import refused


def sealed(text: bytes = b"an off-the-record message", ttl: int = 600) -> bytes:
    return SealedEnvelope(os.urandom(16), int(time.time()) + ttl, text).to_bytes()


async def open_drop(owner: Member, ttl: int = 600) -> tuple[bytes, bytes]:
    """-> (delivery token, read key) of a fresh drop."""
    token, read_key = os.urandom(32), os.urandom(32)
    expires = int(time.time()) + ttl
    assert await owner.client.create_drop(drop_address(token), read_hash(read_key), expires) == (
        expires
    )
    return token, read_key


async def test_a_drop_delivers_to_its_reader_and_forgets_on_acknowledgement(
    relay: Relay, members: list[Member]
) -> None:
    owner, _ = members
    token, read_key = await open_drop(owner)
    anonymous = RelayClient(relay.url)  # the sender: no login, no name
    try:
        first, second = sealed(b"one"), sealed(b"two")
        assert await anonymous.drop_send(token, first) is False
        assert await anonymous.drop_send(token, first) is True  # a retry is not stored twice
        assert await anonymous.drop_send(token, second) is False
        page, more, _ = await anonymous.drop_fetch(read_key)
        assert [m.envelope for m in page] == [first, second] and not more
        later, _, _ = await anonymous.drop_fetch(read_key, after=page[0].id)
        assert [m.envelope for m in later] == [second]
        assert await anonymous.drop_ack(read_key, [page[0].id]) == 1
        rest, _, _ = await anonymous.drop_fetch(read_key)
        assert [m.envelope for m in rest] == [second]
        await anonymous.drop_close(read_key)
        gone = await refused(anonymous.drop_fetch(read_key))
        assert (gone.status, gone.code) == (404, "unknown_drop")
        closed = await refused(anonymous.drop_send(token, sealed()))
        assert (closed.status, closed.code) == (403, "bad_delivery_token")
    finally:
        await anonymous.close()


async def test_sends_without_a_valid_delivery_token_are_refused(
    relay: Relay, members: list[Member]
) -> None:
    owner, other = members
    token, read_key = await open_drop(owner)
    for wrong in (os.urandom(32), read_key):  # a guess, or the read key in the token's place
        refusal = await refused(other.client.drop_send(wrong, sealed()))
        assert (refusal.status, refusal.code) == (403, "bad_delivery_token")
    unreadable = await refused(other.client.drop_fetch(token))  # the token does not read
    assert (unreadable.status, unreadable.code) == (404, "unknown_drop")
    short = await refused(
        other.client.request("POST", "/v1/drops/send", {"token": b64(b"x"), "envelope": "AA=="})
    )
    assert (short.status, short.code) == (400, "invalid_field")
    broken = await refused(
        other.client.request(
            "POST", "/v1/drops/send", {"token": b64(token), "envelope": b64(b"\x01garbage")}
        )
    )
    assert (broken.status, broken.code) == (400, "invalid_envelope")
    stale = SealedEnvelope(os.urandom(16), int(time.time()) - 1, b"late").to_bytes()
    expired = await refused(other.client.drop_send(token, stale))
    assert (expired.status, expired.code) == (400, "bad_expiry")
    page, _, _ = await owner.client.drop_fetch(read_key)
    assert page == []  # nothing refused was stored


async def test_opening_a_drop_needs_a_login_and_a_bounded_life(
    relay: Relay, members: list[Member]
) -> None:
    owner, _ = members
    anonymous = RelayClient(relay.url)
    try:
        address, key_hash = os.urandom(32), os.urandom(32)
        refusal = await refused(anonymous.create_drop(address, key_hash, int(time.time()) + 60))
        assert (refusal.status, refusal.code) == (401, "no_token")
    finally:
        await anonymous.close()
    for expires in (int(time.time()) - 1, int(time.time()) + 24 * 3600 + EXPIRY_SPREAD + 60):
        too_long = await refused(owner.client.create_drop(address, key_hash, expires))
        assert (too_long.status, too_long.code) == (400, "bad_expiry")
    token, _ = await open_drop(owner)
    taken = await refused(
        owner.client.create_drop(drop_address(token), os.urandom(32), int(time.time()) + 60)
    )
    assert (taken.status, taken.code) == (409, "drop_exists")
    info = await owner.client.info()
    assert info["limits"]["max_drop_ttl_seconds"] == 24 * 3600


async def test_an_unread_message_is_gone_from_the_relay_at_its_expiry(
    relay: Relay, members: list[Member]
) -> None:
    owner, _ = members
    token, read_key = await open_drop(owner, ttl=2)
    await owner.client.drop_send(token, sealed(ttl=600))  # capped at the drop's expiry
    page, _, expires_at = await owner.client.drop_fetch(read_key)
    assert len(page) == 1
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.6)  # the sweep runs every 0.2 s
    gone = await refused(owner.client.drop_fetch(read_key))
    assert (gone.status, gone.code) == (404, "unknown_drop")
    refusal = await refused(owner.client.drop_send(token, sealed()))
    assert refusal.code == "bad_delivery_token"


async def test_drop_traffic_leaves_no_log_line_and_no_metric(backend: Backend) -> None:
    """On a relay with the access log on: drops appear in neither the log nor /metrics, while
    an ordinary request does."""
    relay = make_relay(backend)
    try:
        owner = await join(relay, "drop-owner")
        with urllib.request.urlopen(relay.url + "/healthz") as answer:
            assert answer.status == 200
        token, read_key = await open_drop(owner)
        await owner.client.drop_send(token, sealed())
        page, _, _ = await owner.client.drop_fetch(read_key)
        await owner.client.drop_ack(read_key, [m.id for m in page])
        await refused(owner.client.drop_send(os.urandom(32), sealed()))
        await owner.client.drop_close(read_key)
        await owner.client.close()
        with urllib.request.urlopen(relay.url + "/metrics") as answer:
            metrics = answer.read().decode()
        assert 'route="/healthz"' in metrics and "/v1/drops" not in metrics
        log = relay.log()
        assert "GET /healthz 200" in log and "/v1/drops" not in log
        assert owner.name not in log and owner.name not in metrics
    finally:
        relay.kill()


async def test_on_postgresql_drops_never_reach_the_write_ahead_log(postgres: Backend) -> None:
    """PRODUCT.md §7: UNLOGGED tables, so off-the-record rows are in no WAL, replica or archive
    (on SQLite, secure_delete and the sweep's truncating checkpoint do that work)."""
    import asyncpg

    relay = make_relay(postgres)  # migrates the throwaway database
    try:
        url = postgres.store_args[1].replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncpg.connect(url)
        try:
            rows = await connection.fetch(
                "SELECT relname, relpersistence::text FROM pg_class"
                " WHERE relname = ANY($1::text[])",
                ["drops", "drop_messages", "envelopes"],
            )
        finally:
            await connection.close()
    finally:
        relay.kill()
    assert {r["relname"]: r["relpersistence"] for r in rows} == {
        "drops": "u", "drop_messages": "u", "envelopes": "p",
    }  # fmt: skip
