"""Exercises end to end through the CLI: a scenario loaded by control, its roles registered from
their invites, the channel policy (a refused direct letter, blind forwarding through the
mediator), control's injects at their scenario times, and scenario time shown with wall time."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from backchannel_relay.cli import main as relay_main
from tests.relay.test_exercises import SCENARIO, role

from .conftest import GENEROUS, Relay, User, assert_one_error_line, eventually


def control(relay: Relay, *args: str) -> Any:
    """`backchannel-relay exercise ...` as exercise control runs it, on the relay's store."""
    store = ["--data-dir", str(relay.data_dir)]
    if "--database" in relay.extra:
        store += ["--database", relay.extra[relay.extra.index("--database") + 1]]
    result = CliRunner().invoke(relay_main, ["exercise", *args, *store, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def load(relay: Relay, home: Path, scenario: str) -> dict[str, User]:
    """Load a scenario (a file's text, or a shipped name) and register every role."""
    if scenario.startswith("\n"):
        path = home.parent / "scenario.toml"
        path.write_text(scenario)
        scenario = str(path)
    loaded = control(relay, "load", scenario)
    users = {}
    for entry in loaded["roles"]:
        user = User(home, entry["name"])
        user.init(relay)
        registered = user.json("register", entry["invite"])
        assert registered["role"] == entry["kind"]
        users[entry["name"]] = user
    return users


def mini(relay: Relay, home: Path) -> tuple[str, dict[str, User]]:
    tag = os.urandom(3).hex()
    names = {k: f"{k}-{tag}" for k in ("a", "b", "c", "m")}
    kinds = (("a", "party"), ("b", "party"), ("c", "party"), ("m", "mediator"))
    roles = "".join(role(names[k], kind) for k, kind in kinds)
    users = load(relay, home, SCENARIO.format(name=f"mini-{tag}", roles=roles, **names))
    return f"mini-{tag}", {k: users[n] for k, n in names.items()}


def test_policy_blind_forwarding_injects_and_scenario_time(make_relay: Any, home: Path) -> None:
    relay = make_relay("exercise", *GENEROUS)
    name, users = mini(relay, home)
    a, b, c, m = (users[k] for k in "abcm")

    # A direct letter where policy gives no channel is refused before anything is stored.
    line = b.fails("send", c.name, "A direct word?")
    assert f"gives {b.name} no channel to {c.name}" in line
    # a -> c goes through m, whose client carries it unread.
    sent = a.run("send", c.name, "Through the Secretary-General, please.", "--json")
    assert sent.exit_code == 0, sent.output
    assert f"through {m.name}" in sent.stderr
    assert c.inbox() == []  # not yet: m's client has not run
    carried = m.inbox()
    assert carried == []  # m shows nothing: it cannot read what it carries
    (letter,) = c.inbox()
    assert (letter["from"], letter["kind"], letter["verified"]) == (a.name, "letter", "signed")
    assert letter["text"] == "Through the Secretary-General, please."
    # c's receipts go back the same way.
    m.inbox()
    eventually(lambda: a.status(json.loads(sent.stdout)["id"]) in ("delivered", "read"), 10)

    # The clock runs at 3600x once control resumes it: the nine o'clock inject arrives.
    assert [i for i in b.inbox() if i["kind"] == "inject"] == []
    control(relay, "clock", "resume", "--exercise", name)
    eventually(lambda: any(i["kind"] == "inject" for i in b.inbox()), 10, "the inject")
    view = b.json("exercise")
    assert view["role"]["name"] == b.name and view["clock"]["paused"] is False
    d = a.json("send", b.name, "Direct is fine between us.")
    assert d["scenario_time"].startswith("1962-10-")
    shown = b.ok("inbox")
    assert "[scenario 1962-10-" in shown and "Direct is fine between us." in shown


def test_an_inject_is_signed_by_control_and_shown_as_such(make_relay: Any, home: Path) -> None:
    relay = make_relay("inject", *GENEROUS)
    name, users = mini(relay, home)
    control(relay, "clock", "set", "1962-10-22T09:30:00-04:00", "--exercise", name)
    (inject,) = users["c"].inbox()
    assert (inject["kind"], inject["from"], inject["verified"]) == (
        "inject", "control", "signed by control",
    )  # fmt: skip
    assert inject["text"].startswith("News (scenario time 1962-10-22 09:00 -04:00)")
    assert users["c"].inbox() == []  # once
    status = control(relay, "status", "--exercise", name)
    assert status["injects"][0]["delivered"] is True
    assert all(role["registered"] for role in status["roles"])


def test_control_commands_refuse_bad_input_in_one_line(make_relay: Any, home: Path) -> None:
    relay = make_relay("bad", *GENEROUS)
    store = ["--data-dir", str(relay.data_dir)]
    for args, expected in [
        (["exercise", "status", *store], "no exercise is loaded"),
        (["exercise", "clock", "speed", "fast", *store], "a number"),
        (["exercise", "clock", "set", *store], "needs a value"),
        (["exercise", "load", "nowhere.toml", *store], "neither a scenario file"),
    ]:
        result = CliRunner().invoke(relay_main, args)
        assert result.exit_code != 0
        assert expected in assert_one_error_line(result.output), result.output


def test_cuba_1962_a_full_scripted_run(make_relay: Any, store: tuple[str, ...], home: Path) -> None:
    """The shipped scenario, by name, on SQLite and PostgreSQL: every role registers from its
    invite; policy is enforced; U Thant introduces, shuttles with re-attribution, and runs a
    simultaneous exchange neither side can read early; injects arrive at their scenario times
    with the clock sped up."""
    relay = make_relay("cuba", *GENEROUS, *store)
    users = load(relay, home, "cuba-1962")
    assert set(users) == {"kennedy", "khrushchev", "castro", "u-thant", "dobrynin"}
    kennedy, khrushchev, castro, thant, dobrynin = (
        users[n] for n in ("kennedy", "khrushchev", "castro", "u-thant", "dobrynin")
    )
    status = control(relay, "status")
    assert all(r["registered"] for r in status["roles"]) and status["clock"]["paused"]

    # Policy: Castro has no channel to Dobrynin; Kennedy reaches Castro only through U Thant.
    assert "no channel to dobrynin" in castro.fails("send", "dobrynin", "Comrade ambassador?")
    blind = kennedy.run("send", "castro", "We have no quarrel with the Cuban people.", "--json")
    assert blind.exit_code == 0 and "through u-thant" in blind.stderr
    assert [m["kind"] for m in thant.inbox()] == []  # carried, unread: nothing to show
    (carried,) = castro.inbox()
    assert (carried["from"], carried["verified"]) == ("kennedy", "signed")

    # Introductions: U Thant introduces Khrushchev and Kennedy; each checks the key it holds.
    assert len(thant.json("introduce", "kennedy", "khrushchev")) == 2
    for user, other in ((kennedy, "khrushchev"), (khrushchev, "kennedy")):
        (intro,) = [m for m in user.inbox() if m["kind"] == "introduction"]
        assert intro["from"] == "u-thant" and intro["verified"] == "signed by u-thant"
        assert f"introduces {other}" in intro["text"]
        assert "matches the key you hold" in intro["text"] or "pinned" in intro["text"]

    # Off the record needs a direct channel (clients enforce the policy for sealed sender):
    # the ambassador's backchannel, yes; Havana, no.
    assert "only through a mediator" in kennedy.fails("otr", "open", "castro")
    kennedy.ok("otr", "open", "dobrynin")
    dobrynin.inbox()
    kennedy.ok("otr", "send", "dobrynin", "The Jupiters will go in time. Not a word of it.")
    (said,) = [m for m in dobrynin.inbox() if m["kind"] == "otr"]
    assert (said["from"], said["verified"]) == ("kennedy", "deniable")
    kennedy.ok("otr", "close", "dobrynin")

    # Shuttle: Castro writes to U Thant, who may pass it on verbatim to Khrushchev only (Castro's
    # signed consent), forwards it there (Castro's signature intact), and re-words it as his own
    # to Kennedy (who sees U Thant's letter). Nothing said to a mediator goes on without consent.
    letter = castro.send(
        "u-thant", "Cuba will accept UN inspection only with guarantees.",
        "--may-forward", "khrushchev",
    )  # fmt: skip
    received, consented = thant.inbox()
    assert (consented["kind"], consented["verified"]) == ("consent", "signed")
    assert "verbatim to khrushchev" in consented["text"]
    assert "castro has not consented" in thant.fails("forward", letter, "--to", "kennedy")
    secret = castro.send("u-thant", "Between us: Havana fears Moscow will trade it away.")
    thant.inbox()
    assert "has not consented" in thant.fails("forward", secret, "--to", "khrushchev")
    assert "--to NAME or --anyone" in castro.fails("consent", secret)
    assert "has the message already" in castro.fails("consent", secret, "--to", "u-thant")
    assert "consent is given for a letter you sent" in thant.fails(
        "consent", received["id"], "--anyone"
    )
    verbatim = thant.json("forward", received["id"], "--to", "khrushchev")
    assert verbatim["verbatim"] and verbatim["author"] == "castro"
    (shuttled,) = [m for m in khrushchev.inbox() if m["kind"] == "forwarded"]
    assert (
        shuttled["verified"] == "signed by castro"
        and "forwarded verbatim by u-thant" in (shuttled["text"])
    )
    # A proposal made to the mediator goes on verbatim only with consent too.
    offer = castro.json(
        "propose", "u-thant", "--title", "Inspection", "--term", "UN inspectors may visit.",
    )  # fmt: skip
    thant.inbox()
    assert "has not consented" in thant.fails("forward", offer["id"], "--to", "khrushchev")
    assert "anyone they choose" in castro.ok("consent", offer["id"][:12], "--anyone")
    thant.inbox()
    thant.ok("forward", offer["id"], "--to", "khrushchev")
    (passed_on,) = [
        m for m in khrushchev.inbox() if m["kind"] == "forwarded" and "Inspection" in m["text"]
    ]
    assert passed_on["verified"] == "signed by castro"
    own = thant.json(
        "forward", letter, "--to", "kennedy", "--as-own",
        "--text", "I believe inspection could be arranged with guarantees on both sides.",
    )  # fmt: skip
    assert own["verbatim"] is False and own["original"] == letter
    (reworded,) = [m for m in kennedy.inbox() if m["kind"] == "letter"]
    assert (reworded["from"], reworded["verified"]) == ("u-thant", "signed")
    assert "castro" not in reworded["text"].lower() and letter not in json.dumps(reworded)

    # A simultaneous exchange through U Thant: neither side can read the other's offer early.
    mine = kennedy.json(
        "propose", "khrushchev", "--via", "u-thant", "--simultaneous",
        "--title", "No invasion of Cuba", "--term", "The United States will not invade Cuba.",
    )  # fmt: skip
    assert [p["id"] for p in khrushchev.json("proposals")] == []
    thant.inbox("--hold")
    (held,) = thant.json("exchange", "list")
    assert held["status"] == "waiting for khrushchev"
    assert "is waiting for khrushchev" in thant.fails("exchange", "release", held["id"])
    theirs = khrushchev.json(
        "propose", "kennedy", "--via", "u-thant", "--simultaneous",
        "--title", "Missiles out of Cuba", "--term", "The missiles are removed under UN watch.",
    )  # fmt: skip
    assert mine["id"] not in [
        p["id"] for p in khrushchev.json("proposals") if p["from"] != "khrushchev"
    ]
    thant.inbox("--hold")
    (ready,) = thant.json("exchange", "list")
    assert ready["status"] == "ready"
    assert {o["title"] for o in ready["offers"]} == {"No invasion of Cuba", "Missiles out of Cuba"}
    assert "Released" in thant.ok("exchange", "release", theirs["id"][:8])
    got = {p["id"]: p for p in kennedy.json("proposals")}
    assert got[theirs["id"]]["title"] == "Missiles out of Cuba"
    seen = {p["id"]: p for p in khrushchev.json("proposals")}
    assert seen[mine["id"]]["title"] == "No invasion of Cuba"
    note = [m for m in khrushchev.inbox() if m["kind"] == "proposal"]
    assert note and "simultaneous exchange" in note[0]["text"]
    assert khrushchev.json("accept", mine["id"])["status"] == "accepted"

    # Injects at their scenario times: 8 o'clock start at 60x -> speed it up to reach 19:00.
    control(relay, "clock", "speed", "10000")  # 11 scenario hours in about 4 s
    control(relay, "clock", "resume")
    eventually(
        lambda: any("quarantine" in m["text"] for m in dobrynin.inbox() if m["kind"] == "inject"),
        15,
        "the quarantine inject",
    )
    control(relay, "clock", "set", "1962-10-28T10:00:00-04:00")
    control(relay, "clock", "pause")
    titles = [m["text"].splitlines()[0] for m in castro.inbox() if m["kind"] == "inject"]
    assert any("U-2" in t for t in titles) and any("Radio Moscow" in t for t in titles)
    delivered = control(relay, "status")["injects"]
    assert all(i["delivered"] for i in delivered) and len(delivered) == 4


def test_the_readme_order_invites_first_then_the_scenario(make_relay: Any, home: Path) -> None:
    """The walkthrough's order: control hands out invites by hand, Kennedy, Khrushchev and
    U Thant register, then control loads cuba-1962. They are bound to their roles, the others
    get invites; loading it again prints the invites still open instead of failing."""
    relay = make_relay("readme-order", *GENEROUS)
    early = {}
    for name, kind in (("kennedy", "party"), ("khrushchev", "party"), ("u-thant", "mediator")):
        early[name] = User(home, name)
        early[name].init(relay)
        early[name].register(relay, kind)
    store = ["--data-dir", str(relay.data_dir)]

    first = CliRunner().invoke(relay_main, ["exercise", "load", "cuba-1962", *store])
    assert first.exit_code == 0, first.output
    assert first.stderr.splitlines() == [
        f"backchannel-relay: store is the SQLite file {relay.data_dir / 'relay.sqlite3'}"
    ]
    lines = first.stdout.splitlines()
    assert lines[0].startswith("exercise cuba-1962: ") and lines[1].startswith("clock paused at")
    for name in early:
        assert any(
            line.startswith(f"{name} (") and line.endswith("registered already; bound to the role")
            for line in lines
        ), first.stdout
    invites = {}
    for line in lines:
        if (found := re.fullmatch(r"invite for ([a-z-]+) \(.*\): ([0-9a-f]+)", line)) is not None:
            invites[found[1]] = found[2]
    assert set(invites) == {"castro", "dobrynin"}

    castro = User(home, "castro")
    castro.init(relay)
    assert castro.json("register", invites["castro"])["role"] == "party"
    assert early["kennedy"].json("exercise")["role"]["name"] == "kennedy"

    again = CliRunner().invoke(relay_main, ["exercise", "load", "cuba-1962", *store])
    assert again.exit_code == 0, again.output
    assert "(loaded already)" in again.stdout.splitlines()[0]
    reprinted = [line for line in again.stdout.splitlines() if line.startswith("invite for ")]
    assert len(reprinted) == 1 and reprinted[0].startswith("invite for dobrynin (party, ")
    assert "no longer work" in again.stdout
    assert any(line.startswith("castro (") for line in again.stdout.splitlines())
    # The invite printed first for Dobrynin was replaced; the new one works.
    dobrynin = User(home, "dobrynin")
    dobrynin.init(relay)
    assert "the invite is unknown or already used" in dobrynin.fails(
        "register", invites["dobrynin"]
    )
    dobrynin.ok("register", reprinted[0].rsplit(" ", 1)[-1])
    status = control(relay, "status")
    assert all(role["registered"] for role in status["roles"])
