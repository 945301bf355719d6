"""User-facing errors: one sentence, a non-zero exit code, never a traceback.

Each carries a stable snake_case `code`, which `--json` prints as `{"error": CODE, "message": ...}`
so scripts never parse the sentence: the relay's own code for a refusal, `relay_unreachable`,
`usage` for a command line click could not parse, `internal` for a bug, else `error` unless the
raiser names something more precise.
"""

from __future__ import annotations

import click

USAGE = "usage"
INTERNAL = "internal"
ABORTED = "aborted"


class CliError(click.ClickException):
    exit_code = 1
    code = "error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    shown: str | None = None
    """The message as shown, if it differs: with command suggestions naming the profile."""

    def format_message(self) -> str:
        from .render import safe

        # a relay's or a peer's words may hold control characters
        return safe(self.shown or self.message)


class RelayUnreachableError(CliError):
    """The relay could not be reached: trying again later may succeed."""

    code = "relay_unreachable"


class RelayRefusedError(CliError):
    """The relay answered with a refusal; `error` holds its code and whole body."""

    def __init__(self, message: str, error: object) -> None:
        super().__init__(message, str(getattr(error, "code", "") or "relay_refused"))
        self.error = error


def error_code(exc: click.ClickException) -> str:
    """The code `--json` prints for any error a command ends with."""
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, click.UsageError):
        return USAGE
    return "error"
