"""What every command shares: its context (home, profile), the `--json` option, the guard that
turns a bug into one line, the passphrase asked once, and durations given on the command line.

Below `cli.py` and the command groups registered on it (`agent_cli`, `report_check`), so that
none of them imports `cli`.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import click

from .errors import INTERNAL, CliError

T = TypeVar("T")
PASSPHRASE_ENV = "BACKCHANNEL_PASSPHRASE"
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION = 366 * 86400


@dataclass
class Context:
    home: Path
    profile: str
    debug: bool

    @property
    def directory(self) -> Path:
        from .profile import profile_dir

        return profile_dir(self.home, self.profile)


pass_ctx = click.make_pass_decorator(Context)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def ask_passphrase(confirm: bool) -> str:
    """The keystore's passphrase: from BACKCHANNEL_PASSPHRASE, else asked on the terminal."""
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env is not None:
        return from_env
    if not sys.stdin.isatty():
        raise CliError(
            f"the keystore needs a passphrase: set {PASSPHRASE_ENV} or run in a terminal"
        )
    value: str = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm)
    if not value:
        raise CliError("the passphrase must not be empty (use --no-passphrase to go without)")
    return value


def guard(ctx: Context, action: Callable[[], T]) -> T:
    """Run `action`; a bug becomes one line (with a traceback only under --debug)."""
    try:
        return action()
    except (click.ClickException, click.Abort, click.exceptions.Exit):
        raise
    except KeyboardInterrupt:
        raise click.Abort() from None
    except Exception as exc:  # a bug: one line unless --debug
        raise internal(exc, ctx.debug) from None


def internal(exc: Exception, debug: bool) -> CliError:
    if debug:
        traceback.print_exc()
    return CliError(f"internal error: {type(exc).__name__}: {exc}", code=INTERNAL)


def duration_ms(text: str, param: str) -> int:
    """`90s`, `30m`, `2h`, `7d` as milliseconds (a limit is stated in the unit given)."""
    from .render import amount

    letter = text[-1:].lower()
    unit = DURATION_UNITS.get(letter)
    try:
        count = float(text[:-1])
    except ValueError:
        count = -1
    if unit is None or not 0 < count < float("inf"):
        raise CliError(
            f"{param}: {text!r} is not a duration like 90s, 30m, 2h or 7d", "bad_duration"
        )
    if count * unit > MAX_DURATION:
        raise CliError(
            f"{param}: {text} is too long: at most {amount(MAX_DURATION, letter)}", "bad_duration"
        )
    return int(count * unit * 1000)
