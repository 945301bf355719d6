"""`backchannel export --all`: every attributable item of a profile in one file (PROTOCOL.md §14.8).

The profile holds what it needs to prove each item: the signature of every letter (received
letters since they could be forwarded verbatim, sent ones since this version) and the signed bytes
of acknowledgements, introductions, forwards, injects and communiqués (`signed_items`). Each item
is built here, then checked by the same offline verifier a reviewer runs (`backchannel.bundle`):
one that does not verify is not written, it is counted in `left_out` with the reason. Nothing of
an off-the-record channel is ever read here: those messages are only counted.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from backchannel.bundle import BUNDLE_FORMAT, CONTROL, MAX_ITEMS, Bundle, b64, verify_bundle
from backchannel.content import decode_content
from backchannel.errors import BackchannelError
from backchannel.identity import IdentityPublic
from backchannel.mediation import Forwarded

from .errors import CliError
from .exercising import CLASS_OF, CONTROL_SECRET
from .localstore import Contact, LetterSignature, Message, ProposalRow

if TYPE_CHECKING:
    from .service import Participant

LEFT_OUT_REASONS = {
    "otr": "off the record: deniable by design, never exported (only counted, not by peer)",
    "unreadable": "could not be read when it arrived, so there is nothing signed to show",
    "carried": "carried unread for two other participants: not this profile's to prove",
    "consent": "a consent to forwarding is proven inside the forward it allows, by its recipient",
    "unsigned": "its signature was not kept (stored before this version, or it did not verify)",
}
"""Why a message kind is not in the export (the kinds below are covered otherwise)."""
COVERED = ("proposal", "statement", "exchange")
"""Message kinds that carried proposals and statements: exported as proposal records."""


def export_all(participant: Participant) -> dict[str, Any]:
    """The export document (PROTOCOL.md §14.8), every item already checked."""
    p, store = participant, participant.store
    me = p.me.identity.public
    items: list[dict[str, Any]] = []
    left: Counter[tuple[str, str]] = Counter()
    with store.transaction() as db:
        notary = p.negotiation._pinned(db)
        control = store.get_secret(db, CONTROL_SECRET)
        for message in store.messages(db):
            kind = message.kind
            if CLASS_OF.get(kind) == "off_the_record" or kind == "otr":
                left[("otr", LEFT_OUT_REASONS["otr"])] += 1  # counted, never opened
                continue
            if kind in COVERED:
                continue
            item = _item(p, db, message)
            if item is None:
                reason = LEFT_OUT_REASONS.get(kind, LEFT_OUT_REASONS["unsigned"])
                left[(_KIND_NAMES.get(kind, kind), reason)] += 1
                continue
            item["wall_at"] = item.get("wall_at", message.sent_at or None)
            item["scenario_at"] = message.scenario_at
            item["relay_at"] = message.relay_at
            items.append(item)
        for row in db.query(ProposalRow).order_by(ProposalRow.stored_at):
            record = p.negotiation._record(db, row)
            if record is None:
                left[("proposal", "still sealed until its reveal time: not yet readable")] += 1
                continue
            carrier: Message | None = db.get(Message, row.message_id)
            items.append({
                "kind": "proposal", "id": row.digest,
                "direction": "sent" if row.direction == "out" else "received",
                "signer": record.sealed.proposal.author.name, "record": record.to_json(),
                "wall_at": record.receipt.entry.at_ms,
                "scenario_at": carrier.scenario_at if carrier is not None else None,
            })  # fmt: skip
    document: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "exported_at": int(time.time() * 1000),
        "participant": {"name": p.name, "identity": b64(me.keys)},
        "relay": {
            "url": p.me.info.relay,
            "notary_key": b64(notary.key.raw) if notary is not None else None,
            "control_key": b64(control) if control is not None else None,
        },
        "items": [],
        "left_out": [],
    }
    if len(items) > MAX_ITEMS:  # a file no verifier would read: say so rather than write it
        raise CliError(f"this profile holds {len(items)} items, more than one export may hold "
                       f"({MAX_ITEMS}); export single proposals with `export ID`")  # fmt: skip
    bundle = Bundle(p.name, me.keys, notary.key.raw if notary else None, control, tuple(items))
    kept = []
    for verdict in verify_bundle(bundle, int(time.time() * 1000)):
        if verdict.ok:
            kept.append(items[verdict.index])
        else:
            left[(verdict.kind, f"could not be proven: {verdict.reason}")] += 1
    document["items"] = kept
    document["left_out"] = [
        {"kind": kind, "count": count, "reason": reason}
        for (kind, reason), count in sorted(left.items())
    ]
    return document


_KIND_NAMES = {"forwarded": "forward"}


def _item(p: Participant, db: Any, message: Message) -> dict[str, Any] | None:
    """The export item for one stored message, or None when nothing signed was kept."""
    direction = "sent" if message.direction == "out" else "received"
    base: dict[str, Any] = {"id": message.id, "direction": direction}
    me = p.me.identity.public
    if message.kind == "letter":
        signature = db.get(LetterSignature, message.id)
        contact: Contact | None = db.get(Contact, message.peer)
        if signature is None or message.verified != "signed":
            return None
        if signature.peer_keys is not None:  # as the letter named them, whatever changed since
            peer_keys = signature.peer_keys
        elif contact is not None:
            peer_keys = IdentityPublic.from_bytes(contact.identity).keys
        else:
            return None
        letter = p._letter(message, message.peer, peer_keys)
        signer_keys = me.keys if direction == "sent" else peer_keys
        return {
            **base, "kind": "letter", "signer": letter.sender,
            "signer_key": b64(signer_keys[:32]), "signed": b64(letter.canonical()),
            "signature": b64(signature.signature),
            "keys": {"sender": b64(letter.sender_keys), "recipient": b64(letter.recipient_keys)},
            "class": p.exercise.letters(message.peer) if p.exercise.view else "record",
        }  # fmt: skip
    kept = p.store.signed_item(db, message.id)
    if kept is None:
        return None
    key, signed, signature = kept
    signer = p.name if direction == "sent" else message.peer
    if message.kind in ("acknowledgement", "introduction", "communique"):
        return {**base, "kind": message.kind, "signer": signer, "signer_key": b64(key),
                "signed": b64(signed), "signature": b64(signature)}  # fmt: skip
    if message.kind == "inject":
        return {**base, "kind": "inject", "signer": CONTROL, "signer_key": b64(key),
                "signed": b64(signed), "signature": b64(signature), "wall_at": None}  # fmt: skip
    if message.kind == "forwarded":
        try:
            forwarded = decode_content(signed)
        except (BackchannelError, ValueError):
            return None
        if not isinstance(forwarded, Forwarded):
            return None
        consent = forwarded.consent
        item = {
            **base, "kind": "forward", "mediator": message.peer,
            "signer": forwarded.author().name, "signer_key": b64(key),
            "consent": {"signed": b64(consent.consent.canonical()),
                        "signature": b64(consent.signature)},
            "wall_at": None,
        }  # fmt: skip
        if forwarded.letter is not None:
            item.update(form="letter", signed=b64(forwarded.letter.letter.canonical()),
                        signature=b64(forwarded.letter.signature))  # fmt: skip
        else:
            assert forwarded.sealed is not None and forwarded.receipt is not None
            item.update(form="proposal", record={
                "sealed": b64(forwarded.sealed.to_bytes()),
                "receipt": b64(forwarded.receipt.to_bytes()), "statements": [],
            })  # fmt: skip
        return item
    return None
