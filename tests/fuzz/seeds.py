"""Valid encodings to mutate, built with the core from fixed keys and fixed randomness.

Everything here is deterministic (no `os.urandom`, no randomised KEM encapsulation), so a
failing input that hypothesis saved, or that atheris wrote to a crash file, means the same thing
in the next process: the receiving states the targets decode against are rebuilt identically.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from backchannel import otr
from backchannel.content import (
    Letter,
    LetterAcknowledgement,
    ProposalContent,
    Receipt,
    ReceiptType,
    StatementContent,
    letter_digest,
    lock_proposal,
    sign_acknowledgement,
    sign_letter,
)
from backchannel.drops import SealedEnvelope
from backchannel.encoding import Writer
from backchannel.envelope import Envelope, Route
from backchannel.identity import IdentityKeyPair
from backchannel.keys import KEM_CIPHERTEXT_SIZE, KEMPublicKey, SigningKeyPair
from backchannel.keystore import ScryptParams, seal
from backchannel.mediation import (
    ANYONE,
    ForwardConsent,
    Forwarded,
    Introduction,
    ReleasedOffer,
    SignedConsent,
    sign_consent,
    sign_introduction,
    sign_release,
)
from backchannel.otr import OtrChannel, OtrControl, OtrForm
from backchannel.prekeys import KemPrekey, OneTimePrekey, PrekeyBundle, PrekeySecrets, SignedPrekey
from backchannel.proposals import (
    EntryKind,
    NotaryReceipt,
    Party,
    Proposal,
    Reveal,
    SealedProposal,
    SignedStatement,
    Statement,
    StatementKind,
    next_entry,
    notarise,
    sign_statement,
)
from backchannel.proposals import seal as seal_proposal
from backchannel.records import Export, Notarised, ProposalRecord
from backchannel.relay_auth import sign_login, sign_registration
from backchannel.session import Session, accept_session, session_encrypt, start_session

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "server" / "backchannel_relay" / "scenarios"
T0 = 1_793_059_200_000
RELAY_ID = bytes(range(16))
CHALLENGE = bytes(range(32, 64))
PASSPHRASE = "Thirteen Days"
CHEAP_SCRYPT = ScryptParams(log2_n=4, r=1, p=1)
"""Seeds for the keystore target open with 16·128 bytes of scrypt, not 128 MiB."""


class Drbg:
    """SHA-512(label ‖ counter) prefixes: the core's `RandomSource`, made repeatable."""

    def __init__(self, label: str) -> None:
        self._label = label.encode()
        self._counter = 0

    def __call__(self, size: int) -> bytes:
        out = b""
        while len(out) < size:
            out += hashlib.sha512(self._label + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
        return out[:size]


def identity(label: str) -> IdentityKeyPair:
    return IdentityKeyPair.from_private_bytes(Drbg("identity " + label)(64))


KENNEDY, KHRUSHCHEV, THANT = identity("kennedy"), identity("khrushchev"), identity("u-thant")
JFK = Party.of("kennedy", KENNEDY.public)
NSK = Party.of("khrushchev", KHRUSHCHEV.public)
UT = Party.of("u-thant", THANT.public)
NOTARY = SigningKeyPair.from_private_bytes(Drbg("notary")(32))


# --- prekeys and sessions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sessions:
    """Kennedy's published prekeys, and a session Khrushchev opened to him."""

    secrets: PrekeySecrets
    bundle: PrekeyBundle
    bundle_without_one_time: PrekeyBundle
    first: bytes
    """Khrushchev's first (PREKEY) message."""
    reply: bytes
    """Kennedy's answer (a RATCHET message), which Khrushchev has not read."""
    second: bytes
    """Khrushchev's second message, still PREKEY (he has not read the answer)."""
    kennedy: Session
    """Kennedy's session after the first message: what the session target decrypts with."""
    khrushchev: Session


@functools.cache
def sessions() -> Sessions:
    random = Drbg("prekeys")
    secrets, _signed = PrekeySecrets().add_signed_prekey(KENNEDY, random)
    secrets, one_time = secrets.add_one_time_prekeys(2, random)
    secrets, kem = secrets.add_kem_prekeys(KENNEDY, 2, random=random)
    secrets, last = secrets.add_kem_prekeys(KENNEDY, 1, last_resort=True, random=random)
    published = secrets.published(KENNEDY)
    bundle = PrekeyBundle(KENNEDY.public, published.signed, one_time[0], kem[0])
    without = PrekeyBundle(KENNEDY.public, published.signed, None, last[0])
    kem_pair = secrets.kem_one_time[kem[0].id]
    ciphertext = Drbg("kem ciphertext")(KEM_CIPHERTEXT_SIZE)

    def encapsulate(_public: KEMPublicKey) -> tuple[bytes, bytes]:
        # ML-KEM decapsulation of any well-sized ciphertext yields a secret (implicit
        # rejection), so this fixed ciphertext makes the handshake repeatable.
        return kem_pair.decapsulate(ciphertext), ciphertext

    alice_random = Drbg("khrushchev session")
    session = start_session(KHRUSHCHEV, "khrushchev", bundle, "kennedy", alice_random, encapsulate)
    session, first = session_encrypt(
        session, b"We must not pull on the ends of the rope.", alice_random
    )
    session, second = session_encrypt(session, b"Let us take measures.", alice_random)
    _, kennedy, _ = accept_session(KENNEDY, "kennedy", secrets, first, Drbg("kennedy session"))
    _, reply = session_encrypt(kennedy, b"We agree.", Drbg("kennedy reply"))
    return Sessions(secrets, bundle, without, first, reply, second, kennedy, session)


# --- letters, receipts, proposals, the notary ----------------------------------------------------


def letter() -> Letter:
    return Letter(
        b"\x01" * 16, "khrushchev", KHRUSHCHEV.public.keys, "kennedy", KENNEDY.public.keys,
        T0, "We must not pull on the ends of the rope.", in_reply_to=b"\x02" * 16,
    )  # fmt: skip


def offer(**reveal: object) -> Proposal:
    return Proposal(
        b"\x07" * 16, NSK, (JFK,), "Missiles out of Cuba",
        ("The missiles leave Cuba under UN inspection.", "No invasion of Cuba."),
        T0, T0 + 3_600_000, UT, (b"\x09" * 32,), b"\x0a" * 32, **reveal,  # type: ignore[arg-type]
    )  # fmt: skip


def _recorded(sealed: SealedProposal) -> bytes:
    """The value of a COMMITMENT entry: the proposal's notary terms where the core has them
    (so that the seeds are valid records and reach the replay), else the commitment."""
    terms = getattr(sealed, "terms", None)
    return terms if isinstance(terms, bytes) else sealed.commitment


@functools.cache
def notarised() -> tuple[SealedProposal, NotaryReceipt, SignedStatement, NotaryReceipt]:
    """A sealed offer, its commitment's receipt, an acceptance and the acceptance's receipt."""
    sealed = seal_proposal(KHRUSHCHEV, offer(), b"\x0b" * 32)
    first = next_entry(None, T0, EntryKind.COMMITMENT, sealed.commitment, _recorded(sealed))
    statement = sign_statement(
        KENNEDY,
        Statement(StatementKind.ACCEPTED, sealed.digest, sealed.commitment, JFK, T0 + 60_000,
                  accepted_with=(b"\x09" * 32,), reason="Agreed."),
    )  # fmt: skip
    second = next_entry(
        first, T0 + 61_000, EntryKind.ACCEPTANCE, sealed.commitment, statement.statement.digest()
    )
    return sealed, notarise(NOTARY, RELAY_ID, first), statement, notarise(NOTARY, RELAY_ID, second)


def _countered() -> bytes:
    sealed, *_ = notarised()
    statement = Statement(
        StatementKind.COUNTERED, sealed.digest, sealed.commitment, JFK, T0, counter=b"\x0c" * 32
    )
    return sign_statement(KENNEDY, statement).to_bytes()


@functools.cache
def timed() -> tuple[SealedProposal, NotaryReceipt, bytes]:
    sealed = seal_proposal(
        KHRUSHCHEV, offer(reveal=Reveal.AT_TIME, reveal_at_ms=T0 + 9), b"\x0d" * 32
    )
    entry = next_entry(None, T0, EntryKind.COMMITMENT, sealed.commitment, _recorded(sealed))
    return sealed, notarise(NOTARY, RELAY_ID, entry), b"\x0e" * 32


def proposals() -> list[bytes]:
    sealed, _, _, _ = notarised()
    simultaneous = offer(reveal=Reveal.SIMULTANEOUS, exchange_id=b"\x0f" * 16)
    return [sealed.proposal.canonical(), simultaneous.canonical(), timed()[0].proposal.canonical()]


def sealed_proposals() -> list[bytes]:
    return [notarised()[0].to_bytes(), timed()[0].to_bytes()]


def statements() -> list[bytes]:
    return [notarised()[2].to_bytes(), _countered()]


def notary_entries() -> list[bytes]:
    _, first, _, second = notarised()
    return [first.entry.to_bytes(), second.entry.to_bytes()]


def notary_links() -> list[bytes]:
    _, first, _, second = notarised()
    return [first.entry.link().to_bytes(), second.entry.link().to_bytes()]


def notary_receipts() -> list[bytes]:
    _, first, _, second = notarised()
    return [first.to_bytes(), second.to_bytes()]


# --- content kinds --------------------------------------------------------------------------


def content_letters() -> list[bytes]:
    plain = sign_letter(KHRUSHCHEV, letter())
    return [plain.to_content()]


def content_receipts() -> list[bytes]:
    ids = (b"\x01" * 16, b"\x03" * 16)
    return [Receipt(ReceiptType.DELIVERED, T0, ids).to_content(),
            Receipt(ReceiptType.READ, T0, ids[:1]).to_content()]  # fmt: skip


def content_proposals() -> list[bytes]:
    sealed, receipt, _, _ = notarised()
    open_form = ProposalContent(receipt, sealed.digest, sealed)
    locked_sealed, locked_receipt, key = timed()
    locked = lock_proposal(locked_sealed, key, b"\x10" * 12)
    timed_form = ProposalContent(locked_receipt, locked_sealed.digest, None, T0 + 9, locked)
    return [open_form.to_content(), timed_form.to_content()]


def timed_content(locked: bytes) -> bytes:
    """A timed proposal's content carrying `locked` as its nonce ‖ ciphertext."""
    sealed, receipt, _ = timed()
    return ProposalContent(receipt, sealed.digest, None, T0 + 9, locked).to_content()


def content_acknowledgements() -> list[bytes]:
    _, _, statement, receipt = notarised()
    ack = LetterAcknowledgement(
        b"\x01" * 16, letter_digest(letter()), "kennedy", KENNEDY.public.keys,
        "khrushchev", KHRUSHCHEV.public.keys, T0 + 5,
    )  # fmt: skip
    return [StatementContent(statement, receipt).to_content(),
            sign_acknowledgement(KENNEDY, ack).to_content()]  # fmt: skip


@functools.cache
def otr_pair() -> tuple[OtrControl, OtrControl, OtrChannel, OtrChannel]:
    """(offer, answer, opener's channel, responder's channel)."""
    offered, ephemeral = otr.offer(T0 + 3_600_000, Drbg("otr opener"))
    answer, responder = otr.accept(offered, T0, Drbg("otr responder"))
    return offered, answer, otr.complete(offered, ephemeral, answer), responder


def content_otr() -> list[bytes]:
    offered, answer, _, _ = otr_pair()
    close = OtrControl(OtrForm.CLOSE, offered.channel_id)
    return [offered.to_content(), answer.to_content(), close.to_content()]


def content_introductions() -> list[bytes]:
    intro = Introduction(UT, JFK, "khrushchev", KHRUSHCHEV.public.to_bytes(), T0)
    return [sign_introduction(THANT, intro).to_content()]


def _consent(subject: bytes, to: str) -> SignedConsent:
    return sign_consent(KHRUSHCHEV, ForwardConsent(NSK, UT, subject, to, T0 + 1))


def content_consents() -> list[bytes]:
    return [_consent(letter_digest(letter()), "kennedy").to_content(),
            _consent(b"\x05" * 32, ANYONE).to_content()]  # fmt: skip


def content_forwards() -> list[bytes]:
    signed = sign_letter(KHRUSHCHEV, letter())
    sealed, receipt, _, _ = notarised()
    by_letter = Forwarded(_consent(letter_digest(letter()), "kennedy"), letter=signed)
    by_proposal = Forwarded(_consent(sealed.digest, ANYONE), sealed=sealed, receipt=receipt)
    return [by_letter.to_content(), by_proposal.to_content()]


def content_releases() -> list[bytes]:
    sealed, receipt, _, second = notarised()
    release = ReleasedOffer(b"\x0f" * 16, UT, sealed, receipt, second, T0 + 70_000)
    return [sign_release(THANT, release).to_content()]


# --- envelopes, drops, handshake, identity, prekeys ---------------------------------------------


def envelopes() -> list[bytes]:
    s = sessions()
    direct = Envelope("kennedy", "khrushchev", b"\x01" * 16, Route.DIRECT, T0 // 1000, s.first)
    sealed = Envelope("kennedy", None, b"\x02" * 16, Route.SEALED, T0 // 1000, s.reply)
    forward = Envelope("u-thant", "khrushchev", b"\x03" * 16, Route.FORWARD, 1, direct.to_bytes())
    return [direct.to_bytes(), sealed.to_bytes(), forward.to_bytes()]


def otr_messages() -> list[bytes]:
    _, _, _, responder = otr_pair()
    responder, first = otr.encrypt(responder, b"Off the record: the Jupiters can go.")
    _, second = otr.encrypt(responder, b"")
    return [first, second]


def sealed_envelopes() -> list[bytes]:
    return [SealedEnvelope(b"\x04" * 16, T0 // 1000, m).to_bytes() for m in otr_messages()]


def initial_headers() -> list[bytes]:
    s = sessions()
    header = s.khrushchev.pending_header
    assert header is not None
    return [header.to_bytes()]


def session_messages() -> list[bytes]:
    s = sessions()
    return [s.first, s.second]


def identities() -> list[bytes]:
    return [KENNEDY.public.to_bytes(), KHRUSHCHEV.public.to_bytes()]


def bundles() -> list[bytes]:
    s = sessions()
    return [s.bundle.to_bytes(), s.bundle_without_one_time.to_bytes()]


def _written(*prekeys: SignedPrekey | OneTimePrekey | KemPrekey | None) -> list[bytes]:
    out = []
    for prekey in prekeys:
        assert prekey is not None
        writer = Writer()
        prekey.write(writer)
        out.append(bytes(writer))
    return out


def signed_prekeys() -> list[bytes]:
    return _written(sessions().bundle.signed_prekey)


def one_time_prekeys() -> list[bytes]:
    return _written(sessions().bundle.one_time_prekey)


def kem_prekeys() -> list[bytes]:
    s = sessions()
    return _written(s.bundle.kem_prekey, s.bundle_without_one_time.kem_prekey)


# --- relay authentication, files -----------------------------------------------------------------


def relay_proof(signature: bytes, form: int, middle: bytes, name: bytes) -> bytes:
    """`identity (128) ‖ signature (64) ‖ u8 form ‖ var8 middle ‖ name`: see the target."""
    return KENNEDY.public.to_bytes() + signature + bytes((form, len(middle))) + middle + name


def relay_proofs() -> list[bytes]:
    registration = sign_registration(KENNEDY, RELAY_ID, "invite-code", "kennedy")
    login = sign_login(KENNEDY, RELAY_ID, CHALLENGE, "kennedy")
    return [
        relay_proof(registration, 0, b"invite-code", b"kennedy"),
        relay_proof(login, 1, CHALLENGE, b"kennedy"),
    ]


def keystores() -> list[bytes]:
    plaintext = KENNEDY.private_bytes() + b"\x11" * 32
    return [
        seal(plaintext, PASSPHRASE, CHEAP_SCRYPT, Drbg("keystore")),
        seal(plaintext, None),
    ]


def exports() -> list[bytes]:
    import json

    sealed, receipt, statement, statement_receipt = notarised()
    record = ProposalRecord(sealed, receipt, (Notarised(statement, statement_receipt),))
    export = Export(NOTARY.public.raw, (record,))
    return [json.dumps(export.to_json()).encode()]


def condition_chain(length: int) -> bytes:
    """An export of `length` records, each conditional on the next: a chain as deep as that."""
    import json

    sealed, receipt, _, _ = notarised()
    records: list[ProposalRecord] = []
    conditions: tuple[bytes, ...] = ()
    for index in range(length):
        proposal = replace(
            sealed.proposal, proposal_id=index.to_bytes(16, "big"), conditions=conditions,
            terms=("t",), mediator=None, answers=None,
        )  # fmt: skip
        records.append(ProposalRecord(SealedProposal(proposal, bytes(64), bytes(32)), receipt))
        conditions = (proposal.digest(),)
    export = Export(NOTARY.public.raw, tuple(reversed(records)))
    return json.dumps(export.to_json()).encode()


def scenarios() -> list[bytes]:
    return [path.read_bytes() for path in sorted(SCENARIOS.glob("*.toml"))]


def profiles() -> list[bytes]:
    return [b'{"name": "kennedy", "relay": "http://127.0.0.1:8080", "fingerprint": "ab"}']


# --- local state (sealed by the CLI's vault, decoded after it authenticates) ----------------------


def ratchet_states() -> list[bytes]:
    s = sessions()
    return [s.kennedy.ratchet.to_bytes(), s.khrushchev.ratchet.to_bytes()]


def session_states() -> list[bytes]:
    s = sessions()
    return [s.kennedy.to_bytes(), s.khrushchev.to_bytes()]


def prekey_secrets() -> list[bytes]:
    return [sessions().secrets.to_bytes()]


def otr_states() -> list[bytes]:
    _, _, opener, responder = otr_pair()
    _, message = otr.encrypt(responder, b"x")
    opener, _, _ = otr.decrypt(opener, message)
    return [opener.to_bytes(), responder.to_bytes()]


def identity_privates() -> list[bytes]:
    return [KENNEDY.private_bytes()]


CONTROL = SigningKeyPair.from_private_bytes(Drbg("control")(32))


def full_exports() -> list[bytes]:
    """Kennedy's `export --all` (PROTOCOL.md §14.8): a letter he received, his acknowledgement
    of it, an introduction, an inject, a communiqué and a proposal record, all valid."""
    import base64
    import json

    from backchannel.content import LetterAcknowledgement, letter_digest, sign_acknowledgement
    from backchannel.exercise import Communique, Inject, inject_body, sign_communique, sign_inject
    from backchannel.mediation import Introduction, sign_introduction

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    def item(kind: str, direction: str, signer: str, key: bytes, signed: bytes, signature: bytes,
             **extra: object) -> dict[str, object]:  # fmt: skip
        return {"kind": kind, "id": "00" * 16, "direction": direction, "signer": signer,
                "signer_key": b64(key[:32]), "signed": b64(signed), "signature": b64(signature),
                "wall_at": None, "scenario_at": None, **extra}  # fmt: skip

    signed = sign_letter(KHRUSHCHEV, letter())
    digest = letter_digest(signed.letter)
    ack = LetterAcknowledgement(b"\x01" * 16, digest, "kennedy", KENNEDY.public.keys,
                                "khrushchev", KHRUSHCHEV.public.keys, T0)  # fmt: skip
    intro = Introduction(UT, JFK, "khrushchev", KHRUSHCHEV.public.to_bytes(), T0)
    inject = Inject(1, T0, ("all",), "Quarantine", "The President speaks at 19:00.")
    said = Communique("cuba-1962", "khrushchev", T0, "The ships turn back.")
    sealed, receipt, statement, statement_receipt = notarised()
    record = ProposalRecord(sealed, receipt, (Notarised(statement, statement_receipt),))
    items = [
        item("letter", "received", "khrushchev", KHRUSHCHEV.public.keys,
             signed.letter.canonical(), signed.signature, id=(b"\x01" * 16).hex(),
             keys={"sender": b64(KHRUSHCHEV.public.keys), "recipient": b64(KENNEDY.public.keys)}),
        item("acknowledgement", "sent", "kennedy", KENNEDY.public.keys, ack.canonical(),
             sign_acknowledgement(KENNEDY, ack).signature),
        item("introduction", "received", "u-thant", THANT.public.keys, intro.canonical(),
             sign_introduction(THANT, intro).signature),
        item("inject", "received", "control", CONTROL.public.raw,
             inject_body("cuba-1962", inject), sign_inject(CONTROL, "cuba-1962", inject)),
        item("communique", "received", "khrushchev", KHRUSHCHEV.public.keys, said.body(),
             sign_communique(KHRUSHCHEV.signing, said)),
        {"kind": "proposal", "id": sealed.digest.hex(), "direction": "received",
         "signer": "khrushchev", "record": record.to_json()},
    ]  # fmt: skip
    document = {
        "format": "backchannel-export-all/1",
        "participant": {"name": "kennedy", "identity": b64(KENNEDY.public.keys)},
        "relay": {"notary_key": b64(NOTARY.public.raw), "control_key": b64(CONTROL.public.raw)},
        "items": items,
        "left_out": [{"kind": "otr", "count": 1, "reason": "off the record"}],
    }
    return [json.dumps(document).encode(), json.dumps(document, indent=1).encode()]
