"""Three participants register, verify each other and write letters in both directions, with
delivery and read receipts, through a real relay."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest

from backchannel import content
from backchannel_cli import service

from .conftest import User, Watcher, eventually

Trio = tuple[User, User, User]


def letters(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """By text, checking the fields every message shown by `inbox --json` carries."""
    by_text: dict[str, dict[str, Any]] = {}
    now = time.time() * 1000
    for message in messages:
        assert {"id", "from", "kind", "text", "sent_at", "verified"} <= message.keys()
        assert message["kind"] == "letter" and message["to"] == "me"
        assert message["verified"] == "signed"
        assert len(message["id"]) == 32 and int(message["id"], 16) >= 0
        assert now - 120_000 < message["sent_at"] <= now + 1000
        assert message["text"] not in by_text, f"shown twice: {message}"
        by_text[message["text"]] = message
    return by_text


def test_three_participants_register_verify_and_write_both_ways(trio: Trio) -> None:
    kennedy, khrushchev, u_thant = trio

    ours = {u.name for u in trio}
    listing = [e for e in kennedy.json("directory") if e["name"] in ours]
    assert [(e["name"], e["role"]) for e in listing] == [
        (kennedy.name, "party"),
        (khrushchev.name, "party"),
        (u_thant.name, "mediator"),
    ]
    for entry in listing:
        assert set(entry) >= {"name", "role", "fingerprint", "verified"}
        assert entry["fingerprint"] == {u.name: u.fingerprint for u in trio}[entry["name"]]
        assert entry["verified"] is False

    # Each pair compares safety numbers (both sides compute the same 60 digits), then confirms.
    for me, other in [(kennedy, khrushchev), (kennedy, u_thant), (khrushchev, u_thant)]:
        mine = me.json("verify", other.name)
        theirs = other.json("verify", me.name)
        assert mine["safety_number"] == theirs["safety_number"]
        assert len(mine["safety_number"]) == 60 and mine["safety_number"].isdigit()
        assert mine["verified"] is False and mine["key_changed"] is False
        assert me.json("verify", other.name, "--yes")["verified"] is True
        assert "is now verified" in other.ok("verify", me.name, "--yes")
    human = u_thant.ok("verify", kennedy.name, input="y\n")
    assert f"Safety number with {kennedy.name}" in human
    assert f"{kennedy.name} is now verified." in human
    for user in trio:
        others = [e for e in user.json("directory") if e["name"] in ours - {user.name}]
        assert [e["verified"] for e in others] == [True, True]
    assert "[verified]" in kennedy.ok("directory") and "[me]" in kennedy.ok("directory")

    # Letters in every direction, including a reply that names what it answers.
    proposal = kennedy.send(khrushchev, "We will not invade Cuba if the missiles leave.")
    shown = khrushchev.inbox()
    assert len(shown) == 1 and shown[0]["id"] == proposal and shown[0]["from"] == kennedy.name
    answer = khrushchev.send(kennedy, "Agreed; and the Jupiters in Turkey?", "--reply-to", proposal)
    u_thant.send(kennedy, "The Secretary-General offers his good offices.")
    u_thant.send(khrushchev, "A standstill at sea would help both sides.")
    kennedy.send(u_thant, "We accept your offer.")

    at_kennedy = letters(kennedy.inbox())
    assert set(at_kennedy) == {
        "Agreed; and the Jupiters in Turkey?",
        "The Secretary-General offers his good offices.",
    }
    assert at_kennedy["Agreed; and the Jupiters in Turkey?"]["in_reply_to"] == proposal
    assert at_kennedy["Agreed; and the Jupiters in Turkey?"]["id"] == answer
    assert at_kennedy["The Secretary-General offers his good offices."]["from"] == u_thant.name
    assert letters(khrushchev.inbox()).keys() == {"A standstill at sea would help both sides."}
    assert letters(u_thant.inbox()).keys() == {"We accept your offer."}

    # The human rendering of the same thing.
    kennedy.send(khrushchev, "Line one.\nLine two.")
    text = khrushchev.ok("inbox")
    assert f"letter from {kennedy.name}," in text and "(delivered; signed)" in text
    assert "  Line one.\n  Line two." in text
    assert khrushchev.ok("inbox") == "No new messages.\n"
    shown_one = khrushchev.ok("show", proposal[:12])
    assert shown_one.startswith(f"[{proposal[:12]}] letter from {kennedy.name},")


def test_letters_wait_for_whoever_is_offline(trio: Trio) -> None:
    kennedy, khrushchev, u_thant = trio
    # Khrushchev is offline (runs nothing) while two others write to him ...
    sent = {
        kennedy.send(khrushchev, "First: the ships are turning back."),
        u_thant.send(khrushchev, "Second: a proposal from the Secretary-General."),
        kennedy.send(khrushchev, "Third: please answer by radio."),
    }
    # ... and Kennedy goes offline while Khrushchev writes to him once he is back.
    received = khrushchev.inbox()
    assert {m["id"] for m in received} == sent and len(received) == 3
    assert [m["text"][:5] for m in sorted(received, key=lambda m: m["sent_at"])] == [
        "First",
        "Secon",
        "Third",
    ]
    assert khrushchev.inbox() == []
    reply = khrushchev.send(kennedy, "Received all three.")
    assert u_thant.inbox() == []
    later = kennedy.inbox()
    assert [m["id"] for m in later] == [reply]
    assert kennedy.inbox() == []


def test_status_goes_sent_then_delivered_then_read(trio: Trio) -> None:
    kennedy, khrushchev, _ = trio
    letter = kennedy.json("send", khrushchev.name, "Are the missiles leaving?")
    assert letter["status"] == "sent" and set(letter) >= {"id", "status"}
    assert kennedy.status(letter["id"]) == "sent"

    # Stored by Khrushchev's client, not yet reported as read: delivered.
    assert [m["id"] for m in khrushchev.inbox("--no-read-receipts")] == [letter["id"]]
    assert kennedy.status(letter["id"]) == "delivered"
    assert khrushchev.inbox() == []
    assert kennedy.status(letter["id"]) == "delivered"

    # He displays it again with `show`, which does send the read receipt: read.
    assert khrushchev.json("show", letter["id"])["status"] == "read"
    shown = kennedy.json("show", letter["id"])
    assert shown["status"] == "read" and shown["to"] == khrushchev.name and shown["from"] == "me"
    assert f"to {khrushchev.name}, " in kennedy.ok("show", letter["id"])

    # The ordinary case: `inbox` shows it and reports it read at once.
    second = kennedy.send(khrushchev, "Thank you.")
    khrushchev.inbox()
    assert kennedy.status(second) == "read"


def test_inbox_watch_prints_letters_sent_while_it_watches(
    trio: Trio, watch: Callable[..., Watcher]
) -> None:
    kennedy, khrushchev, u_thant = trio
    watcher = watch(khrushchev).connected()  # the installed console script, human output

    sent = kennedy.send(khrushchev, "A letter while you watch.")
    head = watcher.line()
    assert head.startswith(f"[{sent[:12]}] letter from {kennedy.name},") and "signed" in head
    assert watcher.line() == "  A letter while you watch."
    u_thant.send(khrushchev, "And one from the mediator.")
    assert f"letter from {u_thant.name}," in watcher.line()
    assert watcher.line() == "  And one from the mediator."
    # The watch stores, acknowledges and reports each letter read as it shows it.
    eventually(lambda: kennedy.status(sent) == "read", what="the read receipt")
    errors = watcher.stop()
    assert "Traceback" not in errors
    assert khrushchev.inbox() == []  # nothing is shown again by the next inbox


def test_watch_without_read_receipts_reports_delivery_only(
    trio: Trio, watch: Callable[..., Watcher]
) -> None:
    kennedy, khrushchev, _ = trio
    watcher = watch(khrushchev, "--json", "--no-read-receipts").connected()
    sent = kennedy.send(khrushchev, "Quietly.")
    message = watcher.message()
    assert message["id"] == sent and message["text"] == "Quietly."
    assert message["from"] == kennedy.name
    eventually(lambda: kennedy.status(sent) == "delivered", what="the delivery receipt")
    watcher.nothing_more()
    assert kennedy.status(sent) == "delivered"


def test_read_receipts_for_many_letters_are_split(
    trio: Trio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receipt names at most MAX_RECEIPT_IDS letters; more are split over several."""
    kennedy, khrushchev, _ = trio
    monkeypatch.setattr(content, "MAX_RECEIPT_IDS", 2)
    monkeypatch.setattr(service, "MAX_RECEIPT_IDS", 2)
    sent = [kennedy.send(khrushchev, f"Letter {n}.") for n in range(5)]
    assert len(khrushchev.inbox()) == 5
    assert [kennedy.status(i) for i in sent] == ["read"] * 5


def test_a_letter_on_a_lost_session_is_unreadable_and_the_pair_recovers(trio: Trio) -> None:
    """Kennedy's state loses the session (say, restored from an old backup): Khrushchev's next
    letter cannot be read, which the inbox says, without jamming; Kennedy's next letter opens a
    new session and the conversation goes on."""
    kennedy, khrushchev, u_thant = trio
    kennedy.send(khrushchev, "Opening.")
    assert len(khrushchev.inbox()) == 1
    with sqlite3.connect(kennedy.directory / "state.sqlite3") as db:
        db.execute("DELETE FROM sessions WHERE peer = ?", (khrushchev.name,))
    db.close()
    khrushchev.send(kennedy, "This continues a session Kennedy no longer has.")
    u_thant.send(kennedy, "This one is fine.")
    shown = kennedy.inbox()
    by_sender = {m["from"]: m for m in shown}
    assert by_sender[khrushchev.name]["kind"] == "unreadable"
    assert "could not be read" in by_sender[khrushchev.name]["text"]
    assert by_sender[u_thant.name]["kind"] == "letter"
    assert by_sender[u_thant.name]["text"] == "This one is fine."
    assert kennedy.inbox() == []

    kennedy.send(khrushchev, "Starting afresh.")
    assert [m["text"] for m in khrushchev.inbox()] == ["Starting afresh."]
    khrushchev.send(kennedy, "Understood.")
    assert [m["text"] for m in kennedy.inbox()] == ["Understood."]


def test_one_profile_used_from_two_terminals_at_once(
    trio: Trio, watch: Callable[..., Watcher]
) -> None:
    """Khrushchev watches in one terminal and writes in another while Kennedy writes to him:
    both processes advance the same ratchet states, and no step may be lost."""
    kennedy, khrushchev, _ = trio
    kennedy.send(khrushchev, "Opening.")
    khrushchev.inbox()
    khrushchev.send(kennedy, "Answer.")
    watcher = watch(khrushchev, "--json").connected()
    rounds = 10
    for n in range(rounds):
        kennedy.send(khrushchev, f"Kennedy {n}.")
        time.sleep(0.01 * (n % 5))  # land at varied moments of the watch's work
        khrushchev.send(kennedy, f"Khrushchev {n}.")  # while the watch stores and sends receipts
    watched = [watcher.message() for _ in range(rounds)]
    assert [m["text"] for m in watched] == [f"Kennedy {n}." for n in range(rounds)]
    at_kennedy = letters(kennedy.inbox())
    assert set(at_kennedy) == {"Answer."} | {f"Khrushchev {n}." for n in range(rounds)}
    watcher.stop()
    kennedy.send(khrushchev, "Closing.")
    assert [m["text"] for m in khrushchev.inbox()] == ["Closing."]


def test_a_formal_acknowledgement_names_the_letter_and_the_sender_sees_it(trio: Trio) -> None:
    kennedy, khrushchev, _ = trio
    first = kennedy.send(khrushchev, "Letter of October 26.")
    second = kennedy.send(khrushchev, "Letter of October 27.")
    khrushchev.inbox()
    acked = khrushchev.json("ack", first[:10])
    assert acked["id"] == first and acked["status"] == "acknowledged"
    (notice,) = [m for m in kennedy.inbox() if m["kind"] == "acknowledgement"]
    assert notice["from"] == khrushchev.name and notice["in_reply_to"] == first
    assert notice["verified"] == "signed"
    assert kennedy.status(first) == "acknowledged"
    assert kennedy.status(second) == "read"  # which letter was answered is unambiguous
    khrushchev.ok("show", first)  # showing it again does not lower the status
    assert kennedy.status(first) == "acknowledged"
    assert "only a letter you received" in kennedy.fails("ack", first)
    assert "no message or proposal" in khrushchev.fails("ack", "abcdef0123")
