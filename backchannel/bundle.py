"""A participant's whole record, exported as one file and checked offline (PROTOCOL.md §14.8).

`backchannel export --all` writes every attributable item a profile holds (letters both ways,
formal acknowledgements, introductions, forwards, injects, communiqués, proposal records) with
the exact bytes that were signed and the signature, so anyone holding only the file can check
each one. Sans-I/O: `verify_all(data)` takes the file's bytes and returns one verdict per item;
it never trusts a field that a signature does not cover except to look the signer's key up, and
then insists the key is the one the signed bytes name.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import labels
from .content import Letter, LetterAcknowledgement, letter_digest
from .encoding import Reader
from .errors import BackchannelError, IdentityMismatchError, InvalidFieldError
from .keys import SigningPublicKey
from .mediation import ForwardConsent, Introduction
from .proposals import MAX_NAME_BYTES, text_field
from .records import Export, ProposalRecord, verify_export

BUNDLE_FORMAT = "backchannel-export-all/1"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
"""A file larger than this is refused before it is parsed."""
MAX_ITEMS = 100_000
MAX_DEPTH = 8
"""Document, items, item, record, statements, statement: six levels are used."""
KEYS_SIZE = 64
SIGNATURE_SIZE = 64
KINDS = ("letter", "acknowledgement", "introduction", "forward", "inject", "communique",
         "proposal")  # fmt: skip
CONTROL = "control"
"""The signer name of an inject: the relay's control key, not a participant."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One item's result: `ok`, or the reason it cannot be trusted."""

    index: int
    kind: str
    id: str
    signer: str
    ok: bool
    reason: str = ""
    summary: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "id": self.id, "signer": self.signer,
                "ok": self.ok, "reason": self.reason, "summary": self.summary}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Bundle:
    """A parsed export: who exported it, the keys they pinned, and the raw items."""

    participant: str
    identity: bytes
    """The exporter's IdentityKeys (64 bytes: Ed25519 ‖ X25519)."""
    notary_key: bytes | None
    control_key: bytes | None
    items: tuple[dict[str, Any], ...]
    left_out: tuple[dict[str, Any], ...] = ()


def is_bundle(value: object) -> bool:
    return isinstance(value, dict) and value.get("format") == BUNDLE_FORMAT


def check_limits(data: bytes) -> None:
    """Size and nesting depth, before `json.loads` builds anything: a hostile file must not
    cost more than a scan."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise InvalidFieldError(f"the file is larger than {MAX_BUNDLE_BYTES} bytes")
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub(b'""', data)):
        depth += 1 if bracket in (b"[", b"{") else -1
        if depth > MAX_DEPTH:
            raise InvalidFieldError("its JSON is nested too deeply")


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def load_json(data: bytes | str) -> object:
    """The file's JSON, after the limits; anything else is an `InvalidFieldError`."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    check_limits(raw)
    try:
        return json.loads(raw)
    except RecursionError:
        raise InvalidFieldError("its JSON is nested too deeply") from None
    except ValueError as exc:
        raise InvalidFieldError(f"it is not JSON: {exc}") from None


def parse_bundle(value: object) -> Bundle:
    """The document's envelope: format, exporter, pinned keys, and a bounded list of items."""
    doc = _object(value, "the export")
    if doc.get("format") != BUNDLE_FORMAT:
        raise InvalidFieldError(f"not a full export (format is not {BUNDLE_FORMAT!r})")
    participant = _object(doc.get("participant"), "'participant'")
    name = participant.get("name")
    if not isinstance(name, str) or not 0 < len(name.encode()) <= MAX_NAME_BYTES:
        raise InvalidFieldError("'participant.name' is a name of 1 to 64 bytes")
    identity = _unb64(participant, "identity", KEYS_SIZE)
    relay = _object(doc.get("relay"), "'relay'")
    items = doc.get("items")
    if not isinstance(items, list):
        raise InvalidFieldError("'items' is a list")
    if len(items) > MAX_ITEMS:
        raise InvalidFieldError(f"an export holds at most {MAX_ITEMS} items")
    left_out = doc.get("left_out", [])
    if not isinstance(left_out, list) or not all(isinstance(x, dict) for x in left_out):
        raise InvalidFieldError("'left_out' is a list of objects")
    return Bundle(
        name, identity, _optional_key(relay, "notary_key"), _optional_key(relay, "control_key"),
        tuple(_object(item, "an item") for item in items), tuple(left_out),
    )  # fmt: skip


def verify_all(
    data: bytes | str,
    now_ms: int,
    notary_key: bytes | None = None,
    control_key: bytes | None = None,
) -> list[Verdict]:
    """One verdict per item, in the file's order; raises `InvalidFieldError` for a file that
    is not a full export at all. `notary_key`/`control_key` are keys the reviewer trusts; without
    them the keys the exporter pinned (in the file) are used."""
    bundle = parse_bundle(load_json(data))
    return verify_bundle(bundle, now_ms, notary_key, control_key)


def verify_bundle(
    bundle: Bundle,
    now_ms: int,
    notary_key: bytes | None = None,
    control_key: bytes | None = None,
) -> list[Verdict]:
    notary = notary_key or bundle.notary_key
    control = control_key or bundle.control_key
    bundle = replace(bundle, notary_key=notary, control_key=control)  # trusted keys win
    verdicts: list[Verdict | None] = [None] * len(bundle.items)
    proposals: list[tuple[int, ProposalRecord]] = []
    for index, item in enumerate(bundle.items):
        kind, ident, signer = (_str(item, "kind"), _str(item, "id"), _str(item, "signer"))
        try:
            if kind == "proposal":
                proposals.append((index, ProposalRecord.from_json(item.get("record"))))
                continue
            check = _CHECKS.get(kind)
            if check is None:
                raise InvalidFieldError(f"unknown item kind {kind!r}")
            summary = check(bundle, item, control)
        except (BackchannelError, ValueError) as exc:
            verdicts[index] = Verdict(index, kind, ident, signer, False, str(exc))
        else:
            verdicts[index] = Verdict(index, kind, ident, signer, True, summary=summary)
    _verify_proposals(bundle, proposals, verdicts, now_ms, notary)
    return [v for v in verdicts if v is not None]


def _verify_proposals(
    bundle: Bundle,
    proposals: list[tuple[int, ProposalRecord]],
    verdicts: list[Verdict | None],
    now_ms: int,
    notary: bytes | None,
) -> None:
    """All records at once, so conditions between them are judged as `verify-record` does."""
    if not proposals:
        return
    if notary is None:
        for index, _ in proposals:
            item = bundle.items[index]
            verdicts[index] = Verdict(index, "proposal", _str(item, "id"), _str(item, "signer"),
                                      False, "the export holds no notary key")  # fmt: skip
        return
    try:
        results = verify_export(Export(notary, tuple(r for _, r in proposals)), now_ms, notary)
    except BackchannelError as exc:
        results = None
        failure = str(exc)
    for position, (index, record) in enumerate(proposals):
        item = bundle.items[index]
        ident, signer = _str(item, "id"), _str(item, "signer")
        if results is None:
            verdicts[index] = Verdict(index, "proposal", ident, signer, False, failure)
            continue
        verdict = results[position]
        author = record.sealed.proposal.author.name
        if verdict.error:
            verdicts[index] = Verdict(index, "proposal", ident, signer, False, verdict.error)
        elif signer != author:
            claim = f"it claims {signer!r} made it; {author!r} signed it"
            verdicts[index] = Verdict(index, "proposal", ident, signer, False, claim)
        elif ident != record.digest.hex():
            verdicts[index] = Verdict(index, "proposal", ident, signer, False,
                                      "its id is not the proposal's digest")  # fmt: skip
        else:
            assert verdict.replayed is not None
            status = verdict.replayed.status.name.lower()
            summary = f"{record.sealed.proposal.title!r}: {status}"
            if verdict.agreement is not None:
                summary += f" ({verdict.agreement.agreement.value})"
            verdicts[index] = Verdict(index, "proposal", ident, signer, True, summary=summary)


# --- one check per kind: each returns a one-line summary or raises --------------------------


def _check_letter(bundle: Bundle, item: Mapping[str, Any], _control: bytes | None) -> str:
    signed, signature, key = _signed(item)
    letter = _read(Letter.read, signed, "the letter")
    keys = _object(item.get("keys"), "a letter's 'keys'")
    if _unb64(keys, "sender", KEYS_SIZE) != letter.sender_keys:
        raise IdentityMismatchError("the sender key beside the letter is not the one it names")
    if _unb64(keys, "recipient", KEYS_SIZE) != letter.recipient_keys:
        raise IdentityMismatchError("the recipient key beside the letter is not the one it names")
    _claims(item, letter.sender, letter.sender_keys, key)
    _involves(bundle, item, (letter.sender, letter.sender_keys),
              (letter.recipient, letter.recipient_keys))  # fmt: skip
    if item.get("id") != letter.message_id.hex():
        raise InvalidFieldError("the item's id is not the letter's message id")
    _verify(key, signature, labels.SIG_LETTER, signed, "the letter")
    _times(item, letter.sent_at_ms)
    return f"{letter.sender} to {letter.recipient}, digest {letter_digest(letter).hex()[:16]}"


def _check_ack(bundle: Bundle, item: Mapping[str, Any], _control: bytes | None) -> str:
    signed, signature, key = _signed(item)
    ack = _read(LetterAcknowledgement.read, signed, "the acknowledgement")
    _claims(item, ack.acknowledger, ack.acknowledger_keys, key)
    _involves(bundle, item, (ack.acknowledger, ack.acknowledger_keys),
              (ack.author, ack.author_keys))  # fmt: skip
    _verify(key, signature, labels.SIG_LETTER_ACK, signed, "the acknowledgement")
    _times(item, ack.at_ms)
    return (f"{ack.acknowledger} acknowledges {ack.author}'s letter {ack.letter_id.hex()[:12]} "
            f"(digest {ack.letter_digest.hex()[:16]})")  # fmt: skip


def _check_introduction(bundle: Bundle, item: Mapping[str, Any], _control: bytes | None) -> str:
    signed, signature, key = _signed(item)
    intro = _read(Introduction.read, signed, "the introduction")
    _claims(item, intro.introducer.name, intro.introducer.keys, key)
    _involves(bundle, item, (intro.introducer.name, intro.introducer.keys),
              (intro.recipient.name, intro.recipient.keys))  # fmt: skip
    _verify(key, signature, labels.SIG_INTRODUCTION, signed, "the introduction")
    _times(item, intro.at_ms)
    return f"{intro.introducer.name} introduces {intro.subject} to {intro.recipient.name}"


def _check_forward(bundle: Bundle, item: Mapping[str, Any], _control: bytes | None) -> str:
    """The original's author signed it, and signed a consent naming it, the mediator that
    passed it on, and this participant (or anyone)."""
    if item.get("direction") != "received":
        raise InvalidFieldError("a forward is exported by the participant who received it")
    mediator = _str(item, "mediator")
    form = item.get("form")
    if form == "letter":
        signed, signature, key = _signed(item)
        letter = _read(Letter.read, signed, "the forwarded letter")
        _claims(item, letter.sender, letter.sender_keys, key)
        _verify(key, signature, labels.SIG_LETTER, signed, "the forwarded letter")
        author, author_keys, subject = letter.sender, letter.sender_keys, letter_digest(letter)
        what = f"{author}'s letter to {letter.recipient}"
    elif form == "proposal":
        record = ProposalRecord.from_json(item.get("record"))
        sealed = record.sealed
        author, author_keys, subject = sealed.proposal.author.name, sealed.proposal.author.keys, \
            sealed.digest  # fmt: skip
        key = _key(item, "signer_key")
        _claims(item, author, author_keys, key)
        record.check(_notary(bundle))
        what = f"{author}'s proposal {sealed.proposal.title!r}"
    else:
        raise InvalidFieldError("a forward's 'form' is 'letter' or 'proposal'")
    raw = _object(item.get("consent"), "a forward's 'consent'")
    consent_bytes = _unb64(raw, "signed")
    consent = _read(ForwardConsent.read, consent_bytes, "the consent")
    if consent.author.name != author or consent.author.keys != author_keys:
        raise IdentityMismatchError("the consent is signed by someone other than the author")
    if consent.subject != subject:
        raise IdentityMismatchError("the consent names another message")
    if consent.mediator.name != mediator:
        raise IdentityMismatchError(f"the consent names {consent.mediator.name}, not {mediator}")
    if not consent.allows(bundle.participant):
        raise IdentityMismatchError(f"the author consented to forwarding to {consent.to} only")
    signature = _unb64(raw, "signature", SIGNATURE_SIZE)
    _verify(key, signature, labels.SIG_FORWARD_CONSENT, consent_bytes, "the consent")
    return f"{what}, forwarded by {mediator} with the author's consent"


def _check_inject(bundle: Bundle, item: Mapping[str, Any], control: bytes | None) -> str:
    signed, signature, key = _signed(item)
    if item.get("signer") != CONTROL:
        raise IdentityMismatchError("an inject is signed by control")
    if control is None:
        raise InvalidFieldError("the export holds no control key")
    if key.raw != control:
        raise IdentityMismatchError("the inject claims a control key other than the pinned one")
    exercise, number, at, title = _read(_inject_head, signed, "the inject")
    _verify(key, signature, labels.SIG_INJECT, signed, "the inject")
    scenario = item.get("scenario_at")
    if scenario is not None and scenario != at:
        raise InvalidFieldError("the item's scenario time is not the one control signed")
    return f"inject {number} of {exercise}: {title}"


def _check_communique(bundle: Bundle, item: Mapping[str, Any], _control: bytes | None) -> str:
    signed, signature, key = _signed(item)
    exercise, author, at = _read(_communique_head, signed, "the communiqué")
    if item.get("signer") != author:
        claimed = item.get("signer")
        raise IdentityMismatchError(f"it claims {claimed!r} wrote it; it names {author!r}")
    if author == bundle.participant and key.raw != bundle.identity[:32]:
        raise IdentityMismatchError("the exporter's own communiqué is signed by another key")
    _verify(key, signature, labels.SIG_COMMUNIQUE, signed, "the communiqué")
    _times(item, at)
    return f"communiqué by {author} to {exercise}"


_Check = Callable[[Bundle, Mapping[str, Any], "bytes | None"], str]
_CHECKS: dict[str, _Check] = {
    "letter": _check_letter,
    "acknowledgement": _check_ack,
    "introduction": _check_introduction,
    "forward": _check_forward,
    "inject": _check_inject,
    "communique": _check_communique,
}


def _inject_head(reader: Reader) -> tuple[str, int, int, str]:
    """`InjectBody` (PROTOCOL.md §16.3), read whole: exercise, number, at, title."""
    exercise = text_field(reader.var8(MAX_NAME_BYTES, "exercise"), "exercise", empty=False)
    number, at = reader.u32(), reader.i64()
    for _ in range(reader.u8()):
        text_field(reader.var8(MAX_NAME_BYTES, "recipient"), "recipient", empty=False)
    title = text_field(reader.var16(None, "title"), "title")
    text_field(reader.var32(1 << 20, "text"), "text")
    return exercise, number, at, title


def _communique_head(reader: Reader) -> tuple[str, str, int]:
    """`CommuniqueBody` (PROTOCOL.md §16.9), read whole: exercise, author, at."""
    exercise = text_field(reader.var8(MAX_NAME_BYTES, "exercise"), "exercise", empty=False)
    author = text_field(reader.var8(MAX_NAME_BYTES, "author"), "author", empty=False)
    at = reader.i64()
    text_field(reader.var32(8_000, "text"), "text", empty=False)
    return exercise, author, at


# --- helpers ----------------------------------------------------------------------------------


def _read(parse: Callable[[Reader], Any], data: bytes, what: str) -> Any:
    reader = Reader(data, what)
    value = parse(reader)
    reader.finish()
    return value


def _signed(item: Mapping[str, Any]) -> tuple[bytes, bytes, SigningPublicKey]:
    return (_unb64(item, "signed"), _unb64(item, "signature", SIGNATURE_SIZE),
            _key(item, "signer_key"))  # fmt: skip


def _claims(item: Mapping[str, Any], name: str, keys: bytes, key: SigningPublicKey) -> None:
    """The item's `signer` and `signer_key` are the ones the signed bytes name."""
    if item.get("signer") != name:
        claimed = item.get("signer")
        raise IdentityMismatchError(f"it claims {claimed!r} signed it; it names {name!r}")
    if key.raw != keys[:32]:
        raise IdentityMismatchError(f"its signer key is not the key {name} is named with")


def _involves(
    bundle: Bundle, item: Mapping[str, Any], signer: tuple[str, bytes], other: tuple[str, bytes]
) -> None:
    """A sent item names the exporter as its signer, a received one as its other party."""
    direction = item.get("direction")
    if direction not in ("sent", "received"):
        raise InvalidFieldError("'direction' is 'sent' or 'received'")
    party = signer if direction == "sent" else other
    if party != (bundle.participant, bundle.identity):
        role = "signer" if direction == "sent" else "addressee"
        raise IdentityMismatchError(f"the exporter is not its {role} (name and key)")


def _times(item: Mapping[str, Any], signed_at: int) -> None:
    wall = item.get("wall_at")
    if wall is not None and wall != signed_at:
        raise InvalidFieldError("the item's wall time is not the one that was signed")


def _verify(key: SigningPublicKey, signature: bytes, label: bytes, data: bytes, what: str) -> None:
    try:
        key.verify(signature, labels.signing_input(label, data))
    except BackchannelError:
        raise InvalidFieldError(f"the signature on {what} does not verify") from None


def _notary(bundle: Bundle) -> SigningPublicKey:
    if bundle.notary_key is None:
        raise InvalidFieldError("the export holds no notary key")
    return SigningPublicKey.from_bytes(bundle.notary_key)


def _key(item: Mapping[str, Any], field: str) -> SigningPublicKey:
    return SigningPublicKey.from_bytes(_unb64(item, field, 32))


def _optional_key(item: Mapping[str, Any], field: str) -> bytes | None:
    if item.get(field) is None:
        return None
    key = _unb64(item, field, 32)
    SigningPublicKey.from_bytes(key)
    return key


def _str(item: Mapping[str, Any], field: str) -> str:
    value = item.get(field)
    return value if isinstance(value, str) else ""


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidFieldError(f"{what} is a JSON object")
    return value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(item: Mapping[str, Any], field: str, size: int | None = None) -> bytes:
    value = item.get(field)
    if not isinstance(value, str):
        raise InvalidFieldError(f"field {field!r} is missing or not a string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidFieldError(f"field {field!r} is not base64") from None
    if size is not None and len(raw) != size:
        raise InvalidFieldError(f"field {field!r} is {len(raw)} bytes, not {size}")
    return raw
