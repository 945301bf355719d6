"""The after-action review's evidence, checked offline (PROTOCOL.md §16.13).

`backchannel-relay exercise report` writes a static report beside its evidence: the relay's
notary log, the participants' exports, and a manifest of every file's SHA-256. Sans-I/O: the
builder and `backchannel verify-report` hand these functions bytes; they decide. A report is
only as good as its evidence: the HTML is named by hash in the manifest, and every fact it
shows that someone signed is in an export or the log beside it, which anyone re-checks here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bundle import check_limits, verify_all
from .bundle import parse_bundle as _parse_bundle
from .errors import BackchannelError, InvalidFieldError
from .keys import SigningPublicKey
from .proposals import NotaryEntry, NotaryLink, NotaryReceipt, verify_log
from .records import ProposalRecord

MANIFEST_FORMAT = "backchannel-report/1"
NOTARY_LOG_FORMAT = "backchannel-notary-log/1"
MANIFEST = "evidence/manifest.json"
INDEX = "index.html"
NOTARY_LOG = "evidence/notary-log.json"
EXPORTS = "evidence/exports/"
MAX_FILES = 1_000
"""Files one report may hold: the page, the log, the manifest and one export per participant."""
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_LOG_ENTRIES = 1_000_000


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise InvalidFieldError(f"{what} is missing or not a string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidFieldError(f"{what} is not base64") from None
    if size is not None and len(raw) != size:
        raise InvalidFieldError(f"{what} is {len(raw)} bytes, not {size}")
    return raw


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidFieldError(f"{what} is not a JSON object")
    return value


def _json(data: bytes, what: str) -> dict[str, Any]:
    check_limits(data)
    try:
        return _object(json.loads(data), what)
    except (ValueError, RecursionError):
        raise InvalidFieldError(f"{what} is not JSON") from None


# --- the notary log, as the relay serves it (GET /v1/notary/log) ------------------------------


def notary_log_document(
    relay_id: bytes, notary_key: bytes, entries: Sequence[NotaryReceipt | NotaryLink]
) -> dict[str, Any]:
    """The whole log in seq order, each entry shaped as `/v1/notary/log` serves it: a receipt
    where the report may show the entry (a proposal an included export holds), else a link."""
    shown: list[dict[str, Any]] = []
    for item in entries:
        if isinstance(item, NotaryLink):
            shown.append({"seq": item.seq, "link": b64(item.to_bytes())})
        else:
            shown.append({"receipt": b64(item.to_bytes()), "seq": item.entry.seq,
                          "at_ms": item.entry.at_ms})  # fmt: skip
    return {"format": NOTARY_LOG_FORMAT, "relay_id": b64(relay_id),
            "notary_key": b64(notary_key), "entries": shown}  # fmt: skip


@dataclass(frozen=True, slots=True)
class CheckedLog:
    entries: int
    receipts: int
    head: str | None
    links: Mapping[int, NotaryLink]


def check_notary_log(data: bytes, notary_key: bytes) -> CheckedLog:
    """The chain whole (no entry changed, dropped, inserted or reordered), every receipt
    signed by `notary_key` for one relay id: what `backchannel notary-log` checks online."""
    doc = _json(data, "the notary log")
    if doc.get("format") != NOTARY_LOG_FORMAT:
        raise InvalidFieldError(f"the notary log's format is not {NOTARY_LOG_FORMAT!r}")
    relay_id = _unb64(doc.get("relay_id"), "the notary log's relay_id", 16)
    if _unb64(doc.get("notary_key"), "the notary log's notary_key", 32) != notary_key:
        raise InvalidFieldError("the notary log names another notary key than the manifest")
    raw = doc.get("entries")
    if not isinstance(raw, list) or len(raw) > MAX_LOG_ENTRIES:
        raise InvalidFieldError(f"the notary log's entries are a list of at most "
                                f"{MAX_LOG_ENTRIES}")  # fmt: skip
    key = SigningPublicKey.from_bytes(notary_key)
    chain: list[NotaryEntry | NotaryLink] = []
    receipts = 0
    try:
        for index, item in enumerate(raw):
            entry = _object(item, f"notary log entry {index + 1}")
            if "receipt" in entry:
                receipt = NotaryReceipt.from_bytes(_unb64(entry["receipt"], "a receipt"))
                if receipt.relay_id != relay_id:
                    raise InvalidFieldError(f"notary log entry {receipt.entry.seq} is from "
                                            "another relay")  # fmt: skip
                receipt.verify(key)
                chain.append(receipt.entry)
                receipts += 1
            else:
                chain.append(NotaryLink.from_bytes(_unb64(entry.get("link"), "a link")))
            if entry.get("seq") != chain[-1].seq:
                raise InvalidFieldError(f"notary log entry {index + 1} names another seq")
        verify_log(chain)
    except BackchannelError as exc:
        raise InvalidFieldError(f"the notary log is broken: {exc}") from None
    links = {e.seq: e if isinstance(e, NotaryLink) else e.link() for e in chain}
    head = chain[-1].chain_hash().hex() if chain else None
    return CheckedLog(len(chain), receipts, head, links)


# --- the manifest and the whole bundle ----------------------------------------------------------


def manifest_document(
    files: Mapping[str, bytes], exercise: str, built_at: int, relay: Mapping[str, bytes | None]
) -> dict[str, Any]:
    """Every file's SHA-256 (paths relative to the report's directory) and the relay's keys."""
    return {
        "format": MANIFEST_FORMAT,
        "exercise": exercise,
        "built_at": built_at,
        "relay": {k: b64(v) if v is not None else None for k, v in relay.items()},
        "files": {path: sha256_hex(files[path]) for path in sorted(files)},
    }


def verify_report(files: Mapping[str, bytes], now_ms: int) -> dict[str, Any]:
    """Check a report's directory (relative path -> bytes, every file in it): the manifest's
    hashes, nothing unlisted, the page the one it names, the notary log's chain and receipts,
    every export re-verified item by item, and every proposal receipt in an export found in
    the log. Raises `InvalidFieldError` naming the first thing wrong."""
    if len(files) > MAX_FILES:
        raise InvalidFieldError(f"the report holds more than {MAX_FILES} files")
    if MANIFEST not in files:
        raise InvalidFieldError(f"{MANIFEST} is missing")
    manifest = _json(files[MANIFEST], MANIFEST)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise InvalidFieldError(f"{MANIFEST}: the format is not {MANIFEST_FORMAT!r}")
    listed = _object(manifest.get("files"), f"{MANIFEST}: 'files'")
    relay = _object(manifest.get("relay"), f"{MANIFEST}: 'relay'")
    notary_key = _unb64(relay.get("notary_key"), f"{MANIFEST}: the notary key", 32)
    control = relay.get("control_key")
    control_key = None if control is None else _unb64(control, f"{MANIFEST}: the control key", 32)
    for path in (INDEX, NOTARY_LOG):
        if path not in listed:
            raise InvalidFieldError(f"{MANIFEST} does not name {path}")
    for path, digest in sorted(listed.items()):
        if path not in files:
            raise InvalidFieldError(f"{path} is missing")
        if not isinstance(digest, str) or sha256_hex(files[path]) != digest:
            raise InvalidFieldError(f"{path} is not the file the manifest names (SHA-256 differs)")
    unlisted = sorted(set(files) - set(listed) - {MANIFEST})
    if unlisted:
        raise InvalidFieldError(f"{unlisted[0]} is in no manifest entry")
    log = check_notary_log(files[NOTARY_LOG], notary_key)
    exports: list[dict[str, Any]] = []
    for path in sorted(p for p in listed if p.startswith(EXPORTS)):
        try:
            verdicts = verify_all(files[path], now_ms, notary_key, control_key)
        except BackchannelError as exc:
            raise InvalidFieldError(f"{path}: {exc}") from None
        bad = next((v for v in verdicts if not v.ok), None)
        if bad is not None:
            raise InvalidFieldError(f"{path}: item {bad.index + 1} of {len(verdicts)} "
                                    f"({bad.kind}): {bad.reason}")  # fmt: skip
        bundle = _parse_bundle(json.loads(files[path]))
        for item in bundle.items:
            if item.get("kind") == "proposal":
                _in_log(path, ProposalRecord.from_json(item.get("record")), log)
        exports.append({"file": path, "participant": bundle.participant,
                        "items": len(verdicts)})  # fmt: skip
    return {
        "valid": True,
        "exercise": manifest.get("exercise"),
        "files": len(listed) + 1,
        "index": listed[INDEX],
        "notary_log": {"entries": log.entries, "receipts": log.receipts, "head": log.head},
        "exports": exports,
        "notary_key": b64(notary_key),
        "control_key": b64(control_key) if control_key else None,
    }


def _in_log(path: str, record: ProposalRecord, log: CheckedLog) -> None:
    """The log beside the report holds every notarised entry an export proves."""
    for receipt in (record.receipt, *(s.receipt for s in record.statements)):
        if log.links.get(receipt.entry.seq) != receipt.entry.link():
            proposal = record.digest.hex()[:12]
            raise InvalidFieldError(f"{path}: notary entry {receipt.entry.seq} of proposal "
                                    f"{proposal} is not in the notary log")  # fmt: skip


def read_report_dir(directory: Path) -> dict[str, bytes]:
    """Every regular file under a report's directory (relative POSIX paths), bounded: the walk
    stops at the first entry past `MAX_FILES`, so a wrong DIR (a home) costs little. The one
    read of the file system here, so that both command lines' `verify-report` read the same."""
    if not directory.is_dir():
        raise InvalidFieldError("it is not a directory")
    files: dict[str, bytes] = {}
    for seen, path in enumerate(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if seen >= MAX_FILES:
            raise InvalidFieldError(f"it holds more than {MAX_FILES} entries: not a report")
        if path.is_symlink():
            raise InvalidFieldError(f"{rel} is a symbolic link")
        if not path.is_file():
            continue
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise InvalidFieldError(f"{rel} is larger than {MAX_FILE_BYTES} bytes")
        files[rel] = data
    return files


def summary_line(directory: Path, checked: Mapping[str, Any]) -> str:
    """`verify-report`'s one line for a valid report (`verify_report`'s answer)."""
    log = checked["notary_log"]
    return (f"{directory}: report of {checked['exercise']} VALID: {checked['files']} files as "
            f"the manifest names them; notary log intact ({log['entries']} entries, "
            f"{log['receipts']} receipts signed); {len(checked['exports'])} export(s) verified "
            f"({sum(e['items'] for e in checked['exports'])} items)")  # fmt: skip
