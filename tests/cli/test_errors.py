"""Every way a command can fail for the user ends the same way: one readable line that starts
with `Error:`, a non-zero exit code, and no traceback."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from backchannel_cli.commandline import PASSPHRASE_ENV

from .conftest import (
    CLI_SCRIPT,
    Relay,
    User,
    assert_one_error_line,
    free_port,
    participants,
    script_env,
    unique,
)


@pytest.fixture
def pair(relay: Relay, home: Path) -> tuple[User, User]:
    kennedy, khrushchev = participants(relay, home, ("kennedy", "party"), ("khrushchev", "party"))
    return kennedy, khrushchev


def test_unknown_recipient(pair: tuple[User, User]) -> None:
    kennedy, _ = pair
    line = kennedy.fails("send", "castro", "Is anyone there?")
    assert line.startswith("Error: no participant named 'castro'")
    assert kennedy.fails("verify", "castro").startswith("Error: no participant named 'castro'")
    assert kennedy.fails("show", "0123456789abcdef").startswith(
        "Error: no message or proposal with "
    )


def test_relay_unreachable(own_relay: Relay, home: Path) -> None:
    kennedy, khrushchev = participants(
        own_relay, home, ("kennedy", "party"), ("khrushchev", "party")
    )
    own_relay.stop()
    unreachable = f"Error: cannot reach the relay at {own_relay.url}: "
    for command in (
        ["directory"],
        ["inbox"],
        ["inbox", "--watch"],  # the first fetch must work; only then does a watch retry
        ["verify", khrushchev.name],
        ["send", khrushchev.name, "Hello?"],
    ):
        assert kennedy.fails(*command).startswith(unreachable), command
    # Registering against a relay that never answered.
    nowhere = f"http://127.0.0.1:{free_port()}"
    stranger = User(home, "castro")
    stranger.init(nowhere)
    line = stranger.fails("register", "0" * 32)
    assert line.startswith(f"Error: cannot reach the relay at {nowhere}: ")


def test_wrong_or_missing_passphrase(relay: Relay, home: Path) -> None:
    kennedy = User(home, "kennedy", unique("kennedy"))
    kennedy.init(relay, passphrase="correct horse battery staple")
    wrong = {PASSPHRASE_ENV: "incorrect horse"}
    assert kennedy.fails("directory", env=wrong) == (
        "Error: wrong passphrase (or the keystore was altered)"
    )
    assert kennedy.fails("register", relay.invite(kennedy.name), env=wrong) == (
        "Error: wrong passphrase (or the keystore was altered)"
    )
    # No passphrase in the environment and no terminal to ask on.
    assert kennedy.fails("inbox") == (
        f"Error: the keystore needs a passphrase: set {PASSPHRASE_ENV} or run in a terminal"
    )


def test_unregistered_or_missing_profile(relay: Relay, home: Path) -> None:
    kennedy = User(home, "kennedy", unique("kennedy"))
    kennedy.init(relay)
    not_registered = (
        f"Error: {kennedy.name} is not registered at {relay.url}; "
        f"run `backchannel --profile {kennedy.profile} register INVITE`"
    )
    for command in (["directory"], ["inbox"], ["send", "khrushchev", "Hello?"]):
        assert kennedy.fails(*command) == not_registered, command
    assert kennedy.fails("show", "0000").startswith("Error: no message or proposal with ")

    ghost = User(home, "ghost")
    missing = (
        f"Error: no profile in {ghost.directory}; "
        "create one with `backchannel --profile ghost init NAME --relay URL`"
    )
    for command in (["directory"], ["inbox"], ["register", "0" * 32], ["show", "00"]):
        assert ghost.fails(*command) == missing, command
    assert kennedy.fails("init", kennedy.name, "--relay", relay.url, "--no-passphrase") == (
        f"Error: a profile already exists in {kennedy.directory}"
    )


def test_registration_refused_with_the_relays_message(relay: Relay, home: Path) -> None:
    kennedy = User(home, "kennedy", unique("kennedy"))
    kennedy.init(relay)
    assert kennedy.fails("register", "f" * 32) == (
        "Error: relay refused: the invite is unknown or already used (invalid_invite)"
    )
    other = relay.invite(unique("someone-else"))
    assert "this invite is for 'someone-else-" in kennedy.fails("register", other)
    invite = relay.invite(kennedy.name)
    kennedy.ok("register", invite)
    assert kennedy.fails("register", invite) == (
        f"Error: this profile is registered already: {kennedy.name} at {relay.url}; nothing to do"
    )


def _truncate(data: bytes) -> bytes:
    return data[:50]


def _empty(data: bytes) -> bytes:
    return b""


def _bad_magic(data: bytes) -> bytes:
    return b"JUNK" + data[4:]


def _garbled_identity(data: bytes) -> bytes:
    # An unprotected keystore: header (4 magic, version, protection), length (4), then the
    # identity's private key. Any 64 bytes make a key pair, so only the profile can tell.
    return data[:10] + bytes(b ^ 0x5A for b in data[10:74]) + data[74:]


def _appended(data: bytes) -> bytes:
    return data + b"\x00"


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_truncate, "Error: the keystore is corrupt: keystore is damaged: "),
        (_empty, "Error: the keystore is corrupt: keystore is damaged: "),
        (_bad_magic, "Error: the keystore is corrupt: not a Backchannel keystore"),
        (_garbled_identity, "Error: the keystore is corrupt: it holds another identity"),
        (_appended, "Error: the keystore is corrupt: "),
    ],
    ids=["truncated", "empty", "bad-magic", "garbled-identity", "trailing-bytes"],
)
def test_corrupt_keystore(
    relay: Relay, home: Path, damage: Callable[[bytes], bytes], expected: str
) -> None:
    (kennedy,) = participants(relay, home, ("kennedy", "party"))
    keystore = kennedy.directory / "keystore.bcks"
    keystore.write_bytes(damage(keystore.read_bytes()))
    for command in (["directory"], ["inbox"], ["send", "khrushchev", "Hello?"]):
        assert kennedy.fails(*command).startswith(expected), command


def test_missing_keystore_or_damaged_state(relay: Relay, home: Path) -> None:
    kennedy, khrushchev = participants(relay, home, ("kennedy", "party"), ("khrushchev", "party"))
    (kennedy.directory / "keystore.bcks").unlink()
    assert kennedy.fails("inbox") == f"Error: no keystore in {kennedy.directory}"

    state = khrushchev.directory / "state.sqlite3"
    state.write_bytes(b"this is not a database" * 300)
    assert khrushchev.fails("inbox") == (
        f"Error: the local state {state} is damaged: file is not a database"
    )
    (khrushchev.directory / "profile.json").write_text("[1, 2")
    assert khrushchev.fails("inbox") == (
        f"Error: {khrushchev.directory / 'profile.json'} is damaged"
    )


def test_relay_rate_limit_reports_the_relays_message(
    make_relay: Callable[..., Relay], home: Path
) -> None:
    strict = make_relay("strict", "--rate-burst", "2", "--rate-per-second", "0.01")
    kennedy, khrushchev = participants(strict, home, ("kennedy", "party"), ("khrushchev", "party"))
    kennedy.json("directory")  # one request of the two in the burst
    line = kennedy.fails("send", khrushchev.name, "Too fast?")
    assert line.startswith("Error: relay refused: too many requests; slow down (rate_limited; ")
    assert "retry in " in line
    assert "(rate_limited; retry in " in kennedy.fails("inbox")


def test_letters_that_cannot_be_sent(pair: tuple[User, User], tmp_path: Path) -> None:
    kennedy, khrushchev = pair
    assert kennedy.fails("send", khrushchev.name, "   ") == "Error: the letter is empty"
    assert kennedy.fails("send", khrushchev.name, input="") == "Error: the letter is empty"
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"ab\xff\xfe")
    assert kennedy.fails("send", khrushchev.name, "--file", str(binary)) == (
        "Error: the letter is not valid UTF-8 text"
    )
    long = tmp_path / "long.txt"
    long.write_text("x" * 70_000)
    assert kennedy.fails("send", khrushchev.name, "--file", str(long)) == (
        "Error: a letter holds at most 65536 bytes of text"
    )
    assert kennedy.fails("send", kennedy.name, "Dear me") == (
        "Error: you cannot write a letter to yourself"
    )
    # None of them was kept to be sent later.
    assert khrushchev.inbox() == []


def test_errors_through_the_console_script(relay: Relay, home: Path) -> None:
    """The installed `backchannel` itself: the line on stderr, nothing on stdout, exit code 1."""
    (kennedy,) = participants(relay, home, ("kennedy", "party"))
    cases = [
        (["--profile", "ghost", "inbox"], "Error: no profile in "),
        (
            ["--profile", kennedy.profile, "send", "castro", "Hello?"],
            "Error: no participant named 'castro'",
        ),
    ]
    for argv, expected in cases:
        done = subprocess.run(
            [CLI_SCRIPT, "--home", str(home), *argv],
            capture_output=True,
            text=True,
            env=script_env(),
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 1, done
        assert done.stdout == ""
        assert assert_one_error_line(done.stderr).startswith(expected)
