"""What the relay writes is for its own user alone (issue 16, item 10): the data directory is
0700 even if it existed before, and the SQLite database, its write-ahead log and shared memory,
and the serving lock are 0600, including those an earlier version left readable to others. A
data directory the relay cannot make private is refused in one line."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from backchannel_relay.cli import main as relay_main

from .conftest import Relay, join

FILES = ("relay.sqlite3", "relay.sqlite3-wal", "relay.sqlite3-shm", "relay.sqlite3.lock")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def served(data_dir: Path, workdir: Path) -> dict[str, int]:
    """Start a relay on `data_dir`, register someone (so the log and shared memory exist), and
    return the modes of the directory and its files while it serves."""
    relay = Relay(["--data-dir", str(data_dir)], workdir)
    relay.start()
    try:
        asyncio.run(_register(relay))
        modes = {name: mode(data_dir / name) for name in FILES}
        modes["."] = mode(data_dir)
        return modes
    finally:
        relay.kill(signal.SIGTERM)


async def _register(relay: Relay) -> None:
    member = await join(relay, "modes")
    await member.client.close()


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The common default: without care, new files would be 0644 and directories 0755."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("loose_umask")
def test_a_new_data_directory_and_its_files_are_private(tmp_path: Path) -> None:
    modes = served(tmp_path / "data", tmp_path)
    assert modes == {".": 0o700, **dict.fromkeys(FILES, 0o600)}


@pytest.mark.usefixtures("loose_umask")
def test_an_existing_data_directory_and_files_left_readable_are_made_private(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    served(data, tmp_path)
    data.chmod(0o755)  # as an earlier version (or `mkdir`) left them
    for name in FILES:
        if (data / name).exists():
            (data / name).chmod(0o644)
    modes = served(data, tmp_path)
    assert modes == {".": 0o700, **dict.fromkeys(FILES, 0o600)}


@pytest.mark.usefixtures("loose_umask")
def test_a_control_command_creates_the_store_privately(tmp_path: Path) -> None:
    data = tmp_path / "control"
    invite = ["invite", "someone", "--role", "party", "--data-dir", str(data)]
    result = CliRunner().invoke(relay_main, invite)
    assert result.exit_code == 0, result.output
    assert mode(data) == 0o700 and mode(data / "relay.sqlite3") == 0o600


def unchangeable_directory() -> Path:
    """A directory whose mode nobody may change, not even root: a process's /proc entry (Linux
    refuses any chmod there). Probed with its own mode, so nothing changes if it were allowed."""
    path = Path("/proc/1")
    try:
        os.chmod(path, stat.S_IMODE(path.stat().st_mode))
    except PermissionError:
        return path
    except OSError:
        pass
    pytest.skip("no directory here refuses a chmod")


@pytest.mark.parametrize(
    "command", [["serve", "--port", "1"], ["invite", "someone", "--role", "party"]]
)
def test_a_data_directory_that_cannot_be_made_private_is_refused(command: list[str]) -> None:
    data = unchangeable_directory()
    result = CliRunner().invoke(relay_main, [*command, "--data-dir", str(data)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ") and "cannot make it private" in lines[-1], lines
    assert "Operation not permitted" in lines[-1]
