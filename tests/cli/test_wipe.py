"""Wiping when an exercise is over, end to end: canaries written through the CLI against a relay
subprocess (names, a letter, an off-the-record message, a proposal, a loaded scenario), then
`backchannel-relay wipe` on the stopped relay's store and `backchannel wipe` on a profile, and a
scan of every file (and, on PostgreSQL, every table) for every canary.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from backchannel_relay.cli import main as relay_main

from .conftest import GENEROUS, Relay, User, assert_one_error_line
from .test_offrecord import canaries, files_under, forms, identity_needles, pair, raw_hits, tables


def relay_cli(relay: Relay, store: tuple[str, ...], *args: str) -> Result:
    """`backchannel-relay ARGS` on the store `relay` serves, as control runs it."""
    return CliRunner().invoke(relay_main, [*args, "--data-dir", str(relay.data_dir), *store])


def row_hits(rows: dict[str, list[tuple[Any, ...]]], needles: list[bytes]) -> list[str]:
    hits = []
    for table, content in rows.items():
        for cell in (cell for row in content for cell in row):
            data = cell if isinstance(cell, bytes) else str(cell).encode()
            hits += [f"{table}: {n[:24]!r}" for n in needles if n and n in data]
    return hits


def test_a_wiped_relay_store_holds_no_canary(
    make_relay: Any, store: tuple[str, ...], home: Path
) -> None:
    relay = make_relay("wipe", *GENEROUS, *store)
    loaded = relay_cli(relay, store, "exercise", "load", "cuba-1962", "--json")
    assert loaded.exit_code == 0, loaded.output
    rfk, dobrynin = pair(relay, home)
    mark = uuid.uuid4().hex
    texts = [f"letter canary {mark}", f"otr canary {mark}", f"proposal canary {mark}"]
    rfk.ok("otr", "open", dobrynin.name, "--ttl", "10m")
    dobrynin.run("inbox", "--json")  # their client answers the offer
    rfk.json("otr", "send", dobrynin.name, texts[1])
    rfk.send(dobrynin, texts[0])
    made = rfk.json("propose", dobrynin.name, "--title", "Canary", "--term", texts[2])

    rows = tables(relay, store)  # what is in transit, unread, when the exercise ends
    assert rows["envelopes"] and rows["notary_log"] and len(rows["drop_messages"]) == 1
    needles = identity_needles(rfk) + identity_needles(dobrynin)
    needles += [n for text in texts for n in forms(text)]
    needles += canaries(rows["drop_messages"][0])
    needles += [body[40:72] for (*_, body, _sender) in rows["envelopes"]]
    needles += [row[4] for row in rows["notary_log"]] + [row[1] for row in rows["relay_meta"]]
    needles += forms("Kennedy") + forms("quarantine")  # the scenario's text
    needles = [n for n in needles if len(n) >= 5]
    assert row_hits(rows, needles) != []  # (the search finds them before the wipe)
    off_the_record = [*forms(texts[1]), *canaries(rows["drop_messages"][0])]
    assert_no_off_the_record_in_backups_and_exports(relay, store, rfk, made["id"], off_the_record)

    refused = relay_cli(relay, store, "wipe", "--yes", "--json")  # the relay still serves it
    assert refused.exit_code != 0 and json.loads(refused.stdout)["error"] == "store_in_use"
    assert "stop" in assert_one_error_line(relay_cli(relay, store, "wipe", "--yes").output)
    relay.stop()
    refused = relay_cli(relay, store, "wipe")  # no terminal to confirm on, and no --yes
    assert "--yes" in assert_one_error_line(refused.output) and refused.exit_code != 0

    wiped = relay_cli(relay, store, "wipe", "--yes", "--json")
    assert wiped.exit_code == 0, wiped.output
    report = json.loads(wiped.stdout)
    assert set(report) == {"store", "exercise", "destroyed", "vacuumed", "note"}
    destroyed = report["destroyed"]
    assert destroyed["registrations"] == 2 and destroyed["drops"] == 3  # two drops, one message
    assert destroyed["envelopes"] >= 2 and destroyed["notary_entries"] >= 1
    assert destroyed["exercises"] >= 1 and destroyed["invites"] >= 1
    assert destroyed["relay_keys"] >= 1 and destroyed["prekeys"] >= 1
    assert report["vacuumed"] is True and "wear" in report["note"]

    rows = tables(relay, store)
    assert {name: found for name, found in rows.items() if found} == {
        "alembic_version": rows["alembic_version"]
    }
    assert row_hits(rows, needles) == []
    assert raw_hits(list(files_under(relay.data_dir)), needles) == []
    again = relay_cli(relay, store, "wipe", "--yes")  # human output, on an empty store
    assert again.exit_code == 0 and "registrations: 0" in again.output
    relay.start()  # an emptied store is a fresh relay's
    fresh = User(home, "fresh", f"fresh-{mark[:8]}")
    fresh.init(relay)
    fresh.register(relay)


def assert_no_off_the_record_in_backups_and_exports(
    relay: Relay, store: tuple[str, ...], author: User, proposal: str, needles: list[bytes]
) -> None:
    """A backup made the documented way while the relay runs, and an exported record, hold
    none of an off-the-record message in transit (and the backup does hold the rest)."""
    out = relay.data_dir.with_name("backup")
    if store:  # deploy/README.md's pg_dump line
        url = store[1].replace("+asyncpg", "")
        dumped = subprocess.run(
            ["pg_dump", "--exclude-table-data=drops", "--exclude-table-data=drop_messages",
             f"--file={out}", url],
            capture_output=True,
        )  # fmt: skip
        assert dumped.returncode == 0, dumped.stderr
    else:
        made = CliRunner().invoke(
            relay_main, ["backup", str(out), "--data-dir", str(relay.data_dir), "--json"]
        )
        assert made.exit_code == 0, made.output
        kept = json.loads(made.stdout)["rows"]
        assert kept["drop_messages"] == kept["drops"] == 0 and kept["envelopes"] >= 2
        assert out.stat().st_mode & 0o777 == 0o600
    assert author.name.encode() in out.read_bytes()
    assert raw_hits([out], needles) == []
    exported = author.ok("export", proposal).encode()
    assert b"records" in exported and [n for n in needles if n in exported] == []


def test_wipe_of_one_exercise_in_a_shared_store_is_refused(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "relay")]
    CliRunner().invoke(relay_main, ["exercise", "load", "cuba-1962", *data])
    invited = CliRunner().invoke(relay_main, ["invite", "outsider", "--role", "party", *data])
    assert invited.exit_code == 0, invited.output
    refused = CliRunner().invoke(relay_main, ["wipe", "--exercise", "cuba-1962", "--yes", *data])
    line = assert_one_error_line(refused.output)
    assert "one hash chain" in line and refused.exit_code != 0
    unknown = CliRunner().invoke(
        relay_main, ["wipe", "--exercise", "nope", "--yes", "--json", *data]
    )
    assert json.loads(unknown.stdout)["error"] == "unknown_exercise"
    alone = ["--data-dir", str(tmp_path / "alone")]
    CliRunner().invoke(relay_main, ["exercise", "load", "cuba-1962", *alone])
    wiped = CliRunner().invoke(
        relay_main, ["wipe", "--exercise", "cuba-1962", "--yes", "--json", *alone]
    )
    report = json.loads(wiped.stdout)  # the store held that exercise and nothing else
    assert report["exercise"] == "cuba-1962" and report["destroyed"]["exercises"] > 1
    assert report["destroyed"]["invites"] > 1
    nothing = CliRunner().invoke(relay_main, ["wipe", "--yes", "--data-dir", str(tmp_path / "x")])
    assert "no store" in assert_one_error_line(nothing.output)


def test_a_wiped_profile_leaves_no_canary_in_the_home(relay: Relay, home: Path) -> None:
    from .conftest import participants

    kennedy, khrushchev = participants(relay, home, ("kennedy", "party"), ("khrushchev", "party"))
    mark = uuid.uuid4().hex
    kennedy.send(khrushchev, f"kept letter {mark}")
    assert khrushchev.inbox()[0]["text"] == f"kept letter {mark}"
    khrushchev.send(kennedy, f"answer {mark}")
    kennedy.inbox()
    needles = identity_needles(khrushchev)
    assert raw_hits(list(files_under(khrushchev.directory)), needles) != []

    assert "--yes" in khrushchev.fails("wipe")  # no terminal to confirm on
    assert khrushchev.directory.is_dir()
    report = khrushchev.json("wipe", "--yes")
    assert set(report) == {"profile", "directory", "destroyed", "note"}
    assert report["destroyed"]["files"] >= 2 and report["destroyed"]["bytes"] > 0
    assert not khrushchev.directory.exists()
    elsewhere = [p for p in files_under(home) if kennedy.directory not in p.parents]
    assert raw_hits(elsewhere, needles + forms(f"kept letter {mark}")) == []
    assert "no profile" in khrushchev.fails("wipe", "--yes")
    assert json.loads(khrushchev.run("wipe", "--yes", "--json").stdout)["error"] == "no_profile"
    assert kennedy.inbox() == []  # the other profile on this machine is untouched
