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


def test_each_role_is_told_what_control_sees_of_each_class(
    make_relay: Any, store: tuple[str, ...], home: Path
) -> None:
    """`[channels]` sets control_sees per class, a pair may differ; the defaults fill the rest.
    `backchannel exercise` tells each role, per class and per peer; `exercise status` tells
    control; a value a class does not allow is refused on load, naming the field."""
    relay = make_relay("sees", *GENEROUS, *store)
    tag = os.urandom(3).hex()
    names = {k: f"{k}-{tag}" for k in ("a", "b", "c", "m")}
    kinds = (("a", "party"), ("b", "party"), ("c", "party"), ("m", "mediator"))
    roles = "".join(role(names[k], kind) for k, kind in kinds)
    channels = (
        '[channels]\nrecord = "existence"\n'
        f'[[channels.pairs]]\nbetween = ["{names["a"]}", "{names["b"]}"]\n'
        'off_the_record = "nothing"\nconfidential = "nothing"\n'
    )
    text = SCENARIO.format(name=f"mini-{tag}", roles=roles, **names)
    text = text.replace("[[injects]]", channels + "[[injects]]", 1)
    users = load(relay, home, text)
    a, b = users[names["a"]], users[names["b"]]
    defaults = {"record": "existence", "confidential": "existence",
                "off_the_record": "existence", "communique": "content"}  # fmt: skip
    between = {**defaults, "off_the_record": "nothing", "confidential": "nothing"}
    view = a.json("exercise")
    assert view["control_sees"] == {
        "classes": defaults,
        "peers": {names["b"]: between, names["c"]: defaults, names["m"]: defaults},
    }
    assert b.json("exercise")["control_sees"]["peers"] == {names["a"]: between,
                                                          names["m"]: defaults}  # fmt: skip
    shown = a.ok("exercise")
    assert "by default: record existence, confidential existence, off the record existence, " \
        "communique content" in shown  # fmt: skip
    assert f"with {names['b']}: record existence, confidential nothing, off the record nothing" \
        in shown  # fmt: skip
    assert f"with {names['c']}:" not in shown  # the same as the default: not repeated

    status = control(relay, "status", "--exercise", f"mini-{tag}")
    assert status["control_sees"] == {
        "classes": defaults, "letters": "record",
        "pairs": [{"between": sorted([names["a"], names["b"]]),
                   "off_the_record": "nothing", "confidential": "nothing"}],
    }  # fmt: skip
    plain = ["exercise", "status", "--exercise", f"mini-{tag}", "--data-dir", str(relay.data_dir)]
    if "--database" in relay.extra:
        plain += ["--database", relay.extra[relay.extra.index("--database") + 1]]
    said = CliRunner().invoke(relay_main, plain)
    assert said.exit_code == 0, said.output
    assert "control sees: record existence, confidential existence" in said.output
    assert f"between {' and '.join(sorted([names['a'], names['b']]))}: " in said.output

    # What a class cannot promise is refused on load, in one line naming the field.
    path = home.parent / "bad-channels.toml"
    for bad, expected in [
        ('[channels]\noff_the_record = "envelope"\n', "'channels.off_the_record' must be one of"),
        ('[channels]\nrecord = "everything"\n', "'channels.record' must be one of content"),
        ('[channels]\ncommunique = "nothing"\n', "'channels.communique' must be one of content"),
        ('[channels]\nletters = "nothing"\n', "'channels.letters' must be record or confid"),
        ('[channels]\nletter = "record"\n', "'channels.letter' is not a class"),
        ('[[channels.pairs]]\nbetween = ["x", "y"]\n', "'channels.pairs[0].between' names"),
    ]:
        path.write_text(text.replace(f"mini-{tag}", f"bad-{tag}").replace(channels, bad))
        args = ["exercise", "load", str(path), *plain[4:]]
        result = CliRunner().invoke(relay_main, args)
        assert result.exit_code != 0
        assert expected in assert_one_error_line(result.output), result.output


def test_every_message_carries_its_class_what_control_sees_and_what_is_proven(
    make_relay: Any, home: Path
) -> None:
    """inbox, show and history (text and --json) give each message its class and the
    scenario's control_sees for that class and peer, and keep what the keys prove (signer,
    deniable, the mediator it came through) apart from what is only claimed (the role)."""
    relay = make_relay("classes", *GENEROUS)
    tag = os.urandom(3).hex()
    names = {k: f"{k}-{tag}" for k in ("a", "b", "c", "m")}
    kinds = (("a", "party"), ("b", "party"), ("c", "party"), ("m", "mediator"))
    roles = "".join(role(names[k], kind) for k, kind in kinds)
    channels = (
        '[channels]\nrecord = "existence"\n'
        f'[[channels.pairs]]\nbetween = ["{names["a"]}", "{names["b"]}"]\n'
        'off_the_record = "nothing"\n'
    )
    text = SCENARIO.format(name=f"mini-{tag}", roles=roles, **names)
    users = load(relay, home, text.replace("[[injects]]", channels + "[[injects]]", 1))
    a, b, c, m = (users[names[k]] for k in "abcm")

    sent = a.json("send", b.name, "A signed word.")
    assert (sent["class"], sent["control_sees"]) == ("record", "existence")
    assert sent["proven"] == {"signed_by": a.name, "deniable": False, "via": None}
    (letter,) = b.inbox()
    assert (letter["class"], letter["control_sees"]) == ("record", "existence")
    assert letter["proven"] == {"signed_by": a.name, "deniable": False, "via": None}
    assert letter["claimed"] == {"speaks_for": a.name}  # the role's title (the helper's)
    shown = b.ok("show", letter["id"])
    assert "(read; signed) [record; control sees existence]" in shown
    assert f"proven: {a.name}'s key signed it; claimed, not proven: speaks as {a.name}" in shown
    assert "[record; control sees existence]" in b.ok("history", a.name)

    # Through the mediator: proven who signed it and whom it came through.
    a.ok("send", c.name, "Through the mediator.")
    m.inbox()
    (carried,) = c.inbox()
    assert carried["proven"] == {"signed_by": a.name, "deniable": False, "via": m.name}
    assert "came through " + m.name in c.ok("show", carried["id"])

    # Off the record between a and b: control sees nothing, and nothing is proven.
    opened = a.json("otr", "open", b.name, "--ttl", "10m")
    assert (opened["class"], opened["control_sees"]) == ("off_the_record", "nothing")
    b.inbox()
    said = a.json("otr", "send", b.name, "Deniably.")
    assert (said["class"], said["control_sees"]) == ("off_the_record", "nothing")
    assert said["proven"] == {"signed_by": None, "deniable": True, "via": None}
    (otr,) = b.inbox()
    assert (otr["class"], otr["control_sees"], otr["proven"]["deniable"]) == (
        "off_the_record", "nothing", True,
    )  # fmt: skip

    # Control's inject: its own class, signed by control.
    control(relay, "clock", "set", "1962-10-22T09:30:00-04:00", "--exercise", f"mini-{tag}")
    (inject,) = c.inbox()
    assert (inject["class"], inject["control_sees"]) == ("inject", "content")
    assert inject["proven"]["signed_by"] == "control"


def test_no_implicit_broadcast(make_relay: Any, home: Path, monkeypatch: Any) -> None:
    """`send` needs a recipient; `send all` writes to every role the sender may address (one
    letter each, through the mediator where the scenario says), and only when confirmed: on a
    terminal, or with --yes. A role may not be named `all`."""
    from backchannel_cli import cli

    relay = make_relay("broadcast", *GENEROUS)
    _name, users = mini(relay, home)
    a, b, c, m = (users[k] for k in "abcm")
    for nobody in (("send",), ("send", "--json")):
        result = a.run(*nobody)
        assert result.exit_code != 0 and "needs a recipient" in result.output
    (home.parent / "letter.txt").write_text("To whom?")
    assert "needs a recipient" in a.fails("send", "--file", str(home.parent / "letter.txt"))
    assert "recipient once" in a.fails("send", "--to", b.name, b.name, "Hello.")
    line = a.fails("send", "all", "To everyone.")
    assert "no terminal to confirm on" in line and "send all ... --yes" in line
    assert json.loads(a.run("send", "all", "To everyone.", "--json").stdout)["error"] \
        == "no_terminal"  # fmt: skip
    monkeypatch.setattr(cli, "_at_terminal", lambda: True)
    asked = a.run("send", "all", "To everyone.", input="n\n")
    assert asked.exit_code != 0 and f"Send this letter to {b.name}, {c.name}, {m.name}?" \
        in asked.output and "nothing was sent" in asked.output  # fmt: skip
    assert b.inbox() == []
    confirmed = a.run("send", "all", "To everyone, confirmed.", input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    monkeypatch.undo()
    sent = a.json("send", "--to", "all", "To everyone, again.", "--yes")
    assert sorted(s["to"] for s in sent) == sorted([b.name, c.name, m.name])
    assert [x["text"] for x in b.inbox()] == ["To everyone, confirmed.", "To everyone, again."]
    a.json("send", "--to", b.name, "Only to b.")
    assert [x["text"] for x in b.inbox()] == ["Only to b."]
    m.inbox()
    assert len(c.inbox()) == 2  # through the mediator
    assert "neither --reply-to" in a.fails("send", "all", "x", "--reply-to", "abc", "--yes")

    loner = User(home, f"loner-{os.urandom(3).hex()}")
    loner.init(relay)
    loner.register(relay)
    assert "has none; name the recipient" in loner.fails("send", "all", "Hello?", "--yes")

    bad = home.parent / "all.toml"
    bad.write_text(SCENARIO.format(name="x", roles=role("all", "party") + role("b", "party"),
                                   a="all", b="b", c="b", m="b"))  # fmt: skip
    refused = CliRunner().invoke(relay_main, ["exercise", "load", str(bad), "--data-dir",
                                              str(relay.data_dir)])  # fmt: skip
    assert "'all' addresses a group of roles" in assert_one_error_line(refused.output)


def test_a_communique_reaches_every_role_and_control(
    make_relay: Any, store: tuple[str, ...], home: Path, monkeypatch: Any
) -> None:
    """`communique` publishes a signed statement to every role, also those the author has no
    channel to; only when confirmed; each role sees it signed by its author, of class
    communique, which control sees whole (`exercise status`)."""
    from backchannel_cli import cli

    relay = make_relay("communique", *GENEROUS, *store)
    name, users = mini(relay, home)
    a, b, c, m = (users[k] for k in "abcm")
    assert "no terminal to confirm on" in b.fails("communique", "Radio Moscow.")
    monkeypatch.setattr(cli, "_at_terminal", lambda: True)
    declined = b.run("communique", "Radio Moscow.", input="n\n")
    assert declined.exit_code != 0 and "Error: nothing was sent" in declined.output
    monkeypatch.undo()
    assert "empty" in b.fails("communique", "  ", "--yes")
    assert "at most 8000 bytes" in b.fails("communique", "x" * 8001, "--yes")
    published = b.json("communique", "Radio Moscow: the missiles will be crated.", "--yes")
    assert (published["number"], published["class"], published["control_sees"]) == (
        1, "communique", "content",
    )  # fmt: skip
    for reader in (a, c, m):  # c has no channel to b at all: a communiqué is public
        (said,) = [x for x in reader.inbox() if x["kind"] == "communique"]
        assert (said["from"], said["text"]) == (b.name, published["text"])
        assert (said["class"], said["control_sees"]) == ("communique", "content")
        assert said["proven"]["signed_by"] == b.name and said["proven"]["via"] is None
        assert said["verified"] in ("signed", "signed (key not pinned)")
        assert [x for x in reader.inbox() if x["kind"] == "communique"] == []  # once
    assert "[communique; control sees content]" in a.ok("history")
    status = control(relay, "status", "--exercise", name)
    assert status["communiques"] == [{"number": 1, "author": b.name, "at": published["sent_at"],
                                      "text": published["text"]}]  # fmt: skip
