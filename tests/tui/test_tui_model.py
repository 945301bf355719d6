"""What the TUI shows, worked out from the CLI's JSON (no relay, no screen), and how `Backend`
reports a command's failure (a real subprocess)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from backchannel_cli.tui import _cell
from backchannel_cli.tui_backend import Backend, TuiError
from backchannel_cli.tui_model import (
    OTR_PEERS,
    OTR_PER_PEER,
    OffTheRecordMemory,
    Snapshot,
    conversations,
    scenario_deadline,
    thread,
)


def message(ident: str, frm: str, to: str, kind: str = "letter", status: str = "delivered",
            at: int = 1) -> dict[str, Any]:  # fmt: skip
    return {"id": ident, "from": frm, "to": to, "kind": kind, "status": status, "sent_at": at,
            "text": f"text {ident}", "verified": "signed", "in_reply_to": None}  # fmt: skip


def test_unread_counts_incoming_letters_not_yet_read() -> None:
    snapshot = Snapshot(
        me="k",
        directory=[{"name": "k", "me": True}, {"name": "x", "me": False}],
        history=[
            message("1", "x", "me"),
            message("2", "x", "me", status="read"),
            message("3", "x", "me", kind="proposal"),
            message("4", "me", "x", status="sent", at=5),
            message("5", "y", "me", status="acknowledged", at=3),
            message("6", "y", "me", at=4),
        ],
    )
    found = {c.peer: c for c in conversations(snapshot, OffTheRecordMemory())}
    assert (found["x"].unread, found["y"].unread) == (1, 1)
    assert found["x"].last_line == "-> text 4"
    assert [c.peer for c in conversations(snapshot, OffTheRecordMemory())] == ["x", "y"]


def test_off_the_record_is_marked_with_what_control_sees_and_kept_in_memory_only() -> None:
    memory = OffTheRecordMemory()
    said = message("9", "x", "me", kind="otr", at=7)
    memory.add(said)
    memory.add(said)  # shown once however often `inbox` hands it over
    snapshot = Snapshot(
        otr_channels=[{"with": "x", "status": "open", "expires_at": 10**12}],
        exercise={"control_sees": {"classes": {"off_the_record": "existence"}, "peers": {}}},
    )
    (only,) = conversations(snapshot, memory)
    assert only.off_the_record == "OFF THE RECORD (control: existence)"
    assert only.last_line == "<- text 9" and only.unread == 0
    assert thread(snapshot, memory, "x") == [said]


def test_the_memory_of_off_the_record_messages_is_bounded() -> None:
    memory = OffTheRecordMemory()
    for n in range(OTR_PER_PEER + 5):
        memory.add(message(str(n), "x", "me", kind="otr"))
    assert len(memory.of("x")) == OTR_PER_PEER and memory.of("x")[0]["id"] == "5"
    for n in range(OTR_PEERS + 1):
        memory.add(message("p", f"peer-{n}", "me", kind="otr"))
    assert len(memory.peers()) == OTR_PEERS and "x" not in memory.peers()


def test_a_deadline_is_read_on_the_scenario_clock() -> None:
    clock = {"scenario_at": 0, "wall_at": 1_000_000, "speed": 60.0, "paused": False,
             "utc_offset_minutes": 0}  # fmt: skip
    # One wall minute from now is one scenario hour on: 01:00 on the first of January 1970.
    assert scenario_deadline(1_060_000, {"clock": clock}) == "01-01 01:00 scen."
    assert scenario_deadline(None, {"clock": clock}) == "-"
    assert "clock paused" in scenario_deadline(1_060_000, {"clock": {**clock, "paused": True}})


def test_what_others_wrote_is_shown_as_text() -> None:
    assert _cell("[bold]not markup[/bold]\x1b[2J").plain == "[bold]not markup[/bold]\\x1b[2J"


def test_a_failing_command_is_one_line_with_the_clis_code(tmp_path: Path) -> None:
    with pytest.raises(TuiError) as failed:
        asyncio.run(Backend(tmp_path, "nobody").json("history"))
    assert failed.value.code == "no_profile" and "no profile in" in failed.value.message
