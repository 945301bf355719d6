"""Messages that help: hints name the profile in use, a mistyped name gets "did you mean",
limits are stated in the unit the user gave, connection errors name the URL, what others wrote
never reaches the terminal as control characters, and a watch ends quietly on Ctrl-C."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from backchannel import content
from backchannel_cli.cli import main as cli_main

from .conftest import Relay, User, Watcher, free_port, participants, unique

Trio = tuple[User, User, User]
HOSTILE = "Ring\x07 clear\x1b[2J title\x1b]0;owned\x07 csi\x9b31m del\x7f rtl\u202eevil\r done"
"""A bell, an erase-screen, a window-title escape, an 8-bit CSI, DEL, a right-to-left
override and a carriage return: none of them may reach a terminal raw."""
RAW = ["\x07", "\x1b", "\x9b", "\x7f", "\u202e", "\r"]


def test_hints_name_the_profile_in_use(relay: Relay, home: Path) -> None:
    kennedy = User(home, "kennedy", unique("kennedy"))
    created = kennedy.ok("init", kennedy.name, "--relay", relay.url, "--no-passphrase")
    assert "Next: backchannel --profile kennedy register INVITE" in created
    registered = kennedy.ok("register", relay.invite(kennedy.name))
    assert "Next: backchannel --profile kennedy directory" in registered

    default = User(home, "default", unique("default"))
    created = default.ok("init", default.name, "--relay", relay.url, "--no-passphrase")
    assert "Next: backchannel register INVITE" in created

    # Errors and notes that suggest a command name the profile too.
    stranger = User(home, "stranger", unique("stranger"))
    stranger.init(relay)
    assert stranger.fails("inbox").endswith("run `backchannel --profile stranger register INVITE`")


def test_a_mistyped_name_gets_did_you_mean(trio: Trio) -> None:
    kennedy, khrushchev, _ = trio
    typo = khrushchev.name.replace("shch", "sch")  # `khruschev-7` for `khrushchev-7`
    line = kennedy.fails("send", typo, "Hello?")
    assert line.startswith(f"Error: no participant named {typo!r}; did you mean ")
    assert f"did you mean {khrushchev.name!r}" in line  # the closest first
    assert f"did you mean {khrushchev.name!r}" in kennedy.fails("verify", typo)
    assert f"did you mean {khrushchev.name!r}" in kennedy.fails("otr", "open", typo)
    far = kennedy.fails("send", "zzzzzzzzzzzz", "Hello?")
    assert far == (
        "Error: no participant named 'zzzzzzzzzzzz' "
        f"(`backchannel --profile {kennedy.profile} directory` lists them)"
    )


def test_verify_without_a_terminal_says_to_use_yes(trio: Trio) -> None:
    kennedy, khrushchev, _ = trio
    result = kennedy.run("verify", khrushchev.name)  # standard input is not a terminal
    assert result.exit_code == 1
    assert "Safety number with" in result.stdout  # shown, so it can be compared
    assert result.stderr.strip() == (
        f"Error: there is no terminal to confirm on: run `backchannel --profile "
        f"{kennedy.profile} verify {khrushchev.name} --yes` once you have compared the numbers"
    )
    assert "is now verified" in kennedy.ok("verify", khrushchev.name, "--yes")


def test_registering_again_or_under_a_taken_name(relay: Relay, home: Path) -> None:
    kennedy = User(home, "kennedy", unique("kennedy"))
    kennedy.init(relay)
    invite = relay.invite(kennedy.name)
    kennedy.ok("register", invite)
    already = f"Error: this profile is registered already: {kennedy.name} at {relay.url}"
    assert kennedy.fails("register", invite).startswith(already)
    assert kennedy.fails("register", "f" * 32).startswith(already)

    # The profile deleted and created again: a new key under a name the old key holds.
    for path in sorted(kennedy.directory.iterdir()):
        path.unlink()
    kennedy.directory.rmdir()
    kennedy.init(relay)
    taken = (
        f"Error: the name {kennedy.name} is already registered at {relay.url} with another "
        "identity key"
    )
    assert kennedy.fails("register", invite).startswith(taken)
    assert "ask exercise control for an invite under another name" in kennedy.fails("directory")
    assert "bad_proof" not in kennedy.fails("send", "anyone", "Hello?")


def test_a_connection_error_names_the_url(home: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    nobody = User(home, "nobody", unique("nobody"))
    nobody.init(url)
    line = nobody.fails("register", "f" * 32)
    assert line == f"Error: cannot reach the relay at {url}: connection refused (is it running?)"
    bad = User(home, "bad", unique("bad"))
    bad.init("http://[::1")
    assert bad.fails("register", "f" * 32) == "Error: the relay URL 'http://[::1' is not valid"


def test_limits_are_stated_in_the_unit_given(trio: Trio) -> None:
    kennedy, khrushchev, _ = trio
    cap = "Error: --ttl: this relay keeps an off-the-record channel for at most "
    assert kennedy.fails("otr", "open", khrushchev.name, "--ttl", "48h") == cap + "24h"
    assert kennedy.fails("otr", "open", khrushchev.name, "--ttl", "2000m") == cap + "1440m"
    assert kennedy.fails("otr", "open", khrushchev.name, "--ttl", "2d") == cap + "1d"
    assert kennedy.fails("otr", "open", khrushchev.name, "--ttl", "90000s") == cap + "86400s"
    assert kennedy.fails("otr", "open", khrushchev.name, "--ttl", "9000h") == (
        "Error: --ttl: 9000h is too long: at most 8784h"
    )
    assert kennedy.fails("otr", "open", khrushchev.name, "--ttl", "soon") == (
        "Error: --ttl: 'soon' is not a duration like 90s, 30m, 2h or 7d"
    )


def test_the_letter_size_limit_is_in_send_help() -> None:
    limit = content.MAX_LETTER_TEXT_BYTES
    help_text = CliRunner().invoke(cli_main, ["send", "--help"]).output
    assert f"at most {limit} bytes" in " ".join(help_text.split())
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert f"A letter holds at most {limit} bytes" in readme


def test_control_characters_never_reach_the_terminal(trio: Trio) -> None:
    kennedy, khrushchev, _ = trio
    kennedy.send(khrushchev, HOSTILE)
    kennedy.json(
        "propose", khrushchev.name, "--title", f"Title {HOSTILE}", "--term", f"Term {HOSTILE}"
    )
    human = khrushchev.run("inbox")
    assert human.exit_code == 0, human.output
    for raw in RAW:
        assert raw not in human.output, repr(raw)
    assert "Ring\\x07 clear\\x1b[2J" in human.output and "rtl\\u202eevil" in human.output

    (proposal,) = khrushchev.json("proposals")
    shown = khrushchev.run("show", proposal["id"])
    assert shown.exit_code == 0 and "Term Ring\\x07" in shown.output
    rejected = khrushchev.ok("reject", proposal["id"], "--reason", HOSTILE)
    for output in (shown.output, rejected, kennedy.ok("show", proposal["id"])):
        assert not any(raw in output for raw in RAW), output

    # JSON keeps the text exact (escaped, so not raw either).
    kennedy.send(khrushchev, HOSTILE)
    result = khrushchev.run("inbox", "--json")
    assert not any(raw in result.stdout for raw in RAW)
    assert [m["text"] for m in json.loads(result.stdout)] == [HOSTILE]


def test_ctrl_c_ends_a_watch_with_one_line_and_exit_code_0(
    trio: Trio, watch: Callable[..., Watcher]
) -> None:
    _, khrushchev, _ = trio
    watcher = watch(khrushchev).connected()
    said = len(watcher.errors)
    watcher.process.send_signal(signal.SIGINT)
    assert watcher.process.wait(15) == 0
    assert watcher.stop() and watcher.errors[said:] == ["Stopped watching."]
    assert watcher.lines.empty()


def test_a_relay_going_away_is_told_once_and_the_watch_reconnects(
    own_relay: Relay, home: Path, watch: Callable[..., Watcher]
) -> None:
    kennedy, khrushchev = participants(
        own_relay, home, ("kennedy", "party"), ("khrushchev", "party")
    )
    watcher = watch(khrushchev, "--json").connected()
    said = len(watcher.errors)
    own_relay.stop()
    watcher.wait_for_notice("reconnecting in the background")
    time.sleep(2)  # attempts fail meanwhile: none of them is told
    outage = watcher.errors[said:]
    assert len(outage) == 1, outage
    assert "shutting down" in outage[0] or "closed the connection" in outage[0], outage
    own_relay.start()
    watcher.wait_for_notice("Reconnected.", timeout=20)
    sent = kennedy.send(khrushchev, "After the restart.")
    assert watcher.message()["id"] == sent
    assert watcher.errors[said:] == [outage[0], "Reconnected."]
