"""The full export's offline verifier (PROTOCOL.md §14.8): a valid file passes item by item, and
any altered signed byte, swapped signature, false signer or foreign key fails that item with a
reason; files past the limits are refused before they are parsed."""

from __future__ import annotations

import base64
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backchannel import bundle as core
from backchannel.bundle import BUNDLE_FORMAT, b64, verify_all
from backchannel.content import (
    Letter,
    LetterAcknowledgement,
    letter_digest,
    sign_acknowledgement,
    sign_letter,
)
from backchannel.errors import BackchannelError, InvalidFieldError
from backchannel.exercise import Communique, Inject, inject_body, sign_communique, sign_inject
from backchannel.identity import IdentityKeyPair
from backchannel.keys import SigningKeyPair
from backchannel.mediation import ForwardConsent, Introduction, sign_consent, sign_introduction
from backchannel.proposals import Party
from backchannel.records import ProposalRecord

from ._support import flip

VECTORS = Path(__file__).parent.parent / "vectors"
PROPOSAL = json.loads((VECTORS / "proposal.json").read_text())["export"]
KENNEDY, KHRUSHCHEV, THANT, CASTRO = (IdentityKeyPair.generate() for _ in range(4))
CONTROL = SigningKeyPair.generate()
NOW = 1_796_522_898_385
T = 1_796_522_890_000


def _signed(
    kind: str,
    direction: str,
    signer: str,
    key: bytes,
    signed: bytes,
    signature: bytes,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "id": extra.pop("id", os.urandom(16).hex()),
        "direction": direction,
        "signer": signer,
        "signer_key": b64(key[:32]),
        "signed": b64(signed),
        "signature": b64(signature),
        "wall_at": extra.pop("wall_at", None),
        "scenario_at": None,
        "relay_at": None,
        **extra,
    }


def _letter(
    sender: tuple[str, IdentityKeyPair], to: tuple[str, IdentityKeyPair], text: str
) -> Letter:
    return Letter(
        os.urandom(16), sender[0], sender[1].public.keys, to[0], to[1].public.keys, T, text
    )


def document() -> dict[str, Any]:
    """Kennedy's export: one item of every kind, all valid."""
    me, them = ("kennedy", KENNEDY), ("khrushchev", KHRUSHCHEV)
    items = []
    for sender, to, text in ((me, them, "The missiles must go."), (them, me, "They will go.")):
        signed = sign_letter(sender[1], _letter(sender, to, text))
        letter = signed.letter
        items.append(
            _signed(
                "letter",
                "sent" if sender is me else "received",
                sender[0],
                sender[1].public.keys,
                letter.canonical(),
                signed.signature,
                id=letter.message_id.hex(),
                wall_at=T,
                keys={"sender": b64(letter.sender_keys), "recipient": b64(letter.recipient_keys)},
            )
        )
        ack = LetterAcknowledgement(
            letter.message_id,
            letter_digest(letter),
            to[0],
            to[1].public.keys,
            sender[0],
            sender[1].public.keys,
            T + 1,
        )
        signed_ack = sign_acknowledgement(to[1], ack)
        items.append(
            _signed(
                "acknowledgement",
                "sent" if to is me else "received",
                to[0],
                to[1].public.keys,
                ack.canonical(),
                signed_ack.signature,
                wall_at=T + 1,
            )
        )
    intro = Introduction(
        Party.of("u-thant", THANT.public),
        Party.of("kennedy", KENNEDY.public),
        "khrushchev",
        KHRUSHCHEV.public.to_bytes(),
        T + 2,
    )
    items.append(
        _signed(
            "introduction",
            "received",
            "u-thant",
            THANT.public.keys,
            intro.canonical(),
            sign_introduction(THANT, intro).signature,
        )
    )
    original = sign_letter(CASTRO, _letter(("castro", CASTRO), ("u-thant", THANT), "Guarantees."))
    consent = ForwardConsent(
        Party.of("castro", CASTRO.public),
        Party.of("u-thant", THANT.public),
        letter_digest(original.letter),
        "kennedy",
        T + 3,
    )
    items.append(
        _signed(
            "forward",
            "received",
            "castro",
            CASTRO.public.keys,
            original.letter.canonical(),
            original.signature,
            form="letter",
            mediator="u-thant",
            consent={
                "signed": b64(consent.canonical()),
                "signature": b64(sign_consent(CASTRO, consent).signature),
            },
        )
    )
    inject = Inject(1, -226_962_000_000, ("all",), "Quarantine", "The President speaks at 19:00.")
    items.append(
        _signed(
            "inject",
            "received",
            "control",
            CONTROL.public.raw,
            inject_body("cuba-1962", inject),
            sign_inject(CONTROL, "cuba-1962", inject),
        )
    )
    items[-1]["scenario_at"] = inject.at_ms
    said = Communique("cuba-1962", "khrushchev", T + 4, "Radio Moscow: the ships turn back.")
    items.append(
        _signed(
            "communique",
            "received",
            "khrushchev",
            KHRUSHCHEV.public.keys,
            said.body(),
            sign_communique(KHRUSHCHEV.signing, said),
            wall_at=T + 4,
        )
    )
    record = PROPOSAL["records"][0]
    parsed = ProposalRecord.from_json(record)
    items.append(
        {
            "kind": "proposal",
            "id": parsed.digest.hex(),
            "direction": "received",
            "signer": parsed.sealed.proposal.author.name,
            "record": record,
            "wall_at": None,
            "scenario_at": None,
        }
    )
    return {
        "format": BUNDLE_FORMAT,
        "exported_at": NOW,
        "participant": {"name": "kennedy", "identity": b64(KENNEDY.public.keys)},
        "relay": {
            "url": None,
            "notary_key": PROPOSAL["notary_key"],
            "control_key": b64(CONTROL.public.raw),
        },
        "items": items,
        "left_out": [{"kind": "otr", "count": 2, "reason": "off the record"}],
    }


VALID = document()
SIGNED_ITEMS = [n for n, item in enumerate(VALID["items"]) if "signed" in item]


def verdicts(doc: dict[str, Any], **keys: Any) -> list[core.Verdict]:
    return verify_all(json.dumps(doc).encode(), NOW, **keys)


def failing(doc: dict[str, Any], **keys: Any) -> dict[int, str]:
    return {v.index: v.reason for v in verdicts(doc, **keys) if not v.ok}


def test_a_valid_export_verifies_item_by_item() -> None:
    checked = verdicts(VALID)
    assert [v.kind for v in checked] == [i["kind"] for i in VALID["items"]]
    assert all(v.ok for v in checked), [v.reason for v in checked if not v.ok]
    assert {v.kind for v in checked} == set(core.KINDS)
    assert any("accepted" in v.summary for v in checked if v.kind == "proposal")
    assert core.parse_bundle(VALID).left_out == tuple(VALID["left_out"])


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(SIGNED_ITEMS), st.data())
def test_any_flipped_signed_byte_fails_that_item_only(index: int, data: st.DataObject) -> None:
    doc = copy.deepcopy(VALID)
    item = doc["items"][index]
    field = data.draw(st.sampled_from(["signed", "signature"]))
    raw = base64.b64decode(item[field])
    at = data.draw(st.integers(0, len(raw) - 1))
    mask = data.draw(st.integers(1, 255))
    item[field] = b64(flip(raw, at, mask))
    assert list(failing(doc)) == [index]


def test_a_flipped_byte_in_the_consent_or_a_record_fails() -> None:
    doc = copy.deepcopy(VALID)
    forward = next(i for i in doc["items"] if i["kind"] == "forward")
    forward["consent"]["signed"] = b64(flip(base64.b64decode(forward["consent"]["signed"]), -1))
    (reason,) = failing(doc).values()
    assert "consent" in reason
    doc = copy.deepcopy(VALID)
    record = next(i for i in doc["items"] if i["kind"] == "proposal")["record"]
    record["sealed"] = b64(flip(base64.b64decode(record["sealed"]), -1))
    assert len(failing(doc)) == 1


def test_swapped_signatures_fail_both_items() -> None:
    doc = copy.deepcopy(VALID)
    one, two = doc["items"][0], doc["items"][1]
    one["signature"], two["signature"] = two["signature"], one["signature"]
    failed = failing(doc)
    assert sorted(failed) == [0, 1]
    assert all("does not verify" in reason for reason in failed.values())


def test_an_item_cannot_claim_another_signer_or_key() -> None:
    doc = copy.deepcopy(VALID)
    doc["items"][2]["signer"] = "castro"
    assert "claims 'castro'" in failing(doc)[2]
    doc = copy.deepcopy(VALID)
    doc["items"][2]["signer_key"] = b64(CASTRO.public.keys[:32])
    assert "signer key" in failing(doc)[2]
    # Re-signed by someone else entirely, naming themselves: not the exporter's correspondence.
    doc = copy.deepcopy(VALID)
    forged = sign_letter(CASTRO, _letter(("castro", CASTRO), ("khrushchev", KHRUSHCHEV), "Hi."))
    doc["items"][2].update(
        signer="castro",
        signer_key=b64(CASTRO.public.keys[:32]),
        signed=b64(forged.letter.canonical()),
        signature=b64(forged.signature),
        id=forged.letter.message_id.hex(),
        keys={"sender": b64(CASTRO.public.keys), "recipient": b64(KHRUSHCHEV.public.keys)},
    )
    assert "exporter is not its addressee" in failing(doc)[2]


def test_an_inject_must_be_signed_by_the_pinned_or_trusted_control_key() -> None:
    index = next(n for n, i in enumerate(VALID["items"]) if i["kind"] == "inject")
    other = SigningKeyPair.generate()
    doc = copy.deepcopy(VALID)
    doc["items"][index]["signer_key"] = b64(other.public.raw)
    assert "control key other than the pinned one" in failing(doc)[index]
    assert "control key other than" in failing(VALID, control_key=other.public.raw)[index]
    doc = copy.deepcopy(VALID)
    doc["items"][index]["scenario_at"] += 1
    assert "scenario time" in failing(doc)[index]


def test_a_wrong_notary_key_fails_the_proposals() -> None:
    index = next(n for n, i in enumerate(VALID["items"]) if i["kind"] == "proposal")
    assert list(failing(VALID, notary_key=SigningKeyPair.generate().public.raw)) == [index]


def test_times_and_ids_beside_the_signed_bytes_must_match_them() -> None:
    doc = copy.deepcopy(VALID)
    doc["items"][0]["wall_at"] += 1
    assert "wall time" in failing(doc)[0]
    doc = copy.deepcopy(VALID)
    doc["items"][0]["id"] = os.urandom(16).hex()
    assert "message id" in failing(doc)[0]


def test_unknown_kinds_and_malformed_items_fail_alone() -> None:
    doc = copy.deepcopy(VALID)
    doc["items"].append({"kind": "otr", "id": "x", "signer": "kennedy"})
    doc["items"].append({"kind": "letter", "signed": "not base64!"})
    doc["items"].append({"kind": "communique", "signed": "", "signature": 5})
    failed = failing(doc)
    n = len(VALID["items"])
    assert sorted(failed) == [n, n + 1, n + 2]
    assert "unknown item kind 'otr'" in failed[n]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[]", "a JSON object"),
        (b"{}", "not a full export"),
        (b"\xff\xfe{", "not JSON"),
        (b'{"format": "backchannel-export-all/1"}', "'participant'"),
        (b"[" * 9 + b"]" * 9, "nested too deeply"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_files_that_are_not_exports_are_refused_whole(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidFieldError, match=reason):
        verify_all(data, NOW)


def test_brackets_inside_strings_do_not_count_towards_the_depth() -> None:
    doc = copy.deepcopy(VALID)
    doc["left_out"] = [{"kind": "otr", "count": 1, "reason": '[[[[[[[[[[{{{{{{{{{{\\"['}]
    assert all(v.ok for v in verdicts(doc))


def test_size_and_item_count_are_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    data = json.dumps(VALID).encode()
    monkeypatch.setattr(core, "MAX_BUNDLE_BYTES", len(data) - 1)
    with pytest.raises(InvalidFieldError, match="larger than"):
        verify_all(data, NOW)
    monkeypatch.setattr(core, "MAX_BUNDLE_BYTES", len(data))
    monkeypatch.setattr(core, "MAX_ITEMS", len(VALID["items"]) - 1)
    with pytest.raises(InvalidFieldError, match="at most"):
        verify_all(data, NOW)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "kind",
                    "signed",
                    "signature",
                    "signer",
                    "signer_key",
                    "record",
                    "consent",
                    "keys",
                    "form",
                    "id",
                    "direction",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, len(VALID["items"]) - 1),
    st.sampled_from(
        [
            "kind",
            "signed",
            "signature",
            "signer",
            "signer_key",
            "record",
            "consent",
            "keys",
            "form",
            "id",
            "direction",
            "wall_at",
            "scenario_at",
            "mediator",
        ]
    ),
    JSON,
)
def test_any_field_replaced_by_any_json_gives_verdicts_not_crashes(
    index: int, field: str, value: Any
) -> None:
    doc = copy.deepcopy(VALID)
    doc["items"][index][field] = value
    try:
        result = verdicts(doc)
    except BackchannelError:
        return
    assert len(result) == len(VALID["items"])
    assert all(v.ok for n, v in enumerate(result) if n != index)


def test_a_forwarded_proposal_needs_its_record_and_the_authors_consent() -> None:
    author = IdentityKeyPair.from_private_bytes(
        bytes.fromhex(
            json.loads((VECTORS / "proposal.json").read_text())["author_identity_private"]
        )
    )
    record = PROPOSAL["records"][0]
    sealed = ProposalRecord.from_json(record).sealed
    name = sealed.proposal.author.name
    consent = ForwardConsent(
        Party(name, author.public.keys), Party.of("u-thant", THANT.public), sealed.digest, "", T
    )
    item = {
        "kind": "forward", "id": "ab" * 16, "direction": "received", "signer": name,
        "signer_key": b64(author.public.keys[:32]), "form": "proposal", "mediator": "u-thant",
        "record": {**record, "statements": []},
        "consent": {"signed": b64(consent.canonical()),
                    "signature": b64(sign_consent(author, consent).signature)},
    }  # fmt: skip
    doc = copy.deepcopy(VALID)
    doc["items"].append(item)
    assert failing(doc) == {}
    doc["items"][-1]["mediator"] = "dobrynin"
    assert "the consent names u-thant, not dobrynin" in failing(doc)[len(VALID["items"])]
    doc["items"][-1]["mediator"] = "u-thant"
    other = SigningKeyPair.generate().public.raw
    assert len(VALID["items"]) in failing(doc, notary_key=other)
