"""Off-the-record channels end to end (PRODUCT.md §3): Robert Kennedy and Ambassador Dobrynin
through a real relay, then a search for what they left behind.

Registration puts each participant's name and identity key in the relay's directory, and an
earlier letter puts each in the other's contacts: that is the identified record, there before the
channel and after it. What these tests prove is that the off-the-record exchange adds nothing to
it: no row that names either side, no key, no token, no text, in any file of the relay's data
directory (database, WAL, journal), in its log, in /metrics, or in either participant's home.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from backchannel.identity import IdentityPublic
from backchannel_cli.offrecord import PREFIX, Channel, OffTheRecord
from backchannel_cli.profile import unlock
from backchannel_cli.render import iso
from backchannel_cli.service import Participant

from .conftest import GENEROUS, Relay, User, eventually, participants

FIRST = "The Jupiter missiles in Turkey will be gone within four to five months."
ANSWER = "Understood. Not one word of this in public, on either side."
DIRECTORY_TABLES = {
    "participants", "invites", "signed_prekeys", "one_time_prekeys", "kem_prekeys",
    "alembic_version",
}  # fmt: skip
"""What registration stores by design: names, roles and public keys."""


DROPS = ("drops", "drop_messages")


def pair(relay: Relay, home: Path) -> tuple[User, User]:
    rfk, dobrynin = participants(relay, home, ("rfk", "party"), ("dobrynin", "party"))
    # A formal letter first: they already correspond on the record, as they did in 1962.
    rfk.send(dobrynin, "Formal note: the quarantine stands.")
    dobrynin.inbox()
    rfk.inbox()
    return rfk, dobrynin


def channels(user: User) -> list[Channel]:
    """What the user's profile holds of its channels (the test opens the sealed store)."""
    participant = Participant(unlock(user.directory, None))
    try:
        with participant.store.transaction() as db:
            return OffTheRecord(participant).channels(db)
    finally:
        participant.store.close()


def secrets_of(channel: Channel) -> list[bytes]:
    found = [channel.my_token, channel.my_read_key, channel.channel_id]
    if channel.peer_token:
        found.append(channel.peer_token)
    if channel.state is not None:
        found += [channel.state.send_chain, channel.state.recv_chain]
    return found


def canaries(row: tuple[Any, ...]) -> list[bytes]:
    """From a stored drop message: its message id and eight 16-byte slices of its ciphertext."""
    body: bytes = row[-1]
    message_id: bytes = row[2]
    step = (len(body) - 16 - 32) // 8
    slices = [body[32 + i * step : 48 + i * step] for i in range(8)]
    assert all(len(piece) == 16 for piece in slices) and len(set(slices)) == 8
    return [message_id, *slices]


def forms(value: bytes | str) -> list[bytes]:
    """A value as it could be written anywhere: raw, hex, base64."""
    raw = value.encode() if isinstance(value, str) else value
    found = [raw, raw.hex().encode(), base64.b64encode(raw)]
    return found if isinstance(value, bytes) else [raw]


def identity_needles(user: User) -> list[bytes]:
    """The user's name, identity keys (whole and each key) and fingerprint, in every form."""
    participant = Participant(unlock(user.directory, None))
    public: IdentityPublic = participant.me.identity.public
    participant.store.close()
    keys = public.to_bytes()
    needles = [*forms(user.name), *forms(keys), *forms(public.fingerprint())]
    needles += [n for start in range(0, len(keys), 32) for n in forms(keys[start : start + 32])]
    return [*needles, user.fingerprint.encode(), user.fingerprint.replace(" ", "").encode()]


def files_under(directory: Path) -> Iterator[Path]:
    return (p for p in sorted(directory.rglob("*")) if p.is_file())


def raw_hits(paths: list[Path], needles: list[bytes]) -> list[str]:
    hits = []
    for path in paths:
        data = path.read_bytes()
        hits += [f"{path.name}: {n[:24]!r}" for n in needles if n in data]
    return hits


def tables(relay: Relay, store: tuple[str, ...]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the relay's store, SQLite or PostgreSQL."""
    url = store[1] if store else f"sqlite+aiosqlite:///{relay.data_dir / 'relay.sqlite3'}"

    async def read() -> dict[str, list[tuple[Any, ...]]]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                metadata = MetaData()
                await connection.run_sync(metadata.reflect)
                return {
                    name: [tuple(row) for row in await connection.execute(table.select())]
                    for name, table in metadata.tables.items()
                }
        finally:
            await engine.dispose()

    return asyncio.run(read())


def row_hits(rows: dict[str, list[tuple[Any, ...]]], needles: list[bytes]) -> list[str]:
    hits = []
    for table, content in rows.items():
        for row in content:
            for cell in row:
                data = cell if isinstance(cell, bytes) else str(cell).encode()
                hits += [f"{table}: {n[:24]!r}" for n in needles if n and n in data]
    return hits


def local_rows(user: User) -> dict[str, dict[str, tuple[Any, ...]]]:
    """The rows of the user's local state by table and primary key (first column)."""
    with sqlite3.connect(user.directory / "state.sqlite3") as connection:
        names = [
            r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        return {
            name: {str(row[0]): row for row in connection.execute(f'SELECT * FROM "{name}"')}
            for name in names
        }


def metrics(relay: Relay) -> bytes:
    with urllib.request.urlopen(relay.url + "/metrics") as answer:
        body: bytes = answer.read()
    return body


def test_an_off_the_record_exchange_leaves_nothing_behind(
    make_relay: Any, store: tuple[str, ...], home: Path
) -> None:
    relay = make_relay("otr", *GENEROUS, *store, "--sweep-interval", "0.2", access_log=True)
    rfk, dobrynin = pair(relay, home)
    identified = identity_needles(rfk) + identity_needles(dobrynin)
    before = local_rows(dobrynin)
    homes = [*files_under(rfk.directory), *files_under(dobrynin.directory)]
    assert raw_hits(homes, identified) != []  # (the search finds their identified record)

    opened = rfk.json("otr", "open", dobrynin.name, "--ttl", "10m")
    assert opened["with"] == dobrynin.name and opened["status"] == "waiting for the answer"
    answered = dobrynin.run("inbox", "--json")  # their client answers the offer
    assert answered.exit_code == 0 and json.loads(answered.stdout) == []
    assert f"{rfk.name} opened an off-the-record channel with you" in answered.stderr
    sent = rfk.json("otr", "send", dobrynin.name, FIRST)
    assert (sent["kind"], sent["verified"], sent["to"]) == ("otr", "deniable", dobrynin.name)
    assert sent["control_sees"] == "existence" == opened["control_sees"]

    # In transit: the relay holds one sealed envelope, and no row outside the directory names
    # either side (the drop is filed under a hash of a token, with no sender).
    rows = tables(relay, store)
    assert len(rows["drop_messages"]) == 1 and len(rows["drops"]) == 2
    outside = {t: r for t, r in rows.items() if t not in DIRECTORY_TABLES}
    assert row_hits(outside, identified) == []
    held = channels(rfk) + channels(dobrynin)
    assert [c.peer for c in held] == [dobrynin.name, rfk.name] and all(c.ready for c in held)
    secrets = [n for c in held for s in secrets_of(c) for n in forms(s)]
    secrets += canaries(rows["drop_messages"][0])

    received = dobrynin.inbox()
    assert [(m["kind"], m["verified"], m["from"], m["text"]) for m in received] == [
        ("otr", "deniable", rfk.name, FIRST)
    ]
    dobrynin.json("otr", "send", rfk.name, ANSWER)
    secrets += canaries(tables(relay, store)["drop_messages"][0])
    assert [(m["from"], m["text"]) for m in rfk.inbox()] == [(dobrynin.name, ANSWER)]
    assert dobrynin.inbox() == [] and rfk.inbox() == []  # shown once, then forgotten
    assert tables(relay, store)["drop_messages"] == []  # deleted on delivery

    assert rfk.ok("otr", "close", dobrynin.name).startswith("Closed the off-the-record channel")
    closing = dobrynin.run("inbox")
    assert f"{rfk.name} closed the off-the-record channel" in closing.stderr
    assert channels(rfk) == [] == channels(dobrynin)
    eventually(lambda: tables(relay, store)["drops"] == [], 10, "both drops closed")

    # The relay: no trace in any row outside the directory, in any file (database, WAL,
    # journal), in its log or in /metrics; the log does have lines for other requests.
    texts = [*forms(FIRST), *forms(ANSWER)]
    rows = tables(relay, store)
    outside = {t: r for t, r in rows.items() if t not in DIRECTORY_TABLES}
    assert row_hits(outside, identified + secrets + texts) == []
    assert row_hits(rows, secrets + texts) == []
    assert rows["notary_log"] == [] and rows["envelopes"] == []  # no notary entry, all delivered
    exposed = metrics(relay)
    assert b"/v1/drops" not in exposed and [n for n in identified if n in exposed] == []
    log = relay.log.read_bytes()
    assert b"POST /v1/messages 200" in log and b"/v1/drops" not in log
    assert [n for n in identified + secrets + texts if n in log] == []
    if not store:  # the sweep after the close truncates SQLite's write-ahead log
        wal = relay.data_dir / "relay.sqlite3-wal"
        eventually(lambda: not wal.exists() or wal.stat().st_size == 0, 10, "the WAL truncated")
    relay_files = list(files_under(relay.data_dir))
    assert raw_hits(relay_files, secrets + texts) == []
    assert row_hits(rows, identified) != []  # (the search does find the directory's entries)
    if not store:  # after a clean stop too (SQLite folds its WAL into the database)
        relay.stop()
        assert raw_hits(list(files_under(relay.data_dir)), secrets + texts) == []

    # The participants' homes: no text, no channel secret, and the run added no row that names
    # anyone (only `processed`: the ids of the set-up envelopes, kept until they expire).
    homes = [*files_under(rfk.directory), *files_under(dobrynin.directory)]
    assert raw_hits(homes, secrets + texts) == []
    after = local_rows(dobrynin)
    added = {
        t: [r for k, r in rows_.items() if k not in before.get(t, {})] for t, rows_ in after.items()
    }
    assert {t for t, r in added.items() if r} <= {"processed"}
    names = [n for n in identified if not n.isdigit()]
    assert row_hits({t: r for t, r in added.items()}, names) == []
    assert [k for k in after["secrets"] if k.startswith(PREFIX) or k.startswith("otr")] == []


def opened(relay: Relay, home: Path, ttl: str = "10m") -> tuple[User, User]:
    rfk, dobrynin = pair(relay, home)
    rfk.ok("otr", "open", dobrynin.name, "--ttl", ttl)
    dobrynin.inbox()
    return rfk, dobrynin


def test_an_unread_message_is_gone_from_the_relay_at_its_expiry(
    make_relay: Any, home: Path
) -> None:
    relay = make_relay("expiry", *GENEROUS, "--sweep-interval", "0.2")
    rfk, dobrynin = opened(relay, home, ttl="3s")
    rfk.ok("otr", "send", dobrynin.name, FIRST)
    assert len(tables(relay, ())["drop_messages"]) == 1
    eventually(
        lambda: tables(relay, ()).keys() and not any(tables(relay, ())[t] for t in DROPS),
        10,
        "the sweep at expiry",
    )
    late = dobrynin.run("inbox", "--json")  # never shown: gone, and the channel with it
    assert late.exit_code == 0 and json.loads(late.stdout) == []
    assert "has expired" in late.stderr
    assert channels(dobrynin) == []
    assert "no off-the-record channel" in rfk.fails("otr", "send", dobrynin.name, "Still there?")
    assert channels(rfk) == []
    secrets = [*forms(FIRST)]
    assert raw_hits([*files_under(relay.data_dir), *files_under(dobrynin.directory)], secrets) == []


def test_a_watching_recipient_sees_off_the_record_messages_live(
    relay: Relay, home: Path, watch: Any
) -> None:
    rfk, dobrynin = opened(relay, home)
    watcher = watch(dobrynin, "--json").connected()
    rfk.ok("otr", "send", dobrynin.name, FIRST)
    shown = watcher.message()
    assert (shown["kind"], shown["verified"], shown["from"], shown["text"]) == (
        "otr", "deniable", rfk.name, FIRST,
    )  # fmt: skip
    watcher.nothing_more(1.5)
    rfk.ok("otr", "close", dobrynin.name)
    watcher.wait_for_notice(f"{rfk.name} closed the off-the-record channel")
    eventually(lambda: channels(dobrynin) == [], 10, "the watcher to wipe its side")


def test_keep_stores_a_copy_marked_unverifiable(relay: Relay, home: Path) -> None:
    rfk, dobrynin = opened(relay, home)
    assert "a copy kept" in rfk.ok("otr", "send", dobrynin.name, FIRST, "--keep")
    received = dobrynin.inbox("--keep")
    assert [(m["kind"], m["text"]) for m in received] == [("otr", FIRST)]
    kept = dobrynin.json("show", received[0]["id"])
    assert (kept["kind"], kept["verified"], kept["status"]) == ("otr", "unverifiable", "kept")
    mine = rfk.json("show", received[0]["id"])
    assert (mine["to"], mine["verified"], mine["text"]) == (dobrynin.name, "unverifiable", FIRST)


def test_both_open_at_once_and_one_channel_results(relay: Relay, home: Path) -> None:
    rfk, dobrynin = pair(relay, home)
    rfk.ok("otr", "open", dobrynin.name)
    dobrynin.ok("otr", "open", rfk.name)
    for _ in range(2):
        rfk.inbox()
        dobrynin.inbox()
    (mine,), (theirs,) = channels(rfk), channels(dobrynin)
    assert mine.channel_id == theirs.channel_id and mine.ready and theirs.ready
    dobrynin.ok("otr", "send", rfk.name, ANSWER)
    assert [m["text"] for m in rfk.inbox()] == [ANSWER]


def test_bad_input_gets_one_clear_line_and_costs_nothing(relay: Relay, home: Path) -> None:
    rfk, dobrynin = pair(relay, home)
    assert "no off-the-record channel" in rfk.fails("otr", "send", dobrynin.name, "Hello")
    assert "no off-the-record channel" in rfk.fails("otr", "close", dobrynin.name)
    assert "someone else" in rfk.fails("otr", "open", rfk.name)
    assert "no participant" in rfk.fails("otr", "open", "nobody-at-all")
    assert "--ttl" in rfk.fails("otr", "open", dobrynin.name, "--ttl", "soon")
    assert rfk.fails("otr", "open", dobrynin.name, "--ttl", "2d").endswith("at most 1d")
    assert channels(rfk) == []
    rfk.ok("otr", "open", dobrynin.name)
    assert "is open until" in rfk.fails("otr", "open", dobrynin.name)
    assert "has not answered" in rfk.fails("otr", "send", dobrynin.name, "Too early")
    dobrynin.inbox()
    assert "empty" in rfk.fails("otr", "send", dobrynin.name, "   ")
    assert "at most 65536 bytes" in rfk.fails("otr", "send", dobrynin.name, "x" * 70_000)
    assert "No such command" in rfk.fails("otr", "shout")
    rfk.ok("otr", "send", dobrynin.name, FIRST)  # none of it cost the channel anything
    assert [m["text"] for m in dobrynin.inbox()] == [FIRST]
    dobrynin.ok("otr", "close", rfk.name)  # rfk's client has not heard yet
    refused = rfk.fails("otr", "send", dobrynin.name, "Are you there?")
    assert "closed or expired; the message was not delivered" in refused
    assert channels(rfk) == [] and channels(dobrynin) == []
    rfk.ok("otr", "open", dobrynin.name)
    dobrynin.inbox()
    assert rfk.json("otr", "list") == [
        {"with": dobrynin.name, "opened_by": "me", "status": "open", "expires_at": mine_expiry(rfk),
         "expires_at_iso": iso(mine_expiry(rfk))}
    ]  # fmt: skip


def mine_expiry(user: User) -> int:
    (channel,) = channels(user)
    return channel.expires_at_ms
