"""Proposals between a pair the exercise routes through a mediator, through the CLI, on each
store: cuba-1962 routes Kennedy and Castro through U Thant. The notary takes their proposals
when they name the mediator (the client does, from the exercise), the offer and every statement
about it travel through the mediator's client, and a simultaneous exchange between the two is
released to both. Neither side reads the other's entries from the notary log (links only, so
the log passes nothing between them that the mediator does not carry); each still checks the
whole log, and the receipts it got through the mediator against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conftest import GENEROUS, User
from .test_exercises import load
from .test_proposals import kinds, view


def cuba(make_relay: Any, store: tuple[str, ...], home: Path, name: str) -> dict[str, User]:
    relay = make_relay(name, *GENEROUS, *store)
    return load(relay, home, "cuba-1962")


def test_a_proposal_through_the_mediator_is_delivered_opened_and_accepted(
    make_relay: Any, store: tuple[str, ...], home: Path
) -> None:
    users = cuba(make_relay, store, home, "mediated-proposal")
    kennedy, castro, thant = users["kennedy"], users["castro"], users["u-thant"]

    made = kennedy.run(
        "propose", "castro", "--title", "No invasion of Cuba",
        "--term", "The United States will not invade Cuba.", "--json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "through u-thant" in made.stderr
    offer = json.loads(made.stdout)
    assert offer["status"] == "sealed" and offer["relay"] == "sent"
    assert castro.json("proposals") == []  # U Thant's client has not carried it yet
    assert thant.inbox() == []  # carried unread: nothing to show him
    (arrived,) = [m for m in castro.inbox("--no-read-receipts") if m["kind"] == "proposal"]
    assert arrived["from"] == "kennedy" and "No invasion of Cuba" in arrived["text"]

    assert castro.json("show", offer["id"][:12])["status"] == "opened"
    assert castro.json("accept", offer["id"])["status"] == "accepted"
    thant.inbox()  # carries Castro's statements back to Kennedy
    mine, theirs = view(kennedy, offer["id"]), view(castro, offer["id"])
    assert mine["status"] == theirs["status"] == "accepted"
    assert mine["history"] == theirs["history"]
    assert kinds(mine["history"]) == [
        ("delivered", "castro", True),
        ("opened", "castro", True),
        ("accepted", "castro", True),
    ]
    # The mediator carries the three statements on in one catch-up; their order may differ.
    statements = [m["text"] for m in kennedy.inbox() if m["kind"] == "statement"]
    assert any("accepted" in text for text in statements), statements

    # Each checks the whole log, with every receipt it holds: those it got through U Thant
    # match the links the log shows it in their place.
    for user in (kennedy, castro, thant):
        checked = user.json("notary-log")
        assert checked["entries"] >= 4
    assert kennedy.json("notary-log")["ours_checked"] == 4
    assert castro.json("notary-log")["own_entries"] == 3  # its own statements only

    # A timed proposal would have its key handed over by the relay, past the mediator.
    line = kennedy.fails("propose", "castro", "--title", "L", "--term", "x", "--reveal-at", "1h")
    assert "--reveal-at needs a direct channel to castro" in line
    line = kennedy.fails("propose", "castro", "--title", "T", "--term", "x", "--via", "dobrynin")
    assert "routes your proposals to castro through u-thant, not dobrynin" in line


def test_a_simultaneous_exchange_through_the_mediator_is_released_to_both(
    make_relay: Any, store: tuple[str, ...], home: Path
) -> None:
    users = cuba(make_relay, store, home, "mediated-exchange")
    kennedy, castro, thant = users["kennedy"], users["castro"], users["u-thant"]

    mine = kennedy.json(
        "propose", "castro", "--via", "u-thant", "--simultaneous",
        "--title", "No invasion of Cuba", "--term", "The United States will not invade Cuba.",
    )  # fmt: skip
    thant.inbox("--hold")
    (held,) = thant.json("exchange", "list")
    assert held["status"] == "waiting for castro"
    theirs = castro.json(
        "propose", "kennedy", "--via", "u-thant", "--simultaneous",
        "--title", "Missiles out of Cuba", "--term", "Cuba lets the missiles go.",
    )  # fmt: skip
    assert mine["id"] not in [p["id"] for p in castro.json("proposals")]
    thant.inbox()  # both are in: released to each side at once
    (released,) = thant.json("exchange", "list")
    assert released["status"] == "released"

    got, seen = view(kennedy, theirs["id"]), view(castro, mine["id"])
    assert got["title"] == "Missiles out of Cuba" and seen["title"] == "No invasion of Cuba"
    note = [m for m in castro.inbox() if m["kind"] == "proposal"]
    assert note and "released by u-thant in a simultaneous exchange" in note[0]["text"]
    assert castro.json("accept", mine["id"])["status"] == "accepted"
    thant.inbox()  # carries the acceptance to Kennedy
    assert view(kennedy, mine["id"])["status"] == "accepted"
    for user in (kennedy, castro, thant):
        assert user.json("notary-log")["entries"] >= 2
