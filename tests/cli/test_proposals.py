"""Sealed proposals end to end: two participants and a real relay's notary, through the CLI.

Every test drives `backchannel` the way a user does and checks what both sides see: the status,
the signed history with the notary's sequence numbers, and exported records that a third party
verifies offline with `verify-record`.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .conftest import (
    CLI_SCRIPT,
    GENEROUS,
    Relay,
    User,
    Watcher,
    eventually,
    participants,
    script_env,
)

Pair = tuple[User, User]


def pair(relay: Relay, home: Path) -> Pair:
    khrushchev, kennedy = participants(relay, home, ("khrushchev", "party"), ("kennedy", "party"))
    return khrushchev, kennedy


def propose(author: User, to: User, title: str, *terms: str, extra: tuple[str, ...] = ()) -> str:
    args = [a for term in terms for a in ("--term", term)]
    made = author.json("propose", to.name, "--title", title, *args, *extra)
    assert made["from"] == author.name and made["to"] == [to.name]
    assert made["title"] == title and made["terms"] == list(terms)
    assert made["status"] == "sealed" and made["signature"] == "verified"
    assert made["relay"] == "sent" and made["notary"]["seq"] >= 1
    return str(made["id"])


def view(user: User, ident: str) -> dict[str, Any]:
    found = [p for p in user.json("proposals") if p["id"] == ident]
    assert len(found) == 1, f"{user.name} holds {len(found)} proposals {ident}"
    return found[0]


def kinds(history: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    return [(h["kind"], h["by"], h["effective"]) for h in history]


def notary_key(relay: Relay) -> str:
    with urllib.request.urlopen(f"{relay.url}/v1/info") as response:
        return str(json.load(response)["notary_key"])


def test_propose_deliver_open_ack_accept_and_verify_offline(
    relay: Relay, home: Path, tmp_path: Path
) -> None:
    khrushchev, kennedy = pair(relay, home)
    ident = propose(
        khrushchev,
        kennedy,
        "Missiles out of Cuba",
        "The Soviet Union removes the missiles under UN inspection.",
        "The United States pledges not to invade Cuba.",
    )
    assert len(ident) == 64

    shown = kennedy.inbox("--no-read-receipts")
    assert [(m["kind"], m["from"]) for m in shown] == [("proposal", khrushchev.name)]
    assert "Missiles out of Cuba" in shown[0]["text"]
    assert view(khrushchev, ident)["status"] == "delivered"

    opened = kennedy.json("show", ident[:12])
    assert opened["status"] == "opened" and opened["signature"] == "verified"
    assert opened["terms"][1] == "The United States pledges not to invade Cuba."
    assert kennedy.json("ack", ident[:12])["status"] == "acknowledged"
    assert kennedy.json("accept", ident)["status"] == "accepted"

    mine, theirs = view(khrushchev, ident), view(kennedy, ident)
    assert mine["status"] == theirs["status"] == "accepted"
    assert mine["history"] == theirs["history"]
    assert kinds(mine["history"]) == [
        ("delivered", kennedy.name, True),
        ("opened", kennedy.name, True),
        ("acknowledged", kennedy.name, True),
        ("accepted", kennedy.name, True),
    ]
    seqs = [h["seq"] for h in mine["history"]]
    assert seqs == sorted(seqs) and mine["notary"]["seq"] < seqs[0]
    statements = [m for m in khrushchev.inbox() if m["kind"] == "statement"]
    assert statements and "accepted" in statements[-1]["text"]

    # An after-action reviewer checks the exported record offline, against the relay's key.
    record = tmp_path / "record.json"
    khrushchev.ok("export", ident, "--out", str(record))
    checked = kennedy.json("verify-record", str(record), "--notary-key", notary_key(relay))
    assert checked["trusted_key_given"] is True
    assert [(r["valid"], r["status"], r["statements"]) for r in checked["records"]] == [
        (True, "accepted", 4)
    ]
    assert "VALID, accepted" in kennedy.ok("verify-record", str(record))

    # Nothing more can happen to an accepted proposal.
    assert "already accepted" in kennedy.fails("reject", ident)
    assert "already accepted" in khrushchev.fails("withdraw", ident)


def test_reject_with_reason_and_counter_chain(relay: Relay, home: Path) -> None:
    khrushchev, kennedy = pair(relay, home)
    first = propose(khrushchev, kennedy, "Trade", "Cuba for Turkey.")
    kennedy.inbox()
    rejected = kennedy.json("reject", first, "--reason", "Turkey is not on the table.")
    assert rejected["status"] == "rejected"
    assert view(khrushchev, first)["history"][-1]["reason"] == "Turkey is not on the table."

    second = propose(khrushchev, kennedy, "Pledge", "Missiles out for a no-invasion pledge.")
    kennedy.inbox()
    countered = kennedy.json(
        "counter", second, "--title", "Pledge, with inspection", "--term", "UN inspection first."
    )
    third = countered["id"]
    assert countered["answers"] == second and countered["to"] == [khrushchev.name]
    khrushchev.inbox()
    original = view(khrushchev, second)
    assert original["status"] == "countered"
    assert original["history"][-1]["counter"] == third
    answer = view(khrushchev, third)
    assert answer["from"] == kennedy.name and answer["answers"] == second
    # The counter-proposal continues the chain: it is countered back, then accepted.
    fourth = khrushchev.json(
        "counter", third, "--title", "Inspection by U Thant's staff", "--term", "UN staff only."
    )["id"]
    kennedy.inbox()
    assert kennedy.json("accept", fourth)["status"] == "accepted"
    assert [view(kennedy, p)["status"] for p in (first, second, third, fourth)] == [
        "rejected",
        "countered",
        "countered",
        "accepted",
    ]
    assert "already countered" in kennedy.fails("accept", second)


def test_withdraw_and_accept_crossing_exactly_one_wins(
    make_relay: Any, store: tuple[str, ...], home: Path
) -> None:
    relay = make_relay("race", *GENEROUS, *store)
    for attempt in range(3):
        khrushchev, kennedy = pair(relay, home / str(attempt))
        ident = propose(khrushchev, kennedy, "Offer", "Something binding.")
        kennedy.inbox()
        # Two processes, as two people at two machines: each command syncs, then notarises.
        racers = {
            verb: subprocess.Popen(
                [CLI_SCRIPT, *user.argv(verb, ident, "--json")],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=script_env(),
            )
            for verb, user in (("accept", kennedy), ("withdraw", khrushchev))
        }
        outcome = {verb: (p.wait(60), *p.communicate()) for verb, p in racers.items()}
        won = sorted(verb for verb, (code, _, _) in outcome.items() if code == 0)
        assert len(won) == 1, outcome
        loser = "withdraw" if won == ["accept"] else "accept"
        _, out, err = outcome[loser]
        assert err == "" and out.count("\n") == 1, (out, err)  # with --json, a JSON error
        # Refused by the notary (the other was sequenced first), or locally when the winner's
        # statement had already arrived by the time the loser's command synced.
        message = json.loads(out)["message"]
        assert "sequenced the" in message or "the proposal is already" in message, out
        final = "accepted" if won == ["accept"] else "withdrawn"
        mine, theirs = view(khrushchev, ident), view(kennedy, ident)
        assert mine["status"] == theirs["status"] == final
        assert mine["history"] == theirs["history"]
        decisions = [h for h in mine["history"] if h["kind"] in ("accepted", "withdrawn")]
        assert len(decisions) == 1 and decisions[0]["effective"]


def test_expired_and_withdrawn_proposals_cannot_be_accepted(relay: Relay, home: Path) -> None:
    khrushchev, kennedy = pair(relay, home)
    short_lived = propose(khrushchev, kennedy, "Today only", "Now.", extra=("--expires", "2s"))
    withdrawn = propose(khrushchev, kennedy, "Second thoughts", "Later.")
    kennedy.inbox()
    assert khrushchev.json("withdraw", withdrawn)["status"] == "withdrawn"
    assert "already withdrawn" in kennedy.fails("accept", withdrawn)
    time.sleep(2.2)
    assert view(kennedy, short_lived)["status"] == "expired"
    assert "expired" in kennedy.fails("accept", short_lived)
    assert view(khrushchev, short_lived)["status"] == "expired"


def test_conditional_proposals_accept_only_with_or_after_their_conditions(
    relay: Relay, home: Path, tmp_path: Path
) -> None:
    khrushchev, kennedy = pair(relay, home)
    cuba = propose(khrushchev, kennedy, "Cuba", "Missiles out.")
    turkey = propose(khrushchev, kennedy, "Turkey", "Jupiters out.", extra=("--if", cuba[:12]))
    kennedy.inbox()
    assert view(kennedy, turkey)["conditions"] == [cuba]
    assert "conditional" in kennedy.fails("accept", turkey)
    accepted = kennedy.json("accept", turkey, "--with", cuba)
    assert accepted["status"] == "accepted"
    assert accepted["history"][-1]["accepted_with"] == [cuba]
    assert view(kennedy, cuba)["status"] == "accepted"

    record = tmp_path / "package.json"
    kennedy.ok("export", turkey, "--out", str(record))
    checked = khrushchev.json("verify-record", str(record), "--notary-key", notary_key(relay))
    assert {(r["title"], r["status"]) for r in checked["records"]} == {
        ("Cuba", "accepted"),
        ("Turkey", "accepted"),
    }


def test_tampered_records_and_forged_receipts_are_rejected(
    relay: Relay, home: Path, tmp_path: Path
) -> None:
    khrushchev, kennedy = pair(relay, home)
    ident = propose(khrushchev, kennedy, "Offer", "The original term.")
    kennedy.inbox()
    kennedy.json("accept", ident)
    record = tmp_path / "record.json"
    kennedy.ok("export", ident, "--out", str(record))
    original = json.loads(record.read_text())
    key = notary_key(relay)

    def check(mutate: Any, expected: str) -> None:
        copy = json.loads(json.dumps(original))
        mutate(copy["records"][0])
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(copy))
        result = khrushchev.run("verify-record", str(bad), "--notary-key", key)
        assert result.exit_code != 0 and "INVALID" in result.output, result.output
        assert expected in result.output, result.output

    def flip(field: str, at: int) -> Any:
        def mutate(item: dict[str, Any]) -> None:
            raw = bytearray(base64.b64decode(item[field]))
            raw[at] ^= 1
            item[field] = base64.b64encode(bytes(raw)).decode()

        return mutate

    def edited_term(item: dict[str, Any]) -> None:
        raw = base64.b64decode(item["sealed"]).replace(b"original", b"modified")
        item["sealed"] = base64.b64encode(raw).decode()

    def forged_acceptance(item: dict[str, Any]) -> None:
        statement = item["statements"][-1]
        raw = bytearray(base64.b64decode(statement["receipt"]))
        raw[-1] ^= 1  # the notary's signature
        statement["receipt"] = base64.b64encode(bytes(raw)).decode()

    def dropped(item: dict[str, Any]) -> None:
        item["statements"][-1]["receipt"] = item["receipt"]

    check(edited_term, "signature")
    check(flip("receipt", -1), "signature")  # a forged commitment receipt
    check(forged_acceptance, "signature")
    check(dropped, "not for this statement")
    # A record signed by another notary key than the one the reviewer trusts.
    other = base64.b64encode(bytes(32 * [9])).decode()
    result = khrushchev.run("verify-record", str(record), "--notary-key", other)
    assert result.exit_code != 0
    for junk in ("{}", "not json", json.dumps({"format": "backchannel-proposal-record/1"})):
        path = tmp_path / "junk.json"
        path.write_text(junk)
        assert "not a proposal record" in khrushchev.fails("verify-record", str(path))


def test_the_notary_log_chain_holds_across_a_relay_restart(make_relay: Any, home: Path) -> None:
    relay = make_relay("notary")
    khrushchev, kennedy = pair(relay, home)
    first = propose(khrushchev, kennedy, "Before", "A term.")
    kennedy.inbox()
    kennedy.json("accept", first)
    before = kennedy.json("notary-log")
    relay.stop()
    relay.start()
    propose(khrushchev, kennedy, "After", "Another term.")
    kennedy.inbox()
    after = kennedy.json("notary-log")
    assert after["entries"] > before["entries"] and after["ours_checked"] > before["ours_checked"]
    assert "intact" in khrushchev.ok("notary-log")


def test_bad_input_gets_one_clear_line(relay: Relay, home: Path, tmp_path: Path) -> None:
    khrushchev, kennedy = pair(relay, home)
    for args, expected in [
        (("propose", kennedy.name, "--title", "T"), "at least one non-empty --term"),
        (("propose", kennedy.name, "--title", "T", "--term", " "), "at least one non-empty"),
        (
            ("propose", kennedy.name, "--title", "T", "--term", "x", "--expires", "soon"),
            "--expires",
        ),
        (("propose", kennedy.name, "--title", "T", "--term", "x", "--expires", "-2h"), "--expires"),
        (
            ("propose", kennedy.name, "--title", "T", "--term", "x", "--reveal-at", "2001-01-01"),
            "in the past",
        ),
        (("propose", kennedy.name, "--title", "", "--term", "x"), "title is 1 to 512 bytes"),
        (("propose", kennedy.name, "--title", "T" * 600, "--term", "x"), "title is 1 to 512"),
        (("propose", "nobody-at-all", "--title", "T", "--term", "x"), "nobody-at-all"),
        (("propose", khrushchev.name, "--title", "T", "--term", "x"), "to yourself"),
        (("propose", kennedy.name, "--title", "T", "--term", "x", "--if", "ffff"), "no proposal"),
        (("accept", "zz"), "4 or more hex digits"),
        (("withdraw", "0000"), "no proposal with id"),
        (("notary-log", "--bogus"), "--bogus"),
    ]:
        line = khrushchev.fails(*args)
        assert expected in line, (args, line)
    ident = propose(khrushchev, kennedy, "Offer", "A term.")
    assert "only an addressee" in khrushchev.fails("accept", ident)
    kennedy.inbox()
    assert "only the author" in kennedy.fails("withdraw", ident)
    assert "counter a proposal made to you" in khrushchev.fails(
        "counter", ident, "--title", "T", "--term", "x"
    )
    missing = tmp_path / "missing.json"
    assert "missing.json" in kennedy.fails("verify-record", str(missing))
    record = tmp_path / "record.json"
    khrushchev.ok("export", ident, "--out", str(record))
    assert "--notary-key" in kennedy.fails("verify-record", str(record), "--notary-key", "%%")
    # Nothing was lost or half-made: the one proposal is intact on both sides.
    assert [p["id"] for p in khrushchev.json("proposals")] == [ident]
    assert view(kennedy, ident)["status"] == "opened"  # `inbox` displayed it


def test_a_timed_proposal_opens_only_at_its_reveal_time(relay: Relay, home: Path) -> None:
    khrushchev, kennedy = pair(relay, home)
    ident = propose(
        khrushchev, kennedy, "Sealed until noon", "The real offer.", extra=("--reveal-at", "3s")
    )
    assert view(khrushchev, ident)["reveal_at"] is not None
    (arrived,) = kennedy.inbox()
    assert arrived["kind"] == "proposal" and "sealed until" in arrived["text"]
    assert "The real offer." not in arrived["text"]
    sealed = view(kennedy, ident)
    assert sealed["title"] is None and sealed["terms"] == [] and sealed["status"] == "sealed"
    assert view(khrushchev, ident)["status"] == "delivered"  # acknowledged before it can be read
    assert "sealed until its reveal time" in kennedy.fails("accept", ident)

    time.sleep(3.2)
    (opened,) = kennedy.inbox()  # shown again, now readable
    assert "The real offer." in opened["text"]
    revealed = view(kennedy, ident)
    assert revealed["title"] == "Sealed until noon" and revealed["signature"] == "verified"
    assert kennedy.json("accept", ident)["status"] == "accepted"
    assert view(khrushchev, ident)["status"] == "accepted"


def test_a_watching_addressee_sees_a_timed_proposal_open_by_itself(
    relay: Relay, home: Path, watch: Callable[..., Watcher]
) -> None:
    khrushchev, kennedy = pair(relay, home)
    watcher = watch(kennedy, "--json").connected()
    ident = propose(
        khrushchev, kennedy, "At the deadline", "Revealed.", extra=("--reveal-at", "2s")
    )
    arrived = watcher.message()
    assert arrived["kind"] == "proposal" and "sealed until" in arrived["text"]
    revealed = watcher.message(timeout=10)  # no other event: the watch's own timer opens it
    assert revealed["kind"] == "proposal" and "Revealed." in revealed["text"]
    eventually(lambda: view(khrushchev, ident)["status"] == "opened", what="the opened statement")
    watcher.stop()


def test_a_timed_proposal_withdrawn_before_its_time_never_opens(relay: Relay, home: Path) -> None:
    khrushchev, kennedy = pair(relay, home)
    ident = propose(khrushchev, kennedy, "Never mind", "Hidden.", extra=("--reveal-at", "2s"))
    kennedy.inbox()
    assert khrushchev.json("withdraw", ident)["status"] == "withdrawn"
    time.sleep(2.2)
    result = kennedy.run("inbox", "--json")
    assert result.exit_code == 0 and "will never open" in result.stderr
    assert "Hidden." not in result.stdout
    assert view(kennedy, ident)["status"] == "withdrawn" and view(kennedy, ident)["title"] is None
