"""The `backchannel` command: through the profile's agent when one runs, in this process when
none does (or it is locked, or busy). Standard library only until that is decided, so going
through the agent costs a Python start and a round trip, not the imports and the unlocking.

The agent runs the command on this process's own standard input, output and error (passed as
descriptors), so output, prompts and exit codes are the same either way; signals sent to this
process (Ctrl-C) are passed on to the command, and if this process dies the agent ends the
command too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from . import agent_protocol as protocol

LOCAL_COMMANDS = frozenset({"agent", "init", "register", "wipe", "tui"})
"""Commands that run here: they make, destroy or manage the profile (and its agent) itself."""
NO_AGENT_ENV = "BACKCHANNEL_NO_AGENT"
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def main() -> NoReturn:
    argv = sys.argv[1:]
    path = _agent_socket(argv)
    if path is not None:
        code = _through_agent(path, argv)
        if code is not None:
            sys.exit(code)
    from .cli import main as run_here

    run_here(prog_name="backchannel")
    sys.exit(0)  # (click exits itself)


def _agent_socket(argv: list[str]) -> Path | None:
    """The socket of the agent that would run `argv`, when one should: the command is one an
    agent runs and the profile's socket exists."""
    if os.environ.get(NO_AGENT_ENV):
        return None
    home: str | None = None
    profile: str | None = None
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in ("--home", "--profile") and index + 1 < len(argv):
            if arg == "--home":
                home = argv[index + 1]
            else:
                profile = argv[index + 1]
            index += 2
        elif arg.startswith("--home="):
            home, index = arg.partition("=")[2], index + 1
        elif arg.startswith("--profile="):
            profile, index = arg.partition("=")[2], index + 1
        elif arg == "--debug":
            index += 1
        else:
            break
    if index >= len(argv) or argv[index].startswith("-") or argv[index] in LOCAL_COMMANDS:
        return None  # help, a usage mistake, or a command that runs here
    profile = profile if profile is not None else os.environ.get("BACKCHANNEL_PROFILE", "default")
    if not profile or "/" in profile or profile.startswith("."):
        return None
    base = Path(home) if home else protocol.default_home()
    path = protocol.socket_path(base / "profiles" / profile)
    return path if path.is_socket() else None


def _through_agent(path: Path, argv: list[str]) -> int | None:
    """Run `argv` in the agent -> its exit code; None when the agent cannot take it (none
    answers, locked, busy): then the command runs here, as if there were no agent."""
    try:
        cwd = os.getcwd()  # (gone: the command runs here, and says so itself)
        sock = protocol.connect(path)
    except OSError:
        return None
    child: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child[0], signum)

    with sock:
        params = {"argv": argv, "cwd": cwd, "env": dict(os.environ)}
        try:
            protocol.send_with_fds(sock, protocol.request("cli.run", params), [0, 1, 2])
        except OSError:
            return None
        sock.settimeout(None)
        previous = {s: signal.signal(s, forward) for s in FORWARDED_SIGNALS}
        reader = protocol.LineReader(sock)
        try:
            while True:
                try:
                    message = reader.next()
                except (OSError, ValueError):
                    message = None
                if message is None:
                    return _agent_gone(child)
                if message.get("method") == "cli.started":
                    pid = message.get("params", {}).get("pid")
                    if isinstance(pid, int):
                        child.append(pid)
                elif "error" in message:
                    return None  # locked or busy: run here
                elif "result" in message:
                    code = message["result"].get("exit_code")
                    return code if isinstance(code, int) else 1
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _agent_gone(child: list[int]) -> int:
    """The agent went away mid-command: wait for the command itself, then say so."""
    if not child:
        return _say_gone()
    while True:
        try:
            os.kill(child[0], 0)
        except ProcessLookupError:
            return _say_gone()
        time.sleep(0.05)


def _say_gone() -> int:
    sys.stderr.write("Error: the agent stopped while running this command; run it again\n")
    return 1
