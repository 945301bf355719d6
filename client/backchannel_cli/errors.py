"""User-facing errors: one sentence, a non-zero exit code, never a traceback."""

from __future__ import annotations

import click


class CliError(click.ClickException):
    exit_code = 1


class RelayUnreachableError(CliError):
    """The relay could not be reached: trying again later may succeed."""


class RelayRefusedError(CliError):
    """The relay answered with a refusal; `error` holds its code and whole body."""

    def __init__(self, message: str, error: object) -> None:
        super().__init__(message)
        self.error = error
