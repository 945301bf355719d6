"""User-facing errors: one sentence, a non-zero exit code, never a traceback."""

from __future__ import annotations

import click


class CliError(click.ClickException):
    exit_code = 1


class RelayUnreachableError(CliError):
    """The relay could not be reached: trying again later may succeed."""
