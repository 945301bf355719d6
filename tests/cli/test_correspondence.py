"""Reviewing and keeping correspondence through a real afternoon, end to end through the CLI:
a refused message blocks nothing (`outbox`), `history` and threads, one ID rule for every
command that takes an ID, and times recorded when a message is sent, never recomputed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .conftest import GENEROUS, Relay, User, participants
from .test_exercises import SCENARIO, control, mini, role


def outsider(relay: Relay, home: Path) -> User:
    (user,) = participants(relay, home, ("outsider", "party"))
    return user


# --- 1. one refused message never blocks a profile ----------------------------------------------


def test_a_refused_letter_is_marked_and_blocks_nothing(make_relay: Any, home: Path) -> None:
    relay = make_relay("refusals", *GENEROUS)
    # a wrote to the stranger before the exercise made a one of its roles (the README's order:
    # invites by hand, then the scenario), so a holds a session and needs no prekey bundle.
    tag = os.urandom(3).hex()
    names = {k: f"{k}-{tag}" for k in ("a", "b", "c", "m")}
    early = User(home, names["a"])
    early.init(relay)
    early.register(relay)
    stranger = outsider(relay, home)
    early.send(stranger, "Before the exercise.")
    stranger.inbox()
    kinds = (("a", "party"), ("b", "party"), ("c", "party"), ("m", "mediator"))
    path = home.parent / "scenario.toml"
    path.write_text(SCENARIO.format(name=f"mini-{tag}", roles="".join(
        role(names[k], kind) for k, kind in kinds), **names))  # fmt: skip
    loaded = control(relay, "load", str(path))
    users = {"a": early}
    for entry in loaded["roles"]:
        if entry["invite"] is not None:
            users[entry["name"][0]] = user = User(home, entry["name"])
            user.init(relay)
            user.json("register", entry["invite"])
    a, b = users["a"], users["b"]
    # The relay re-reads the exercise's roles at most a second after the load (exercises.py).
    deadline = time.monotonic() + 10
    while a.run("exercise").exit_code != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    b.send(a, "A letter waiting for a.")

    # The relay refuses for good: a and the stranger are not roles of one exercise.
    line = a.fails("send", stranger.name, "Across the exercise's border.")
    assert "policy_forbids" in line and "marked refused" in line
    (refused,) = a.json("outbox")
    assert refused["status"] == "refused" and "policy_forbids" in refused["refusal"]
    assert a.json("show", refused["id"])["status"] == "refused"
    assert "REFUSED by the relay" in a.ok("show", refused["id"])

    # Nothing waits behind it: the inbox fetches, other letters go out, and it stays refused.
    (waiting,) = a.inbox()
    assert waiting["text"] == "A letter waiting for a."
    sent = a.send(b, "Received, thank you.")
    assert a.status(sent) in ("sent", "delivered", "read")
    assert [m["text"] for m in b.inbox()] == ["Received, thank you."]
    assert [m["id"] for m in a.json("outbox")] == [refused["id"]]
    assert a.json("show", refused["id"])["status"] == "refused"

    # Retried by hand it is refused again; cancelled, it leaves the outbox for good.
    assert "policy_forbids" in a.fails("outbox", "retry", refused["id"][:6])
    cancelled = a.json("outbox", "cancel", refused["id"][:6].upper())
    assert cancelled["status"] == "cancelled"
    assert a.json("outbox") == []
    assert "not in the outbox" in a.fails("outbox", "cancel", refused["id"])
    assert "empty" in a.ok("outbox")


def test_a_letter_queued_while_the_relay_is_down_goes_out_later(
    own_relay: Relay, home: Path
) -> None:
    kennedy, khrushchev = participants(own_relay, home, ("kennedy", "party"),
                                       ("khrushchev", "party"))  # fmt: skip
    kennedy.send(khrushchev, "Before the outage.")
    own_relay.stop()
    line = kennedy.fails("send", khrushchev.name, "During the outage.")
    assert "saved as" in line and "goes out with your next command" in line
    (queued,) = kennedy.json("outbox")
    assert queued["status"] == "pending" and queued["refusal"] is None
    own_relay.start()
    kennedy.inbox()  # any command sends what waits
    assert kennedy.json("outbox") == []
    assert kennedy.status(queued["id"]) in ("sent", "delivered")
    assert [m["text"] for m in khrushchev.inbox()] == ["Before the outage.", "During the outage."]


# --- 2. reviewing the correspondence -----------------------------------------------------------


def test_history_holds_letters_proposals_and_forwards_in_order_with_threads(
    relay: Relay, home: Path
) -> None:
    kennedy, khrushchev, thant = participants(
        relay, home, ("kennedy", "party"), ("khrushchev", "party"), ("u-thant", "mediator")
    )
    first = khrushchev.send(kennedy, "The first letter.")
    (received,) = kennedy.inbox()
    reply = kennedy.send(khrushchev, "Our answer.", "--reply-to", received["id"][:8])
    khrushchev.inbox()
    again = khrushchev.send(kennedy, "And to that.", "--reply-to", reply)
    kennedy.inbox()
    offer = khrushchev.json("propose", kennedy.name, "--title", "Missiles out", "--term", "Out.")
    kennedy.inbox()
    kennedy.json("accept", offer["id"][:8])
    khrushchev.inbox()
    via = kennedy.send(thant, "For Khrushchev's eyes.", "--may-forward", khrushchev.name)
    thant.inbox()
    thant.json("forward", via[:8], "--to", khrushchev.name)
    khrushchev.inbox()

    everything = khrushchev.json("history")
    kinds = [(m["direction"], m["kind"]) for m in everything]
    assert kinds[:3] == [("out", "letter"), ("in", "letter"), ("out", "letter")]
    assert ("out", "proposal") in kinds and ("in", "statement") in kinds
    assert kinds[-1] == ("in", "forwarded")
    assert [m["sent_at"] for m in everything] == sorted(m["sent_at"] for m in everything)
    by_id = {m["id"]: m for m in everything}
    assert by_id[reply]["in_reply_to"] == first and by_id[again]["in_reply_to"] == reply
    assert by_id[reply]["verified"] == "signed" and by_id[reply]["status"] == "read"

    # Filters: a peer, a kind, a time range.
    with_thant = khrushchev.json("history", thant.name)
    assert [m["kind"] for m in with_thant] == ["forwarded"]
    letters = khrushchev.json("history", "--kind", "letter")
    assert [m["text"] for m in letters] == ["The first letter.", "Our answer.", "And to that."]
    assert khrushchev.json("history", "--since", "2h", "--kind", "letter") == letters
    assert khrushchev.json("history", "--until", "2000-01-01T00:00") == []
    assert "not one of" in khrushchev.fails("history", "--kind", "telegram")
    assert "No messages with" in khrushchev.ok("history", "nobody-here")
    human = khrushchev.ok("history", kennedy.name, "--kind", "letter").splitlines()
    assert len(human) == 3 and "<-" in human[1] and f"re {first[:12]}" in human[1]

    # `show` shows the thread a letter belongs to, both ways along the replies.
    shown = khrushchev.json("show", reply)
    assert [m["id"] for m in shown["thread"]] == [first, reply, again]
    text = khrushchev.ok("show", first[:6])
    assert "Thread:" in text and text.count("\n * ") + text.count("\n   ") >= 3


# --- 3. one ID rule everywhere -----------------------------------------------------------------


def test_every_command_takes_a_full_id_or_a_unique_prefix_in_any_case(
    relay: Relay, home: Path, tmp_path: Path
) -> None:
    kennedy, khrushchev, thant = participants(
        relay, home, ("kennedy", "party"), ("khrushchev", "party"), ("u-thant", "mediator")
    )
    letter = khrushchev.send(kennedy, "A letter.")
    kennedy.inbox()
    prefix = letter[:5].upper()
    assert kennedy.json("show", prefix)["id"] == letter
    assert kennedy.json("send", khrushchev.name, "Re.", "--reply-to", prefix)["in_reply_to"] == (
        letter
    )
    assert kennedy.json("ack", prefix)["status"] == "acknowledged"
    for bad in ("ab", "xyz!", "0"):
        assert "4 or more hex digits" in kennedy.fails("show", bad)
        assert "4 or more hex digits" in kennedy.fails("send", khrushchev.name, "x",
                                                        "--reply-to", bad)  # fmt: skip

    first = khrushchev.json("propose", kennedy.name, "--title", "First", "--term", "One.")
    second = khrushchev.json(
        "propose", kennedy.name, "--title", "Second", "--term", "Two.",
        "--if", first["id"][:6].upper(),
    )  # fmt: skip
    assert second["conditions"] == [first["id"]]
    (carried_first, _) = [m for m in kennedy.inbox() if m["kind"] == "proposal"]
    # The id of the message that carried a proposal names the proposal too.
    assert kennedy.json("show", carried_first["id"][:7])["id"] == first["id"]
    accepted = kennedy.json("accept", second["id"][:6], "--with", carried_first["id"][:6])
    assert accepted["status"] == "accepted"
    out = tmp_path / "record.json"
    kennedy.ok("export", first["id"][:6].upper(), "--out", str(out))
    assert json.loads(out.read_text())

    # Consent and forward: the consent notice quotes an id the forward takes.
    to_thant = kennedy.send(thant, "Pass this on, please.")
    kennedy.json("consent", to_thant[:6], "--to", khrushchev.name)
    notices = {m["kind"]: m for m in thant.inbox()}
    quoted = notices["consent"]["text"].split("their message ")[1].split()[0]
    done = thant.json("forward", quoted, "--to", khrushchev.name)
    assert done["verbatim"] is True and done["original"] == to_thant

    # A simultaneous exchange, released by an offer's prefix.
    kennedy.json("propose", khrushchev.name, "--via", thant.name, "--simultaneous",
                 "--title", "Ours", "--term", "A.")  # fmt: skip
    khrushchev.json("propose", kennedy.name, "--via", thant.name, "--simultaneous",
                    "--title", "Theirs", "--term", "B.")  # fmt: skip
    thant.inbox("--hold")
    (held,) = thant.json("exchange", "list")
    assert "Released" in thant.ok("exchange", "release", held["offers"][0]["id"][:6].upper())

    # Whatever matches nothing says so, with the rule.
    assert "no message or proposal with id 'ffff0000'" in kennedy.fails("show", "ffff0000")
    assert "no exchange or offer held here" in thant.fails("exchange", "release", "ffff0000")


# --- 4. times are recorded, not recomputed -----------------------------------------------------


def test_scenario_times_stay_as_recorded_after_the_clock_is_set(
    make_relay: Any, home: Path
) -> None:
    relay = make_relay("clock", *GENEROUS)
    name, users = mini(relay, home)
    a, b = users["a"], users["b"]
    a.ok("exercise")  # the clock as the relay tells it now: paused at the scenario's start
    sent = a.send(b, "At the start of the crisis.")
    (received,) = b.inbox()
    before = a.json("show", sent), b.json("show", sent)
    for seen in before:
        assert seen["scenario_time"] == "1962-10-22 08:00 -04:00"
        assert seen["relay_scenario_time"] == "1962-10-22 08:00 -04:00"
        assert isinstance(seen["relay_received_at"], int) and seen["relay_received_at_iso"]
    assert received["scenario_time"] == "1962-10-22 08:00 -04:00"

    control(relay, "clock", "set", "1962-10-27T16:00:00-04:00", "--exercise", name)
    a.ok("exercise")
    b.ok("exercise")
    after = a.json("show", sent), b.json("show", sent)
    for old, new in zip(before, after, strict=True):
        for field in ("scenario_time", "relay_scenario_time", "relay_received_at", "sent_at"):
            assert new[field] == old[field], field
    assert "1962-10-22 08:00 -04:00" in a.ok("show", sent)
    later = a.send(b, "After the clock was set.")
    assert a.json("show", later)["scenario_time"] == "1962-10-27 16:00 -04:00"
    history = {m["id"]: m["scenario_time"] for m in b.json("history")}
    assert history[sent] == "1962-10-22 08:00 -04:00"
