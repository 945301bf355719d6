"""Exercises end to end through the CLI: a scenario loaded by control, its roles registered from
their invites, the channel policy (a refused direct letter, blind forwarding through the
mediator), control's injects at their scenario times, and scenario time shown with wall time."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from backchannel_relay.cli import main as relay_main

from .conftest import GENEROUS, Relay, User, assert_one_error_line, eventually

MINI = """
schema = 1
[exercise]
name = "mini-{tag}"
title = "A small crisis"
brief = "Three parties and a mediator."
[clock]
start = "1962-10-22T08:00:00-04:00"
speed = 3600.0
{roles}
[policy]
direct = [["{a}", "{b}"]]
[[policy.via]]
between = ["{a}", "{c}"]
mediator = "{m}"
[[injects]]
at = "1962-10-22T09:00:00-04:00"
to = ["all"]
title = "News at nine"
text = "Something happened at nine."
"""


def control(relay: Relay, *args: str) -> Any:
    """`backchannel-relay exercise ...` as exercise control runs it, on the relay's store."""
    result = CliRunner().invoke(
        relay_main, ["exercise", *args, "--data-dir", str(relay.data_dir), "--json"]
    )
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
    for role in loaded["roles"]:
        user = User(home, role["name"])
        user.init(relay)
        registered = user.json("register", role["invite"])
        assert registered["role"] == role["kind"]
        users[role["name"]] = user
    return users


def mini(relay: Relay, home: Path) -> tuple[str, dict[str, User]]:
    tag = os.urandom(3).hex()
    names = {k: f"{k}-{tag}" for k in ("a", "b", "c", "m")}
    roles = "".join(
        f'[[roles]]\nname = "{names[k]}"\nkind = "{kind}"\ntitle = "{k}"\nbrief = "{k}."\n'
        for k, kind in (("a", "party"), ("b", "party"), ("c", "party"), ("m", "mediator"))
    )
    users = load(relay, home, MINI.format(tag=tag, roles=roles, **names))
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
    assert inject["text"].startswith("News at nine (scenario time 1962-10-22 09:00 -04:00)")
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
