"""`backchannel-relay` as exercise control meets it: every command that touches a store says
which one (the SQLite file, or the PostgreSQL URL without its password), a store that cannot be
opened is one line naming it, a second `serve` on a SQLite file already served is refused at
start while control commands keep working on it, and stopping the relay closes its WebSockets
as going away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import RELAY, Backend, Relay, free_port, join, make_relay
from .test_exercises import backend_of_its_own


@pytest.fixture(params=["sqlite", "postgresql"])
def own_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from backend_of_its_own(request.param, tmp_path)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RELAY, *args], capture_output=True, text=True, timeout=120)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("Error: "), line
    return line


def shown_store(backend: Backend) -> tuple[str, str]:
    """-> (what `store` holds in --json, the line control commands write to stderr)."""
    if backend.name == "sqlite":
        path = str(Path(backend.store_args[1]) / "relay.sqlite3")
        return path, f"backchannel-relay: store is the SQLite file {path}"
    url = backend.store_args[1].replace("+asyncpg", "")
    return url, f"backchannel-relay: store is the PostgreSQL database {url}"


def test_control_commands_name_their_store(own_backend: Backend, tmp_path: Path) -> None:
    backend = own_backend
    store, line = shown_store(backend)
    name = f"named-{os.urandom(3).hex()}"

    plain = run("invite", name, "--role", "party", *backend.store_args)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith(f"invite for {name} (party): ")  # stdout as before
    assert plain.stderr.splitlines() == [line]

    answer = json.loads(run("invite", name + "-j", "--role", "party", *backend.store_args,
                            "--json").stdout)  # fmt: skip
    assert answer["store"] == store and answer["invite"]

    scenario = tmp_path / "one.toml"
    scenario.write_text(
        f'schema = 1\n[exercise]\nname = "{name}"\ntitle = "T"\nbrief = "B"\n'
        '[clock]\nstart = "1962-10-22T08:00:00-04:00"\n'
        f'[[roles]]\nname = "{name}-r"\nkind = "party"\ntitle = "R"\nbrief = "R."\n'
    )
    for args in (
        ("exercise", "load", str(scenario)),
        ("exercise", "status", "--exercise", name),
        ("exercise", "clock", "resume", "--exercise", name),
    ):
        done = run(*args, *backend.store_args)
        assert done.returncode == 0 and done.stderr.splitlines() == [line], done.stderr
        coded: dict[str, Any] = json.loads(run(*args, *backend.store_args, "--json").stdout)
        assert coded["store"] == store, args

    migrated = run("migrate", *backend.store_args)
    assert migrated.returncode == 0
    assert migrated.stdout.strip() == line.replace("backchannel-relay: store is the",
                                                   "schema is up to date in the")  # fmt: skip


def test_a_store_that_cannot_be_opened_is_named_in_one_line(tmp_path: Path) -> None:
    unreachable = f"postgresql://exercise:hunter2@127.0.0.1:{free_port()}/relay"
    for command in (["invite", "x", "--role", "party"], ["exercise", "status"], ["migrate"]):
        line = one_error_line(run(*command, "--database", unreachable))
        assert "cannot open the PostgreSQL database postgresql://exercise@127.0.0.1:" in line
        assert "hunter2" not in line
    coded = run("invite", "x", "--role", "party", "--database", unreachable, "--json")
    assert coded.returncode != 0
    error = json.loads(coded.stdout)
    assert error["error"] == "store_unavailable" and "hunter2" not in error["message"]

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    line = one_error_line(run("invite", "x", "--role", "party", "--data-dir", str(blocked / "d")))
    assert f"cannot open the SQLite file {blocked / 'd' / 'relay.sqlite3'}: " in line


def test_a_second_relay_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    store = ["--data-dir", str(tmp_path / "data")]
    first = make_relay(Backend("sqlite", store, tmp_path))
    try:
        assert first.process is not None
        second = subprocess.run(
            [*RELAY, "serve", "--port", str(free_port()), *store],
            capture_output=True,
            text=True,
            timeout=60,
        )
        line = one_error_line(second)
        assert second.stdout == ""  # refused before it says anything else
        assert line == (
            f"Error: another relay process (pid {first.process.pid}) already serves the SQLite "
            f"file {tmp_path / 'data' / 'relay.sqlite3'}; stop it first, or give this one "
            "another --data-dir (several processes need PostgreSQL)"
        )
        # Control commands still work on the served file, and the relay sees what they wrote.
        invite = first.invite("after-refusal")
        assert invite
    finally:
        first.kill(signal.SIGKILL)
    # The lock went with the process, however it ended: the file can be served again.
    again = Relay(store, tmp_path)
    again.start()
    again.kill(signal.SIGTERM)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_stopping_closes_every_websocket_as_going_away(
    own_backend: Backend, sig: signal.Signals
) -> None:
    """Control stops the relay: each live socket gets close code 1001 (going away), not a cut
    connection, and the relay exits 0 within 2 s."""
    relay = make_relay(own_backend)
    try:
        members = [await join(relay), await join(relay)]
        async with aiohttp.ClientSession() as session:
            sockets = [
                await session.ws_connect(
                    relay.url + "/v1/ws", headers={"Authorization": f"Bearer {m.client.token}"}
                )
                for m in members
            ]
            assert relay.process is not None
            started = time.monotonic()
            relay.process.send_signal(sig)
            for ws in sockets:
                closing = await ws.receive(timeout=2)
                assert closing.type == aiohttp.WSMsgType.CLOSE, closing
                assert closing.data == aiohttp.WSCloseCode.GOING_AWAY
                await ws.close()
            assert relay.process.wait(timeout=10) == 0
            assert time.monotonic() - started < 2.0
        for member in members:
            await member.client.close()
        assert relay.log().rstrip().splitlines()[-1] == "backchannel-relay: stopped."
    finally:
        relay.kill()
