"""What the relay refuses a participant for its role or the exercise's policy, and what the CLI
makes of it: one readable line, never a traceback; `logout` revokes the session token; the owner
hears when its one-time prekeys are being drained (issue 16, items 6, 7 and 10)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from backchannel_cli.localstore import LocalStore
from backchannel_cli.profile import unlock
from backchannel_cli.relay import RelayClient, RelayRequestError
from backchannel_cli.service import TOKEN_SECRET

from .conftest import GENEROUS, Relay, User, participants
from .test_exercises import mini
from .test_prekeys import drain


def stored_token(user: User) -> str | None:
    """The session token the profile keeps (as the CLI sends it), or None."""
    import base64

    unlocked = unlock(user.directory, None)
    store = LocalStore(unlocked.state_path, unlocked.data_key)
    try:
        with store.transaction() as db:
            stored = store.get_secret(db, TOKEN_SECRET)
    finally:
        store.close()
    return base64.b64encode(stored[8:]).decode() if stored else None


def works(relay: Relay, token: str) -> bool:
    async def ask() -> bool:
        async with RelayClient(relay.url) as client:
            client.token = token
            try:
                await client.directory()
            except RelayRequestError as exc:
                assert (exc.status, exc.code) == (401, "bad_token")
                return False
            return True

    return asyncio.run(ask())


def test_logout_revokes_the_session_token_and_the_next_command_logs_in_afresh(
    relay: Relay, home: Path
) -> None:
    (kennedy,) = participants(relay, home, ("kennedy", "party"))
    kennedy.ok("inbox")
    token = stored_token(kennedy)
    assert token is not None and works(relay, token)
    assert "Logged out" in kennedy.ok("logout")
    assert stored_token(kennedy) is None and not works(relay, token)
    assert kennedy.json("logout") == {"revoked": False}  # nothing open: nothing to revoke
    assert kennedy.inbox() == []  # a fresh login, with the identity key
    assert kennedy.json("logout") == {"revoked": True}


def test_logout_with_the_relay_down_deletes_the_token_and_says_it_is_not_revoked(
    own_relay: Relay, home: Path
) -> None:
    (kennedy,) = participants(own_relay, home, ("kennedy", "party"))
    kennedy.ok("inbox")
    own_relay.stop()
    line = kennedy.fails("logout")
    assert "cannot reach the relay" in line and "deleted from this profile but not revoked" in line
    assert stored_token(kennedy) is None


def test_an_observer_is_told_in_one_line_and_still_reads_its_mailbox(
    relay: Relay, home: Path
) -> None:
    party, observer = participants(relay, home, ("party", "party"), ("observer", "observer"))
    party.send(observer, "For your information.")
    (letter,) = observer.inbox()  # its delivery receipt is not sent: observers send nothing
    assert letter["text"] == "For your information."
    for args in (
        ("send", party.name, "A word from the gallery."),
        ("propose", party.name, "--title", "T", "--term", "x"),
        ("otr", "open", party.name),
    ):
        line = observer.fails(*args)
        assert "observer" in line and "role_forbids" in line, line
    assert observer.inbox() == []  # the refused letter blocks nothing; it waits, marked
    (refused,) = observer.json("outbox")
    assert refused["status"] == "refused" and "role_forbids" in refused["refusal"]


def test_the_owner_hears_when_its_one_time_prekeys_are_drained(relay: Relay, home: Path) -> None:
    (khrushchev,) = participants(relay, home, ("khrushchev", "party"))
    drain(relay, khrushchev.name, 6, f"drainer-{khrushchev.name}")
    result = khrushchev.run("inbox")
    assert result.exit_code == 0, result.output
    assert "one-time prekeys are being used up fast (6 taken in the last hour)" in result.stderr
    quiet = participants(relay, home, ("castro", "party"))[0]
    drain(relay, quiet.name, 1, f"once-{quiet.name}")
    assert "used up fast" not in quiet.run("inbox").stderr


def test_a_proposal_between_a_mediated_pair_names_the_mediator_and_goes_through_it(
    make_relay: Any, home: Path
) -> None:
    """a reaches c only through m: a proposal names m (the notary takes it only so, and shows
    c its entry as a link), travels through m's client unread, and a timed one, whose key the
    relay itself would hand to c, is refused in one line before anything is notarised."""
    relay = make_relay("mediated", *GENEROUS)
    _, users = mini(relay, home)
    a, c, m = users["a"], users["c"], users["m"]
    line = a.fails("propose", c.name, "--title", "Later", "--term", "x", "--reveal-at", "2h")
    assert "--reveal-at needs a direct channel" in line and m.name in line
    assert a.json("proposals") == []  # nothing kept of it
    made = a.run("propose", c.name, "--title", "Through m", "--term", "Carried blind.", "--json")
    assert made.exit_code == 0 and f"through {m.name}" in made.stderr
    m.inbox()
    (got,) = c.json("proposals")
    assert got["id"] == json.loads(made.stdout)["id"] and got["title"] == "Through m"
    made = a.json("propose", m.name, "--title", "Through you", "--term", "For c, with consent.")
    assert made["id"]
