"""`backchannel verify-report DIR`: check an after-action review offline (PROTOCOL.md §16.13).

Anyone with the report's directory, and no relay, checks that every file is the one the
manifest names, that `index.html` is the page the manifest names, that the notary log's chain
and receipts hold, and that every participant's export beside it still verifies item by item.
The decisions are `backchannel.aar.verify_report`; this is the shell that reads the files.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from .commandline import json_option
from .errors import CliError


@click.command(name="verify-report")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@json_option
def verify_report(directory: Path, as_json: bool) -> None:
    """Check an exercise report offline (`backchannel-relay exercise report --out DIR`): the
    manifest's hashes, the page, the notary log's chain and signatures, every export."""
    from backchannel.aar import read_report_dir, summary_line
    from backchannel.aar import verify_report as check
    from backchannel.errors import BackchannelError

    from .render import emit_json, say

    try:
        checked: dict[str, Any] = check(read_report_dir(directory), int(time.time() * 1000))
    except BackchannelError as exc:
        raise CliError(f"{directory}: {exc}", "invalid_report") from None
    except OSError as exc:
        raise CliError(f"{directory}: cannot read it: {exc.strerror or exc}") from None
    if as_json:
        emit_json(checked)
        return
    say(summary_line(directory, checked))
