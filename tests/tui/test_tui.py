"""`backchannel tui` end to end at 80x24: a conversation with its unread count and a reply, a
proposal accepted from the board, an off-the-record exchange marked as such, and an inject on
the exercise panel; each screen saved as SVG and asserted on as rendered text.

The tests are plain functions: the other participants act through the CLI (CliRunner, which
runs its own event loop) before and after the app runs, and through `Backend` while it runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from textual.widgets import DataTable, Input

from backchannel_cli.commandline import PASSPHRASE_ENV
from tests.cli.conftest import GENEROUS, Relay, User, participants, unique
from tests.cli.test_exercises import control, mini

from .conftest import (
    SIZE,
    app_for,
    backend,
    choose,
    open_row,
    screen_text,
    shoot,
    until,
    until_shown,
)


def test_a_letter_shows_unread_is_read_in_its_thread_and_answered(relay: Relay, home: Path) -> None:
    kennedy, khrushchev = participants(relay, home, ("kennedy", "party"), ("khrushchev", "party"))
    letter = kennedy.send(khrushchev, "We will not invade Cuba if the missiles leave.")
    app = app_for(khrushchev)

    async def drive() -> None:
        async with app.run_test(size=SIZE) as pilot:
            text = await until_shown(app, pilot, kennedy.name, "1 new", "We will not invade")
            assert "Conversations" in text and "agent: off" in text
            shoot(app, "conversations")
            await pilot.press("question_mark")
            text = await until_shown(app, pilot, "Keys (everything here is also a")
            assert "q quit" in text and "a accept" in text and "i introduce" in text
            shoot(app, "help")
            await pilot.press("escape")

            await open_row(app, pilot, "conversations", kennedy.name)
            text = await until_shown(app, pilot, f"With {kennedy.name}", "(read; signed)")
            assert "<- " in text and f"proven: {kennedy.name}'s key signed it" in text
            # Opening the thread read it: Kennedy's client hears so (a read receipt).
            seen = await backend(kennedy).json("show", letter)
            assert seen["status"] == "read"
            await pilot.press("a")  # a formal, signed acknowledgement
            await until_shown(app, pilot, f"Acknowledged {letter[:8]}")

            choose(app, "messages", letter)  # (the acknowledgement came after it)
            await pilot.press("r")  # reply to the selected letter
            compose = app.screen.query_one("#compose", Input)
            assert compose.has_focus and f"in reply to {letter[:8]}" in screen_text(app)
            await pilot.press("q")  # typed, not quitting
            assert app.is_running and compose.value == "q"
            compose.value = "Agreed; and the Jupiters in Turkey?"
            await pilot.press("enter")
            await until_shown(app, pilot, "Agreed; and the Jupiters", f"re {letter[:8]}")
            shoot(app, "thread")
            await pilot.press("escape", "q")  # out of the compose box, then quit
            await until(pilot, lambda: not app.is_running, "the app to quit")

    asyncio.run(drive())
    # Kennedy's CLI: his letter was acknowledged, and the reply is there.
    assert kennedy.status(letter) == "acknowledged"
    (reply,) = [m for m in kennedy.inbox() if m["kind"] == "letter"]
    assert reply["text"] == "Agreed; and the Jupiters in Turkey?"
    assert reply["in_reply_to"] == letter and reply["verified"] == "signed"


def test_proposals_are_acknowledged_accepted_countered_and_rejected_from_the_board(
    relay: Relay, home: Path
) -> None:
    kennedy, khrushchev = participants(relay, home, ("kennedy", "party"), ("khrushchev", "party"))
    offers = [
        khrushchev.json("propose", kennedy.name, "--title", title, "--term", term, *extra)["id"]
        for title, term, extra in [
            ("Missiles out of Cuba", "The missiles are removed under UN supervision.",
             ("--expires", "24h")),
            ("Jupiters out of Turkey", "The Jupiters leave within six months.", ()),
            ("Inspections in Florida", "Soviet inspectors visit Florida.", ()),
        ]
    ]  # fmt: skip
    missiles, jupiters, florida = offers
    app = app_for(kennedy)

    async def drive() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await until_shown(app, pilot, "Proposals", *(o[:6] for o in offers))
            choose(app, "proposals", missiles)
            await pilot.press("k")
            await until_shown(app, pilot, f"ack {missiles[:8]}: acknowledged")
            await pilot.press("a")
            text = await until_shown(app, pilot, "ACCEPTED BOUND", f"accept {missiles[:8]}")
            assert "The missiles are removed" in text and "acknowledged by" in text
            shoot(app, "proposals")

            choose(app, "proposals", jupiters)
            await pilot.press("n")  # a counter-proposal: two fields, enter after each
            for value in ("Jupiters later", "The Jupiters leave within a year; quietly"):
                app.screen.focused.value = value  # type: ignore[union-attr]
                await pilot.press("enter")
            await until_shown(app, pilot, f"counter {jupiters[:8]}", "Jupiters later")

            choose(app, "proposals", florida)
            await pilot.press("x")
            app.screen.focused.value = "Out of the question."  # type: ignore[union-attr]
            await pilot.press("enter")
            await until_shown(app, pilot, f"reject {florida[:8]}: rejected")
            shoot(app, "proposals-answered")

            await pilot.press("P")  # a proposal of Kennedy's own, then withdrawn
            for value in (khrushchev.name, "Quarantine lifted", "Ships pass; inspections"):
                app.screen.focused.value = value  # type: ignore[union-attr]
                await pilot.press("enter")
            await until_shown(app, pilot, "Proposed ", "Quarantine lifted")
            (own,) = [p for p in app.snapshot.proposals if p["title"] == "Quarantine lifted"]
            choose(app, "proposals", own["id"])
            await pilot.press("w")
            await until_shown(app, pilot, f"withdraw {own['id'][:8]}: withdrawn", "WITHDRAWN")

    asyncio.run(drive())
    khrushchev.inbox()
    mine = {p["id"]: p for p in khrushchev.json("proposals")}
    assert (mine[missiles]["status"], mine[missiles]["agreement"]) == ("accepted", "bound")
    assert mine[jupiters]["status"] == "countered" and mine[florida]["status"] == "rejected"
    (counter,) = [p for p in mine.values() if p["answers"] == jupiters]
    (own,) = [p for p in mine.values() if p["title"] == "Quarantine lifted"]
    assert own["status"] == "withdrawn"
    assert counter["title"] == "Jupiters later" and counter["terms"] == [
        "The Jupiters leave within a year",
        "quietly",
    ]


def test_an_off_the_record_exchange_is_unmistakably_marked(relay: Relay, home: Path) -> None:
    kennedy, khrushchev = participants(relay, home, ("kennedy", "party"), ("khrushchev", "party"))
    kennedy.json("otr", "open", khrushchev.name, "--ttl", "30m")
    app = app_for(khrushchev)
    said = "The Jupiters will be gone in five months."

    async def drive() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until_shown(app, pilot, kennedy.name, "OFF THE RECORD")
            await backend(kennedy).json("otr", "send", "--", khrushchev.name, stdin=said)
            await until_shown(app, pilot, "The Jupiters will be gone")
            shoot(app, "conversations-otr")

            await open_row(app, pilot, "conversations", kennedy.name)
            text = await until_shown(app, pilot, f"With {kennedy.name} | OFF THE RECORD")
            assert "OFF THE RECORD otr (delivered; deniable)" in text
            assert "never on disk" in text
            await pilot.press("o")
            assert f"OFF THE RECORD to {kennedy.name}" in screen_text(app)
            app.screen.query_one("#compose", Input).value = "Understood. Not a word in public."
            await pilot.press("w", "enter")
            await until_shown(app, pilot, "Sent off the record.", "Understood. Not a word")
            shoot(app, "thread-otr")
            got = await backend(kennedy).json("inbox")
            (answer,) = [m for m in got if m["kind"] == "otr"]
            assert answer["text"] == "Understood. Not a word in public."
            assert answer["verified"] == "deniable"
            await pilot.press("escape", "escape")  # out of the compose box, out of the thread
            choose(app, "conversations", kennedy.name)
            await pilot.press("x")  # close the channel: keys wiped, the other side told
            await until(
                pilot,
                lambda: "otr close" in app.status_line and not app.snapshot.otr_channels,
                "the channel closed",
            )
            assert "OFF THE RECORD" not in screen_text(app)

    asyncio.run(drive())
    # Nothing of it was stored by Khrushchev's client: the TUI kept it in memory only.
    assert not any(m["kind"] == "otr" for m in khrushchev.json("history"))


def test_an_inject_and_the_channels_show_on_the_exercise_panel(make_relay: Any, home: Path) -> None:
    relay = make_relay("exercise", *GENEROUS)
    name, users = mini(relay, home)
    control(relay, "clock", "set", "1962-10-22T09:30:00-04:00", "--exercise", name)
    b, c, m = users["b"], users["c"], users["m"]
    app = app_for(c)

    async def drive() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.refreshes >= 1, "the first refresh")
            await pilot.press("3")
            text = await until_shown(app, pilot, "Injects", "News (scenario time 1962-10-22")
            assert "1962-10-22 09:30 -04:00 (paused)" in text and "A small crisis" in text
            assert f"via {m.name}" in text and "envelope" in text and "existence" in text
            shoot(app, "exercise")

            # A letter the exercise gives no channel for: refused, said in the status line.
            await pilot.press("1")
            await until_shown(app, pilot, b.name, "control")
            await open_row(app, pilot, "conversations", b.name)
            await until_shown(app, pilot, f"With {b.name}")
            app.screen.query_one("#compose", Input).value = "A direct word?"
            await pilot.press("w", "enter")
            await until_shown(app, pilot, "Error: send", "no channel")
            shoot(app, "refused")

    asyncio.run(drive())


def test_a_mediator_introduces_forwards_and_sees_an_exchange_released(
    relay: Relay, home: Path
) -> None:
    kennedy, khrushchev, thant = participants(
        relay, home, ("kennedy", "party"), ("khrushchev", "party"), ("u-thant", "mediator")
    )
    letter = kennedy.send(thant, "Pass this on, please.", "--may-forward", khrushchev.name)
    kennedy.json("propose", khrushchev.name, "--via", thant.name, "--simultaneous",
                 "--title", "Ours", "--term", "A.")  # fmt: skip
    app = app_for(thant)

    async def drive() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("4")
            await until_shown(app, pilot, "Mediator", f"waiting for {khrushchev.name}")
            await pilot.press("r")  # one side only: the CLI refuses, the status line says why
            await until_shown(app, pilot, "Error: exchange release")
            shoot(app, "mediator")

            await pilot.press("f")
            for value in (letter[:8], khrushchev.name, ""):
                app.screen.focused.value = value  # type: ignore[union-attr]
                await pilot.press("enter")
            await until_shown(app, pilot, f"Forwarded {letter[:8]} to {khrushchev.name}.")

            await pilot.press("i")
            for value in (kennedy.name, khrushchev.name):
                app.screen.focused.value = value  # type: ignore[union-attr]
                await pilot.press("enter")
            await until_shown(app, pilot, f"Introduced {kennedy.name} and {khrushchev.name}.")

            # The other side's offer comes in: the mediator's client releases both at once.
            await backend(khrushchev).json(
                "propose", "--via", thant.name, "--simultaneous", "--title", "Theirs",
                "--term", "B.", "--", kennedy.name,
            )  # fmt: skip
            await until_shown(app, pilot, "released")
            table: DataTable[Any] = app.screen.query_one("#exchanges", DataTable)
            offers = [str(table.get_row_at(i)[-1]) for i in range(table.row_count)]
            assert "Ours / Theirs" in offers, offers  # (the screen may cut a wide row short)
            shoot(app, "mediator-done")

    asyncio.run(drive())
    arrived = khrushchev.inbox()
    assert "introduction" in {m["kind"] for m in arrived}, arrived
    assert any("Pass this on, please." in m["text"] for m in arrived), arrived
    assert "Ours" in [p["title"] for p in khrushchev.json("proposals")]


def test_a_sealed_keystore_asks_its_passphrase_once(relay: Relay, home: Path) -> None:
    (kennedy,) = participants(relay, home, ("kennedy", "party"))
    castro = User(home, "castro", unique("castro"))
    castro.init(relay, passphrase="patria o muerte")
    env = {PASSPHRASE_ENV: "patria o muerte"}
    castro.json("register", relay.invite(castro.name), env=env)
    kennedy.send(castro, "A letter for a sealed keystore.")
    app = app_for(castro)

    async def drive() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until_shown(app, pilot, "sealed with a passphrase")
            app.screen.query_one("#passphrase", Input).value = "patria o muerte"
            await pilot.press("enter")
            await until_shown(app, pilot, f"{castro.name} (party)", "A letter for a sealed")

    asyncio.run(drive())


def test_an_off_the_record_channel_is_opened_from_the_conversations(
    relay: Relay, home: Path
) -> None:
    """`o` on a conversation opens a channel with that peer (`otr open`); once the peer's
    client answered, a message goes both ways, marked, and is stored by neither."""
    kennedy, khrushchev = participants(relay, home, ("kennedy", "party"), ("khrushchev", "party"))
    kennedy.send(khrushchev, "Shall we talk off the record?")
    app = app_for(khrushchev)

    async def drive() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until_shown(app, pilot, kennedy.name)
            choose(app, "conversations", kennedy.name)
            await pilot.press("o")
            await until(pilot, lambda: "Off the record with" in app.status_line, "opened")
            await backend(kennedy).json("inbox")  # Kennedy's client answers the offer
            await backend(kennedy).json("otr", "send", "--", khrushchev.name, stdin="Yes.")
            await until_shown(app, pilot, "OFF THE RECORD")
            await open_row(app, pilot, "conversations", kennedy.name)
            await until_shown(app, pilot, "Yes.")

    asyncio.run(drive())
    assert not any(m["kind"] == "otr" for m in khrushchev.json("history"))
    assert not any(m["kind"] == "otr" for m in kennedy.json("history"))
