"""The report bundle's offline checks (`backchannel.aar`, PROTOCOL.md §16.13), on hand-made
bundles: a notary log whose chain or receipts were tampered with, and a manifest that no longer
names the files beside it. The whole path (a real run, real exports) is tests/cli/test_report.py."""

from __future__ import annotations

import json
import os

import pytest

from backchannel.aar import (
    INDEX,
    MANIFEST,
    NOTARY_LOG,
    check_notary_log,
    manifest_document,
    notary_log_document,
    verify_report,
)
from backchannel.errors import InvalidFieldError
from backchannel.keys import SigningKeyPair
from backchannel.proposals import EntryKind, NotaryEntry, NotaryReceipt, next_entry, notarise
from backchannel_relay.report_html import clock_history

KEY = SigningKeyPair.generate()
RELAY = os.urandom(16)


def _log(count: int = 4) -> list[NotaryReceipt]:
    receipts: list[NotaryReceipt] = []
    previous: NotaryEntry | None = None
    for n in range(count):
        entry = next_entry(
            previous, 1_000 + n, EntryKind.COMMITMENT, os.urandom(32), os.urandom(32)
        )
        receipts.append(notarise(KEY, RELAY, entry))
        previous = entry
    return receipts


def _bundle(receipts: list[NotaryReceipt], shown: int = 2) -> dict[str, bytes]:
    """A report: the first `shown` entries as receipts, the rest as links."""
    items = [r if i < shown else r.entry.link() for i, r in enumerate(receipts)]
    log = json.dumps(notary_log_document(RELAY, KEY.public.raw, items)).encode()
    files = {INDEX: b"<!DOCTYPE html><title>r</title>", NOTARY_LOG: log}
    keys = {"notary_key": KEY.public.raw, "control_key": None, "relay_id": RELAY}
    files[MANIFEST] = json.dumps(manifest_document(files, "x", 1, keys)).encode()
    return files


def test_a_whole_log_and_bundle_verify() -> None:
    files = _bundle(_log())
    checked = verify_report(files, 2_000)
    log = checked["notary_log"]
    assert checked["valid"] and (log["entries"], log["receipts"]) == (4, 2)
    assert checked["files"] == 3 and checked["exports"] == []


def test_a_log_with_an_entry_dropped_reordered_or_resigned_is_refused() -> None:
    receipts = _log()
    dropped = receipts[:1] + receipts[2:]
    with pytest.raises(InvalidFieldError, match="entry 3 where 2 was due"):
        check_notary_log(_bundle(dropped)[NOTARY_LOG], KEY.public.raw)
    swapped = [receipts[1], receipts[0], *receipts[2:]]
    with pytest.raises(InvalidFieldError, match="broken"):
        check_notary_log(_bundle(swapped)[NOTARY_LOG], KEY.public.raw)
    other = SigningKeyPair.generate()
    forged = [notarise(other, RELAY, receipts[0].entry), *receipts[1:]]
    with pytest.raises(InvalidFieldError, match="broken"):
        check_notary_log(_bundle(forged)[NOTARY_LOG], KEY.public.raw)
    with pytest.raises(InvalidFieldError, match="another notary key"):
        check_notary_log(_bundle(receipts)[NOTARY_LOG], other.public.raw)


def test_the_manifest_must_name_every_file_as_it_is() -> None:
    files = _bundle(_log())
    changed = dict(files, **{INDEX: files[INDEX] + b" "})
    with pytest.raises(InvalidFieldError, match=r"index\.html is not the file"):
        verify_report(changed, 2_000)
    with pytest.raises(InvalidFieldError, match=r"planted\.txt is in no manifest entry"):
        verify_report(dict(files, **{"planted.txt": b""}), 2_000)
    missing = {k: v for k, v in files.items() if k != NOTARY_LOG}
    with pytest.raises(InvalidFieldError, match=r"notary-log\.json is missing"):
        verify_report(missing, 2_000)
    with pytest.raises(InvalidFieldError, match=r"manifest\.json is missing"):
        verify_report({INDEX: files[INDEX]}, 2_000)
    with pytest.raises(InvalidFieldError, match="not JSON"):
        verify_report(dict(files, **{MANIFEST: b"{"}), 2_000)


def test_scenario_time_follows_controls_clock_changes() -> None:
    start = 0
    actions = [
        {"action": "clock", "at": 10_000,
         "detail": {"anchor_ms": 0, "wall_ms": 10_000, "speed": 60.0, "paused": False}},
        {"action": "release", "at": 11_000, "detail": {"number": 1}},
        {"action": "clock", "at": 20_000,
         "detail": {"anchor_ms": 600_000, "wall_ms": 20_000, "speed": 60.0, "paused": True}},
    ]  # fmt: skip
    history = clock_history(start, 60.0, actions)
    assert history.scenario_at(5_000) == 0  # loaded paused at the start
    assert history.scenario_at(15_000) == 300_000  # running at 60x since 10 s
    assert history.scenario_at(25_000) == 600_000  # paused
    assert history.wall_when(300_000, 30_000) == 15_000
    assert history.wall_when(10**9, 30_000) is None
