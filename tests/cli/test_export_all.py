"""`backchannel export --all` end to end (PROTOCOL.md §14.8): a scripted cuba-1962 run, the
participant's whole record exported as one file, checked offline with the relay stopped, and an
altered file refused with the reason. Nothing said off the record is anywhere in the file."""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from .conftest import GENEROUS, User, assert_one_error_line
from .test_exercises import control, load

CANARY = "CANARY-7f3a: the Jupiters go quietly in April"
CANARY_BACK = "CANARY-91c2: Moscow will not mention Turkey"


def _b64_fields(value: Any) -> list[bytes]:
    """Every base64 string in the document, decoded (where a canary could hide)."""
    found: list[bytes] = []
    if isinstance(value, dict):
        for item in value.values():
            found += _b64_fields(item)
    elif isinstance(value, list):
        for item in value:
            found += _b64_fields(item)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            found.append(base64.b64decode(value, validate=True))
    return found


def _scripted_run(relay: Any, home: Path) -> dict[str, User]:
    users = load(relay, home, "cuba-1962")
    kennedy, khrushchev, castro, thant, dobrynin = (
        users[n] for n in ("kennedy", "khrushchev", "castro", "u-thant", "dobrynin")
    )
    # Letters both ways, each acknowledged formally.
    first = kennedy.send(khrushchev, "Letter of October 22: the missiles must go.")
    khrushchev.inbox()
    reply = khrushchev.send(kennedy, "Letter of October 26: no invasion, and they go.")
    kennedy.inbox()
    assert khrushchev.json("ack", first)["status"] == "acknowledged"
    assert kennedy.json("ack", reply)["status"] == "acknowledged"
    # A proposal, accepted and notarised.
    offer = khrushchev.json(
        "propose", "kennedy", "--title", "Missiles out of Cuba",
        "--term", "The missiles are removed under UN watch.",
    )["id"]  # fmt: skip
    kennedy.inbox()
    assert kennedy.json("accept", offer)["status"] == "accepted"
    khrushchev.inbox()
    # U Thant introduces; Castro's letter reaches Kennedy verbatim, with Castro's consent.
    thant.json("introduce", "kennedy", "khrushchev")
    letter = castro.send("u-thant", "Cuba wants guarantees.", "--may-forward", "kennedy")
    thant.inbox()
    assert thant.json("forward", letter, "--to", "kennedy")["verbatim"]
    # An inject (control's clock passes 19:00) and communiqués (Kennedy's and Khrushchev's).
    control(relay, "clock", "set", "1962-10-22T19:30:00-04:00")
    khrushchev.json("communique", "Radio Moscow: the ships will turn back.", "--yes")
    kennedy.json("communique", "The quarantine stands.", "--yes")
    # Off the record with Dobrynin, both ways, Kennedy keeping a copy: never in the export.
    kennedy.ok("otr", "open", "dobrynin")
    dobrynin.inbox()
    kennedy.ok("otr", "send", "dobrynin", CANARY, "--keep")
    dobrynin.inbox("--keep")
    dobrynin.ok("otr", "send", "kennedy", CANARY_BACK)
    got = kennedy.inbox("--keep")
    assert CANARY_BACK in [m["text"] for m in got if m["kind"] == "otr"]
    kinds = {m["kind"] for m in got}
    assert {"inject", "communique", "introduction", "forwarded"} <= kinds, kinds
    return users


def test_export_all_holds_the_record_verifies_offline_and_refuses_alterations(
    make_relay: Any, home: Path, tmp_path: Path
) -> None:
    relay = make_relay("aar", *GENEROUS)
    users = _scripted_run(relay, home)
    kennedy = users["kennedy"]
    out = tmp_path / "kennedy-export.json"
    summary = kennedy.json("export", "--all", "--out", str(out))
    assert summary["format"] == "backchannel-export-all/1"
    assert summary["items"] == {
        "acknowledgement": 2, "communique": 2, "forward": 1, "inject": 1,
        "introduction": 1, "letter": 2, "proposal": 1,
    }, summary  # fmt: skip
    left = {entry["kind"]: entry for entry in summary["left_out"]}
    assert left["otr"]["count"] == 2 and "off the record" in left["otr"]["reason"]

    raw = out.read_bytes()
    document = json.loads(raw)
    for canary in (CANARY, CANARY_BACK):
        needle = canary.encode()
        assert needle not in raw
        assert not any(needle in field for field in _b64_fields(document))
    items = document["items"]
    letters = {(i["direction"], i["signer"]) for i in items if i["kind"] == "letter"}
    assert letters == {("sent", "kennedy"), ("received", "khrushchev")}
    assert {i["direction"] for i in items if i["kind"] == "acknowledgement"} == {"sent", "received"}
    (inject,) = [i for i in items if i["kind"] == "inject"]
    assert (
        inject["signer"] == "control" and inject["signer_key"] == document["relay"]["control_key"]
    )
    (forward,) = [i for i in items if i["kind"] == "forward"]
    assert (forward["signer"], forward["mediator"], forward["form"]) == (
        "castro",
        "u-thant",
        "letter",
    )
    assert all(i["scenario_at"] is not None for i in items if i["kind"] == "letter")

    # Offline: the relay is gone, and anyone with the file (here Castro's profile) checks it.
    relay.stop()
    checker = users["castro"]
    checked = checker.json("verify-record", str(out))
    assert checked["valid"] is True and checked["participant"] == "kennedy"
    assert len(checked["items"]) == len(items) and all(v["ok"] for v in checked["items"])
    assert "left_out" in checked and checked["left_out"] == document["left_out"]
    text = checker.ok("verify-record", str(out))
    assert "VALID" in text and "INVALID" not in text

    def refused(altered: dict[str, Any], name: str) -> str:
        path = tmp_path / name
        path.write_text(json.dumps(altered))
        result = checker.run("verify-record", str(path))
        assert result.exit_code != 0
        assert "Traceback" not in result.output
        line = result.stderr.strip()
        assert assert_one_error_line(line).startswith(f"Error: {path}: ")
        as_json = checker.run("verify-record", str(path), "--json")
        assert as_json.exit_code != 0 and json.loads(as_json.stdout)["valid"] is False
        return line

    def index_of(kind: str, direction: str = "") -> int:
        return next(
            n for n, i in enumerate(items) if i["kind"] == kind and direction in i["direction"]
        )

    # One byte flipped inside each kind's signed bytes.
    for kind in ("letter", "acknowledgement", "introduction", "inject", "communique", "forward"):
        altered = json.loads(raw)
        item = altered["items"][index_of(kind)]
        signed = bytearray(base64.b64decode(item["signed"]))
        signed[-2] ^= 0x01  # inside the text or the time: it still parses, the signature fails
        item["signed"] = base64.b64encode(bytes(signed)).decode()
        line = refused(altered, f"flipped-{kind}.json")
        assert "1 of" in line and kind in line and "does not verify" in line, line
    # A proposal's notarised statement altered.
    altered = json.loads(raw)
    record = altered["items"][index_of("proposal")]["record"]
    statement = bytearray(base64.b64decode(record["statements"][-1]["statement"]))
    statement[-70] ^= 0x01
    record["statements"][-1]["statement"] = base64.b64encode(bytes(statement)).decode()
    assert "proposal" in refused(altered, "flipped-proposal.json")
    # Two signatures swapped between items.
    altered = json.loads(raw)
    one, two = (
        altered["items"][index_of("letter", "sent")],
        altered["items"][index_of("letter", "received")],
    )
    one["signature"], two["signature"] = two["signature"], one["signature"]
    assert "2 of" in refused(altered, "swapped.json")
    # An item claiming another signer, with or without that signer's key.
    altered = json.loads(raw)
    claim = altered["items"][index_of("letter", "received")]
    claim["signer"] = "castro"
    assert "claims 'castro'" in refused(altered, "claimed.json")
    altered = json.loads(raw)
    claim = altered["items"][index_of("letter", "received")]
    mine = base64.b64decode(altered["participant"]["identity"])[:32]
    claim["signer_key"] = base64.b64encode(mine).decode()
    assert "signer key" in refused(altered, "rekeyed.json")
    # A file that is not an export at all, or too deep, is refused before anything is checked.
    deep = tmp_path / "deep.json"
    deep.write_text('{"format": "backchannel-export-all/1", "items": ' + "[" * 50 + "]" * 50 + "}")
    assert "nested too deeply" in checker.fails("verify-record", str(deep))


def test_export_all_refuses_an_id_with_all_and_works_on_an_empty_profile(
    make_relay: Any, home: Path, tmp_path: Path
) -> None:
    relay = make_relay("empty", *GENEROUS)
    users = load(relay, home, "cuba-1962")
    castro = users["castro"]
    assert "exactly one of the two" in castro.fails("export", "abcdef", "--all")
    assert "exactly one of the two" in castro.fails("export")
    document = castro.json("export", "--all")
    assert document["items"] == [] and document["participant"]["name"] == "castro"
    assert document["left_out"] == []
    out = tmp_path / "empty.json"
    castro.ok("export", "--all", "--out", str(out))
    relay.stop()
    assert castro.json("verify-record", str(out))["valid"] is True


def test_a_letter_whose_signature_was_not_kept_is_left_out_with_the_reason(
    make_relay: Any, home: Path
) -> None:
    """A profile of an earlier version kept no signature of the letters it sent, nor the keys
    with received ones: the first is left out (said why), the second still proves."""
    relay = make_relay("older", *GENEROUS)
    users = load(relay, home, "cuba-1962")
    khrushchev, castro = users["khrushchev"], users["castro"]
    old = castro.send(khrushchev, "Written before the full export existed.")
    castro.send(khrushchev, "Written after.")
    khrushchev.inbox()
    got = khrushchev.send(castro, "Received by an older version.")
    castro.inbox()
    with sqlite3.connect(castro.directory / "state.sqlite3") as db:
        db.execute("DELETE FROM letter_signatures WHERE id = ?", (old,))
        db.execute("UPDATE letter_signatures SET peer_keys = NULL WHERE id = ?", (got,))
    document = castro.json("export", "--all")
    letters = {i["id"] for i in document["items"] if i["kind"] == "letter"}
    assert old not in letters and got in letters and len(letters) == 2
    (left,) = document["left_out"]
    assert (left["kind"], left["count"]) == ("letter", 1)
    assert "signature was not kept" in left["reason"]
    text = castro.run("export", "--all", "--out", str(home.parent / "castro.json"))
    assert text.exit_code == 0 and "Left out 1 letter: its signature was not kept" in text.stderr
