"""`backchannel agent start|stop|status|lock|unlock|events`: the profile's agent (`agent.py`).

These run in the calling process (never through the agent they manage) and reach the agent only
through its local API, so a script can do the same (README, "The agent").
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from . import agent_protocol as protocol
from .commandline import Context, ask_passphrase, duration_ms, guard, json_option, pass_ctx
from .errors import CliError
from .render import emit_json, say

if TYPE_CHECKING:
    from pathlib import Path

STOP_WAIT = 5.0
DEFAULT_IDLE_LOCK = "30m"


def _status(path: Path) -> dict[str, Any] | None:
    """The agent's status, None when none answers on `path`."""
    try:
        status = protocol.call(path, "agent.status", timeout=5.0)
    except (OSError, ValueError, protocol.AgentError):
        return None
    return status if isinstance(status, dict) else None


def _call(path: Path, method: str, params: dict[str, Any] | None = None) -> Any:
    try:
        return protocol.call(path, method, params)
    except protocol.AgentError as exc:
        raise CliError(f"the agent refused: {exc.message}", "agent_refused") from None
    except (OSError, ValueError):
        raise CliError("no agent runs for this profile: start one with `backchannel agent "
                       "start`", "no_agent") from None  # fmt: skip


def stop_agent(directory: Path) -> bool:
    """Stop the agent of the profile in `directory`, if one runs -> whether one did."""
    path = protocol.socket_path(directory)
    if _status(path) is None:
        return False
    _call(path, "agent.stop")
    deadline = time.monotonic() + STOP_WAIT
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


@click.group()
def agent() -> None:
    """The profile's agent: unlock once, receive while nobody types, fast commands.

    While an agent runs for a profile, every `backchannel` command for it goes through the
    agent (the same output and exit codes, without unlocking or logging in each time).
    """


@agent.command()
@click.option(
    "--idle-lock",
    default=DEFAULT_IDLE_LOCK,
    show_default=True,
    metavar="DURATION",
    help="Lock (drop the keys) after this long without a command; 0 for never.",
)
@click.option("--foreground", is_flag=True, help="Serve in this process (for a supervisor).")
@json_option
@pass_ctx
def start(ctx: Context, idle_lock: str, foreground: bool, as_json: bool) -> None:
    """Start the agent: asks the passphrase once (or BACKCHANNEL_PASSPHRASE)."""
    from .agent import Agent, daemonize, preload
    from .profile import keystore_needs_passphrase, read_info, unlock

    def action() -> None:
        directory = ctx.directory.resolve()  # the agent's commands run elsewhere
        info = read_info(directory)
        path = protocol.socket_path(directory)
        running = _status(path)
        if running is not None:
            _say_status(running, as_json, f"An agent already runs for {info.name}")
            return
        idle = 0 if idle_lock.strip() == "0" else duration_ms(idle_lock, "--idle-lock") / 1000
        passphrase = ask_passphrase(False) if keystore_needs_passphrase(directory) else None
        unlocked = unlock(directory, passphrase)
        preload()
        root = click.get_current_context().find_root().command  # what each fork runs
        server = Agent(directory, unlocked, idle, root)
        if foreground:
            _say_status(server.status(), as_json, f"Agent serving {info.name} (Ctrl-C stops)")
            sys.stdout.flush()
            server.serve()
            return
        try:
            daemonize(server)
        except OSError as exc:
            raise CliError(f"the agent could not start: {exc}", "agent_failed") from None
        status = _status(path)
        if status is None:
            raise CliError("the agent could not start", "agent_failed")
        _say_status(status, as_json, f"Agent started for {info.name}")

    guard(ctx, action)


def _profile(ctx: Context) -> Path:
    """The profile's directory, named as missing when it is (before any agent is looked for)."""
    from .profile import read_info

    read_info(ctx.directory)
    return ctx.directory


@agent.command()
@json_option
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """Whether an agent runs for this profile, locked or not, online or not."""

    def action() -> None:
        running = _status(protocol.socket_path(_profile(ctx)))
        if running is None:
            _done(as_json, {"running": False}, "No agent runs for this profile.")
        else:
            _say_status(running, as_json, "Agent")

    guard(ctx, action)


@agent.command()
@json_option
@pass_ctx
def stop(ctx: Context, as_json: bool) -> None:
    """Stop the agent: it drops the keys and exits."""

    def action() -> None:
        stopped = stop_agent(_profile(ctx))
        _done(as_json, {"running": False},
              "Agent stopped." if stopped else "No agent runs for this profile.")  # fmt: skip

    guard(ctx, action)


@agent.command()
@json_option
@pass_ctx
def lock(ctx: Context, as_json: bool) -> None:
    """Drop the keys now; commands run without the agent until `agent unlock`."""

    def action() -> None:
        _call(protocol.socket_path(_profile(ctx)), "agent.lock")
        _done(as_json, {"locked": True}, "Agent locked.")

    guard(ctx, action)


@agent.command()
@json_option
@pass_ctx
def unlock(ctx: Context, as_json: bool) -> None:
    """Open the keystore in a locked agent again (asks the passphrase)."""
    from .profile import keystore_needs_passphrase

    def action() -> None:
        path = protocol.socket_path(_profile(ctx))
        if _status(path) is None:
            _call(path, "agent.status")  # says no agent runs
        needed = keystore_needs_passphrase(ctx.directory)
        _call(path, "agent.unlock", {"passphrase": ask_passphrase(False) if needed else None})
        _done(as_json, {"locked": False}, "Agent unlocked.")

    guard(ctx, action)


@agent.command()
@json_option
@pass_ctx
def events(ctx: Context, as_json: bool) -> None:
    """Stream what happens (messages stored, status changes, the relay connection) as JSON
    lines until Ctrl-C or the agent locks (JSON either way; --json makes errors JSON too)."""
    from .render import json_text

    def action() -> None:
        path = protocol.socket_path(_profile(ctx))
        try:
            sock = protocol.connect(path)
        except OSError:
            _call(path, "agent.status")  # says no agent runs
            return
        with sock:
            sock.sendall(protocol.request("agent.events"))
            sock.settimeout(None)
            reader = protocol.LineReader(sock)
            first = reader.next()
            if first is not None and "error" in first:
                raise CliError(f"the agent refused: {first['error'].get('message')}",
                               "agent_refused")  # fmt: skip
            with contextlib.suppress(OSError, ValueError):  # the agent went away: the end
                while (message := reader.next()) is not None:
                    click.echo(json_text(message.get("params")))
                    sys.stdout.flush()

    with contextlib.suppress(click.Abort):  # Ctrl-C ends the stream
        guard(ctx, action)


def _say_status(status: dict[str, Any], as_json: bool, heading: str) -> None:
    if as_json:
        emit_json(status)
        return
    state = "locked" if status.get("locked") else "unlocked"
    online = "online" if status.get("online") else "not connected to the relay yet"
    run = status.get("commands_run", 0)
    say(f"{heading} (pid {status.get('pid')}): {state}, {online}; "
        f"{run} command{'' if run == 1 else 's'} run.")  # fmt: skip


def _done(as_json: bool, value: dict[str, Any], text: str) -> None:
    emit_json(value) if as_json else say(text)
