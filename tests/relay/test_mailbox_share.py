"""No correspondent can jam a mailbox (issue 16, item 3): each sender has a bounded share of a
recipient's queue, sending is paid per envelope from a budget of its own, and reading one's own
mailbox is paid from another, so no amount of sending keeps a participant from it. On each
backend, and across relay processes on one PostgreSQL database."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from backchannel.envelope import Envelope
from backchannel_cli.relay import RelayRequestError

from .conftest import Backend, Member, Relay, join, make_relay
from .test_api import envelope, raw, refused
from .test_durability_and_hygiene import mailbox_ids, own_store, relogin

SENDS_FREE = ("--send-burst", "100000", "--send-per-second", "100000")
"""The send budget out of the way, for tests about the share."""
SMALL_SHARES = (*SENDS_FREE, "--sender-share-envelopes", "10", "--sender-share-bytes", "5000")
SMALL = 100
"""Bytes of ciphertext per envelope in tests of the count share: ten stay under 5,000 bytes."""


@contextlib.contextmanager
def started(backend: Backend, tmp_path: Path, *flags: str) -> Iterator[Relay]:
    relay = make_relay(own_store(backend, tmp_path), *flags)
    try:
        yield relay
    finally:
        relay.kill()


@pytest.fixture(scope="module")
def small_shares(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """A relay where a sender's share is 10 envelopes or 5,000 bytes, swept often."""
    flags = (*SMALL_SHARES, "--sweep-interval", "0.2")
    with started(backend, tmp_path_factory.mktemp("shares"), *flags) as relay:
        yield relay


@contextlib.asynccontextmanager
async def joined(relay: Relay, count: int) -> AsyncIterator[list[Member]]:
    members = [await join(relay) for _ in range(count)]
    try:
        yield members
    finally:
        for member in members:
            await member.client.close()


async def flood(sender: Member, recipient: str, batch: int, size: int = 64) -> tuple[int, object]:
    """Send batches until the relay refuses one; -> (envelopes accepted, the refusal)."""
    accepted = 0
    for _ in range(1000):
        try:
            await sender.client.send(
                [envelope(sender.name, recipient, size=size) for _ in range(batch)]
            )
        except RelayRequestError as exc:
            return accepted, exc
        accepted += batch
    raise AssertionError("the relay never refused the flood")


async def test_a_flooder_fills_only_its_share_and_others_still_get_through(
    backend: Backend, tmp_path: Path
) -> None:
    with started(backend, tmp_path, *SENDS_FREE) as relay:
        async with joined(relay, 3) as (flooder, victim, friend):
            accepted, refusal = await flood(flooder, victim.name, 250)
            assert accepted == 1250  # the default share: an eighth of 10,000
            assert isinstance(refusal, RelayRequestError)
            assert (refusal.status, refusal.code) == (429, "sender_share_full")
            assert refusal.retry_after is not None and refusal.retry_after >= 1
            assert friend.name not in refusal.message
            letter = envelope(friend.name, victim.name)
            (receipt,) = await friend.client.send([letter])
            assert not receipt["duplicate"]
            assert letter in (await mailbox_ids(victim)).values()


async def test_the_share_frees_as_the_recipient_acknowledges(small_shares: Relay) -> None:
    async with joined(small_shares, 2) as (flooder, victim):
        accepted, refusal = await flood(flooder, victim.name, 1, SMALL)
        assert accepted == 10 and getattr(refusal, "code", None) == "sender_share_full"
        page, _ = await victim.client.mailbox(limit=3)
        assert await victim.client.acknowledge([item.id for item in page]) == 3
        accepted, refusal = await flood(flooder, victim.name, 1, SMALL)
        assert accepted == 3 and getattr(refusal, "code", None) == "sender_share_full"


async def test_the_share_frees_as_envelopes_expire(small_shares: Relay) -> None:
    async with joined(small_shares, 2) as (flooder, victim):
        await flooder.client.send(
            [envelope(flooder.name, victim.name, expires_in=1, size=SMALL) for _ in range(10)]
        )
        batch = [envelope(flooder.name, victim.name, size=SMALL) for _ in range(10)]
        assert (await refused(flooder.client.send(batch[:1]))).code == "sender_share_full"
        deadline = time.monotonic() + 10
        while True:  # expired within two seconds, then swept within 0.2
            try:
                await flooder.client.send(batch)
                break
            except RelayRequestError as exc:
                assert exc.code == "sender_share_full" and time.monotonic() < deadline
                await asyncio.sleep(0.2)


async def test_a_share_is_bounded_in_bytes_too(small_shares: Relay) -> None:
    async with joined(small_shares, 2) as (flooder, victim):
        letters = [envelope(flooder.name, victim.name, size=1000) for _ in range(10)]
        fits = 0
        while sum(len(e) for e in letters[: fits + 1]) <= 5000:
            fits += 1
        assert 0 < fits < 10
        await flooder.client.send(letters[:fits])
        refusal = await refused(flooder.client.send(letters[fits : fits + 1]))
        assert (refusal.status, refusal.code) == (429, "sender_share_full")


async def test_a_request_past_the_share_is_refused_whole(small_shares: Relay) -> None:
    async with joined(small_shares, 2) as (flooder, victim):
        batch = [envelope(flooder.name, victim.name, size=SMALL) for _ in range(11)]
        assert (await refused(flooder.client.send(batch))).code == "sender_share_full"
        assert await mailbox_ids(victim) == {}
        receipts = await flooder.client.send(batch[:10])  # the share was left untouched
        assert len(receipts) == 10


async def test_a_full_mailbox_drains_without_a_429(backend: Backend, tmp_path: Path) -> None:
    """10,000 envelopes from four senders: reading and acknowledging them page by page (the
    client's 100 a page: 200 requests) is never refused, however small the general limit."""
    flags = (
        *(*SENDS_FREE, "--sender-share-envelopes", "2500"),
        *("--rate-burst", "2", "--rate-per-second", "0.01"),
    )
    with started(backend, tmp_path, *flags) as relay:
        async with joined(relay, 6) as (victim, late, *flooders):
            for flooder in flooders:
                accepted, refusal = await flood(flooder, victim.name, 250, size=16)
                assert accepted == 2500
                assert getattr(refusal, "code", None) == "sender_share_full"
            full = await refused(late.client.send([envelope(late.name, victim.name)]))
            assert (full.status, full.code) == (429, "mailbox_full")
            drained = 0
            while True:
                page, _ = await victim.client.mailbox(limit=100)
                if not page:
                    break
                drained += await victim.client.acknowledge([item.id for item in page])
            assert drained == 10_000
            assert (await late.client.send([envelope(late.name, victim.name)]))[0]["id"] > 0


async def test_a_batch_costs_one_token_per_envelope(backend: Backend, tmp_path: Path) -> None:
    flags = ("--send-burst", "300", "--send-per-second", "0.01")
    with started(backend, tmp_path, *flags) as relay:
        async with joined(relay, 2) as (sender, recipient):
            await sender.client.send([envelope(sender.name, recipient.name) for _ in range(256)])
            over = [envelope(sender.name, recipient.name) for _ in range(45)]
            refusal = await refused(sender.client.send(over))
            assert (refusal.status, refusal.code) == (429, "send_rate_limited")
            assert refusal.retry_after is not None and refusal.retry_after >= 1
            await sender.client.send(over[:44])  # the refused request cost nothing: 44 left
            refusal = await refused(sender.client.send(over[44:]))
            assert refusal.code == "send_rate_limited"


async def test_an_empty_send_budget_is_refused_before_the_body_is_read(
    backend: Backend, tmp_path: Path
) -> None:
    """A flooder whose budget is spent is answered 429 at once: its next batch is not parsed
    (here a body that is not even JSON gets the 429, not a 400)."""
    flags = ("--send-burst", "4", "--send-per-second", "0.01")
    with started(backend, tmp_path, *flags) as relay:
        async with joined(relay, 2) as (sender, recipient):
            await sender.client.send([envelope(sender.name, recipient.name) for _ in range(4)])
            assert (await refused(sender.client.send([envelope(sender.name, recipient.name)]))
                    ).code == "send_rate_limited"  # fmt: skip
            headers = {"Authorization": f"Bearer {sender.client.token}"}
            status, body = await raw(relay, "POST", "/v1/messages", data=b"{not json",
                                     headers=headers)  # fmt: skip
            assert (status, body["error"]) == (429, "send_rate_limited")


async def test_the_send_limit_never_refuses_reading_ones_own_mailbox(
    backend: Backend, tmp_path: Path
) -> None:
    """A participant who has spent its send budget (or whose correspondents flood it) still
    reads and acknowledges its mailbox, on HTTP and on the WebSocket; and sends are not paid
    from the general request limit either."""
    flags = (
        *("--send-burst", "5", "--send-per-second", "0.01"),
        *("--rate-burst", "1", "--rate-per-second", "0.01"),
    )
    with started(backend, tmp_path, *flags) as relay:
        async with joined(relay, 2) as (alice, bob):
            for who, to in ((alice, bob), (bob, alice)):
                await who.client.send([envelope(who.name, to.name) for _ in range(5)])
                assert (await refused(who.client.send([envelope(who.name, to.name)]))).code == (
                    "send_rate_limited"
                )
            for _ in range(3):
                page, _ = await bob.client.mailbox()
            assert len(page) == 5
            assert await bob.client.acknowledge([page[0].id]) == 1
            async for pushed, _socket in alice.client.live():
                assert Envelope.from_bytes(pushed.envelope).sender == bob.name
                break
            await alice.client.directory()  # the general limit's one request is still there
            assert (await refused(alice.client.directory())).code == "rate_limited"


async def test_info_states_the_budgets_and_shares(backend: Backend, tmp_path: Path) -> None:
    flags = ("--send-burst", "10", "--read-burst", "50", "--sender-share-envelopes", "7")
    with started(backend, tmp_path, *flags) as relay:
        async with joined(relay, 2) as (sender, recipient):
            limits = (await sender.client.info())["limits"]
            assert limits["max_batch"] == 10  # a larger batch could never be paid for
            assert (limits["send_burst"], limits["read_burst"]) == (10, 50)
            assert limits["max_share_envelopes"] == 7
            assert limits["max_share_bytes"] == 8 * 1024 * 1024
            batch = [envelope(sender.name, recipient.name) for _ in range(11)]
            refusal = await refused(sender.client.send(batch))
            assert (refusal.status, refusal.code) == (413, "too_many_items")


# --- several relay processes on one PostgreSQL database ------------------------------------------


async def test_the_share_holds_across_processes(postgres: Backend, tmp_path: Path) -> None:
    """A flooder spreading concurrent batches over two relays still gets exactly its share."""
    flags = (*SENDS_FREE, "--rate-burst", "100000", "--sender-share-envelopes", "300")
    relays = [make_relay(own_store(postgres, tmp_path), *flags) for _ in range(2)]
    try:
        async with joined(relays[0], 2) as (flooder, victim):
            other = await relogin(relays[1], flooder)
            clients = [flooder.client, other.client]

            async def send(index: int, size: int) -> int:
                batch = [envelope(flooder.name, victim.name) for _ in range(size)]
                try:
                    await clients[index % 2].send(batch)
                except RelayRequestError as exc:
                    assert exc.code == "sender_share_full"
                    return 0
                return size

            accepted = sum(await asyncio.gather(*(send(i, 7) for i in range(60))))
            assert accepted == 294 == len(await mailbox_ids(victim))  # 42 batches of 7 fit
            page, _ = await victim.client.mailbox(limit=5)
            await victim.client.acknowledge([item.id for item in page])
            accepted = sum(await asyncio.gather(*(send(i, 1) for i in range(20))))
            assert accepted == 11 and len(await mailbox_ids(victim)) == 300
            await other.client.close()
    finally:
        for relay in relays:
            relay.kill()


async def test_the_send_budget_is_one_across_processes(postgres: Backend, tmp_path: Path) -> None:
    flags = ("--send-burst", "50", "--send-per-second", "0.01")
    relays = [make_relay(own_store(postgres, tmp_path), *flags) for _ in range(2)]
    try:
        async with joined(relays[0], 2) as (sender, recipient):
            other = await relogin(relays[1], sender)
            accepted = 0
            for attempt in range(10):
                client = (sender.client, other.client)[attempt % 2]
                batch = [envelope(sender.name, recipient.name) for _ in range(10)]
                try:
                    await client.send(batch)
                except RelayRequestError as exc:
                    assert exc.code == "send_rate_limited"
                    break
                accepted += 10
            assert accepted == 50
            await other.client.close()
    finally:
        for relay in relays:
            relay.kill()
