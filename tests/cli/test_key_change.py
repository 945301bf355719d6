"""A participant's identity key changes under the same name: refused loudly until re-verified.

The change is produced the way a hostile or rebuilt relay would present it: the relay at the
same URL now has a fresh store in which the name `khrushchev` belongs to a new key. Kennedy's
client keeps the key it pinned, so the relay cannot swap it silently.
"""

from __future__ import annotations

from pathlib import Path

from .conftest import Relay, User, participants


def test_a_changed_key_is_refused_until_verified_and_nothing_is_lost(
    own_relay: Relay, home: Path, tmp_path: Path
) -> None:
    kennedy, khrushchev = participants(
        own_relay, home, ("kennedy", "party"), ("khrushchev", "party")
    )
    before = kennedy.json("verify", khrushchev.name, "--yes")["safety_number"]
    kennedy.send(khrushchev, "Under the key you verified.")
    assert len(khrushchev.inbox()) == 1

    # The relay at the same address now knows another `khrushchev`.
    own_relay.stop()
    replaced = Relay(tmp_path / "replaced-relay", own_relay.port).start()
    try:
        newcomer = User(home, "khrushchev-new", khrushchev.name)
        newcomer.init(replaced)
        newcomer.register(replaced)
        kennedy.ok("register", replaced.invite(kennedy.name))  # the same key re-registers
        assert newcomer.fingerprint != khrushchev.fingerprint

        # A letter from the new key: held on the relay, the inbox says why, exit code 1.
        held = newcomer.send(kennedy, "I am Khrushchev, with a new key.")
        line = kennedy.fails("inbox")
        assert line == (
            f"Error: {khrushchev.name}'s identity key has changed: 1 message from them wait "
            f"on the relay until you compare safety numbers and run "
            f"`backchannel --profile {kennedy.profile} verify {khrushchev.name}`"
        )
        assert kennedy.fails("inbox") == line  # still held, still refused

        # Writing to the new key is refused as well; the directory shows the change.
        refused = kennedy.fails("send", khrushchev.name, "Who are you?")
        assert refused == (
            f"Error: {khrushchev.name}'s identity key has changed; compare safety numbers and "
            f"run `backchannel --profile {kennedy.profile} verify {khrushchev.name}` before "
            "writing to or reading from them"
        )
        entry = next(e for e in kennedy.json("directory") if e["name"] == khrushchev.name)
        assert entry["key_changed"] is True and entry["verified"] is False
        assert entry["fingerprint"] == newcomer.fingerprint
        assert "[KEY CHANGED]" in kennedy.ok("directory")

        # The safety number now is the new key's, as the newcomer computes it too.
        shown = kennedy.json("verify", khrushchev.name)
        assert shown["key_changed"] is True and shown["verified"] is False
        assert shown["safety_number"] != before
        assert shown["safety_number"] == newcomer.json("verify", kennedy.name)["safety_number"]
        human = kennedy.run("verify", khrushchev.name, input="n\n")
        assert "identity key has CHANGED" in human.stdout and "NOT verified" in human.stdout
        assert kennedy.fails("send", khrushchev.name, "Still refused?").startswith(
            f"Error: {khrushchev.name}'s identity key has changed"
        )

        # Once compared and accepted, the held letter is read, and letters flow both ways.
        assert kennedy.json("verify", khrushchev.name, "--yes")["verified"] is True
        received = kennedy.inbox()
        assert [(m["id"], m["text"]) for m in received] == [
            (held, "I am Khrushchev, with a new key.")
        ]
        kennedy.send(khrushchev, "Welcome back.")
        assert [m["text"] for m in newcomer.inbox()] == ["Welcome back."]
        assert kennedy.status(held) == "read"  # his own view: read, and the receipt went out
        assert kennedy.inbox() == []
    finally:
        replaced.stop()


def test_the_old_key_cannot_reach_a_participant_who_moved_on(
    own_relay: Relay, home: Path, tmp_path: Path
) -> None:
    """Seen from the other side: the newcomer's client pins the key the new relay shows, and
    Kennedy's established session still encrypts only to the key he verified."""
    kennedy, khrushchev = participants(
        own_relay, home, ("kennedy", "party"), ("khrushchev", "party")
    )
    kennedy.send(khrushchev, "Hello.")
    khrushchev.inbox()
    own_relay.stop()
    replaced = Relay(tmp_path / "replaced-relay", own_relay.port).start()
    try:
        newcomer = User(home, "khrushchev-new", khrushchev.name)
        newcomer.init(replaced)
        newcomer.register(replaced)
        kennedy.ok("register", replaced.invite(kennedy.name))
        # Kennedy has not looked at the directory: his session (to the old key) is used, so the
        # newcomer cannot read the letter; it is shown to him as unreadable, never as text.
        kennedy.send(khrushchev, "Only the Khrushchev I verified can read this.")
        shown = newcomer.inbox()
        assert [m["kind"] for m in shown] == ["unreadable"]
        assert "Only the Khrushchev" not in shown[0]["text"]
    finally:
        replaced.stop()
