"""The CLI's home is its user's alone (issue 16, item 10): the home, `profiles/` and each
profile's directory are 0700 and its files 0600, whatever the umask, and those an earlier
version (or another tool) left readable to others are made private again on the next command."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.relay.test_file_modes import unchangeable_directory

from .conftest import User, assert_one_error_line

RELAY_URL = "http://127.0.0.1:9"  # never reached: these commands work offline


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes(user: User) -> dict[str, int]:
    found = {
        ".": mode(user.home),
        "profiles": mode(user.home / "profiles"),
        "profile": mode(user.directory),
    }
    found.update({p.name: mode(p) for p in user.directory.iterdir()})
    return found


def private(user: User) -> dict[str, int]:
    directories = {".": 0o700, "profiles": 0o700, "profile": 0o700}
    return {**directories, **{p.name: 0o600 for p in user.directory.iterdir()}}


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("loose_umask")
def test_a_new_home_its_profiles_and_files_are_private(tmp_path: Path) -> None:
    home = tmp_path / "new-home"
    kennedy = User(home, "kennedy")
    kennedy.init(RELAY_URL)
    assert {"profile.json", "keystore.bcks", "state.sqlite3"} <= set(modes(kennedy))
    assert modes(kennedy) == private(kennedy)


@pytest.mark.usefixtures("loose_umask")
def test_an_existing_home_left_readable_is_made_private(tmp_path: Path) -> None:
    home = tmp_path / "old-home"
    home.mkdir(mode=0o755)
    kennedy = User(home, "kennedy")
    kennedy.init(RELAY_URL)
    for directory in (home, home / "profiles", kennedy.directory):
        directory.chmod(0o755)
    for file in kennedy.directory.iterdir():
        file.chmod(0o644)
    kennedy.json("history")  # any command that opens the profile
    assert modes(kennedy) == private(kennedy)


def test_a_home_that_cannot_be_made_private_is_refused_in_one_line() -> None:
    home = unchangeable_directory()
    line = assert_one_error_line(
        User(home, "kennedy").run("init", "kennedy", "--relay", RELAY_URL, "--no-passphrase").output
    )
    assert f"cannot make {home} private" in line and "not permitted" in line
