"""`backchannel-relay exercise report` and `exercise verify-report`: the after-action review
(issue 18, PROTOCOL.md §16.13).

Control gathers what the relay's store holds of one exercise (roles, control's actions, the
injects' schedule, communiqués, control's traffic rows and counts, the notary log) and the
participants' exports. Every export is verified before anything is written (`verify_all`, with
the relay's own notary and control keys): one altered byte and the build is refused, naming
the file and the reason, and nothing is written. The page itself is rendered by the pure
`report_html`; the evidence and its manifest by `backchannel.aar`, which `verify-report` (here
and in the participant's CLI) re-checks offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from .cli_base import CodedError, _exercises, _store_options, _store_used, exercise, exercise_option

MAX_INCLUDES = 500
"""Exports one report takes: one per participant, a few times over."""


def _read_exports(paths: tuple[Path, ...]) -> list[tuple[Path, bytes]]:
    from backchannel.bundle import MAX_BUNDLE_BYTES

    if len(paths) > MAX_INCLUDES:
        raise CodedError(f"at most {MAX_INCLUDES} exports per report", "too_many_exports")
    read = []
    for path in paths:
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_BUNDLE_BYTES + 1)
        except OSError as exc:
            raise CodedError(
                f"{path}: cannot read it: {exc.strerror or exc}", "unreadable"
            ) from None
        read.append((path, data))
    return read


def verify_exports(
    read: list[tuple[Path, bytes]], notary_key: bytes, control_key: bytes, now_ms: int
) -> list[tuple[str, Any]]:
    """Each export checked item by item under the relay's own keys (an export pinned to other
    keys is another relay's, or forged): -> (file name in the report, parsed bundle)."""
    from backchannel.bundle import load_json, parse_bundle, verify_bundle
    from backchannel.errors import BackchannelError

    taken: set[str] = set()
    out: list[tuple[str, Any]] = []
    for path, data in read:
        try:
            bundle = parse_bundle(load_json(data))
            for what, pinned, ours in (("notary", bundle.notary_key, notary_key),
                                       ("control", bundle.control_key, control_key)):  # fmt: skip
                if pinned is not None and pinned != ours:
                    raise CodedError(f"{path}: its {what} key is not this relay's: an export of "
                                     "another relay, or altered", "invalid_export")  # fmt: skip
            verdicts = verify_bundle(bundle, now_ms, notary_key, control_key)
        except BackchannelError as exc:
            raise CodedError(f"{path}: {exc}", "invalid_export") from None
        bad = next((v for v in verdicts if not v.ok), None)
        if bad is not None:
            raise CodedError(f"{path}: item {bad.index + 1} of {len(verdicts)} ({bad.kind}) "
                             f"is refused: {bad.reason}", "invalid_export")  # fmt: skip
        stem = re.sub(r"[^a-z0-9-]", "_", bundle.participant.lower())[:64] or "export"
        name, n = stem, 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}"
        taken.add(name)
        out.append((name, bundle))
    return out


async def gather(
    exercises: Any, name: str | None, read: list[tuple[Path, bytes]]
) -> dict[str, Any]:
    """Everything the report shows, from the store and the exports (verified first)."""
    from sqlalchemy import func, select

    from backchannel.aar import MAX_LOG_ENTRIES, notary_log_document
    from backchannel.keys import SigningKeyPair
    from backchannel.proposals import EntryKind, NotaryReceipt

    from . import control
    from .models import NotaryEntryRow, Participant
    from .notary import _entry
    from .report_html import exported_commitments

    store = exercises.store
    relay_id, _ = await store.meta_secret("relay_id", 16)
    notary_private, _ = await store.meta_secret("notary_key", 32)
    notary_key = SigningKeyPair.from_private_bytes(notary_private).public.raw
    control_key = exercises.control_key.public.raw
    now = store.now_ms()
    exports = verify_exports(read, notary_key, control_key, now)
    picked = await exercises.pick(name)
    scenario = await exercises.scenario(picked)
    status = await exercises.status(picked)
    clock = await exercises.clock(picked)
    shown = exported_commitments(exports)
    roles = [r.name for r in scenario.roles]
    async with store.read() as session:
        count = await session.scalar(select(func.count()).select_from(NotaryEntryRow))
        if (count or 0) > MAX_LOG_ENTRIES:
            raise CodedError(f"the notary log holds more than {MAX_LOG_ENTRIES} entries",
                             "log_too_large")  # fmt: skip
        rows = list(await session.scalars(select(NotaryEntryRow).order_by(NotaryEntryRow.seq)))
        ids = list(await session.scalars(select(Participant.id).where(Participant.name.in_(roles))))
    log = [
        NotaryReceipt(relay_id, _entry(r), r.signature) if r.subject in shown else _entry(r).link()
        for r in rows
    ]
    unexported = sum(
        1 for r in rows
        if r.kind == EntryKind.COMMITMENT and r.submitter_id in ids and r.subject not in shown
    )  # fmt: skip
    facts = {
        "exercise": picked,
        "title": scenario.title,
        "start_ms": scenario.start_ms,
        "speed": scenario.speed,
        "offset_minutes": scenario.offset_minutes,
        "built_at": now,
        "scenario_now": clock.now(now),
        "control_sees": status["control_sees"],
        "roles": await control.roles(exercises, picked),
        "actions": await control.actions(exercises, picked),
        "injects": await control.injects(exercises, picked),
        "communiques": await exercises.communiques(picked),
        "traffic": await exercises.traffic(picked),
        "notary": {"entries": len(rows), "unexported_proposals": unexported},
        "keys": {"notary_key": notary_key, "control_key": control_key, "relay_id": relay_id},
    }
    return {"facts": facts, "exports": exports,
            "notary_log": notary_log_document(relay_id, notary_key, log)}  # fmt: skip


def write_report(
    out: Path, gathered: dict[str, Any], read: list[tuple[Path, bytes]]
) -> dict[str, Any]:
    """Render, then write the directory whole: into a fresh sibling first, renamed into place,
    so a failure leaves no half-written report."""
    from backchannel.aar import INDEX, MANIFEST, NOTARY_LOG, manifest_document

    from .report_html import build, render

    facts, exports = gathered["facts"], gathered["exports"]
    model = build(facts, exports)
    page = render(model, exports).encode("utf-8")
    files: dict[str, bytes] = {
        INDEX: page,
        NOTARY_LOG: json.dumps(gathered["notary_log"], indent=1).encode(),
    }
    for (name, _bundle), (_path, data) in zip(exports, read, strict=True):
        files[f"evidence/exports/{name}.json"] = data
    manifest = manifest_document(files, facts["exercise"], facts["built_at"], facts["keys"])
    files[MANIFEST] = json.dumps(manifest, indent=1).encode()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CodedError(f"{out} exists and is not an empty directory", "out_exists")
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".report-", dir=parent))
        try:
            for rel, data in files.items():
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            if out.exists():
                out.rmdir()
            os.replace(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    except OSError as exc:
        raise CodedError(f"cannot write {out}: {exc.strerror or exc}", "unwritable") from None
    timeline = len(model.events)
    return {
        "exercise": facts["exercise"],
        "out": str(out),
        "index": str(out / INDEX),
        "files": sorted(files),
        "timeline": timeline,
        "proposals": len(model.records),
        "exports": [
            {
                "file": f"evidence/exports/{n}.json",
                "participant": b.participant,
                "items": len(b.items),
            }
            for n, b in exports
        ],
        "manifest_sha256": manifest["files"][INDEX],
    }


@exercise.command("report")
@click.option("--include", "includes", metavar="FILE", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="A participant's `export --all` file (repeat for more).")  # fmt: skip
@click.option("--out", "out", metavar="DIR", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="A new (or empty) directory for index.html and its evidence.")  # fmt: skip
@exercise_option
@_store_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def exercise_report(includes: tuple[Path, ...], out: Path, name: str | None, data_dir: Path,
                    database_url: str | None, as_json: bool) -> None:  # fmt: skip
    """The after-action review: a static HTML report (DIR/index.html, opens from disk) of
    what the store holds and the participants' exports, each verified first, with its evidence
    (notary log, exports, manifest) beside it. Check it with `backchannel verify-report DIR`."""
    read = _read_exports(includes)

    async def work(exercises: Any) -> Any:
        return await gather(exercises, name, read)

    gathered = _exercises(data_dir, database_url, work)
    done = write_report(out, gathered, read)
    store = _store_used(data_dir, database_url, as_json)
    if as_json:
        click.echo(json.dumps({**done, **store}))
        return
    click.echo(f"report of {done['exercise']} written: {done['index']}")
    click.echo(f"  {done['timeline']} timeline entries, {done['proposals']} proposal(s), "
               f"{len(done['exports'])} export(s) verified and included")  # fmt: skip
    click.echo(f"  check it offline with: backchannel verify-report {out}")


def check_report(directory: Path) -> dict[str, Any]:
    """`verify-report`: -> the summary, or one line naming what is wrong (`InvalidFieldError`)."""
    from backchannel.aar import read_report_dir, verify_report

    return verify_report(read_report_dir(directory), int(time.time() * 1000))


@exercise.command("verify-report")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def exercise_verify_report(directory: Path, as_json: bool) -> None:
    """Check a report offline: the manifest's hashes, index.html the one it names, the notary
    log's chain and receipts, every export re-verified (as `backchannel verify-report`)."""
    from backchannel.aar import summary_line
    from backchannel.errors import BackchannelError

    try:
        checked = check_report(directory)
    except BackchannelError as exc:
        raise CodedError(f"{directory}: {exc}", "invalid_report") from None
    except OSError as exc:
        raise CodedError(f"{directory}: cannot read it: {exc.strerror or exc}",
                         "unreadable") from None  # fmt: skip
    click.echo(json.dumps(checked) if as_json else summary_line(directory, checked))
