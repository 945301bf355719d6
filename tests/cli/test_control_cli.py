"""Control's page on the command line (issue 18): `backchannel-relay exercise injects`, `inject
release|skip|edit|add`, `invite`, `actions`, `room`, each with --json and one-line errors,
each change logged under the controller's name (`--as`, else $BACKCHANNEL_CONTROLLER), and
what it does reaching the participants' own client: a release at once, a skip never, an edit
as edited."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from backchannel_relay.cli import main as relay_main

from .conftest import GENEROUS, Relay, User, assert_one_error_line
from .test_exercises import control


def refused(relay: Relay, *args: str, env: dict[str, str] | None = None) -> tuple[str, Any]:
    """-> (the one error line, the --json error object) of a control command that must fail."""
    store = ["--data-dir", str(relay.data_dir)]
    if "--database" in relay.extra:
        store += ["--database", relay.extra[relay.extra.index("--database") + 1]]
    plain = CliRunner().invoke(relay_main, ["exercise", *args, *store], env=env)
    assert plain.exit_code != 0, plain.output
    line = assert_one_error_line(plain.output)
    coded = CliRunner().invoke(relay_main, ["exercise", *args, *store, "--json"], env=env)
    assert coded.exit_code != 0
    return line, json.loads(coded.stdout)


def injects_of(user: User) -> dict[str, str]:
    """The injects `user` has received: first line (the title) -> the rest."""
    found = {}
    for message in user.inbox():
        if message["kind"] == "inject":
            title, _, text = message["text"].partition("\n")
            found[title.split(" (scenario time ")[0]] = text
    return found


def test_control_runs_the_schedule_from_the_command_line(
    make_relay: Any, store: tuple[str, ...], home: Path
) -> None:
    relay = make_relay("control-cli", *GENEROUS, *store)
    loaded = control(relay, "load", "cuba-1962")
    invites = {r["name"]: r["invite"] for r in loaded["roles"]}
    kennedy = User(home, "kennedy")
    kennedy.init(relay)
    kennedy.json("register", invites["kennedy"])

    schedule = control(relay, "injects")["injects"]
    assert [(i["number"], i["status"], i["by"]) for i in schedule] == [
        (n, "scheduled", None) for n in (1, 2, 3, 4)
    ]
    assert schedule[0]["scenario_time"] == "1962-10-22 19:00 -04:00"

    released = control(relay, "inject", "release", "1", "--as", "ann")["inject"]
    assert (released["number"], released["status"], released["by"]) == (1, "released", "ann")
    assert released["scenario_time"] == "1962-10-22 08:00 -04:00"  # the paused clock's now
    got = injects_of(kennedy)
    assert len(got) == 1 and "quarantine" in next(iter(got)).lower()

    line, coded = refused(relay, "inject", "release", "1")
    assert "released already" in line and coded["error"] == "inject_done"
    line, coded = refused(relay, "inject", "edit", "9", "--text", "x")
    assert coded["error"] == "unknown_inject"
    line, coded = refused(relay, "inject", "add", "--at", "soon", "--to", "all", "--title", "t",
                          "--text", "x")  # fmt: skip
    assert "UTC offset" in line and coded["error"] == "invalid_argument"
    line, coded = refused(relay, "inject", "add", "--at", "1962-10-23T09:00:00-04:00",
                          "--to", "nobody", "--title", "t", "--text", "x")  # fmt: skip
    assert "'nobody', which is not a role" in line and coded["error"] == "invalid_field"

    skipped = CliRunner().invoke(
        relay_main,
        ["exercise", "inject", "skip", "2", "--data-dir", str(relay.data_dir),
         *_database(relay), "--json"],
        env={"BACKCHANNEL_CONTROLLER": "bo"},
    )  # fmt: skip
    assert skipped.exit_code == 0, skipped.output
    assert json.loads(skipped.stdout)["inject"]["by"] == "bo"

    added = control(
        relay,
        "inject",
        "add",
        "--at",
        "1962-10-23T09:00:00-04:00",
        "--to",
        "kennedy",
        "--title",
        "<b>Flash</b>",
        "--text",
        "first",
        "--as",
        "cy",
    )
    assert (added["inject"]["number"], added["inject"]["by"]) == (5, "cy")
    edited = control(relay, "inject", "edit", "5", "--text", "second <i>words</i>", "--as", "di")
    assert edited["inject"]["edited_by"] == "di"
    clock = control(relay, "clock", "set", "1962-10-26T09:00:00-04:00", "--as", "ed")
    assert clock["paused"] is True
    got = injects_of(kennedy)
    assert got.get("<b>Flash</b>") == "second <i>words</i>"
    assert not any("quarantine is in force" in title.lower() for title in got)  # skipped

    invited = control(relay, "invite", "castro", "--as", "fy")
    assert invited["role"] == "castro" and len(invited["invite"]) == 32
    line, coded = refused(relay, "invite", "kennedy")
    assert "registered already" in line and coded["error"] == "registered"

    logged = control(relay, "actions")["actions"]
    assert [(a["by"], a["action"]) for a in logged] == [
        ("ann", "release"),
        ("bo", "skip"),
        ("cy", "add"),
        ("di", "edit"),
        ("ed", "clock"),
        ("fy", "invite"),
    ]
    assert logged[-1]["detail"] == {"role": "castro", "expires_at": invited["expires_at"]}
    text = CliRunner().invoke(
        relay_main, ["exercise", "actions", "--data-dir", str(relay.data_dir), *_database(relay)]
    )
    assert text.exit_code == 0 and "ann: release inject 1" in text.stdout
    table = CliRunner().invoke(
        relay_main, ["exercise", "injects", "--data-dir", str(relay.data_dir), *_database(relay)]
    )
    assert "[skipped by bo]" in table.stdout and "[released by cy, edited by di]" in table.stdout

    # The page's whole view, on the command line (the same function as GET /v1/control/state).
    room = control(relay, "room")
    assert set(room) == {"exercise", "title", "version", "roles", "clock", "injects", "traffic",
                         "store", "deadlines", "actions", "health"}  # fmt: skip
    assert {r["name"]: r["registered"] for r in room["roles"]}["kennedy"] is True
    assert [a["by"] for a in room["actions"]][:2] == ["fy", "ed"]  # newest first, as the page
    assert set(room["health"]) == {"queued_envelopes", "disk_free_bytes", "store"}
    said = CliRunner().invoke(
        relay_main, ["exercise", "room", "--data-dir", str(relay.data_dir), *_database(relay)]
    )
    assert said.exit_code == 0, said.output
    assert (
        "kennedy (party): registered" in said.stdout
        and "castro (party): invite open" in said.stdout
    )
    assert "<b>Flash</b>" in said.stdout and "envelope(s) waiting" in said.stdout


def _database(relay: Relay) -> list[str]:
    if "--database" in relay.extra:
        return ["--database", relay.extra[relay.extra.index("--database") + 1]]
    return []


def test_wipe_destroys_the_control_log(make_relay: Any, store: tuple[str, ...]) -> None:
    relay = make_relay("control-wipe", *GENEROUS, *store)
    control(relay, "load", "cuba-1962")
    control(relay, "inject", "skip", "3", "--as", "ann")
    control(relay, "clock", "resume", "--as", "ann")
    assert len(control(relay, "actions")["actions"]) == 2
    relay.stop()
    wiped = CliRunner().invoke(
        relay_main,
        ["wipe", "--yes", "--json", "--data-dir", str(relay.data_dir), *_database(relay)],
    )
    assert wiped.exit_code == 0, wiped.output
    assert json.loads(wiped.stdout)["destroyed"]["control_actions"] == 2
    line, coded = refused(relay, "actions")
    assert coded["error"] == "which_exercise" and "no exercise is loaded" in line


def test_deadlines_show_no_more_than_the_class_lets_control_see(
    make_relay: Any, home: Path
) -> None:
    """An open proposal's deadline, in scenario time, naming its sides only where the pair's
    letter class shows control the envelope: Kennedy-Khrushchev (record, envelope) yes;
    Khrushchev-Castro (confidential, existence) not at all."""
    relay = make_relay("control-deadlines", *GENEROUS)
    loaded = control(relay, "load", "cuba-1962")
    invites = {r["name"]: r["invite"] for r in loaded["roles"]}
    users = {}
    for name in ("kennedy", "khrushchev", "castro", "u-thant"):
        users[name] = User(home, name)
        users[name].init(relay)
        users[name].json("register", invites[name])
    seen = users["kennedy"].json(
        "propose", "khrushchev", "--title", "Seen", "--term", "t1", "--expires", "2h"
    )
    hidden = users["khrushchev"].json(
        "propose", "castro", "--title", "Hidden", "--term", "t2", "--expires", "2h"
    )
    assert hidden["notary"]["seq"] > seen["notary"]["seq"]  # notarised, with its expiry
    mediated = users["castro"].json(  # through U Thant, as the scenario routes Castro-Kennedy
        "propose", "kennedy", "--title", "Mediated", "--term", "t3", "--expires", "2h"
    )

    token = next(
        line.rsplit(" ", 1)[-1]
        for line in relay.log.read_text().splitlines()
        if line.startswith("Admin token")
    )
    request = urllib.request.Request(
        relay.url + "/v1/control/state", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        state = json.loads(response.read())
    mine, deadline = state["deadlines"]  # newest first
    assert (mine["id"], mine["from"], mine["to"], mine["via"]) == (
        mediated["commitment"], "castro", ["kennedy"], "u-thant",
    )  # fmt: skip
    assert (deadline["kind"], deadline["from"], deadline["to"], deadline["via"]) == (
        "proposal",
        "kennedy",
        ["khrushchev"],
        None,
    )
    assert deadline["deadline"] >= state["clock"]["scenario_now"]
    assert deadline["scenario_time"].endswith("-04:00") and seen["title"] == "Seen"
    assert hidden["commitment"] not in json.dumps(state["deadlines"])  # Khrushchev-Castro: counted
