"""What a participant leaves on disk: private files, a keystore that keeps the identity key
secret under a passphrase, and no letter text in the clear (nor on the relay)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backchannel_cli import cli
from backchannel_cli.commandline import PASSPHRASE_ENV
from backchannel_cli.profile import unlock

from .conftest import Relay, User, Watcher, participants, unique

PASSPHRASE = "We must not pull on the ends of the rope"


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """Whatever the user's umask, the profile stays private."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in sorted(directory.iterdir())}


def test_profile_files_are_0600_in_a_0700_directory(
    relay: Relay, home: Path, permissive_umask: None, watch: Callable[..., Watcher]
) -> None:
    kennedy, khrushchev = participants(relay, home, ("kennedy", "party"), ("khrushchev", "party"))
    kennedy.send(khrushchev, "Private.")
    # While a watch holds the state open, SQLite's -wal and -shm files exist as well.
    watcher = watch(khrushchev).connected()
    kennedy.send(khrushchev, "Still private.")
    watcher.line()
    for user in (kennedy, khrushchev):
        assert stat.S_IMODE(user.directory.stat().st_mode) == 0o700
        modes = _modes(user.directory)
        assert {"profile.json", "keystore.bcks", "state.sqlite3"} <= modes.keys()
        assert all(mode == 0o600 for mode in modes.values()), modes
    assert {"state.sqlite3-wal", "state.sqlite3-shm"} <= _modes(khrushchev.directory).keys()
    watcher.stop()


def test_a_passphrase_keeps_the_identity_key_out_of_the_keystore_file(
    relay: Relay, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {PASSPHRASE_ENV: PASSPHRASE}
    kennedy = User(home, "kennedy", unique("kennedy"))
    kennedy.init(relay, passphrase=PASSPHRASE)
    kennedy.json("register", relay.invite(kennedy.name), env=env)
    (plain,) = participants(relay, home, ("khrushchev", "party"))

    unlocked = unlock(kennedy.directory, PASSPHRASE)
    secret = unlocked.identity.private_bytes()
    signing, dh = secret[:32], secret[32:]
    keystore = (kennedy.directory / "keystore.bcks").read_bytes()
    for file in kennedy.directory.iterdir():
        data = file.read_bytes()
        for part in (signing, dh, unlocked.data_key):
            assert part not in data, f"{file.name} holds key material in the clear"
    assert PASSPHRASE.encode() not in keystore

    # The same check has teeth: without a passphrase the key is right there, by choice.
    plain_secret = unlock(plain.directory, None).identity.private_bytes()
    assert plain_secret in (plain.directory / "keystore.bcks").read_bytes()

    # The protected profile works with its passphrase, asked for once per command: `verify`
    # shows the number and marks it verified in one unlock.
    asked: list[bool] = []
    ask = cli.ask_passphrase

    def counting(confirm: bool) -> str:
        asked.append(confirm)
        return ask(confirm)

    monkeypatch.setattr(cli, "ask_passphrase", counting)
    assert "is now verified" in kennedy.ok("verify", plain.name, input="y\n", env=env)
    assert asked == [False]
    kennedy.json("send", plain.name, "Sealed at rest.", env=env)
    assert [m["text"] for m in plain.inbox()] == ["Sealed at rest."]


def test_letter_text_is_nowhere_in_the_clear(own_relay: Relay, home: Path) -> None:
    kennedy, khrushchev = participants(
        own_relay, home, ("kennedy", "party"), ("khrushchev", "party")
    )
    text = "The Jupiter missiles in Turkey will be removed within six months."
    kennedy.send(khrushchev, text)
    # Check while the envelope waits on the relay, then after both sides stored it.
    assert not _files_containing(own_relay.data_dir, text.encode())
    assert [m["text"] for m in khrushchev.inbox()] == [text]
    for where in (own_relay.data_dir, kennedy.directory, khrushchev.directory):
        assert not _files_containing(where, text.encode()), where


def _files_containing(directory: Path, needle: bytes) -> list[str]:
    return [p.name for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]
