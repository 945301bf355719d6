"""The participant's agent (issue 19): the real `backchannel` script, run as its own process,
with and without an agent for the profile; the same assertions both ways.

Agents are started with `backchannel agent start` (a daemon of its own session) and stopped, or
killed with their whole process group, by each test.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backchannel_cli import agent_protocol as protocol

from .conftest import CLI_SCRIPT, Relay, User, eventually, participants, script_env

PASSPHRASE = "correct horse battery staple"


@dataclass
class Ran:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class ScriptUser(User):
    """A participant whose every command is the installed `backchannel` script, as a process:
    through the profile's agent when one runs."""

    def run(  # type: ignore[override]
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> Ran:
        done = subprocess.run(
            [CLI_SCRIPT, *self.argv(*args)],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env=script_env(**(env or {})),
            timeout=60,
        )
        return Ran(done.returncode, done.stdout, done.stderr)

    def agent(self, *args: str, env: dict[str, str] | None = None) -> Ran:
        return self.run("agent", *args, env=env)

    def agent_status(self) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(self.agent("status", "--json").stdout)
        return status

    def start_agent(self, *extra: str) -> int:
        started = self.agent("start", "--json", *extra, env={"BACKCHANNEL_PASSPHRASE": PASSPHRASE})
        assert started.exit_code == 0, started.output
        pid: int = json.loads(started.stdout)["pid"]
        return pid

    @property
    def socket(self) -> Path:
        return protocol.socket_path(self.directory)


def _kill_agent(user: ScriptUser) -> None:
    """SIGKILL the agent and every fork of it (its own process group)."""
    status = user.agent_status()
    if status.get("running"):
        os.killpg(int(status["pid"]), signal.SIGKILL)
        eventually(lambda: not _alive(int(status["pid"])), 10, "the agent gone")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie counts as gone
        return stat.read().split(")")[-1].split()[0] != "Z"


@pytest.fixture
def pair(relay: Relay, home: Path) -> Iterator[tuple[ScriptUser, ScriptUser]]:
    """Kennedy and Khrushchev, each with a passphrase; their agents are stopped at the end."""
    kennedy, khrushchev = participants(relay, home, ("kennedy", "party"), ("khrushchev", "party"))
    users = []
    for plain in (kennedy, khrushchev):
        user = ScriptUser(home, plain.profile, plain.name)
        user.fingerprint = plain.fingerprint
        users.append(user)
    # The profiles were made without a passphrase by `participants`; that is what `start` needs
    # to know, nothing more: the passphrase variable is simply not used then.
    yield users[0], users[1]
    for user in users:
        _kill_agent(user)


class Events:
    """`backchannel agent events` for a user whose agent runs and is online."""

    def __init__(self, user: ScriptUser) -> None:
        user.start_agent()
        eventually(lambda: user.agent_status()["online"], 15, "the keeper online")
        self.process = subprocess.Popen(
            [CLI_SCRIPT, *user.argv("agent", "events")],
            stdout=subprocess.PIPE, text=True, env=script_env(),
        )  # fmt: skip
        time.sleep(0.5)  # subscribed

    def message(self, timeout: float = 30) -> dict[str, Any]:
        """The next `message` event's message (other events are passed over)."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.process.stdout], [], [], deadline - time.monotonic())
            assert ready, "no message event in time"
            event = json.loads(self.process.stdout.readline())
            if event["event"] == "message":
                return dict(event["message"])

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@contextmanager
def events_of(user: ScriptUser) -> Iterator[Events]:
    events = Events(user)
    try:
        yield events
    finally:
        events.close()


def _flow(kennedy: ScriptUser, khrushchev: ScriptUser) -> dict[str, Any]:
    """A short correspondence; -> what every step printed and returned, ids replaced by their
    place, for comparing a run through agents with a run without."""
    first = kennedy.send(khrushchev, "Letter one.")
    received = khrushchev.inbox()
    reply = khrushchev.send(kennedy, "Reply.", "--reply-to", first[:6])
    kennedy_inbox = kennedy.inbox()
    shown = kennedy.json("show", reply[:8])
    bad = khrushchev.run("show", "nonsense")
    bad_json = khrushchev.run("show", "nonsense", "--json")
    usage = khrushchev.run("send")
    history = [(m["direction"], m["kind"], m["text"], m["status"])
               for m in khrushchev.json("history")]  # fmt: skip
    ids = {first: "FIRST", reply: "REPLY"}
    return {
        "received": [(m["text"], m["status"], m["verified"]) for m in received],
        "kennedy_inbox": [(m["text"], ids.get(m["in_reply_to"])) for m in kennedy_inbox],
        "shown": (shown["text"], shown["status"], ids.get(shown["in_reply_to"])),
        "bad": (bad.exit_code, bad.stdout, bad.stderr),
        "bad_json": (bad_json.exit_code, json.loads(bad_json.stdout)),
        "usage": (usage.exit_code, usage.stderr.splitlines()[-1]),
        "history": history,
        "kennedy_status": kennedy.status(first),
    }


def test_every_command_gives_the_same_with_and_without_the_agent(
    relay: Relay, home: Path, pair: tuple[ScriptUser, ScriptUser]
) -> None:
    """The same flow, first without agents, then with one for each side: the same output, the
    same exit codes, the same stored correspondence."""
    kennedy, khrushchev = pair
    without = _flow(kennedy, khrushchev)
    for user in pair:
        user.start_agent()
        assert user.agent_status()["locked"] is False
    with_agents = _flow(kennedy, khrushchev)
    earlier = without.pop("history")
    assert with_agents.pop("history") == [*earlier, *earlier]  # the same again, after it
    assert with_agents == without
    assert without["bad"][0] != 0 and without["bad"][2].startswith("Error: ")
    assert khrushchev.agent_status()["commands_run"] >= 6
    stopped = khrushchev.agent("stop")
    assert stopped.exit_code == 0 and "Agent stopped." in stopped.stdout
    assert not khrushchev.socket.exists()
    assert khrushchev.agent_status() == {"running": False}


def test_the_agent_receives_while_nobody_types(pair: tuple[ScriptUser, ScriptUser]) -> None:
    """With an agent, a letter is stored and its delivery receipt sent with no command run;
    `agent events` streams it; `inbox` then shows it once."""
    kennedy, khrushchev = pair
    with events_of(khrushchev) as events:
        letter = kennedy.send(khrushchev, "Arrives while nobody types.")
        eventually(lambda: kennedy.status(letter) == "delivered", 15, "the delivery receipt")
        message = events.message()
        assert message["id"] == letter and message["text"] == "Arrives while nobody types."
    assert [m["id"] for m in khrushchev.inbox()] == [letter]
    assert khrushchev.inbox() == []
    assert kennedy.status(letter) == "read"


def test_ctrl_c_on_a_watch_through_the_agent_stops_it_cleanly(
    pair: tuple[ScriptUser, ScriptUser],
) -> None:
    """SIGINT reaches the command the agent runs: `Stopped watching.`, exit 0, as without it;
    and a caller killed outright takes its command with it."""
    _, khrushchev = pair
    khrushchev.start_agent()
    for kill in (signal.SIGINT, signal.SIGKILL):
        watcher = subprocess.Popen(
            [CLI_SCRIPT, *khrushchev.argv("inbox", "--watch")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env(),
        )  # fmt: skip
        assert watcher.stderr is not None
        assert "Watching for new messages" in watcher.stderr.readline()
        assert khrushchev.agent_status()["commands_running"] == 1
        watcher.send_signal(kill)
        _, err = watcher.communicate(timeout=10)
        if kill == signal.SIGINT:
            assert watcher.returncode == 0 and err.strip() == "Stopped watching."
        eventually(lambda: khrushchev.agent_status()["commands_running"] == 0, 10, "ended")


def test_the_socket_is_the_users_alone(pair: tuple[ScriptUser, ScriptUser]) -> None:
    """0600 in a 0700 directory, and a caller of another user is refused by its peer
    credentials even when the file mode would let it in."""
    _, khrushchev = pair
    khrushchev.start_agent()
    assert khrushchev.socket.stat().st_mode & 0o777 == 0o600
    assert khrushchev.directory.stat().st_mode & 0o777 == 0o700
    if os.geteuid() != 0:
        pytest.fail("this test needs root to act as another user (CI runs as root)")
    os.chmod(khrushchev.socket, 0o666)
    os.chmod(khrushchev.directory, 0o711)
    try:
        probe = subprocess.run(  # in the profile directory, entered before becoming "nobody"
            ["python3", "-c", _OTHER_USER, khrushchev.socket.name], cwd=khrushchev.directory,
            capture_output=True, text=True, timeout=20, user=65534, group=65534,
        )  # fmt: skip
    finally:
        os.chmod(khrushchev.directory, 0o700)
        os.chmod(khrushchev.socket, 0o600)
    assert probe.returncode == 0, probe.stderr
    answer = json.loads(probe.stdout)
    assert answer["error"]["code"] == protocol.REFUSED
    assert "another user" in answer["error"]["message"]
    assert khrushchev.agent_status()["commands_run"] == 0


_OTHER_USER = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
print(s.makefile().readline())  # refused on sight: before any request
"""


def test_the_agent_locks_when_idle_and_commands_still_work(
    pair: tuple[ScriptUser, ScriptUser],
) -> None:
    """After the idle time the keys are dropped: the agent says locked, commands run without it
    (the same output), `agent unlock` opens it again, `agent lock` closes it at once."""
    kennedy, khrushchev = pair
    khrushchev.start_agent("--idle-lock", "1s")
    eventually(lambda: khrushchev.agent_status()["locked"], 10, "locked when idle")
    letter = kennedy.send(khrushchev, "While the agent is locked.")
    assert [m["id"] for m in khrushchev.inbox()] == [letter]
    assert khrushchev.agent_status()["commands_run"] == 0  # ran without it
    unlocked = khrushchev.agent("unlock")
    assert unlocked.exit_code == 0 and "Agent unlocked." in unlocked.stdout
    assert khrushchev.agent_status()["locked"] is False
    assert khrushchev.agent("lock").exit_code == 0
    assert khrushchev.agent_status()["locked"] is True


def test_an_agent_killed_during_a_burst_loses_nothing(
    pair: tuple[ScriptUser, ScriptUser],
) -> None:
    """SIGKILL to the agent and all its forks while a burst arrives: every letter is shown by
    `inbox` exactly once in the end (stored before acknowledged, as without an agent)."""
    kennedy, khrushchev = pair
    kennedy.start_agent()
    khrushchev.start_agent()
    eventually(lambda: khrushchev.agent_status()["online"], 15, "the keeper online")
    sent: list[str] = []
    for round_ in range(3):
        for n in range(15):
            sent.append(kennedy.send(khrushchev, f"Burst {round_}.{n}"))
            if n == 7:
                _kill_agent(khrushchev)
                khrushchev.start_agent()
    shown = [m["id"] for m in khrushchev.inbox() if m["kind"] == "letter"]
    shown += [m["id"] for m in khrushchev.inbox() if m["kind"] == "letter"]
    assert sorted(shown) == sorted(sent)
    history = [m["id"] for m in khrushchev.json("history") if m["direction"] == "in"]
    assert sorted(history) == sorted(sent)
    eventually(lambda: all(kennedy.status(i) == "read" for i in sent[-3:]), 15, "receipts")


def test_a_stale_socket_is_ignored_and_replaced(pair: tuple[ScriptUser, ScriptUser]) -> None:
    """An agent that died leaves its socket file: commands run without it, and `agent start`
    replaces it."""
    _, khrushchev = pair
    khrushchev.start_agent()
    _kill_agent(khrushchev)
    assert khrushchev.socket.exists()
    assert khrushchev.run("history").exit_code == 0
    assert khrushchev.agent_status() == {"running": False}
    khrushchev.start_agent()
    with protocol.connect(khrushchev.socket):
        pass
    assert khrushchev.agent_status()["running"] is True


def test_a_timed_proposal_opens_in_the_agent_at_its_time(
    pair: tuple[ScriptUser, ScriptUser],
) -> None:
    """While nobody types, the keeper opens a timed proposal when its reveal time comes:
    `agent events` streams it readable with no command run, then `inbox` shows it."""
    kennedy, khrushchev = pair
    with events_of(kennedy) as events:
        khrushchev.json("propose", kennedy.name, "--title", "At the hour",
                        "--term", "The real offer.", "--reveal-at", "3s")  # fmt: skip
        sealed = events.message()
        assert sealed["kind"] == "proposal" and "The real offer." not in sealed["text"]
        while (opened := events.message())["id"] != sealed["id"]:
            pass  # (our own "delivered" statement comes between)
        assert "The real offer." in opened["text"]
    shown = [m["text"] for m in kennedy.inbox()]
    assert any("The real offer." in text for text in shown)
