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

from .cli import json_option, main
from .errors import CliError


def _read_dir(directory: Path) -> dict[str, bytes]:
    """Every regular file under DIR, bounded: the walk stops at the first entry past
    `MAX_FILES`, so a wrong DIR (a home) costs little."""
    from backchannel.aar import MAX_FILE_BYTES, MAX_FILES

    if not directory.is_dir():
        raise CliError(f"{directory} is not a directory")
    files: dict[str, bytes] = {}
    for seen, path in enumerate(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if seen >= MAX_FILES:
            raise CliError(f"{directory} holds more than {MAX_FILES} entries: not a report")
        if path.is_symlink():
            raise CliError(f"{directory}: {rel} is a symbolic link")
        if not path.is_file():
            continue
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise CliError(f"{directory}: {rel} is larger than {MAX_FILE_BYTES} bytes")
        files[rel] = data
    return files


@main.command(name="verify-report")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@json_option
def verify_report(directory: Path, as_json: bool) -> None:
    """Check an exercise report offline (`backchannel-relay exercise report --out DIR`): the
    manifest's hashes, the page, the notary log's chain and signatures, every export."""
    from backchannel.aar import verify_report as check
    from backchannel.errors import BackchannelError

    from .render import emit_json, say

    try:
        checked: dict[str, Any] = check(_read_dir(directory), int(time.time() * 1000))
    except BackchannelError as exc:
        raise CliError(f"{directory}: {exc}", "invalid_report") from None
    except OSError as exc:
        raise CliError(f"{directory}: cannot read it: {exc.strerror or exc}") from None
    if as_json:
        emit_json(checked)
        return
    log = checked["notary_log"]
    items = sum(e["items"] for e in checked["exports"])
    say(
        f"{directory}: report of {checked['exercise']} VALID: {checked['files']} files as the "
        f"manifest names them; notary log intact ({log['entries']} entries, {log['receipts']} "
        f"receipts signed); {len(checked['exports'])} export(s) verified ({items} items)"
    )
