"""Strangers against the relay (issue 16, items 1, 2 and 4): what an unauthenticated caller can
make the relay hold, and whom its requests can lock out.

Each test runs a relay subprocess of its own with small limits, on each backend. Client addresses
other than 127.0.0.1 are played through `X-Forwarded-For`, believed only from a relay started with
`--trusted-proxy 127.0.0.1` (as the documented reverse proxy is, in deploy/).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from backchannel.relay_auth import sign_login
from backchannel_cli.relay import RelayClient, RelayRequestError, b64, unb64
from backchannel_relay.store import TOKEN_RECHECK_SECONDS

from .conftest import Backend, Member, Relay, _postgres, fresh_keys, join, make_relay, unique
from .test_api import raw
from .test_drops import open_drop, sealed

PROXIED = ("--trusted-proxy", "127.0.0.1")


@asynccontextmanager
async def client_at(relay: Relay, address: str) -> AsyncIterator[RelayClient]:
    """A client whose requests reach the relay through the trusted proxy from `address`."""
    session = aiohttp.ClientSession(headers={"X-Forwarded-For": address})
    try:
        yield RelayClient(relay.url, session=session)
    finally:
        await session.close()


async def post_from(
    relay: Relay, address: str | None, path: str, body: object
) -> tuple[int, dict[str, object]]:
    headers = {"X-Forwarded-For": address} if address else {}
    return await raw(relay, "POST", path, json=body, headers=headers)


async def login_from(relay: Relay, address: str, member: Member) -> None:
    async with client_at(relay, address) as client:
        await client.login(member.identity, member.name)


# --- item 1: bogus requests are refused before they make state, and they cost their sender ---


async def test_bogus_drop_sends_cost_their_address_until_it_is_refused(backend: Backend) -> None:
    """A random token with a broken envelope used to be answered 400 for free, after making a
    rate bucket for the made-up drop. Now each refusal costs the sender's address, which is then
    refused at the door, while another address's drop traffic goes on."""
    relay = make_relay(
        backend, *PROXIED, "--public-rate-burst", "20", "--public-rate-per-second", "0.01"
    )
    try:
        owner = await join(relay, "drop-owner")
        token, read_key = await open_drop(owner)
        bogus = {"token": b64(os.urandom(32)), "envelope": b64(b"\x01broken")}
        statuses = [
            (await post_from(relay, "198.51.100.9", "/v1/drops/send", bogus))[0] for _ in range(6)
        ]
        assert statuses[:4] == [400] * 4 and statuses[4:] == [429, 429]
        status, body = await post_from(relay, "198.51.100.9", "/v1/drops/send", bogus)
        assert (status, body["error"]) == (429, "rate_limited")
        guess = {"token": b64(os.urandom(32)), "envelope": b64(sealed())}  # well-formed, no drop
        assert (await post_from(relay, "198.51.100.9", "/v1/drops/send", guess))[0] == 429
        async with client_at(relay, "198.51.100.10") as other:  # a correspondent elsewhere
            for _ in range(30):  # successes cost the address nothing: polling is free
                assert await other.drop_send(token, sealed()) is False
            page, _, _ = await other.drop_fetch(read_key, limit=100)
            assert len(page) == 30
        await owner.client.close()
    finally:
        relay.kill()


async def test_made_up_session_tokens_are_charged_but_a_known_token_is_always_served(
    backend: Backend,
) -> None:
    """Each unknown bearer token costs a lookup in the store, so it costs the address; a
    participant whose token the relay knows is never held up by its address's limit."""
    relay = make_relay(backend, "--public-rate-burst", "33", "--public-rate-per-second", "0.01")
    try:
        member = await join(relay, "known")  # three of the 33 (register, challenge, token)
        await member.client.mailbox()  # the relay now knows this token
        stranger = {"Authorization": f"Bearer {b64(os.urandom(32))}"}
        statuses = [
            (await raw(relay, "GET", "/v1/messages", headers=stranger))[0] for _ in range(7)
        ]
        assert statuses[:6] == [401] * 6 and statuses[6] == 429  # a refusal costs 5
        assert (await member.client.mailbox())[0] == []  # same address, still served
        # ...and when the relay re-checks the token in the store (so that a logout made through
        # another process holds), it is still no stranger's guess: served, not refused.
        await asyncio.sleep(TOKEN_RECHECK_SECONDS + 1)
        assert (await member.client.mailbox())[0] == []
        await member.client.close()
    finally:
        relay.kill()


async def test_churning_through_addresses_earns_no_fresh_burst(backend: Backend) -> None:
    """With room for two addresses, a caller using a new address for every request takes the
    place of a drained bucket and starts as drained: it is refused as soon as a single
    address would be."""
    relay = make_relay(
        backend,
        *PROXIED,
        "--max-rate-keys",
        "2",
        "--public-rate-burst",
        "10",
        "--public-rate-per-second",
        "0.01",
    )
    try:
        statuses = []
        for n in range(8):
            status, _ = await post_from(
                relay, f"192.0.2.{n + 1}", "/v1/auth/challenge", {"name": "nobody"}
            )
            statuses.append(status)
        assert statuses[:4] == [404] * 4  # two fresh buckets, then two that inherit 4 tokens
        assert set(statuses[4:]) == {429}
    finally:
        relay.kill()


# --- item 2: bodies are bounded in size, time and memory ------------------------------------


async def http_exchange(
    relay: Relay, head: str, body: bytes = b"", read_timeout: float = 10.0
) -> tuple[int, dict[str, str], dict[str, object], bool]:
    """Send a raw request head (and some body), read one answer: -> (status, headers, JSON
    body, whether the relay then closed the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), read_timeout)
        headers: dict[str, str] = {}
        while (line := await asyncio.wait_for(reader.readline(), read_timeout)) not in (
            b"\r\n",
            b"",
        ):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        payload = await reader.readexactly(int(headers.get("content-length", "0")))
        rest = await asyncio.wait_for(reader.read(1), read_timeout)
        return int(status_line.split()[1]), headers, json.loads(payload), rest == b""
    finally:
        writer.close()


def post_head(path: str, length: int | None, host: str = "127.0.0.1") -> str:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n\r\n"
    )


def rss_kib(relay: Relay) -> int:
    assert relay.process is not None
    with open(f"/proc/{relay.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_declared_oversize_body_is_refused_before_it_is_read(relay: Relay) -> None:
    """Every route but the few that carry envelopes or prekeys takes 64 KiB; the answer comes
    from the head alone (nothing of the body is sent here), as JSON, and closes."""
    for path in ("/v1/auth/challenge", "/v1/drops/fetch", "/v1/drops/send", "/v1/register"):
        status, headers, body, closed = await http_exchange(relay, post_head(path, 8 << 20))
        assert (status, body["error"]) == (413, "payload_too_large"), path
        assert isinstance(body["limit_bytes"], int) and body["limit_bytes"] < 256 * 1024
        assert headers.get("connection", "").lower() == "close" and closed
    status, info = await raw(relay, "GET", "/v1/info")
    limits = info["limits"]
    assert isinstance(limits, dict) and limits["max_body_bytes"] == 64 * 1024
    assert limits["body_limits"]["/v1/drops/send"] > 131_112  # a largest sealed envelope fits


async def test_an_undeclared_body_is_cut_off_at_its_routes_limit(relay: Relay) -> None:
    chunk = b"[" * 100_000
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    status, _, body, closed = await http_exchange(
        relay, post_head("/v1/auth/challenge", None), framed
    )
    assert (status, body["error"], body["limit_bytes"]) == (413, "payload_too_large", 65536)
    assert closed


async def test_slow_partial_bodies_are_cut_off_and_hold_no_memory(backend: Backend) -> None:
    """Fifty connections each declare a body within their route's limit, send most of it and
    stall. The relay holds at most that much per connection, answers each 408 after the body
    timeout and closes it; fifty more that declare 8 MiB bodies and start sending are refused
    at once and hold nothing."""
    relay = make_relay(backend, "--body-timeout", "1")
    try:
        await asyncio.sleep(0.5)
        before = rss_kib(relay)
        started = time.monotonic()
        slow = [
            asyncio.create_task(
                http_exchange(relay, post_head("/v1/drops/send", 120_000), b"x" * 100_000)
            )
            for _ in range(50)
        ]
        big = [
            asyncio.create_task(
                http_exchange(relay, post_head("/v1/register", 8 << 20), b"x" * (2 << 20))
            )
            for _ in range(50)
        ]
        await asyncio.sleep(0.6)  # everything sent that will be, nothing timed out yet
        during = rss_kib(relay)
        answers = await asyncio.gather(*slow, *big, return_exceptions=True)
        for answer in answers[:50]:
            assert not isinstance(answer, BaseException), answer
            status, _, body, closed = answer
            assert (status, body["error"]) == (408, "body_timeout") and closed
        for answer in answers[50:]:  # refused at the head; the relay may cut the rest short
            if not isinstance(answer, BaseException):
                assert answer[0] == 413
        assert time.monotonic() - started < 15
        assert during - before < 40 * 1024, f"RSS grew {(during - before) // 1024} MiB"
        assert (await raw(relay, "GET", "/healthz"))[0] == 200
    finally:
        relay.kill()


# --- item 4: a stranger cannot lock the participants out ------------------------------------


async def test_behind_the_proxy_one_caller_cannot_lock_out_the_others(backend: Backend) -> None:
    """The relay counts the address the trusted proxy names: one caller hammering challenges for
    made-up names is refused, while a participant elsewhere logs in."""
    relay = make_relay(
        backend, *PROXIED, "--public-rate-burst", "18", "--public-rate-per-second", "0.01"
    )
    try:
        member = await join(relay, "victim")
        for _ in range(3):
            status, _ = await post_from(
                relay, "203.0.113.7", "/v1/auth/challenge", {"name": unique("made-up")}
            )
            assert status == 404
        status, body = await post_from(relay, "203.0.113.7", "/v1/auth/challenge", {"name": "x"})
        assert (status, body["error"]) == (429, "rate_limited")
        # The left of X-Forwarded-For is the caller's own say: changing it changes nothing.
        status, _ = await post_from(
            relay, "10.9.8.7, 203.0.113.7", "/v1/auth/challenge", {"name": "x"}
        )
        assert status == 429
        await login_from(relay, "203.0.113.8", member)
        await member.client.close()
    finally:
        relay.kill()


async def test_forwarded_for_is_ignored_unless_it_comes_from_a_trusted_proxy(
    backend: Backend,
) -> None:
    relay = make_relay(backend, "--public-rate-burst", "18", "--public-rate-per-second", "0.01")
    try:
        statuses = []
        for n in range(5):  # a new made-up address each time: all one caller to the relay
            status, _ = await post_from(
                relay, f"203.0.113.{n}", "/v1/auth/challenge", {"name": "nobody"}
            )
            statuses.append(status)
        assert statuses == [404, 404, 404, 429, 429]
    finally:
        relay.kill()


async def test_a_failed_login_costs_the_callers_address(backend: Backend) -> None:
    relay = make_relay(
        backend, *PROXIED, "--public-rate-burst", "14", "--public-rate-per-second", "0.01"
    )
    try:
        member = await join(relay, "target")
        other, _ = fresh_keys()
        info = await member.client.info()
        relay_id = unb64(info["relay_id"])
        statuses = []
        for _ in range(2):  # challenge (1), wrong signature (1 + 5): 14 tokens in all
            _, answer = await post_from(
                relay, "203.0.113.50", "/v1/auth/challenge", {"name": member.name}
            )
            challenge = unb64(str(answer["challenge"]))
            forged = sign_login(other, relay_id, challenge, member.name)
            status, _ = await post_from(
                relay,
                "203.0.113.50",
                "/v1/auth/token",
                {"name": member.name, "challenge": b64(challenge), "signature": b64(forged)},
            )
            statuses.append(status)
        assert statuses == [401, 401]
        status, _ = await post_from(
            relay, "203.0.113.50", "/v1/auth/challenge", {"name": member.name}
        )
        assert status == 429
        await login_from(relay, "203.0.113.51", member)  # the owner, elsewhere, is not held up
        await member.client.close()
    finally:
        relay.kill()


async def test_challenges_for_one_name_are_bounded(relay: Relay) -> None:
    """However many challenges are asked for one name, at most eight are open: each beyond
    replaces one of the oldest, so nobody can pile them up in the store."""
    member = await join(relay, "challenged")
    relay_id = unb64((await member.client.info())["relay_id"])
    asked = {"name": member.name}
    challenges = [
        unb64((await member.client.request("POST", "/v1/auth/challenge", asked))["challenge"])
        for _ in range(9)
    ]
    refusals = []
    for challenge in challenges:
        signature = sign_login(member.identity, relay_id, challenge, member.name)
        body = {"name": member.name, "challenge": b64(challenge), "signature": b64(signature)}
        try:
            await member.client.request("POST", "/v1/auth/token", body)
        except RelayRequestError as exc:
            refusals.append((exc.status, exc.code))
    assert refusals == [(401, "bad_challenge")]
    await member.client.close()


@pytest.fixture
def fresh_backend(backend: Backend, tmp_path: Path) -> Iterator[Backend]:
    """A store of the backend's kind that no relay has opened yet (it prints the admin token)."""
    if backend.name == "sqlite":
        yield Backend("sqlite", ["--data-dir", str(tmp_path / "fresh")], tmp_path)
        return
    yield from _postgres(tmp_path)


async def test_forty_participants_behind_one_address_register_and_log_in(
    fresh_backend: Backend,
) -> None:
    """A classroom behind one NAT address, on the default limits: forty registrations and logins
    (and the admin's forty invites) fit in one burst."""
    relay = make_relay(fresh_backend)
    try:
        await _enrol_forty(relay)
    finally:
        relay.kill()


async def _enrol_forty(relay: Relay) -> None:
    admin = {"Authorization": f"Bearer {relay.admin_token()}"}

    async def enrol(n: int) -> None:
        name = unique(f"student{n}")
        status, invite = await raw(
            relay,
            "POST",
            "/v1/admin/invites",
            json={"name": name, "role": "party"},
            headers=admin,
        )
        assert status == 201, invite
        identity, secrets = fresh_keys(one_time=1, kem=1)
        published = secrets.published(identity)
        async with RelayClient(relay.url) as client:
            await client.register(
                identity,
                name,
                str(invite["invite"]),
                published.signed,
                published.kem_last_resort,
                published.one_time,
                published.kem_one_time,
            )
            await client.login(identity, name)

    for batch in range(4):
        await asyncio.gather(*(enrol(batch * 10 + n) for n in range(10)))


# --- the in-memory tables themselves --------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_rate_table_stays_bounded_and_evicts_the_least_recently_used() -> None:
    from backchannel_relay.limits import RateLimit, RateLimiter

    clock = Clock()
    limiter = RateLimiter(RateLimit(burst=3, per_second=1), max_keys=100, clock=clock)
    for n in range(10_000):
        clock.now += 5  # whichever bucket goes has refilled by now
        limiter.take(n)
        assert len(limiter) <= 100
    limiter.take("drained", 3)
    for n in range(500):  # in use all along, so the others go first
        clock.now += 5
        limiter.take(("churn", n))
        limiter.spend("drained", 5)
    assert len(limiter) == 100 and limiter.level("drained") == 0  # remembered, still empty


def test_an_evicted_bucket_hands_its_level_to_the_newcomer_not_a_fresh_burst() -> None:
    from backchannel_relay.errors import TooManyRequests
    from backchannel_relay.limits import RateLimit, RateLimiter

    clock = Clock()
    limiter = RateLimiter(RateLimit(burst=5, per_second=0.01), max_keys=2, clock=clock)
    limiter.spend("a", 5)
    limiter.spend("b", 5)
    refused = 0
    for n in range(50):  # a caller with endless fresh addresses
        try:
            limiter.take(f"fresh{n}")
        except TooManyRequests:
            refused += 1
    assert refused == 50
    clock.now += 10_000  # idle buckets refill: a newcomer then loses nothing
    limiter.take("newcomer", 5)


def test_client_addresses_believe_only_a_trusted_proxy() -> None:
    from backchannel_relay.limits import ClientAddresses

    nobody = ClientAddresses()
    assert nobody.key("127.0.0.1", ["203.0.113.7"]) == "127.0.0.1"
    proxied = ClientAddresses(["127.0.0.1", "10.0.0.0/8"])
    assert proxied.key("127.0.0.1", ["203.0.113.7"]) == "203.0.113.7"
    assert proxied.key("127.0.0.1", ["1.2.3.4, 203.0.113.7, 10.1.2.3"]) == "203.0.113.7"
    assert proxied.key("127.0.0.1", ["1.2.3.4", "203.0.113.7"]) == "203.0.113.7"
    assert proxied.key("198.51.100.1", ["203.0.113.7"]) == "198.51.100.1"  # not a proxy
    assert proxied.key("127.0.0.1", []) == "127.0.0.1"
    assert proxied.key("127.0.0.1", ["not an address"]) == "127.0.0.1"
    assert proxied.key("127.0.0.1", ["2001:db8::1"]) == "2001:db8::/64"
    assert nobody.key("::ffff:192.0.2.1") == "192.0.2.1"
