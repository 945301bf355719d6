"""`--json` on every command, for scripts: a success prints JSON, an error prints
`{"error": CODE, "message": ...}` on standard output with the exit code it has without `--json`,
and every time is an integer `..._at` in milliseconds with an ISO 8601 `..._at_iso` beside it."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from backchannel_cli.cli import main as cli_main
from backchannel_cli.render import iso

from .conftest import CLI_SCRIPT, Relay, User, participants, script_env, unique
from .test_exercises import control, mini

Trio = tuple[User, User, User]
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def commands(group: click.Group = cli_main, path: tuple[str, ...] = ()) -> Iterator[Any]:
    """Every command a user can run: (path, command), groups that run on their own included."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            if command.invoke_without_command:
                yield (*path, name), command
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


EVERY_COMMAND = list(commands())


def placeholders(command: click.Command) -> list[str]:
    """Values for a command's required arguments and options, so it gets as far as it can."""
    args: list[str] = []
    for param in command.params:
        if isinstance(param, click.Argument) and param.required:
            args += ["x"] * max(param.nargs, 1)
        elif isinstance(param, click.Option) and param.required:
            args += [param.opts[0], "x"]
    return args


def error_object(output: str) -> dict[str, Any]:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    error = json.loads(lines[0])
    assert isinstance(error, dict) and set(error) == {"error", "message"}, error
    assert re.fullmatch(r"[a-z][a-z0-9_]*", error["error"]), error
    assert error["message"] and "Traceback" not in error["message"]
    return error


def failed_json(user: User, *args: str) -> dict[str, Any]:
    """Run a command that must fail, with `--json`: one JSON error object on standard output,
    the same exit code (non-zero) as without `--json`."""
    plain = user.run(*args)
    result = user.run(*args, "--json")
    assert result.exit_code != 0 and result.exit_code == plain.exit_code, result.output
    assert result.stderr == "", result.stderr
    return error_object(result.stdout)


def check_times(value: Any, now_ms: int) -> int:
    """Every `..._at` is milliseconds (or null) with its ISO sibling; -> how many were seen."""
    seen = 0
    if isinstance(value, list):
        return sum(check_times(item, now_ms) for item in value)
    if not isinstance(value, dict):
        return 0
    for key, item in value.items():
        assert key != "at" and not key.endswith("_ms"), f"a time named {key!r}: {value}"
        if key.endswith("_at"):
            assert item is None or (isinstance(item, int) and not isinstance(item, bool)), key
            assert value[f"{key}_iso"] == iso(item), (key, value)
            if item:
                assert ISO.match(value[f"{key}_iso"]), value[f"{key}_iso"]
                if not key.startswith("scenario"):  # wall-clock times: this year, in ms
                    assert abs(item - now_ms) < 400 * 86_400_000, (key, item)
            seen += 1
        seen += check_times(item, now_ms)
    return seen


def now_ms() -> int:
    return int(time.time() * 1000)


# --- every command ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "command"), EVERY_COMMAND, ids=[" ".join(p) for p, _ in EVERY_COMMAND]
)
def test_every_command_takes_json_and_fails_in_json(
    home: Path, path: tuple[str, ...], command: click.Command
) -> None:
    assert any(isinstance(p, click.Option) and "--json" in p.opts for p in command.params), (
        f"`backchannel {' '.join(path)}` has no --json"
    )
    ghost = User(home, "ghost")  # no profile here, so every command stops with an error
    args = [*path, *placeholders(command)]
    if path == ("init",):
        args += ["--relay", "not-a-url"]
    failed_json(ghost, *args)  # a missing profile, a usage mistake, an empty letter...


def test_a_usage_mistake_is_json_with_the_usage_exit_code(home: Path) -> None:
    ghost = User(home, "ghost")
    for args in (("send",), ("send", "x", "y", "--bogus"), ("otr", "open"), ("--bogus", "inbox")):
        result = ghost.run(*args, "--json")
        assert result.exit_code == 2, result.output
        assert error_object(result.stdout)["error"] == "usage"
    # Without --json the same mistakes stay one human line.
    assert ghost.fails("otr", "open") == "Error: Missing argument 'NAME'."


def test_json_errors_through_the_console_script(relay: Relay, home: Path) -> None:
    (kennedy,) = participants(relay, home, ("kennedy", "party"))
    done = subprocess.run(
        [CLI_SCRIPT, *kennedy.argv("send", "nobody-at-all", "Hello?", "--json")],
        capture_output=True, text=True, env=script_env(), timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 1 and done.stderr == "", done
    error = error_object(done.stdout)
    assert error["error"] == "unknown_participant" and "nobody-at-all" in error["message"]


def test_error_codes_name_what_went_wrong(relay: Relay, home: Path) -> None:
    kennedy, khrushchev = participants(relay, home, ("kennedy", "party"), ("khrushchev", "party"))
    assert failed_json(kennedy, "register", "f" * 32)["error"] == "already_registered"
    stranger = User(home, "stranger", unique("stranger"))
    stranger.init(relay)
    assert failed_json(stranger, "register", "f" * 32)["error"] == "invalid_invite"  # the relay's
    assert failed_json(stranger, "directory")["error"] == "not_registered"
    assert failed_json(kennedy, "otr", "open", khrushchev.name, "--ttl", "9d")["error"] == (
        "ttl_too_long"
    )
    nowhere = User(home, "nowhere", unique("nowhere"))
    nowhere.init("http://127.0.0.1:9")
    assert failed_json(nowhere, "register", "f" * 32)["error"] == "relay_unreachable"


# --- successes -------------------------------------------------------------------------------


def test_identity_and_letters_in_json(trio: Trio, tmp_path: Path) -> None:
    kennedy, khrushchev, _ = trio
    now = now_ms()
    entries = kennedy.json("directory")
    mine = [e for e in entries if e["me"]]
    assert [e["name"] for e in mine] == [kennedy.name]
    assert all(e["me"] is False for e in entries if e["name"] != kennedy.name)
    verified = kennedy.json("verify", khrushchev.name, "--yes")
    assert verified["verified"] is True

    sent = kennedy.json("send", khrushchev.name, "A letter.")
    assert check_times(sent, now) >= 1 and sent["sent_at_iso"] == iso(sent["sent_at"])
    (received,) = khrushchev.inbox()
    assert check_times(received, now) >= 1
    assert check_times(khrushchev.json("show", received["id"]), now) >= 1
    acknowledged = khrushchev.json("ack", received["id"])
    assert check_times(acknowledged, now) >= 1


def test_proposals_in_json(trio: Trio, relay: Relay, tmp_path: Path) -> None:
    kennedy, khrushchev, _ = trio
    now = now_ms()
    made = khrushchev.json(
        "propose", kennedy.name, "--title", "Missiles out", "--term", "They leave.",
        "--expires", "2h", "--reveal-at", "1h",
    )  # fmt: skip
    assert check_times(made, now) >= 3
    assert made["expires_at"] - now > 7000_000 and made["reveal_at"] - now > 3000_000
    assert made["notary"]["notarised_at"] >= now - 5000
    plain = khrushchev.json("propose", kennedy.name, "--title", "Jupiters", "--term", "Out.")
    second = khrushchev.json("propose", kennedy.name, "--title", "Another", "--term", "Too.")
    third = khrushchev.json("propose", kennedy.name, "--title", "A third", "--term", "Also.")
    kennedy.inbox()
    check_times(kennedy.json("proposals"), now)
    assert check_times(kennedy.json("accept", plain["id"]), now) >= 4  # with its history
    assert kennedy.json("reject", second["id"], "--reason", "No.")["status"] == "rejected"
    countered = kennedy.json("counter", third["id"], "--title", "Instead", "--term", "This.")
    assert countered["answers"] == third["id"]
    assert khrushchev.json("withdraw", made["id"])["status"] == "withdrawn"
    history = kennedy.json("show", plain["id"])["history"]
    assert [h["kind"] for h in history][-1] == "accepted"
    assert all(isinstance(h["stated_at"], int) and h["stated_at_iso"] for h in history)

    record = kennedy.json("export", plain["id"])  # the record itself, as without --json
    out = tmp_path / "record.json"
    written = kennedy.json("export", plain["id"], "--out", str(out))
    assert written == {"out": str(out), "records": 1, "notary_key": record["notary_key"]}
    assert json.loads(out.read_text()) == record

    # The notary key: base64 wherever JSON prints it, and taken in base64 or in hex.
    with urllib.request.urlopen(f"{relay.url}/v1/info") as response:
        published = json.load(response)["notary_key"]
    log = kennedy.json("notary-log")
    assert log["notary_key"] == published == record["notary_key"]
    hexed = base64.b64decode(published).hex()
    for key in (log["notary_key"], hexed, hexed.upper(), " ".join(re.findall("....", hexed))):
        checked = kennedy.json("verify-record", str(out), "--notary-key", key)
        assert checked["trusted_key_given"] is True and checked["notary_key"] == published
        assert checked["records"][0]["valid"] is True
        assert check_times(checked, now) >= 1
    assert (
        failed_json(kennedy, "verify-record", str(out), "--notary-key", hexed[:-2])["error"]
        == "bad_key"
    )


def test_off_the_record_in_json(trio: Trio) -> None:
    kennedy, khrushchev, _ = trio
    now = now_ms()
    opened = kennedy.json("otr", "open", khrushchev.name, "--ttl", "30m")
    assert check_times(opened, now) == 1
    assert 29 * 60_000 < opened["expires_at"] - now <= 31 * 60_000  # milliseconds, not seconds
    khrushchev.inbox()
    sent = kennedy.json("otr", "send", khrushchev.name, "Between us.")
    assert check_times(sent, now) >= 1
    (channel,) = kennedy.json("otr", "list")
    assert channel["expires_at"] == opened["expires_at"] and check_times(channel, now) == 1
    closed = kennedy.json("otr", "close", khrushchev.name)
    assert closed == {"with": khrushchev.name, "status": "closed", "keys_wiped": True}
    assert kennedy.json("otr", "list") == []


def test_mediation_in_json(trio: Trio) -> None:
    kennedy, khrushchev, u_thant = trio
    now = now_ms()
    introduced = u_thant.json("introduce", kennedy.name, khrushchev.name)
    assert {i["to"] for i in introduced} == {kennedy.name, khrushchev.name}
    letter = kennedy.json("send", u_thant.name, "Pass this on.")
    consent = kennedy.json("consent", letter["id"], "--to", khrushchev.name)
    assert consent["to"] == khrushchev.name
    u_thant.inbox()
    forwarded = u_thant.json("forward", letter["id"], "--to", khrushchev.name)
    assert forwarded["verbatim"] is True
    check_times([introduced, consent, forwarded], now)
    assert u_thant.json("exchange", "list") == []
    assert failed_json(u_thant, "exchange", "release", "abcdef12")["message"]


def test_exercise_in_json(make_relay: Any, home: Path) -> None:
    relay = make_relay("json-exercise")
    name, users = mini(relay, home)
    control(relay, "clock", "set", "1962-10-22T09:30:00-04:00", "--exercise", name)
    view = users["c"].json("exercise")
    clock = view["clock"]
    assert clock["scenario_at_iso"] == "1962-10-22T13:30:00.000Z"
    assert clock["scenario_time"].startswith("1962-10-22 09:30")
    assert check_times(view, now_ms()) >= 3
    (inject,) = view["injects"]
    assert inject["scenario_at_iso"].startswith("1962-10-22T13:00")
    outsider = participants(relay, home, ("outsider", "party"))[0]
    assert failed_json(outsider, "exercise")["error"] == "no_exercise"
