"""A relay that asks the CLI to slow down (429 with Retry-After) is waited for and asked again,
within bounds; past them the letter stays in the outbox. Either way: no traceback, and the user
hears of a wait longer than two seconds in one line on standard error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .conftest import Relay, participants

SLOW_DOWN = "the relay asks us to slow down; retrying in "


def test_a_send_refused_for_speed_waits_retry_after_and_goes_out(
    make_relay: Callable[..., Relay], home: Path
) -> None:
    """One envelope in a burst, one every four seconds: the second letter is refused with
    Retry-After 4, and the CLI waits that out and sends it."""
    slow = make_relay("slow", "--send-burst", "1", "--send-per-second", "0.25")
    kennedy, khrushchev = participants(slow, home, ("kennedy", "party"), ("khrushchev", "party"))
    kennedy.send(khrushchev, "First.")
    result = kennedy.run("send", khrushchev.name, "Second, after a pause.", "--json")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    notices = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(notices) == 1 and notices[0].startswith(SLOW_DOWN), result.stderr
    assert notices[0].endswith(" s")
    assert kennedy.json("outbox") == []
    texts = [m["text"] for m in khrushchev.inbox()]
    assert texts == ["First.", "Second, after a pause."]


def test_a_wait_longer_than_the_cli_will_keep_the_letter_queued(
    make_relay: Callable[..., Relay], home: Path
) -> None:
    """Retry-After of 100 s is past what one command waits (30 s): the CLI does not wait, says
    why in one line, and keeps the letter for the next command."""
    slow = make_relay("slower", "--send-burst", "1", "--send-per-second", "0.01")
    kennedy, khrushchev = participants(slow, home, ("kennedy", "party"), ("khrushchev", "party"))
    kennedy.send(khrushchev, "First.")
    line = kennedy.fails("send", khrushchev.name, "Second.")
    assert "send_rate_limited" in line and "saved as" in line
    (queued,) = kennedy.json("outbox")
    assert queued["status"] == "pending" and queued["refusal"] is None
