"""Agreements end to end: bound, void and understood, as both sides and a reviewer see them.

A package of linked proposals binds all or none, decided by the notary's order (PRODUCT.md §4);
`proposals`, `show`, `history` and `verify-record` say which, and `verify-record` proves bound and
void from the notarised statements alone.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from backchannel_cli.negotiation import Negotiation

from .conftest import CLI_SCRIPT, GENEROUS, Relay, User, participants, script_env
from .test_exercises import load
from .test_proposals import notary_key, propose, view


def verified(user: User, record: Path, relay: Relay) -> dict[str, dict[str, Any]]:
    checked = user.json("verify-record", str(record), "--notary-key", notary_key(relay))
    return {r["title"]: r for r in checked["records"]}


def test_a_linked_package_accepted_binds_both_and_the_record_proves_it(
    relay: Relay, home: Path, tmp_path: Path
) -> None:
    khrushchev, kennedy = participants(relay, home, ("khrushchev", "party"), ("kennedy", "party"))
    pledge = propose(khrushchev, kennedy, "No invasion", "The United States will not invade Cuba.")
    missiles = propose(
        khrushchev, kennedy, "Missiles out", "Removed under UN verification.",
        extra=("--if", pledge[:12]),
    )  # fmt: skip
    kennedy.inbox()
    assert view(kennedy, missiles)["agreement"] == "none"
    accepted = kennedy.json("accept", missiles, "--with", pledge)
    assert (accepted["status"], accepted["agreement"]) == ("accepted", "bound")
    khrushchev.inbox()
    for user in (khrushchev, kennedy):
        assert [view(user, i)["agreement"] for i in (pledge, missiles)] == ["bound", "bound"]
    assert "ACCEPTED] BOUND" in kennedy.ok("show", missiles[:12])
    assert "BOUND" in kennedy.ok("proposals")
    history = [m for m in kennedy.json("history") if m["kind"] == "proposal"]
    assert {m["agreement"] for m in history} == {"bound"}
    assert "; bound)" in kennedy.ok("history")

    record = tmp_path / "package.json"
    kennedy.ok("export", missiles, "--out", str(record))
    checked = verified(khrushchev, record, relay)
    assert {t: (r["status"], r["agreement"]) for t, r in checked.items()} == {
        "No invasion": ("accepted", "bound"),
        "Missiles out": ("accepted", "bound"),
    }
    text = khrushchev.ok("verify-record", str(record))
    assert text.count("BOUND (proven by the notarised statements)") == 2

    # Too late to withdraw a member: the acceptance was sequenced first.
    assert "already accepted" in khrushchev.fails("withdraw", pledge)


def test_a_condition_withdrawn_before_its_acceptance_is_sequenced_voids_the_package(
    relay: Relay, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    khrushchev, kennedy = participants(relay, home, ("khrushchev", "party"), ("kennedy", "party"))
    pledge = propose(khrushchev, kennedy, "No invasion", "No invasion of Cuba.")
    missiles = propose(khrushchev, kennedy, "Missiles out", "Removed.", extra=("--if", pledge[:12]))
    kennedy.inbox()

    # The race, made exact: Khrushchev's withdrawal (his own process, at his own machine)
    # lands at the notary between Kennedy's acceptance of the package and of its condition.
    real_state = Negotiation.state
    raced: list[int] = []

    async def racing_state(self: Negotiation, ident: str, *args: Any, **kwargs: Any) -> Any:
        result = await real_state(self, ident, *args, **kwargs)
        if self.p.name == kennedy.name and not raced:
            withdraw = [CLI_SCRIPT, *khrushchev.argv("withdraw", pledge, "--json")]
            done = subprocess.run(withdraw, capture_output=True, text=True, env=script_env())
            raced.append(done.returncode)
        return result

    monkeypatch.setattr(Negotiation, "state", racing_state)
    message = kennedy.fails("accept", missiles, "--with", pledge)
    monkeypatch.undo()
    assert raced == [0]
    assert "is accepted but void" in message

    khrushchev.inbox()
    for user in (khrushchev, kennedy):
        assert (view(user, pledge)["status"], view(user, pledge)["agreement"]) == (
            "withdrawn",
            "none",
        )
        mine = view(user, missiles)
        assert (mine["status"], mine["agreement"]) == ("accepted", "void")
        assert "failed" in mine["agreement_note"]
    assert "ACCEPTED] VOID" in kennedy.ok("show", missiles[:12])

    record = tmp_path / "void.json"
    khrushchev.ok("export", missiles, "--out", str(record))
    checked = verified(kennedy, record, relay)
    assert (checked["Missiles out"]["status"], checked["Missiles out"]["agreement"]) == (
        "accepted",
        "void",
    )
    assert checked["No invasion"]["status"] == "withdrawn"
    assert "VOID (proven by the notarised statements)" in kennedy.ok("verify-record", str(record))

    # A package with a member known to be withdrawn is refused before anything is notarised.
    again = propose(khrushchev, kennedy, "Missiles out, again", "Removed.", extra=("--if", pledge))
    kennedy.inbox()
    assert "would be void" in kennedy.fails("accept", again, "--with", pledge)
    assert view(kennedy, again)["status"] != "accepted"


def understood_clause(proposer: User, accepter: User, title: str, *terms: str) -> str:
    """A clause proposed and accepted inside an off-the-record channel; its id."""
    proposer.ok("otr", "open", accepter.name, "--ttl", "10m")
    accepter.inbox()  # their client answers the offer
    args = [a for term in terms for a in ("--term", term)]
    made = proposer.json("otr", "propose", accepter.name, "--title", title, *args)
    assert (made["off_record"], made["agreement"], made["notary"]) == (True, "none", None)
    (arrived,) = accepter.inbox()
    assert arrived["kind"] == "otr" and title in arrived["text"]
    assert f"otr accept {proposer.name} {made['id'][:12]}" in arrived["text"]
    done = accepter.json("otr", "accept", proposer.name, made["id"][:12])
    assert (done["status"], done["agreement"]) == ("accepted", "understood")
    proposer.inbox()
    for user in (proposer, accepter):
        assert view(user, made["id"])["agreement"] == "understood"
    return str(made["id"])


def test_an_understood_clause_counts_only_where_its_author_allowed_it(
    relay: Relay, home: Path, tmp_path: Path
) -> None:
    kennedy, dobrynin = participants(relay, home, ("kennedy", "party"), ("dobrynin", "party"))
    jupiters = understood_clause(kennedy, dobrynin, "Jupiters", "Out of Turkey within months.")

    # Counting it needs the author's say-so, given when the proposal is made.
    title, term = ("--title", "Missiles out"), ("--term", "Removed under UN verification.")
    refused = dobrynin.fails("propose", kennedy.name, *title, *term, "--if", jupiters[:12])
    assert "only with --allow-understood" in refused
    made = dobrynin.json(
        "propose", kennedy.name, *title, *term, "--if", jupiters[:12], "--allow-understood"
    )
    assert made["allow_understood"] == [jupiters] == made["conditions"]
    kennedy.inbox()
    accepted = kennedy.json("accept", made["id"])  # no acceptance on the record to wait for
    assert (accepted["status"], accepted["agreement"]) == ("accepted", "bound")
    assert "no record can prove" in accepted["agreement_note"]
    assert "only understood off the record" in kennedy.ok("show", made["id"][:12])

    # The record proves the acceptance, and says plainly that the clause is not provable.
    record = tmp_path / "allowed.json"
    kennedy.ok("export", made["id"], "--out", str(record))
    assert "Jupiters" not in record.read_text() and "Turkey" not in record.read_text()
    (checked,) = verified(dobrynin, record, relay).values()
    assert (checked["status"], checked["agreement"]) == ("accepted", "bound")
    assert "no record can prove" in checked["agreement_note"]
    result = dobrynin.run("verify-record", str(record))
    assert result.exit_code == 0 and "is not provable" in result.stderr

    # The clause goes with its channel; what the record says stays.
    kennedy.ok("otr", "close", dobrynin.name)
    assert [p["id"] for p in kennedy.json("proposals")] == [made["id"]]
    assert view(kennedy, made["id"])["agreement"] == "bound"


def test_cuba_1962_the_public_exchange_binds_and_the_jupiter_clause_is_only_understood(
    make_relay: Any, store: tuple[str, ...], home: Path, tmp_path: Path
) -> None:
    relay = make_relay("cuba-agreements", *GENEROUS, *store)
    users = load(relay, home, "cuba-1962")
    kennedy, khrushchev, dobrynin = users["kennedy"], users["khrushchev"], users["dobrynin"]

    # 26-27 October: the missiles out under UN verification, for a pledge not to invade.
    missiles = propose(
        khrushchev, kennedy, "Missiles out of Cuba",
        "The offensive weapons in Cuba are removed under United Nations verification.",
    )  # fmt: skip
    kennedy.inbox()
    pledge = propose(
        kennedy, khrushchev, "No invasion of Cuba",
        "The United States gives assurances against an invasion of Cuba.",
        extra=("--if", missiles[:12]),
    )  # fmt: skip
    # The evening of 27 October: the Attorney General and Dobrynin, off the record.
    jupiters = understood_clause(
        kennedy, dobrynin, "Jupiters out of Turkey",
        "The Jupiter missiles leave Turkey within four to five months.",
        "It is never made public.",
    )  # fmt: skip
    # 28 October: each side accepts the other's public offer.
    assert kennedy.json("accept", missiles)["agreement"] == "bound"
    khrushchev.inbox()
    assert khrushchev.json("accept", pledge)["agreement"] == "bound"
    kennedy.inbox()

    for user in (kennedy, khrushchev):
        assert [view(user, i)["agreement"] for i in (missiles, pledge)] == ["bound", "bound"]
    assert view(dobrynin, jupiters)["agreement"] == "understood"
    assert jupiters not in [p["id"] for p in khrushchev.json("proposals")]

    # Nothing of the clause in any record: the export, the history, the notarised state.
    record = tmp_path / "settlement.json"
    khrushchev.ok("export", pledge, "--out", str(record))
    exported = record.read_text()
    assert "Jupiter" not in exported and "Turkey" not in exported and jupiters not in exported
    checked = verified(kennedy, record, relay)
    assert {t: r["agreement"] for t, r in checked.items()} == {
        "Missiles out of Cuba": "bound",
        "No invasion of Cuba": "bound",
    }
    for user in (kennedy, khrushchev, dobrynin):
        assert "Jupiter" not in json.dumps(user.json("history"))
    kennedy.ok("otr", "close", dobrynin.name)
    assert jupiters not in [p["id"] for p in kennedy.json("proposals")]


def test_an_understood_clause_withdrawn_voids_what_counted_on_it_and_wins_a_crossing(
    relay: Relay, home: Path
) -> None:
    kennedy, dobrynin = participants(relay, home, ("kennedy", "party"), ("dobrynin", "party"))
    jupiters = understood_clause(kennedy, dobrynin, "Jupiters", "Out of Turkey within months.")
    made = dobrynin.json("propose", kennedy.name, "--title", "Missiles out", "--term",
                         "Removed under UN verification.", "--if", jupiters[:12],
                         "--allow-understood")  # fmt: skip
    kennedy.inbox()
    assert "withdraw a clause of your own" in dobrynin.fails(
        "otr", "withdraw", kennedy.name, jupiters[:12]
    )
    done = kennedy.json("otr", "withdraw", dobrynin.name, jupiters[:12])
    assert (done["status"], done["agreement"]) == ("withdrawn", "none")
    assert "already withdrawn" in kennedy.fails("otr", "withdraw", dobrynin.name, jupiters[:12])
    (told,) = [m for m in dobrynin.inbox() if m["kind"] == "otr"]
    assert "withdrew off the record" in told["text"]
    for user in (kennedy, dobrynin):
        assert view(user, jupiters)["status"] == "withdrawn"
    accepted = kennedy.json("accept", made["id"])  # accepted on the record, on a failed clause
    assert accepted["agreement"] == "void"
    assert accepted["agreement_note"] == f"condition {jupiters[:12]} failed"
    dobrynin.inbox()
    assert view(dobrynin, made["id"])["agreement"] == "void"

    # An acceptance that crosses a withdrawal: the withdrawal wins on both sides.
    crossed = kennedy.json("otr", "propose", dobrynin.name, "--title", "Quarantine eased",
                           "--term", "Ships pass.")  # fmt: skip
    dobrynin.inbox()
    kennedy.json("otr", "withdraw", dobrynin.name, crossed["id"][:12])
    dobrynin.json("otr", "accept", kennedy.name, crossed["id"][:12])  # not yet read it
    (crossing,) = [m for m in kennedy.inbox() if m["kind"] == "otr"]
    assert "after you withdrew it" in crossing["text"]
    dobrynin.inbox()
    for user in (kennedy, dobrynin):
        assert view(user, crossed["id"])["status"] == "withdrawn"
