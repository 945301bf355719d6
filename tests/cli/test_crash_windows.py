"""The participant CLI killed (SIGKILL, as a subprocess) in each window between two durable
steps, the way `test_crash.py` kills the relay: nothing is lost, shown twice or applied twice.

No hook in the product makes a window reachable: the client under test talks to the relay
through `Tap`, a TCP forwarder of this test's own that, when a given request passes, either
pauses the relay with SIGSTOP before handing it on (the client then waits in that very request),
holds the request back (it never left), or holds the relay's answer (the relay acted, the client
never heard). The test kills the client there, lets the relay go on, and runs the command again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import CLI_SCRIPT, TRIO, Relay, User, eventually, free_port, script_env, unique
from .test_exercises import control
from .test_proposals import kinds, propose, view

HIT_TIMEOUT = 30.0
REQUESTS_MAX = 30
RANDOM_KILLS = 6


@dataclass
class _Connection:
    client: socket.socket
    upstream: socket.socket
    hold_answer: bool = False


@dataclass
class Tap:
    """127.0.0.1:PORT forwarding to `relay`; `arm(line, mode)` acts on the next request whose
    request line starts with `line` (after `skip` earlier ones): `stop` SIGSTOPs the relay, then
    hands the request on; `drop` holds the request; `mute` hands it on and holds the answer."""

    relay: Relay
    port: int = field(default_factory=free_port)
    hit: threading.Event = field(default_factory=threading.Event)
    lines: tuple[bytes, ...] = ()
    mode: str = "stop"
    skip: int = 0
    released: threading.Event = field(default_factory=threading.Event)
    connections: list[_Connection] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arm(self, line: str | tuple[str, ...], mode: str, skip: int = 0) -> None:
        self.hit.clear()
        self.released.clear()
        lines = (line,) if isinstance(line, str) else line
        self.lines, self.mode, self.skip = tuple(x.encode() for x in lines), mode, skip

    def disarm(self) -> None:
        """Let the relay run again, drop whatever was held, forward plainly from now on."""
        self.lines = ()
        if self.relay.process is not None:
            self.relay.process.send_signal(signal.SIGCONT)
        self.released.set()
        for held in self.connections:
            for end in (held.client, held.upstream):
                end.close()
        self.connections.clear()

    def close(self) -> None:
        self.disarm()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.relay.port))
            connection = _Connection(client, upstream)
            self.connections.append(connection)
            for up in (True, False):
                threading.Thread(target=self._pump, args=(connection, up), daemon=True).start()

    def _pump(self, connection: _Connection, up: bool) -> None:
        source, sink = (
            (connection.client, connection.upstream)
            if up
            else (connection.upstream, connection.client)
        )
        try:
            while data := source.recv(65536):
                if up and self.lines and data.startswith(self.lines):
                    if self.skip:
                        self.skip -= 1
                    elif self._trigger(connection):
                        continue  # `drop`: the request never reaches the relay
                if not up and connection.hold_answer:
                    self.hit.set()
                    self.released.wait()
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (connection.client, connection.upstream):
                end.close()

    def _trigger(self, connection: _Connection) -> bool:
        """-> whether to hold the request back."""
        self.lines = ()
        if self.mode == "stop":
            assert self.relay.process is not None
            self.relay.process.send_signal(signal.SIGSTOP)
        elif self.mode == "mute":
            connection.hold_answer = True
            return False
        self.hit.set()
        return self.mode == "drop"


@pytest.fixture
def tap(own_relay: Relay) -> Iterator[Tap]:
    running = Tap(own_relay)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def tapped_trio(own_relay: Relay, tap: Tap, home: Path) -> tuple[User, User, User]:
    """Kennedy, Khrushchev, U Thant on their own relay; every one of them reaches it through
    the tap (harmless while it is not armed)."""
    users = []
    for name, role in TRIO:
        user = User(home, name, unique(name))
        user.init(tap.url)
        user.register(own_relay, role)
        users.append(user)
    kennedy, khrushchev, u_thant = users
    return kennedy, khrushchev, u_thant


def killed_in(tap: Tap, user: User, *args: str, must_hit: bool = True) -> tuple[bool, bytes]:
    """Run `backchannel ARGS` as its own process and SIGKILL it once the tap's request is hit;
    then let the relay go on. -> (killed?, what it printed). Without `must_hit`, a run that
    ends first is no failure."""
    process = subprocess.Popen(
        [CLI_SCRIPT, *user.argv(*args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=script_env(),
    )
    try:
        while not tap.hit.wait(0.05):
            if process.poll() is not None:
                out, err = process.communicate()
                if must_hit or process.returncode != 0:
                    pytest.fail(f"the request was never made: {out!r} {err!r}")
                return False, out
        os.kill(process.pid, signal.SIGKILL)
        out, _ = process.communicate(timeout=HIT_TIMEOUT)
        assert process.returncode == -signal.SIGKILL
        return True, out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        tap.disarm()


Trio = tuple[User, User, User]


def open_off_the_record(kennedy: User, khrushchev: User) -> None:
    """An open channel makes every `inbox` of Khrushchev's read its drop after the mailbox."""
    kennedy.ok("otr", "open", khrushchev.name, "--ttl", "10m")
    khrushchev.inbox()  # answers the offer: Khrushchev's side is open
    kennedy.ok("otr", "send", khrushchev.name, "Set up.")
    assert [m["text"] for m in khrushchev.inbox()] == ["Set up."]


# --- receiving ------------------------------------------------------------------------------


def test_inbox_killed_while_reading_the_drops_shows_the_stored_letter_later(
    tapped_trio: Trio, tap: Tap
) -> None:
    """Issue 20.4: the letter is stored and acknowledged (the relay will not deliver it again)
    and the inbox dies in the off-the-record drop read, before printing: the next run shows
    it, once, with the off-the-record message that waited too."""
    kennedy, khrushchev, _ = tapped_trio
    open_off_the_record(kennedy, khrushchev)
    letter = kennedy.send(khrushchev, "Stored, acknowledged, not yet shown.")
    kennedy.ok("otr", "send", khrushchev.name, "Deniable, waiting in the drop.")

    tap.arm("POST /v1/drops/fetch", "stop")
    killed_in(tap, khrushchev, "inbox", "--json")
    assert kennedy.status(letter) == "delivered"  # the mailbox was read and acknowledged

    shown = khrushchev.inbox()
    assert [(m["kind"], m["text"]) for m in shown] == [
        ("letter", "Stored, acknowledged, not yet shown."),
        ("otr", "Deniable, waiting in the drop."),
    ]
    assert shown[0]["id"] == letter
    assert khrushchev.inbox() == []
    assert kennedy.status(letter) == "read"


def test_inbox_killed_before_acknowledging_shows_each_letter_once(
    tapped_trio: Trio, tap: Tap
) -> None:
    """Stored (with the ratchet state that decrypted it), then killed in the acknowledgement:
    the relay delivers it again, it is recognised, and the session goes on."""
    kennedy, khrushchev, _ = tapped_trio
    first = kennedy.send(khrushchev, "Before the kill.")
    tap.arm("POST /v1/messages/ack", "drop")
    killed_in(tap, khrushchev, "inbox", "--json")
    assert kennedy.status(first) == "sent"

    second = kennedy.send(khrushchev, "After the kill.")
    assert [m["id"] for m in khrushchev.inbox()] == [first, second]
    assert khrushchev.inbox() == []
    assert [kennedy.status(i) for i in (first, second)] == ["read", "read"]


def test_inbox_killed_after_the_relay_deleted_loses_nothing(tapped_trio: Trio, tap: Tap) -> None:
    """The relay acted on the acknowledgement, the client never heard: stored before, so the
    letter is shown by the next run."""
    kennedy, khrushchev, _ = tapped_trio
    letter = kennedy.send(khrushchev, "Acknowledged unheard.")
    tap.arm("POST /v1/messages/ack", "mute")
    killed_in(tap, khrushchev, "inbox", "--json")
    assert [m["id"] for m in khrushchev.inbox()] == [letter]
    assert khrushchev.inbox() == []
    assert kennedy.status(letter) == "read"


@pytest.mark.parametrize("mode", ["drop", "stop", "mute"])
def test_inbox_killed_sending_the_delivery_receipt_sends_it_later(
    tapped_trio: Trio, tap: Tap, mode: str
) -> None:
    """The delivery receipt is owed in the transaction that stores the letter and sealed, with
    the ratchet state, before it leaves: killed while it is on its way (never arrived, relay
    paused with it, stored unheard), the next command sends it (the same bytes, kept once),
    and the letter is shown once."""
    kennedy, khrushchev, _ = tapped_trio
    letter = kennedy.send(khrushchev, "Receipt in flight.")
    tap.arm("POST /v1/messages ", mode)  # the first send of this run: the receipt
    killed_in(tap, khrushchev, "inbox", "--json")
    if mode == "drop":
        assert kennedy.status(letter) == "sent"

    assert [m["id"] for m in khrushchev.inbox("--no-read-receipts")] == [letter]
    assert kennedy.status(letter) == "delivered"
    assert khrushchev.inbox() == []
    later = kennedy.send(khrushchev, "The session goes on.")  # both ratchets still agree
    assert [m["id"] for m in khrushchev.inbox()] == [later]
    assert [kennedy.status(i) for i in (letter, later)] == ["delivered", "read"]


@pytest.mark.parametrize("mode", ["drop", "mute"])
def test_inbox_killed_sending_the_read_receipt_sends_it_later(
    tapped_trio: Trio, tap: Tap, mode: str
) -> None:
    """Printing the letter owes its read receipt in the transaction that marks it shown:
    killed while the receipt is on its way, the letter is not shown again, and the next
    `inbox` (or `show`) tells the sender it was read."""
    kennedy, khrushchev, _ = tapped_trio
    letter = kennedy.send(khrushchev, "Read, receipt in flight.")
    tap.arm("POST /v1/messages ", mode, skip=1)  # after the delivery receipt: the read one
    _, printed = killed_in(tap, khrushchev, "inbox", "--json")
    assert [m["id"] for m in json.loads(printed)] == [letter]
    if mode == "drop":
        assert kennedy.status(letter) == "delivered"

    assert khrushchev.inbox() == []
    assert kennedy.status(letter) == "read"


# --- sending --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["drop", "stop", "mute"])
def test_send_killed_in_flight_delivers_once(tapped_trio: Trio, tap: Tap, mode: str) -> None:
    """Stored in the outbox (sealed, with the ratchet state that sealed it) before it leaves:
    killed before the relay has it (`drop`), while the relay is paused with it (`stop`), or
    after the relay stored it unheard (`mute`), the next command sends the same bytes, which
    the relay keeps once; the session goes on."""
    kennedy, khrushchev, _ = tapped_trio
    kennedy.send(khrushchev, "Opening.")
    assert len(khrushchev.inbox()) == 1
    tap.arm("POST /v1/messages ", mode)
    killed_in(tap, kennedy, "send", khrushchev.name, "Killed while sending.")

    assert kennedy.inbox() == []  # any command that reaches the relay sends the outbox
    after = kennedy.send(khrushchev, "The session goes on.")
    received = khrushchev.inbox()
    assert [m["text"] for m in received] == ["Killed while sending.", "The session goes on."]
    assert received[1]["id"] == after
    assert khrushchev.inbox() == []
    held = [m for m in kennedy.json("history") if m["text"] == "Killed while sending."]
    assert len(held) == 1 and kennedy.status(held[0]["id"]) == "read"


# --- a relay's slow answers, killed anywhere: a loop ----------------------------------------


def test_inbox_killed_at_any_request_shows_every_letter_once(tapped_trio: Trio, tap: Tap) -> None:
    """Every request `inbox` makes, in turn, is where it dies (the n-th request of the run,
    paused with SIGSTOP): after each kill a further run shows what was not yet shown, and in
    the end every letter was shown exactly once."""
    kennedy, khrushchev, _ = tapped_trio
    open_off_the_record(kennedy, khrushchev)
    sent: list[str] = []
    seen: list[str] = []
    for nth in range(REQUESTS_MAX):
        sent.append(kennedy.send(khrushchev, f"Letter {nth}."))
        tap.arm(("GET /", "POST /"), "stop", skip=nth)
        killed, printed = killed_in(tap, khrushchev, "inbox", "--json", must_hit=False)
        if printed:  # killed after printing (in the read receipts, say): they were shown
            seen += [m["id"] for m in json.loads(printed) if m["kind"] == "letter"]
        if not killed:  # the run makes fewer requests than `nth`: all covered
            break
        seen += [m["id"] for m in khrushchev.inbox() if m["kind"] == "letter"]
    else:
        pytest.fail(f"`inbox` made more than {REQUESTS_MAX} requests")
    assert nth > 5  # (it died in each of its requests in turn)
    texts = {m["id"]: m["text"] for m in khrushchev.json("history")}
    assert sorted(texts[i] for i in seen) == sorted(texts.get(i, i) for i in sent)
    eventually(lambda: all(kennedy.status(i) == "read" for i in sent), 10, "read receipts")


# --- proposals' statements ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_line", "mode"),
    [
        ("POST /v1/notary/statements", "drop"),
        ("POST /v1/notary/statements", "stop"),
        ("POST /v1/notary/statements", "mute"),
        ("POST /v1/messages ", "mute"),
    ],
)
def test_accept_killed_while_stating_is_stated_once(
    tapped_trio: Trio, tap: Tap, request_line: str, mode: str
) -> None:
    """A statement is stored (signed) before it is notarised, and queued with the notary's
    receipt before it is sent: killed at the notary (before it logs, while it is paused, after
    it logged unheard) or at the send, the next command goes on with the same bytes, and the
    author's record holds the acceptance once."""
    kennedy, khrushchev, _ = tapped_trio
    ident = propose(khrushchev, kennedy, "Missiles out of Cuba", "Under UN inspection.")
    kennedy.inbox()  # delivered and opened, both notarised
    tap.arm(request_line, mode)
    killed_in(tap, kennedy, "accept", ident)

    kennedy.inbox()  # any command that syncs goes on with what is stored, and sends it
    khrushchev.inbox()
    theirs, mine = view(khrushchev, ident), view(kennedy, ident)
    assert theirs["status"] == mine["status"] == "accepted"
    assert kinds(theirs["history"]).count(("accepted", kennedy.name, True)) == 1
    assert theirs["history"] == mine["history"]
    assert kennedy.json("notary-log")["ours_checked"] == len(mine["history"]) + 1


# --- a mediator's holds and releases --------------------------------------------------------


def test_mediator_killed_holding_and_releasing_an_exchange_releases_it_once(
    own_relay: Relay, tap: Tap, home: Path
) -> None:
    """U Thant's client holds Kennedy's offer (stored before the envelope is acknowledged) and
    then releases the exchange: killed in the acknowledgement of the hold, and then in each of
    the releasing run's sends in turn (the relay keeping what it got, unheard), the exchange
    ends held once and released once, each side holding the other's offer once."""
    kennedy, castro, thant = cuba(own_relay, tap, home)
    mine = kennedy.json(
        "propose", "castro", "--via", "u-thant", "--simultaneous",
        "--title", "No invasion of Cuba", "--term", "The United States will not invade Cuba.",
    )  # fmt: skip
    tap.arm("POST /v1/messages/ack", "mute")
    killed_in(tap, thant, "inbox", "--hold")
    thant.inbox("--hold")
    (held,) = thant.json("exchange", "list")
    assert held["status"] == "waiting for castro" and len(held["offers"]) == 1

    theirs = castro.json(
        "propose", "kennedy", "--via", "u-thant", "--simultaneous",
        "--title", "Missiles out of Cuba", "--term", "Cuba lets the missiles go.",
    )  # fmt: skip
    for nth in range(REQUESTS_MAX):
        tap.arm("POST /v1/messages ", "mute", skip=nth)
        killed, _ = killed_in(tap, thant, "inbox", must_hit=False)
        if not killed:
            break
    assert nth >= 1
    released_once(kennedy, castro, thant, mine["id"], theirs["id"])


def test_mediator_killed_at_random_times_holds_and_releases_once(
    own_relay: Relay, tap: Tap, home: Path
) -> None:
    """The windows no request marks (between storing one side's release and the other's, say)
    cannot be hit on purpose without a hook in the product: U Thant's `inbox` is killed at
    random times instead, while holding and while releasing, until a run gets through."""
    seed = int.from_bytes(os.urandom(4), "big")
    chance = random.Random(seed)
    kennedy, castro, thant = cuba(own_relay, tap, home)
    mine = kennedy.json(
        "propose", "castro", "--via", "u-thant", "--simultaneous",
        "--title", "No invasion of Cuba", "--term", "The United States will not invade Cuba.",
    )  # fmt: skip
    kills = killed_at_random(thant, chance, "inbox", "--hold")
    theirs = castro.json(
        "propose", "kennedy", "--via", "u-thant", "--simultaneous",
        "--title", "Missiles out of Cuba", "--term", "Cuba lets the missiles go.",
    )  # fmt: skip
    kills += killed_at_random(thant, chance, "inbox")
    print(f"random kills: {kills} (seed {seed})")  # shown with a failure, to replay it
    released_once(kennedy, castro, thant, mine["id"], theirs["id"])


def cuba(relay: Relay, tap: Tap, home: Path) -> tuple[User, User, User]:
    """cuba-1962's Kennedy, Castro and U Thant (through the tap), who carries between them."""
    users = {}
    for entry in control(relay, "load", "cuba-1962")["roles"]:
        user = User(home, entry["name"])
        user.init(tap.url if entry["name"] == "u-thant" else relay.url)
        assert user.json("register", entry["invite"])["role"] == entry["kind"]
        users[entry["name"]] = user
    return users["kennedy"], users["castro"], users["u-thant"]


def killed_at_random(user: User, chance: random.Random, *args: str) -> int:
    """Run `backchannel ARGS` again and again, each killed after a random time, until one run
    ends by itself (at most RANDOM_KILLS are killed); -> how many were killed."""
    for kills in range(RANDOM_KILLS + 1):
        process = subprocess.Popen(
            [CLI_SCRIPT, *user.argv(*args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=script_env(),
        )
        try:
            limit = None if kills == RANDOM_KILLS else chance.uniform(0.1, 1.5)
            _, err = process.communicate(timeout=limit)
            assert process.returncode == 0, err
            return kills
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    raise AssertionError("unreachable: the last run is never killed")


def released_once(kennedy: User, castro: User, thant: User, mine: str, theirs: str) -> None:
    thant.inbox()
    (released,) = thant.json("exchange", "list")
    assert released["status"] == "released" and len(released["offers"]) == 2
    assert view(kennedy, theirs)["title"] == "Missiles out of Cuba"
    assert view(castro, mine)["title"] == "No invasion of Cuba"
    for side in (kennedy, castro):
        notes = [m for m in side.inbox() if "released by u-thant" in m["text"]]
        assert len(notes) == 1, notes
