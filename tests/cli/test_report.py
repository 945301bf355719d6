"""The after-action review end to end (PROTOCOL.md §16.13): a scripted cuba-1962 run, three
participants' full exports, `backchannel-relay exercise report` building the static page and its
evidence, and `verify-report` checking the bundle offline. An altered export is refused with
nothing written; one byte changed in the evidence makes verify-report fail, naming the file;
nothing said off the record is in any file of the report."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from backchannel_relay.cli import main as relay_main

from .conftest import GENEROUS, Relay, User, assert_one_error_line
from .test_exercises import control
from .test_export_all import CANARY, CANARY_BACK, _scripted_run

EXPORTERS = ("kennedy", "khrushchev", "castro")
RELEASED_BY = "desk-<b>officer</b>"
"""The controller who releases inject 2 by hand: markup in a name, shown as text."""
MARKUP = "<script>alert('aar')</script> & <img src=x onerror=alert(1)> stays text"
"""A letter's text that would be markup if the report did not escape it."""


@dataclass
class Built:
    relay: Relay
    users: dict[str, User]
    exports: dict[str, Path]
    out: Path
    summary: dict[str, Any]


def report(relay: Relay, *args: str) -> Result:
    store = ["--data-dir", str(relay.data_dir)]
    if "--database" in relay.extra:
        store += ["--database", relay.extra[relay.extra.index("--database") + 1]]
    return CliRunner().invoke(relay_main, ["exercise", "report", *args, *store])


def build_report(make_relay: Any, home: Path, tmp_path: Path, store: tuple[str, ...] = ()) -> Built:
    """The run, the exports, the report: what both this test and the browser test look at."""
    relay = make_relay("aar", *GENEROUS, *store)
    users = _scripted_run(relay, home)
    control(relay, "inject", "release", "2", "--as", RELEASED_BY)
    control(relay, "inject", "skip", "3", "--as", "second-desk")
    users["kennedy"].send(users["khrushchev"], MARKUP)
    for name in EXPORTERS:
        users[name].inbox()
    exports = {}
    for name in EXPORTERS:
        exports[name] = tmp_path / f"{name}-export.json"
        users[name].ok("export", "--all", "--out", str(exports[name]))
    out = tmp_path / "report"
    includes = [arg for name in EXPORTERS for arg in ("--include", str(exports[name]))]
    result = report(relay, *includes, "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    return Built(relay, users, exports, out, json.loads(result.stdout))


def every_byte(directory: Path) -> list[bytes]:
    """Every file under the report, and every base64 string in its JSON files, decoded."""
    found = []
    for path in directory.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        found.append(data)
        for token in re.findall(rb"[A-Za-z0-9+/]{16,}={0,2}", data):
            try:
                found.append(base64.b64decode(token + b"=" * (-len(token) % 4)))
            except ValueError:
                continue
    return found


def assert_no_canary(directory: Path) -> None:
    for canary in (CANARY, CANARY_BACK):
        for needle in (canary.encode(), canary.encode("utf-16-le"), canary.split(":")[0].encode()):
            assert not any(needle in blob for blob in every_byte(directory)), canary


def test_report_is_built_from_verified_exports_and_verifies_offline(
    make_relay: Any, store: tuple[str, ...], home: Path, tmp_path: Path
) -> None:
    """On SQLite and PostgreSQL."""
    built = build_report(make_relay, home, tmp_path, store)
    out, summary = built.out, built.summary
    assert summary["exercise"] == "cuba-1962"
    assert sorted(summary["files"]) == sorted(
        ["index.html", "evidence/notary-log.json", "evidence/manifest.json"]
        + [f"evidence/exports/{n}.json" for n in EXPORTERS]
    )
    assert [e["participant"] for e in summary["exports"]] == list(EXPORTERS)
    for name in EXPORTERS:  # the exports ship beside the report, byte for byte
        shipped = out / "evidence" / "exports" / f"{name}.json"
        assert shipped.read_bytes() == built.exports[name].read_bytes()
    page = (out / "index.html").read_text()
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page
    assert "desk-&lt;b&gt;officer&lt;/b&gt;" in page and RELEASED_BY not in page
    assert "&lt;script&gt;alert(&#x27;aar&#x27;)&lt;/script&gt; &amp; &lt;img" in page
    assert page.index("What this report cannot contain") < page.index('id="timeline"')
    assert_no_canary(out)

    # The notary log as the relay serves it: a receipt for each entry an export proves.
    log = json.loads((out / "evidence" / "notary-log.json").read_text())
    assert log["format"] == "backchannel-notary-log/1"
    assert sum("receipt" in e for e in log["entries"]) >= 2  # the proposal and its acceptance

    # Offline, anyone: the participant CLI, with the relay stopped.
    built.relay.stop()
    checker = built.users["dobrynin"]
    checked = checker.json("verify-report", str(out))
    assert checked["valid"] is True and checked["exercise"] == "cuba-1962"
    assert len(checked["exports"]) == 3 and checked["notary_log"]["entries"] >= 2
    assert "VALID" in checker.ok("verify-report", str(out))
    relay_side = CliRunner().invoke(relay_main, ["exercise", "verify-report", str(out), "--json"])
    assert relay_side.exit_code == 0 and json.loads(relay_side.stdout)["valid"] is True

    # One byte changed in any file, or a file added, and verify-report names it.
    for rel in ("index.html", "evidence/exports/khrushchev.json", "evidence/notary-log.json"):
        path = out / rel
        original = path.read_bytes()
        changed = bytearray(original)
        changed[len(changed) // 2] ^= 0x01
        path.write_bytes(bytes(changed))
        line = checker.fails("verify-report", str(out))
        assert rel in line and "SHA-256" in line, line
        as_json = checker.run("verify-report", str(out), "--json")
        assert as_json.exit_code != 0 and json.loads(as_json.stdout)["error"] == "invalid_report"
        path.write_bytes(original)
    (out / "evidence" / "planted.json").write_text("{}")
    assert "planted.json" in checker.fails("verify-report", str(out))
    (out / "evidence" / "planted.json").unlink()
    assert checker.json("verify-report", str(out))["valid"] is True


def test_an_altered_export_is_refused_and_nothing_is_written(
    make_relay: Any, home: Path, tmp_path: Path
) -> None:
    built = build_report(make_relay, home, tmp_path)
    good = built.exports["kennedy"]
    raw = good.read_bytes()
    document = json.loads(raw)
    letter = next(
        i for i in document["items"] if i["kind"] == "letter" and i["direction"] == "sent"
    )
    signed = bytearray(base64.b64decode(letter["signed"]))
    signed[-3] ^= 0x01  # one byte of the letter's text
    letter["signed"] = base64.b64encode(bytes(signed)).decode()
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps(document))
    out = tmp_path / "refused"
    result = report(built.relay, "--include", str(built.exports["castro"]), "--include",
                    str(altered), "--out", str(out))  # fmt: skip
    assert result.exit_code != 0
    line = assert_one_error_line(result.output)
    assert str(altered) in line and "does not verify" in line, line
    assert not out.exists()
    assert not any(p.name.startswith(".report-") for p in tmp_path.iterdir())
    as_json = report(built.relay, "--include", str(altered), "--out", str(out), "--json")
    assert as_json.exit_code != 0
    assert json.loads(as_json.stdout.splitlines()[0])["error"] == "invalid_export"
    # An export of another relay (its pinned notary key is not this relay's) is refused too.
    other = json.loads(raw)
    other["relay"]["notary_key"] = base64.b64encode(bytes(range(32))).decode()
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(other))
    result = report(built.relay, "--include", str(foreign), "--out", str(out))
    assert result.exit_code != 0 and "not this relay's" in assert_one_error_line(result.output)
    # A DIR that holds something already is refused; the report already built is intact.
    result = report(built.relay, "--out", str(built.out))
    assert result.exit_code != 0 and "not an empty directory" in result.output
    assert built.users["castro"].json("verify-report", str(built.out))["valid"] is True
