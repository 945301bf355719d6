"""What control sees of letters, end to end (PROTOCOL.md §16.11): each letter class with each
`control_sees` value, from control's side (`backchannel-relay exercise traffic` and the rows in
the store: exactly that much) and from the participants' (the class and value on the letter)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from backchannel_relay.cli import main as relay_main
from tests.relay.test_exercises import role

from .conftest import GENEROUS, Relay, assert_one_error_line
from .test_exercises import control, load
from .test_offrecord_traces import rows

SCENARIO = """
schema = 1
[exercise]
name = "{name}"
title = "Letters and what control sees"
brief = "Five parties."
[clock]
start = "1962-10-22T08:00:00-04:00"
{roles}
[policy]
direct = [["{a}", "{b}"], ["{a}", "{c}"], ["{a}", "{d}"], ["{a}", "{e}"], ["{b}", "{c}"],
          ["{b}", "{d}"]]
[channels]
letters = "confidential"
[[channels.pairs]]
between = ["{a}", "{b}"]
confidential = "content"
[[channels.pairs]]
between = ["{a}", "{c}"]
confidential = "envelope"
[[channels.pairs]]
between = ["{a}", "{d}"]
confidential = "existence"
[[channels.pairs]]
between = ["{a}", "{e}"]
confidential = "nothing"
off_the_record = "nothing"
[[channels.pairs]]
between = ["{b}", "{c}"]
letters = "record"
record = "content"
[[channels.pairs]]
between = ["{b}", "{d}"]
letters = "record"
"""


def test_control_sees_exactly_what_each_class_allows(
    make_relay: Any, store: tuple[str, ...], home: Path
) -> None:
    relay = make_relay("traffic", *GENEROUS, *store)
    tag = os.urandom(3).hex()
    names = {k: f"{k}-{tag}" for k in "abcde"}
    roles = "".join(role(names[k], "party") for k in "abcde")
    exercise = f"letters-{tag}"
    users = load(relay, home, SCENARIO.format(name=exercise, roles=roles, **names))
    a, b, c, d, e = (users[names[k]] for k in "abcde")

    sent = {
        (a, b): ("confidential", "content", f"content canary {tag}"),
        (a, c): ("confidential", "envelope", f"envelope canary {tag}"),
        (a, d): ("confidential", "existence", f"existence canary {tag}"),
        (a, e): ("confidential", "nothing", f"nothing canary {tag}"),
        (b, c): ("record", "content", f"record content canary {tag}"),
        (b, d): ("record", "envelope", f"record envelope canary {tag}"),
    }
    for (sender, to), (channel_class, sees, text) in sent.items():
        shown = sender.json("send", to.name, text)
        assert (shown["class"], shown["control_sees"]) == (channel_class, sees)
        (got,) = [m for m in to.inbox() if m["kind"] == "letter"]  # what the reader is told
        assert (got["class"], got["control_sees"], got["text"]) == (channel_class, sees, text)
    a.json("send", d.name, f"existence canary two {tag}")
    a.ok("otr", "open", b.name, "--ttl", "10m")  # off the record: existence, counted
    a.ok("otr", "open", e.name, "--ttl", "10m")  # nothing: not even counted
    assert "[confidential; control sees content]" in b.ok("history", a.name)

    # Control's side: the text where it sees content, the envelope where it sees that, a count
    # where it sees existence, and nothing at all of a -> e.
    seen = control(relay, "traffic", "--exercise", exercise)
    letters = [{k: v for k, v in entry.items() if k not in ("at", "sent_at", "message_id")}
               for entry in seen["letters"]]  # fmt: skip
    assert letters == [
        {"class": "confidential", "from": a.name, "to": b.name,
         "text": f"content canary {tag}", "verified": "signed"},
        {"class": "confidential", "from": a.name, "to": c.name},
        {"class": "record", "from": b.name, "to": c.name,
         "text": f"record content canary {tag}", "verified": "signed"},
        {"class": "record", "from": b.name, "to": d.name},
    ]  # fmt: skip
    assert seen["counts"] == {"confidential": 2, "off_the_record": 1}
    plain = ["exercise", "traffic", "--exercise", exercise, "--data-dir", str(relay.data_dir),
             *store]  # fmt: skip
    said = CliRunner().invoke(relay_main, plain)
    assert said.exit_code == 0, said.output
    assert f"confidential {a.name} -> {b.name} [signed]: content canary {tag}" in said.output
    assert f"confidential {a.name} -> {c.name}\n" in said.output
    assert "confidential: 2 letter(s), no more known" in said.output
    assert "off the record: 1 channel(s) opened, no more known" in said.output
    assert e.name not in said.output and "envelope canary" not in said.output

    # The store holds no more: no row naming d or e, no copy but for content, counts only.
    traffic = rows(relay, store, "control_traffic")
    assert {(r["sender"], r["recipient"], r["copy"] is not None) for r in traffic} == {
        (a.name, b.name, True), (a.name, c.name, False), (b.name, c.name, True),
        (b.name, d.name, False),
    }  # fmt: skip
    counted = {(r["channel_class"], r["count"]) for r in rows(relay, store, "control_counts")}
    assert counted == {("confidential", 2), ("off_the_record", 1)}
    for r in traffic:
        assert tag.encode() not in (r["copy"] or b"")  # sealed, not plain


def test_a_cli_error_for_a_bad_traffic_command_is_one_line(make_relay: Any, home: Path) -> None:
    relay = make_relay("traffic-bad", *GENEROUS)
    result = CliRunner().invoke(relay_main, ["exercise", "traffic", "--data-dir",
                                             str(relay.data_dir)])  # fmt: skip
    assert result.exit_code != 0
    assert "no exercise is loaded" in assert_one_error_line(result.output)


def test_cuba_1962_letters_between_kennedy_and_dobrynin_are_sealed_to_control(
    make_relay: Any, home: Path
) -> None:
    """The shipped scenario: Kennedy-Dobrynin letters are confidential and control reads them;
    Khrushchev's letters to Castro are confidential and control only counts them."""
    relay = make_relay("traffic-cuba", *GENEROUS)
    users = load(relay, home, "cuba-1962")
    kennedy, dobrynin = users["kennedy"], users["dobrynin"]
    khrushchev, castro = users["khrushchev"], users["castro"]
    told = kennedy.json("send", "dobrynin", "The President will not object to the Jupiters.")
    assert (told["class"], told["control_sees"]) == ("confidential", "content")
    told = khrushchev.json("send", "castro", "Do not let yourself be carried away.")
    assert (told["class"], told["control_sees"]) == ("confidential", "existence")
    told = kennedy.json("send", "khrushchev", "Missiles out, no invasion.")
    assert (told["class"], told["control_sees"]) == ("record", "envelope")
    shown = kennedy.ok("exercise")
    assert "you may write to dobrynin directly, in confidential letters" in shown
    assert "with dobrynin: record envelope, confidential content, off the record nothing" in shown
    seen = control(relay, "traffic", "--exercise", "cuba-1962")
    assert [(e["class"], e["from"], e["to"], e.get("text")) for e in seen["letters"]] == [
        ("confidential", "kennedy", "dobrynin", "The President will not object to the Jupiters."),
        ("record", "kennedy", "khrushchev", None),
    ]
    assert seen["counts"] == {"confidential": 1}
    assert [m["class"] for m in dobrynin.inbox() if m["kind"] == "letter"] == ["confidential"]
    assert [m["class"] for m in castro.inbox() if m["kind"] == "letter"] == ["confidential"]


def test_a_letter_and_its_report_wait_together_while_the_relay_is_down(
    own_relay: Relay, home: Path
) -> None:
    """The report to control is queued with its letter (issue 15's rule holds in an exercise):
    the relay out of reach keeps both, the next command sends both, and control has the letter
    once, though the report was posted again after an outage that ended the first try."""
    tag = os.urandom(3).hex()
    names = {k: f"{k}-{tag}" for k in "abcde"}
    roles = "".join(role(names[k], "party") for k in "abcde")
    exercise = f"outage-{tag}"
    users = load(own_relay, home, SCENARIO.format(name=exercise, roles=roles, **names))
    a, b, c = (users[names[k]] for k in "abc")
    a.json("send", b.name, f"before {tag}")
    a.json("send", c.name, f"envelope before {tag}")  # a session: no bundle needed offline
    own_relay.stop()
    line = a.fails("send", b.name, f"during {tag}")
    assert "saved as" in line and "goes out with your next command" in line
    assert "saved as" in a.fails("send", c.name, f"envelope during {tag}")
    assert [m["status"] for m in a.json("outbox")] == ["pending", "pending"]
    own_relay.start()
    a.ok("inbox")  # any command sends what waits, reports first
    assert a.json("outbox") == []
    assert [m["text"] for m in b.inbox()] == [f"before {tag}", f"during {tag}"]
    seen = control(own_relay, "traffic", "--exercise", exercise)
    assert [(e["to"], e.get("text")) for e in seen["letters"]] == [
        (b.name, f"before {tag}"), (c.name, None), (b.name, f"during {tag}"), (c.name, None),
    ]  # fmt: skip
