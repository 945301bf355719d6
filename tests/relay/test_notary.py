"""The relay's notary over HTTP, on each store: signed receipts, the hash-chained log, who may
notarise what, and the one ordering rule that settles an acceptance racing a withdrawal."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path
from typing import Any

from backchannel.keys import SigningPublicKey
from backchannel.proposals import EntryKind, NotaryEntry, NotaryLink, NotaryReceipt, verify_log
from backchannel_cli.relay import RelayClient, b64

from .conftest import Backend, Member, Relay, join, make_relay
from .test_api import refused
from .test_durability_and_hygiene import own_store, relogin


async def notary_key(relay: Relay) -> SigningPublicKey:
    async with RelayClient(relay.url) as client:
        info = await client.info()
    return SigningPublicKey.from_bytes(base64.b64decode(info["notary_key"]))


def receipt_of(answer: dict[str, Any]) -> NotaryReceipt:
    return NotaryReceipt.from_bytes(base64.b64decode(answer["receipt"]))


async def commit(
    author: Member, to: list[Member], commitment: bytes, expires_at_ms: int = 0
) -> dict[str, Any]:
    body = {"commitment": b64(commitment), "addressees": [m.name for m in to]}
    if expires_at_ms:
        body["expires_at_ms"] = expires_at_ms
    answer: dict[str, Any] = await author.client.request("POST", "/v1/notary/commitments", body)
    return answer


async def state(who: Member, kind: str, commitment: bytes, digest: bytes) -> dict[str, Any]:
    answer: dict[str, Any] = await who.client.request(
        "POST",
        "/v1/notary/statements",
        {"commitment": b64(commitment), "kind": kind, "digest": b64(digest)},
    )
    return answer


def logged(item: dict[str, Any]) -> NotaryReceipt | NotaryLink:
    """A log item: a receipt (an entry about the reader's own proposals) or a link."""
    if "receipt" in item:
        return receipt_of(item)
    link = NotaryLink.from_bytes(base64.b64decode(item["link"]))
    assert link.seq == item["seq"]
    return link


def chain(items: list[NotaryReceipt | NotaryLink]) -> list[NotaryEntry | NotaryLink]:
    return [i.entry if isinstance(i, NotaryReceipt) else i for i in items]


async def whole_log(member: Member) -> list[NotaryReceipt | NotaryLink]:
    items: list[NotaryReceipt | NotaryLink] = []
    while True:
        page = await member.client.request(
            "GET", "/v1/notary/log", params={"after": str(len(items)), "limit": "50"}
        )
        items += [logged(item) for item in page["entries"]]
        if not page["more"]:
            return items


async def test_a_commitment_gets_a_signed_receipt_once(relay: Relay, members: list[Member]) -> None:
    khrushchev, kennedy = members
    commitment = os.urandom(32)
    first = await commit(khrushchev, [kennedy], commitment)
    receipt = receipt_of(first)
    receipt.verify(await notary_key(relay))
    assert receipt.entry.kind == EntryKind.COMMITMENT and receipt.entry.subject == commitment
    assert first["seq"] == receipt.entry.seq and first["at_ms"] == receipt.entry.at_ms
    assert await commit(khrushchev, [kennedy], commitment) == first  # a retry: the same receipt
    taken = await refused(commit(kennedy, [khrushchev], commitment))
    assert taken.status == 409 and taken.code == "already_committed"


async def test_who_may_notarise_what(relay: Relay, members: list[Member]) -> None:
    khrushchev, kennedy = members
    castro = await join(relay, "castro")
    commitment, digest = os.urandom(32), os.urandom(32)
    unknown = await refused(state(kennedy, "acceptance", os.urandom(32), digest))
    assert unknown.status == 404 and unknown.code == "unknown_commitment"
    await commit(khrushchev, [kennedy], commitment)
    for who, kind, code in [
        (castro, "acceptance", "not_an_addressee"),
        (khrushchev, "acceptance", "not_an_addressee"),
        (kennedy, "withdrawal", "not_the_author"),
        (castro, "statement", "not_a_party"),
    ]:
        error = await refused(state(who, kind, commitment, digest))
        assert (error.status, error.code) == (403, code)
    for kind in ["approval", ["acceptance"], {"a": 1}, None]:
        bad = await refused(state(kennedy, kind, commitment, digest))  # type: ignore[arg-type]
        assert bad.status == 400 and bad.code == "invalid_field"
    short = await refused(state(kennedy, "statement", commitment[:16], digest))
    assert short.status == 400
    nobody = await refused(
        khrushchev.client.request(
            "POST",
            "/v1/notary/commitments",
            {"commitment": b64(os.urandom(32)), "addressees": ["nobody-at-all"]},
        )
    )
    assert nobody.status == 404 and nobody.code == "unknown_participant"
    await castro.client.close()


async def test_acceptance_racing_withdrawal_exactly_one_stands(
    relay: Relay, members: list[Member]
) -> None:
    khrushchev, kennedy = members
    key = await notary_key(relay)
    for _ in range(5):
        commitment = os.urandom(32)
        await commit(khrushchev, [kennedy], commitment)
        outcomes = await asyncio.gather(
            state(kennedy, "acceptance", commitment, os.urandom(32)),
            state(khrushchev, "withdrawal", commitment, os.urandom(32)),
            return_exceptions=True,
        )
        won = [o for o in outcomes if isinstance(o, dict)]
        lost = [o for o in outcomes if not isinstance(o, dict)]
        assert len(won) == 1 and len(lost) == 1
        error: Any = lost[0]
        assert error.status == 409 and error.code == "already_decided"
        # both sides agree: the loser is told the winner, with the winner's own signed receipt
        winner = await kennedy.client.request(
            "GET", "/v1/notary/log", params={"after": str(won[0]["seq"] - 1), "limit": "1"}
        )
        assert winner["entries"][0] == won[0]
        receipt_of(won[0]).verify(key)


async def test_the_winner_is_named_in_the_conflict(relay: Relay, members: list[Member]) -> None:
    khrushchev, kennedy = members
    commitment = os.urandom(32)
    await commit(khrushchev, [kennedy], commitment)
    accepted = await state(kennedy, "acceptance", commitment, os.urandom(32))
    async with RelayClient(relay.url) as raw:
        raw.token = khrushchev.client.token
        async with raw.session.post(
            relay.url + "/v1/notary/statements",
            json={"commitment": b64(commitment), "kind": "withdrawal", "digest": b64(b"w" * 32)},
            headers=raw._headers(),
        ) as response:
            assert response.status == 409
            body = await response.json()
    assert body["error"] == "already_decided" and body["winner"] == accepted["receipt"]


async def test_an_expired_proposal_cannot_be_accepted(members: list[Member]) -> None:
    khrushchev, kennedy = members
    commitment = os.urandom(32)
    await commit(khrushchev, [kennedy], commitment, int(time.time() * 1000) + 500)
    await asyncio.sleep(1)
    late = await refused(state(kennedy, "acceptance", commitment, os.urandom(32)))
    assert late.status == 409 and late.code == "expired"
    assert await state(kennedy, "statement", commitment, os.urandom(32))  # still acknowledged


async def test_the_log_chains_across_a_kill_9_and_concurrent_appends(
    backend: Backend, tmp_path: Path
) -> None:
    store = own_store(backend, tmp_path)
    relay = make_relay(store)
    author, addressee = await join(relay), await join(relay)
    await asyncio.gather(*(commit(author, [addressee], os.urandom(32)) for _ in range(20)))
    before = await whole_log(author)
    relay.kill()
    for member in (author, addressee):
        await member.client.close()
    restarted = make_relay(store)
    try:
        author = await relogin(restarted, author)
        await commit(author, [addressee], os.urandom(32))
        after = await whole_log(author)
        key = await notary_key(restarted)
        async with RelayClient(restarted.url) as anyone:  # the log needs a token
            unauthenticated = await refused(
                anyone.request("GET", "/v1/notary/log", params={"limit": "500"})
            )
        assert unauthenticated.status == 401
        # A third participant checks the same chain, seeing no entry's content.
        stranger = await join(restarted)
        links = await whole_log(stranger)
        assert all(isinstance(i, NotaryLink) for i in links)
        assert links == [i.entry.link() if isinstance(i, NotaryReceipt) else i for i in after]
        verify_log(chain(links))
        await author.client.close()
        await stranger.client.close()
    finally:
        restarted.kill()
    assert after[: len(before)] == before  # nothing changed, dropped or reordered
    verify_log(chain(after[: len(before)]))
    mine = [i for i in after[len(before) - 1 :] if isinstance(i, NotaryReceipt)]
    verify_log([r.entry for r in mine[1:]], after=mine[0].entry)
    for receipt in mine:
        receipt.verify(key)


async def test_two_processes_append_to_one_chain(postgres: Backend) -> None:
    first, second = make_relay(postgres), make_relay(postgres)
    try:
        a, b = await join(first), await join(first)
        b_elsewhere = await relogin(second, b)
        await asyncio.gather(
            *(commit(a, [b], os.urandom(32)) for _ in range(15)),
            *(commit(b_elsewhere, [a], os.urandom(32)) for _ in range(15)),
        )
        log = await whole_log(a)
        verify_log(chain(log))
        assert len([i for i in log if isinstance(i, NotaryReceipt)]) >= 30
        for member in (a, b, b_elsewhere):
            await member.client.close()
    finally:
        first.kill()
        second.kill()
