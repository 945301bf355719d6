"""`backchannel-relay wipe` and `backup` on a store of their own, without a relay running: the
question on a terminal, tables a later migration adds, and the backup's refusals. The canary
scans after a real exercise are in tests/cli/test_wipe.py."""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from backchannel_relay.cli import main as relay_main

RELAY_SCRIPT = str(Path(sys.executable).parent / "backchannel-relay")


def loaded(data_dir: Path) -> list[str]:
    """A store with cuba-1962 loaded (its invites, its exercise rows and the relay's keys)."""
    args = ["--data-dir", str(data_dir)]
    result = CliRunner().invoke(relay_main, ["exercise", "load", "cuba-1962", *args])
    assert result.exit_code == 0, result.output
    return args


def count(data_dir: Path, table: str) -> int:
    with sqlite3.connect(data_dir / "relay.sqlite3") as connection:
        return int(connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


def on_a_terminal(argv: list[str], answer: bytes) -> tuple[int, str]:
    """Run a console script with a pseudo-terminal as its stdin and stdout; type `answer`."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    output = b""
    os.write(leader, answer)
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child has gone: EIO on Linux
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    return process.wait(30), output.decode(errors="replace")


def test_wipe_asks_on_a_terminal_and_does_nothing_without_a_yes(tmp_path: Path) -> None:
    args = loaded(tmp_path / "relay")
    invites = count(tmp_path / "relay", "invites")
    code, output = on_a_terminal([RELAY_SCRIPT, "wipe", *args], b"n\n")
    assert code != 0 and "Destroy everything in the SQLite file" in output
    assert count(tmp_path / "relay", "invites") == invites > 0
    code, output = on_a_terminal([RELAY_SCRIPT, "wipe", *args], b"y\n")
    assert code == 0 and "invites: " in output and "wear levelling" in output
    assert count(tmp_path / "relay", "invites") == 0


def test_a_table_a_later_migration_adds_is_emptied_and_reported(tmp_path: Path) -> None:
    args = loaded(tmp_path / "relay")
    with sqlite3.connect(tmp_path / "relay" / "relay.sqlite3") as connection:
        connection.execute("CREATE TABLE later_kind (x TEXT)")
        connection.execute("INSERT INTO later_kind VALUES ('canary-later')")
    result = CliRunner().invoke(relay_main, ["wipe", "--yes", "--json", *args])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["destroyed"]["later_kind"] == 1
    assert count(tmp_path / "relay", "later_kind") == 0
    assert b"canary-later" not in (tmp_path / "relay" / "relay.sqlite3").read_bytes()


def test_backup_refusals_are_one_line(tmp_path: Path) -> None:
    args = loaded(tmp_path / "relay")
    out = tmp_path / "copy.sqlite3"
    made = CliRunner().invoke(relay_main, ["backup", str(out), *args])
    assert made.exit_code == 0 and "no drops" in made.output
    again = CliRunner().invoke(relay_main, ["backup", str(out), *args, "--json"])
    assert again.exit_code != 0 and json.loads(again.stdout)["error"] == "exists"
    missing = CliRunner().invoke(
        relay_main, ["backup", str(tmp_path / "b"), "--data-dir", str(tmp_path / "none")]
    )
    assert missing.exit_code != 0 and missing.output.startswith("Error: there is no store")
    assert not (tmp_path / "none").exists()
