"""Observers end to end through the CLI: they read injects and communiqués, send nothing, and see
a party's traffic only through the view control grants, never more than control may see."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from backchannel_relay.cli import main as relay_main
from tests.relay.test_exercises import SCENARIO, role

from .conftest import GENEROUS, Relay, assert_one_error_line, eventually
from .test_exercises import control, load


def control_fails(relay: Relay, *args: str) -> str:
    store = ["--data-dir", str(relay.data_dir)]
    if "--database" in relay.extra:
        store += ["--database", relay.extra[relay.extra.index("--database") + 1]]
    result = CliRunner().invoke(relay_main, ["exercise", *args, *store])
    assert result.exit_code != 0
    return assert_one_error_line(result.output)


def test_an_observer_sees_a_party_only_as_control_may(
    make_relay: Any, store: tuple[str, ...], home: Path
) -> None:
    relay = make_relay("observe", *GENEROUS, *store)
    tag = os.urandom(3).hex()
    names = {k: f"{k}-{tag}" for k in ("a", "b", "c", "m", "o")}
    kinds = (("a", "party"), ("b", "party"), ("c", "party"), ("m", "mediator"), ("o", "observer"))
    roles = "".join(role(names[k], kind) for k, kind in kinds)
    channels = (  # a and b: record envelope (the default); a and m: existence; b and m:
        # nothing; a and c (through m): content
        f'[channels]\n[[channels.pairs]]\nbetween = ["{names["a"]}", "{names["m"]}"]\n'
        'record = "existence"\n'
        f'[[channels.pairs]]\nbetween = ["{names["b"]}", "{names["m"]}"]\nrecord = "nothing"\n'
        f'[[channels.pairs]]\nbetween = ["{names["a"]}", "{names["c"]}"]\nrecord = "content"\n'
    )
    text = SCENARIO.format(name=f"obs-{tag}", roles=roles, **names)
    text = text.replace("[[injects]]", channels + "[[injects]]", 1)
    text += '[[injects]]\nat = "1962-10-22T09:30:00-04:00"\nto = ["observers"]\n' \
        'title = "For observers"\ntext = "Only the observer reads this."\n'  # fmt: skip
    users = load(relay, home, text)
    a, b, c, m, o = (users[names[k]] for k in "abcmo")
    exercise = f"obs-{tag}"

    # Without a grant the observer sees nothing of anyone's traffic.
    assert "no view of a party" in o.fails("observe")
    # Control's refusals: not an observer, not a party, neither --as nor --stop.
    assert "not an observer" in control_fails(relay, "observe", a.name, "--as", b.name)
    assert "not a party" in control_fails(relay, "observe", o.name, "--as", o.name)
    assert "--as PARTY or --stop" in control_fails(relay, "observe", o.name)

    b.json("send", a.name, "SECRET-1 from b to a.")
    a.json("send", b.name, "SECRET-2 from a to b.")
    a.json("send", m.name, "SECRET-3 from a to m.")
    b.json("send", m.name, "SECRET-4 from b to m.")
    a.json("send", c.name, "Readable by control: from a to c.")
    granted = control(relay, "observe", o.name, "--as", a.name)
    assert (granted["observer"], granted["party"], granted["exercise"]) == (
        o.name, a.name, exercise,
    )  # fmt: skip
    assert "no view of a party" in b.fails("observe")  # a party is no observer
    shown = o.run("observe", "--json")
    assert shown.exit_code == 0, shown.output
    assert "SECRET" not in shown.output  # no more than control sees
    seen = json.loads(shown.stdout)
    assert (seen["party"], seen["truncated"]) == (a.name, False)
    letters = [(x["from"], x["to"], x["class"], x.get("text")) for x in seen["letters"]]
    assert letters == [
        (b.name, a.name, "record", None), (a.name, b.name, "record", None),
        (a.name, c.name, "record", "Readable by control: from a to c."),
    ]  # fmt: skip
    assert all(x["at"] > 0 for x in seen["letters"])
    assert seen["letters"][2]["verified"] == "signed"
    assert seen == {**seen, **{k: v for k, v in control(relay, "traffic").items()
                                if k == "control_sees"}}  # fmt: skip
    plain = o.ok("observe")
    assert f"record {b.name} -> {a.name}\n" in plain
    assert f"record {a.name} -> {c.name} [signed]: Readable by control" in plain
    assert m.name not in plain and "SECRET" not in plain

    # Viewing b instead: a-b envelope, b-m nothing.
    control(relay, "observe", o.name, "--as", b.name)
    seen = o.json("observe")
    assert [(x["from"], x["to"]) for x in seen["letters"]] == [(b.name, a.name), (a.name, b.name)]

    # Revoked: nothing again.
    assert control(relay, "observe", o.name, "--stop")["stopped"] is True
    assert "no view of a party" in o.fails("observe")

    # Still refused on sending routes; still reads injects (to all, to it) and communiqués.
    assert "no channel" in o.fails("send", a.name, "hello")  # the client knows the policy
    assert "no one to write to" in o.fails("communique", "hello", "--yes")
    b.json("communique", "Radio Moscow.", "--yes")
    control(relay, "clock", "set", "1962-10-22T09:45:00-04:00", "--exercise", exercise)

    def read() -> list[Any]:
        return [x for x in o.inbox() if x["kind"] in ("inject", "communique")]

    got: list[Any] = []
    eventually(lambda: len(got.__iadd__(read())) >= 3, 10, "injects and a communiqué")
    assert sorted(x["kind"] for x in got) == ["communique", "inject", "inject"]
    assert any("Only the observer reads this." in x["text"] for x in got)
    # Addressed to "observers": no party or mediator reads it.
    for other in (a, m):
        assert not any("Only the observer" in x["text"] for x in other.json("history"))
