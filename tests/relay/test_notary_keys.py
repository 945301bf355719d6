"""The notary as holder of timed proposals' content keys (PROTOCOL.md §14.5), on each store:
only the author deposits, only the author and the addressees read, nothing before its time, and
nothing ever for a proposal withdrawn before it."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from backchannel_cli.relay import RelayRequestError, b64

from .conftest import Member, Relay, join
from .test_api import refused
from .test_notary import commit, state


def now_ms() -> int:
    return int(time.time() * 1000)


async def deposit(author: Member, commitment: bytes, key: bytes, release_at_ms: int) -> Any:
    body = {"commitment": b64(commitment), "key": b64(key), "release_at_ms": release_at_ms}
    return await author.client.request("POST", "/v1/notary/keys", body)


async def release(reader: Member, commitment: bytes | str) -> Any:
    path = commitment if isinstance(commitment, str) else commitment.hex()
    return await reader.client.request("GET", f"/v1/notary/keys/{path}")


async def test_a_key_is_released_to_the_parties_at_its_time(
    relay: Relay, members: list[Member]
) -> None:
    khrushchev, kennedy = members
    commitment, key = os.urandom(32), os.urandom(32)
    await commit(khrushchev, [kennedy], commitment)
    at = now_ms() + 1500
    assert await deposit(khrushchev, commitment, key, at) == {"release_at_ms": at}
    assert await deposit(khrushchev, commitment, key, at) == {"release_at_ms": at}  # a retry

    early = await refused(release(kennedy, commitment))
    assert (early.status, early.code) == (409, "not_yet_released")
    assert early.body["release_at_ms"] == at
    assert early.retry_after is not None and 1 <= early.retry_after <= 2

    await asyncio.sleep((at - now_ms()) / 1000 + 0.1)
    for reader in (kennedy, khrushchev):
        assert await release(reader, commitment) == {"key": b64(key), "release_at_ms": at}


async def test_who_may_deposit_and_read(relay: Relay, members: list[Member]) -> None:
    khrushchev, kennedy = members
    castro = await join(relay, "castro")
    commitment, key = os.urandom(32), os.urandom(32)
    unknown = await refused(deposit(khrushchev, commitment, key, now_ms()))
    assert (unknown.status, unknown.code) == (404, "unknown_commitment")
    await commit(khrushchev, [kennedy], commitment)
    nokey = await refused(release(kennedy, commitment))
    assert (nokey.status, nokey.code) == (404, "unknown_key")
    not_author = await refused(deposit(kennedy, commitment, key, now_ms()))
    assert (not_author.status, not_author.code) == (403, "not_the_author")
    await deposit(khrushchev, commitment, key, now_ms() - 1)
    stranger = await refused(release(castro, commitment))
    assert (stranger.status, stranger.code) == (403, "not_a_party")
    for other_key, other_time in [(os.urandom(32), now_ms() - 1), (key, now_ms() + 60_000)]:
        again = await refused(deposit(khrushchev, commitment, other_key, other_time))
        assert (again.status, again.code) == (409, "key_already_deposited")
    assert (await release(kennedy, commitment))["key"] == b64(key)
    await castro.client.close()


async def test_a_proposal_withdrawn_before_its_time_is_never_revealed(
    members: list[Member],
) -> None:
    khrushchev, kennedy = members
    commitment = os.urandom(32)
    await commit(khrushchev, [kennedy], commitment)
    await deposit(khrushchev, commitment, os.urandom(32), now_ms() + 600)
    await state(khrushchev, "withdrawal", commitment, os.urandom(32))
    await asyncio.sleep(0.8)
    gone = await refused(release(kennedy, commitment))
    assert (gone.status, gone.code) == (410, "withdrawn")


async def test_malformed_key_requests_are_400(members: list[Member]) -> None:
    khrushchev, kennedy = members
    commitment = os.urandom(32)
    await commit(khrushchev, [kennedy], commitment)
    for path in ["abc", "G" * 64, commitment.hex().upper(), commitment.hex() + "00"]:
        error = await refused(release(kennedy, path))
        assert (error.status, error.code) == (400, "invalid_field"), path
    good = {"commitment": b64(commitment), "key": b64(os.urandom(32)), "release_at_ms": 1}
    for change in [
        {"key": b64(os.urandom(16))},
        {"key": 7},
        {"commitment": "not base64!"},
        {"release_at_ms": -1},
        {"release_at_ms": "soon"},
        {"release_at_ms": now_ms() + 400 * 86_400_000},
    ]:
        error = await refused(
            khrushchev.client.request("POST", "/v1/notary/keys", {**good, **change})
        )
        assert error.status == 400, change
    missing = {k: v for k, v in good.items() if k != "key"}
    error = await refused(khrushchev.client.request("POST", "/v1/notary/keys", missing))
    assert isinstance(error, RelayRequestError) and error.status == 400
