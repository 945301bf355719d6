"""One-time prekeys are spent by everyone who starts a session; the CLI tops them up itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

from backchannel.identity import IdentityKeyPair
from backchannel.prekeys import PrekeySecrets
from backchannel_cli.relay import RelayClient

from .conftest import Relay, participants


def drain(relay: Relay, target: str, times: int, drainer: str) -> int:
    """Fetch `target`'s bundle `times` times as participant `drainer`; -> one-time keys left."""
    return asyncio.run(_drain(relay, target, times, drainer, relay.invite(drainer)))


async def _drain(relay: Relay, target: str, times: int, name: str, invite: str) -> int:
    identity = IdentityKeyPair.generate()
    secrets, _ = PrekeySecrets().add_signed_prekey(identity)
    secrets, _ = secrets.add_kem_prekeys(identity, 1, last_resort=True)
    published = secrets.published(identity)
    async with RelayClient(relay.url) as client:
        await client.register(identity, name, invite, published.signed, published.kem_last_resort)
        await client.login(identity, name)
        left = -1
        for _ in range(times):
            _, left = await client.fetch_bundle(target)
        return left


def test_spent_one_time_prekeys_are_topped_up_on_the_next_sync(relay: Relay, home: Path) -> None:
    (khrushchev,) = participants(relay, home, ("khrushchev", "party"))
    spent = drain(relay, khrushchev.name, 100, f"castro-{khrushchev.name}")
    assert spent == 0  # every one-time key has been handed out
    khrushchev.ok("inbox")  # the relay reports 0 left: the CLI generates and uploads more
    assert drain(relay, khrushchev.name, 1, f"dobrynin-{khrushchev.name}") >= 90
