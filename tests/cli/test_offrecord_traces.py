"""What an off-the-record channel leaves behind in metadata (PROTOCOL.md §15.3-15.4).

On the relay: the two drops of one channel must not be linked by their stored expiries, to each
other or to the set-up envelope's receipt time (receipt + TTL was the old stored value). On the
participants: once the channel is closed, nothing in either profile's files names the peer
unless they also corresponded on the record.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from backchannel.drops import EXPIRY_SPREAD, SealedEnvelope, drop_address

from .conftest import GENEROUS, Relay, User, eventually, participants
from .test_offrecord import (
    FIRST,
    channels,
    files_under,
    identity_needles,
    local_rows,
    raw_hits,
)

TTL_S = 2 * 3600


def rows(relay: Relay, store: tuple[str, ...], table: str) -> list[dict[str, Any]]:
    """One table of the relay's store (SQLite or PostgreSQL), each row by column name."""
    url = store[1] if store else f"sqlite+aiosqlite:///{relay.data_dir / 'relay.sqlite3'}"

    async def read() -> list[dict[str, Any]]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                metadata = MetaData()
                await connection.run_sync(metadata.reflect, only=[table])
                result = await connection.execute(metadata.tables[table].select())
                return [dict(row._mapping) for row in result]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def setup_receipt_ms(relay: Relay, store: tuple[str, ...], opener: User) -> int:
    """When the relay received the set-up (the newest envelope from `opener`: the offer)."""
    waiting = [r for r in rows(relay, store, "envelopes") if opener.name.encode() in r["body"]]
    return int(max(waiting, key=lambda r: int(r["seq"]))["received_at"])


def drop_expiries(relay: Relay, store: tuple[str, ...]) -> dict[bytes, int]:
    """The relay's stored drops: address -> expires_at (its only other column is a hash)."""
    return {bytes(r["address"]): int(r["expires_at"]) for r in rows(relay, store, "drops")}


def test_the_drops_of_a_channel_are_linked_by_no_stored_expiry(
    make_relay: Any, store: tuple[str, ...], home: Path
) -> None:
    relay = make_relay("expiries", *GENEROUS, *store)
    rfk, dobrynin, thompson = participants(
        relay, home, ("rfk", "party"), ("dobrynin", "party"), ("thompson", "party")
    )
    expiries: list[int] = []
    offsets: list[int] = []
    for opener, peer in ((rfk, dobrynin), (thompson, dobrynin)):
        opener.ok("otr", "open", peer.name, "--ttl", f"{TTL_S}s")
        received_ms = setup_receipt_ms(relay, store, opener)
        peer.inbox()  # answers: opens its own drop
        (mine,) = [c for c in channels(opener) if c.peer == peer.name]
        (theirs,) = [c for c in channels(peer) if c.peer == opener.name]
        stored = drop_expiries(relay, store)
        opener_drop = stored[drop_address(mine.my_token)]
        peer_drop = stored[drop_address(theirs.my_token)]
        end = -(-mine.expires_at_ms // 1000)
        for expiry in (opener_drop, peer_drop):
            assert end <= expiry < end + EXPIRY_SPREAD  # after the channel's end, within the hour
            expiries.append(expiry)
            offsets.append(expiry - received_ms // 1000)
    # Both drops of a channel used to store the set-up's receipt plus the TTL (to the second):
    # two values for four drops, one offset from the receipt. Each side now draws its own
    # second (two of four may coincide, at 1 in 3,600 a pair).
    assert len(set(expiries)) >= 3
    assert max(offsets) - min(offsets) > 1

    # A message in transit adds no value of its own: the relay keeps it until the recipient's
    # drop's expiry, and the envelope carries the hour-grid value every channel ending in the
    # same hour shares.
    rfk.ok("otr", "send", dobrynin.name, FIRST)
    (held,) = rows(relay, store, "drop_messages")
    (theirs,) = [c for c in channels(dobrynin) if c.peer == rfk.name]
    address = drop_address(theirs.my_token)
    assert bytes(held["address"]) == address
    assert held["expires_at"] == drop_expiries(relay, store)[address]
    sealed = SealedEnvelope.from_bytes(bytes(held["body"]))
    assert sealed.expires_at % EXPIRY_SPREAD == 0 and sealed.expires_at > held["expires_at"]


def needles(user: User) -> list[bytes]:
    return identity_needles(user)


def scan(user: User, peer: User) -> list[str]:
    """Every file of `user`'s profile (database, WAL, journal, keystore, profile.json), searched
    for the peer's name, identity keys and fingerprint."""
    return raw_hits(list(files_under(user.directory)), needles(peer))


def off_the_record(rfk: User, dobrynin: User) -> None:
    rfk.ok("otr", "open", dobrynin.name)
    dobrynin.inbox()
    rfk.ok("otr", "send", dobrynin.name, FIRST)
    assert [m["text"] for m in dobrynin.inbox()] == [FIRST]
    dobrynin.ok("otr", "send", rfk.name, "Agreed.")
    assert [m["text"] for m in rfk.inbox()] == ["Agreed."]


def test_after_a_close_neither_client_holds_anything_that_names_the_other(
    relay: Relay, home: Path
) -> None:
    rfk, dobrynin = participants(relay, home, ("rfk", "party"), ("dobrynin", "party"))
    assert scan(rfk, dobrynin) == [] and scan(dobrynin, rfk) == []
    off_the_record(rfk, dobrynin)
    assert scan(rfk, dobrynin) != [] and scan(dobrynin, rfk) != []  # (contacts and sessions)

    rfk.ok("otr", "close", dobrynin.name)
    assert scan(rfk, dobrynin) == []
    told = dobrynin.run("inbox")
    assert f"{rfk.name} closed the off-the-record channel" in told.stderr
    assert scan(dobrynin, rfk) == []
    for user in (rfk, dobrynin):
        rows = local_rows(user)
        assert rows["contacts"] == {} and rows["sessions"] == {} and rows["messages"] == {}
        assert rows["previous_sessions"] == {}

    # Nothing is out of step: a letter afterwards opens a new session, both ways.
    rfk.send(dobrynin, "Formal note: the quarantine stands.")
    assert [(m["from"], m["verified"]) for m in dobrynin.inbox()] == [(rfk.name, "signed")]
    dobrynin.send(rfk, "Received.")
    assert [m["text"] for m in rfk.inbox()] == ["Received."]


def test_closes_that_cross_leave_nothing_either(relay: Relay, home: Path) -> None:
    """Both close before either hears of the other's close: each side's close then continues
    a session the other has forgotten, and is dropped without a trace."""
    rfk, dobrynin = participants(relay, home, ("rfk", "party"), ("dobrynin", "party"))
    off_the_record(rfk, dobrynin)
    rfk.ok("otr", "close", dobrynin.name)
    dobrynin.ok("otr", "close", rfk.name)
    for user, peer in ((rfk, dobrynin), (dobrynin, rfk)):
        late = user.run("inbox", "--json")
        assert late.exit_code == 0 and json.loads(late.stdout) == []
        assert scan(user, peer) == []
        assert local_rows(user)["messages"] == {}


def test_a_refused_opening_leaves_no_contact_behind(relay: Relay, home: Path) -> None:
    rfk, dobrynin = participants(relay, home, ("rfk", "party"), ("dobrynin", "party"))
    assert "at most" in rfk.fails("otr", "open", dobrynin.name, "--ttl", "30d")
    assert scan(rfk, dobrynin) == []


def test_an_identified_exchange_keeps_its_record(relay: Relay, home: Path) -> None:
    """The control: when they also wrote letters, the close takes the channel only; names,
    sessions and letters stay, and the letters go on in the same session."""
    rfk, dobrynin = participants(relay, home, ("rfk", "party"), ("dobrynin", "party"))
    off_the_record(rfk, dobrynin)
    rfk.send(dobrynin, "Formal note: the quarantine stands.")
    assert [m["from"] for m in dobrynin.inbox()] == [rfk.name]
    rfk.ok("otr", "close", dobrynin.name)
    dobrynin.inbox()
    assert channels(rfk) == [] == channels(dobrynin)
    assert scan(rfk, dobrynin) != [] and scan(dobrynin, rfk) != []
    for user, peer in ((rfk, dobrynin), (dobrynin, rfk)):
        rows = local_rows(user)
        assert peer.name in rows["contacts"] and peer.name in rows["sessions"]
    dobrynin.send(rfk, "Received.")
    assert [m["text"] for m in rfk.inbox()] == ["Received."]


def test_a_watching_client_forgets_the_peer_while_its_log_is_open(
    relay: Relay, home: Path, watch: Any
) -> None:
    """While `inbox --watch` holds the state open, SQLite keeps its write-ahead log beside it:
    the close it hears empties that too of every earlier copy of the peer's rows."""
    rfk, dobrynin = participants(relay, home, ("rfk", "party"), ("dobrynin", "party"))
    off_the_record(rfk, dobrynin)
    watcher = watch(dobrynin).connected()
    rfk.ok("otr", "close", dobrynin.name)
    watcher.wait_for_notice(f"{rfk.name} closed the off-the-record channel")
    eventually(lambda: scan(dobrynin, rfk) == [], 10, "the watcher to forget the peer")
    assert watcher.process.poll() is None  # still watching, its database still open
    watcher.stop()
