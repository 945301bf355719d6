"""How the terminal interface reaches the participant: by running `backchannel` commands.

Everything the TUI does is also a CLI command (issue 19), so it runs them as subprocesses with
`--json` and reads their answers; `Backend` is the one place that knows it, so a later version can
talk to the agent's socket directly without touching the screens. Texts a user writes travel on
standard input, never in argv (which every local user can read in /proc).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

MAX_OUTPUT = 32 * 1024 * 1024
"""Bytes read from one command's stdout or stderr: a profile's whole history fits many times."""
MAX_EVENT_LINE = 1024 * 1024
"""Bytes of one line of `agent events` (a message is at most 64 KiB of text, JSON-escaped)."""
COMMAND_TIMEOUT = 120.0
"""Seconds one command may take (a relay that is out of reach is retried within this)."""
_CHUNK = 65536
_COMMAND = ("-m", "backchannel_cli")
"""How `backchannel` starts: `python -m backchannel_cli` is the console script's entry point,
which hands the command to the profile's agent when one runs."""


class TuiError(Exception):
    """A command failed: its one-line message (the CLI's JSON error), shown in the status line."""

    def __init__(self, message: str, code: str = "error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Backend:
    """Runs `python -m backchannel_cli --home H --profile P ...` for one profile."""

    def __init__(
        self,
        home: Path | None,
        profile: str,
        python: str = sys.executable,
        timeout: float = COMMAND_TIMEOUT,
        env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.profile = profile
        self.python = python
        self.timeout = timeout
        self.env = env
        self._running: set[asyncio.subprocess.Process] = set()

    async def close(self) -> None:
        """End every command still running (the window is closing)."""
        for process in list(self._running):
            await _end(process)

    def argv(self, *args: str) -> list[str]:
        home = ["--home", str(self.home)] if self.home is not None else []
        return [self.python, *_COMMAND, *home, "--profile", self.profile, *args]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONUNBUFFERED"] = "1"  # event lines arrive as they are written
        return env

    async def run(
        self, *args: str, stdin: str | None = None, timeout: float | None = None
    ) -> tuple[int, str, str]:
        """Run one command to its end: (exit code, stdout, stderr). Killed if it is cancelled,
        takes longer than `timeout` (else the backend's), or writes more than MAX_OUTPUT."""
        limit = self.timeout if timeout is None else timeout
        process = await asyncio.create_subprocess_exec(
            *self.argv(*args),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._environment(),
        )
        self._running.add(process)
        try:
            async with asyncio.timeout(limit):
                assert process.stdout is not None and process.stderr is not None
                if stdin is not None:
                    assert process.stdin is not None
                    process.stdin.write(stdin.encode())
                    with contextlib.suppress(ConnectionError):
                        await process.stdin.drain()
                    process.stdin.close()
                out, err = await asyncio.gather(
                    _read_limited(process.stdout), _read_limited(process.stderr)
                )
                code = await process.wait()
        except TimeoutError:
            raise TuiError(
                f"`backchannel {' '.join(args[:2])}` took over {self.timeout:g} s"
            ) from None
        finally:
            self._running.discard(process)
            await _end(process)
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    async def json(self, *args: str, stdin: str | None = None, timeout: float | None = None) -> Any:
        """A command's `--json` answer; a failure raises TuiError with the CLI's own message."""
        if "--" in args:
            at = args.index("--")
            args = (*args[:at], "--json", *args[at:])
        else:
            args = (*args, "--json")
        code, out, err = await self.run(*args, stdin=stdin, timeout=timeout)
        if code != 0:
            raise _failure(args, code, out, err)
        try:
            return json.loads(out)
        except ValueError:
            raise TuiError(f"`backchannel {args[0]}` printed no JSON") from None

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """`backchannel agent events`: one JSON object per line for as long as it runs. Ends
        with TuiError when it exits (a missing agent, or one that stopped)."""
        process = await asyncio.create_subprocess_exec(
            *self.argv("agent", "events"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._environment(),
            limit=MAX_EVENT_LINE,
        )
        self._running.add(process)
        assert process.stdout is not None and process.stderr is not None
        errors = asyncio.ensure_future(_read_limited(process.stderr))
        try:
            while True:
                try:
                    line = await process.stdout.readline()
                except ValueError:  # a line over the limit: the stream cannot be trusted
                    raise TuiError("`backchannel agent events` wrote a line too long") from None
                if not line:
                    break
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    yield event
            code = await process.wait()
            err = (await errors).decode(errors="replace")
            raise _failure(("agent", "events"), code, "", err)
        finally:
            self._running.discard(process)
            errors.cancel()
            await _end(process)


async def _end(process: asyncio.subprocess.Process) -> None:
    """Kill `process` if it still runs, and reap it (shielded: a cancelled caller must not leave
    a zombie or an open pipe behind)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    with contextlib.suppress(asyncio.CancelledError, ProcessLookupError):
        await asyncio.shield(process.wait())


async def _read_limited(stream: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(_CHUNK):
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise TuiError(f"a command wrote more than {MAX_OUTPUT // (1024 * 1024)} MiB")
        chunks.append(chunk)
    return b"".join(chunks)


def _failure(args: tuple[str, ...], code: int, out: str, err: str) -> TuiError:
    """The CLI's error as one line: its JSON `{"error", "message"}`, else its last stderr line."""
    for line in reversed(out.splitlines()):
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and "message" in answer:
            return TuiError(str(answer["message"]), str(answer.get("error", "error")))
    lines = [line for line in err.splitlines() if line.strip()]
    if lines:
        return TuiError(lines[-1].removeprefix("Error: "))
    return TuiError(f"`backchannel {' '.join(args[:2])}` failed (exit code {code})")
