"""Crashes: the relay killed with SIGKILL, the relay down while someone writes, a client that
dies between storing and acknowledging. Nothing is lost and nothing is shown twice."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest

from backchannel_cli import service
from backchannel_cli.relay import RelayClient, RelayUnreachable

from .conftest import Relay, User, Watcher, assert_one_error_line

Trio = tuple[User, User, User]


def test_relay_kill_9_loses_nothing_and_shows_nothing_twice(
    own_trio: Trio, own_relay: Relay
) -> None:
    kennedy, khrushchev, u_thant = own_trio
    from_kennedy = [kennedy.send(khrushchev, "One."), kennedy.send(khrushchev, "Two.")]
    from_u_thant = u_thant.send(khrushchev, "Three, from the mediator.")
    to_kennedy = khrushchev.send(kennedy, "Four, the other way.")
    # Each one had the relay's receipt ("sent"): it is durably stored there.
    assert [kennedy.status(i) for i in from_kennedy] == ["sent", "sent"]

    own_relay.kill9()
    own_relay.start()  # the same store on the same port

    received = khrushchev.inbox()
    assert sorted(m["id"] for m in received) == sorted([*from_kennedy, from_u_thant])
    assert khrushchev.inbox() == []
    assert [m["id"] for m in kennedy.inbox()] == [to_kennedy]
    assert kennedy.inbox() == []

    # The receipts now wait in the senders' mailboxes; they survive a second SIGKILL too.
    own_relay.kill9()
    own_relay.start()
    assert [kennedy.status(i) for i in from_kennedy] == ["read", "read"]
    assert u_thant.status(from_u_thant) == "read"
    assert khrushchev.status(to_kennedy) == "read"
    assert khrushchev.inbox() == [] and kennedy.inbox() == [] and u_thant.inbox() == []


def test_a_letter_written_while_the_relay_is_down_goes_out_later(
    own_trio: Trio, own_relay: Relay
) -> None:
    kennedy, khrushchev, u_thant = own_trio
    kennedy.send(khrushchev, "Before the outage.")
    assert len(khrushchev.inbox()) == 1

    own_relay.kill9()
    line = kennedy.fails("send", khrushchev.name, "Written during the outage.")
    assert "cannot reach the relay" in line and "the letter is saved as" in line
    found = re.search(r"saved as ([0-9a-f]{32})", line)
    assert found is not None
    kept = found.group(1)
    pending = kennedy.run("show", kept, "--json")
    assert pending.exit_code == 0 and '"status": "pending"' in pending.stdout
    assert "Note: the status shown is the last one known here" in pending.stderr
    # Someone never written to before needs the relay for their keys: nothing is kept.
    assert "cannot reach the relay" in kennedy.fails("send", u_thant.name, "Hello?")

    own_relay.start()
    assert kennedy.inbox() == []  # any command that reaches the relay sends what is saved
    assert kennedy.status(kept) == "sent"
    received = khrushchev.inbox()
    assert [(m["id"], m["text"]) for m in received] == [(kept, "Written during the outage.")]
    assert kennedy.status(kept) == "read"
    assert khrushchev.inbox() == [] and u_thant.inbox() == []


def test_watch_reconnects_after_relay_kill_9_without_repeating(
    own_trio: Trio, own_relay: Relay, watch: Callable[..., Watcher]
) -> None:
    kennedy, khrushchev, _ = own_trio
    watcher = watch(khrushchev, "--json").connected()
    first = kennedy.send(khrushchev, "Before the crash.")
    assert watcher.message()["id"] == first

    own_relay.kill9()
    watcher.wait_for_notice("reconnecting")
    second = kennedy.run("send", khrushchev.name, "During the outage.")
    assert second.exit_code == 1
    own_relay.start()
    watcher.wait_for_notice("Reconnected.")

    third = kennedy.send(khrushchev, "After the restart.")
    texts = sorted(watcher.message()["text"] for _ in range(2))
    assert texts == ["After the restart.", "During the outage."]
    watcher.nothing_more()
    assert kennedy.status(third) in {"delivered", "read"}
    stderr = watcher.stop()
    assert "Traceback" not in stderr and "Error" not in stderr
    assert khrushchev.inbox() == []


def test_a_client_that_dies_before_acknowledging_shows_each_message_once(
    trio: Trio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inbox stores what it fetched, then fails to acknowledge (as if killed there): the
    relay delivers the same envelopes again and they are recognised, letters and receipts."""
    kennedy, khrushchev, _ = trio
    sent = [kennedy.send(khrushchev, "First."), kennedy.send(khrushchev, "Second.")]
    real = RelayClient.acknowledge
    failures = {"left": 1}

    async def dies_once(self: RelayClient, ids: list[int]) -> int:
        if failures["left"]:
            failures["left"] -= 1
            raise RelayUnreachable("the client died before acknowledging")
        return await real(self, ids)

    monkeypatch.setattr(RelayClient, "acknowledge", dies_once)
    failed = khrushchev.run("inbox", "--json")  # with --json, the error is JSON too
    assert failed.exit_code == 1 and json.loads(failed.stdout)["error"] == "relay_unreachable"
    shown = khrushchev.inbox()
    assert sorted(m["id"] for m in shown) == sorted(sent)
    assert khrushchev.inbox() == []

    # Kennedy's side: the receipts arrive, the acknowledgement is lost, they come again.
    failures["left"] = 1
    assert_one_error_line(kennedy.run("inbox").output)
    assert kennedy.inbox() == []  # no receipt shows up as an unreadable message
    assert [kennedy.status(i) for i in sent] == ["read", "read"]


def test_a_long_outage_neither_jams_nor_floods_the_outbox(
    own_trio: Trio, own_relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Letters saved while the relay is down go out in several requests when it is back, and
    one that expired meanwhile is marked failed instead of blocking all the others."""
    kennedy, khrushchev, _ = own_trio
    kennedy.send(khrushchev, "Opening.")
    khrushchev.inbox()
    own_relay.kill9()
    monkeypatch.setattr(service, "DEFAULT_EXPIRY", 300)  # this one may wait five minutes
    expired = re.search(r"saved as (\w+)", kennedy.fails("send", khrushchev.name, "Stale."))
    monkeypatch.undo()
    monkeypatch.setattr(service, "SEND_BATCH", 2)
    saved = [
        re.search(r"saved as (\w+)", kennedy.fails("send", khrushchev.name, f"Saved {n}."))
        for n in range(5)
    ]
    own_relay.start()
    # An hour passes, as far as expiry goes: the relay would now refuse the stale envelope.
    monkeypatch.setattr(service, "EXPIRY_MARGIN", 3600)
    assert kennedy.inbox() == []
    assert expired is not None and kennedy.status(expired.group(1)) == "failed"
    received = khrushchev.inbox()
    assert [m["text"] for m in received] == [f"Saved {n}." for n in range(5)]
    assert {m["id"] for m in received} == {found.group(1) for found in saved if found}
