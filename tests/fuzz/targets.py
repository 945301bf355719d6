"""Fuzz targets: one function per decoder that reads bytes from the network or from a file.

Each target takes arbitrary bytes and either gets a value or the decoder's own error (a
`BackchannelError`; for the CLI's profile file a `CliError`); any other exception is a crash,
which the fuzzer reports. Where the decoder is strict and canonical, a decoded value must
re-encode to exactly the input (one encoding per value: PROTOCOL.md §1), and what a receiver
does next with a decoded value (checking signatures, decrypting, unlocking) must fail only with
the core's errors too. The same functions run under hypothesis in `make test`
(`test_fuzz.py`) and, for longer runs, under atheris or hypothesis (`python -m tests.fuzz.run`).

`REGRESSIONS` keeps every crash found so far, as the input that caused it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from backchannel import otr
from backchannel.bundle import load_json, parse_bundle, verify_bundle
from backchannel.content import (
    ProposalContent,
    Receipt,
    SignedAcknowledgement,
    SignedLetter,
    StatementContent,
    decode_content,
)
from backchannel.drops import SealedEnvelope
from backchannel.encoding import Reader, Writer
from backchannel.envelope import Envelope
from backchannel.errors import BackchannelError
from backchannel.exercise import NAME_PATTERN, parse_scenario, scenario_time_text
from backchannel.handshake import InitialHeader
from backchannel.identity import IdentityKeyPair, IdentityPublic
from backchannel.keys import DHKeyPair
from backchannel.keystore import is_protected, open_sealed, seal
from backchannel.mediation import Forwarded, ReleasedOffer, SignedConsent, SignedIntroduction
from backchannel.otr import DataMessage, OtrChannel, OtrControl, OtrForm
from backchannel.prekeys import KemPrekey, OneTimePrekey, PrekeyBundle, PrekeySecrets, SignedPrekey
from backchannel.proposals import (
    NotaryEntry,
    NotaryLink,
    NotaryReceipt,
    Proposal,
    SealedProposal,
    SignedStatement,
)
from backchannel.ratchet import RatchetState
from backchannel.records import parse_export, verify_export
from backchannel.relay_auth import verify_login, verify_registration
from backchannel.session import Session, accept_session, opens_new_session, session_decrypt
from backchannel_cli.errors import CliError
from backchannel_cli.profile import PROFILE_FILE, read_info

from . import seeds
from .seeds import KENNEDY, KHRUSHCHEV, NOTARY, RELAY_ID, T0, THANT, UT, Drbg

T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    """Valid encodings to mutate (built on first use: some need a handshake)."""


def _decoded(decode: Callable[[bytes], T], data: bytes) -> T | None:
    """The decoded value, or None when the decoder refused with its own error."""
    try:
        return decode(data)
    except BackchannelError:
        return None


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """A receiver's next step on a decoded value may refuse it, but only with a core error."""
    with contextlib.suppress(BackchannelError):
        yield


def _strict(read: Callable[[Reader], T]) -> Callable[[bytes], T]:
    """A `read(reader)` as the relay runs it on one field (`routes._parsed`): all bytes used."""

    def decode(data: bytes) -> T:
        reader = Reader(data, "fuzz")
        value = read(reader)
        reader.finish()
        return value

    return decode


def _canonical(
    decode: Callable[[bytes], Any], encode: Callable[[Any], bytes]
) -> Callable[[bytes], None]:
    """Decode; a value must re-encode to exactly the bytes it came from."""

    def run(data: bytes) -> None:
        value = _decoded(decode, data)
        if value is not None:
            assert encode(value) == data, "decoded value re-encodes differently"

    return run


def _stable(
    decode: Callable[[bytes], Any], encode: Callable[[Any], bytes]
) -> Callable[[bytes], None]:
    """Local state (`to_bytes` may normalise, e.g. sort): encode ∘ decode is idempotent."""

    def run(data: bytes) -> None:
        value = _decoded(decode, data)
        if value is not None:
            once = encode(value)
            assert encode(decode(once)) == once, "state does not survive a second round trip"

    return run


# --- wire formats -----------------------------------------------------------------------------


def envelope(data: bytes) -> None:
    _canonical(Envelope.from_bytes, Envelope.to_bytes)(data)


def sealed_envelope(data: bytes) -> None:
    _canonical(SealedEnvelope.from_bytes, SealedEnvelope.to_bytes)(data)


def _opener_ephemeral() -> DHKeyPair:
    """The opener's ephemeral key of `seeds.otr_pair` (same deterministic draws)."""
    _, ephemeral = otr.offer(T0 + 3_600_000, Drbg("otr opener"))
    return ephemeral


def _after_decoding(content: object) -> None:
    """What the CLI does with each kind once decoded, with the keys it would hold."""
    if isinstance(content, SignedLetter):
        with _refusals():
            content.verify(KHRUSHCHEV.public, KENNEDY.public, "kennedy")
    elif isinstance(content, ProposalContent):
        with _refusals():
            content.receipt.verify(NOTARY.public)
        if content.sealed is not None:
            with _refusals():
                content.sealed.verify(KHRUSHCHEV.public)
        else:
            with _refusals():
                content.unlock(seeds.timed()[2])
    elif isinstance(content, StatementContent):
        with _refusals():
            content.signed.verify(KENNEDY.public)
        with _refusals():
            content.receipt.verify(NOTARY.public)
    elif isinstance(content, SignedAcknowledgement):
        with _refusals():
            content.verify(KENNEDY.public, KHRUSHCHEV.public, "khrushchev")
    elif isinstance(content, OtrControl):
        offered, _, _, _ = seeds.otr_pair()
        with _refusals():
            if content.form == OtrForm.OFFER:
                otr.accept(content, T0, Drbg("fuzz accept"))
            elif content.form == OtrForm.ACCEPT:
                otr.complete(offered, _opener_ephemeral(), content)
    elif isinstance(content, SignedIntroduction):
        with _refusals():
            content.verify(THANT.public, KENNEDY.public, "kennedy")
        with _refusals():
            IdentityPublic.from_bytes(content.introduction.subject_identity)
    elif isinstance(content, Forwarded):
        with _refusals():
            content.verify_author()
        with _refusals():
            content.verify_consent(UT, "kennedy")
    elif isinstance(content, ReleasedOffer):
        with _refusals():
            content.verify(THANT.public, NOTARY.public)
    elif isinstance(content, SignedConsent):
        with _refusals():
            content.verify_as_mediator(KHRUSHCHEV.public, UT)
    else:
        assert isinstance(content, Receipt)


def content(data: bytes) -> None:
    """Every content kind goes through `decode_content`; the targets differ in their seeds."""
    value = _decoded(decode_content, data)
    if value is None:
        return
    assert value.to_content() == data, "decoded content re-encodes differently"
    _after_decoding(value)


def initial_header(data: bytes) -> None:
    _canonical(_strict(InitialHeader.read), InitialHeader.to_bytes)(data)


def session_message(data: bytes) -> None:
    """A session message as the CLI receives it: opening a session, or for an open one."""
    s = seeds.sessions()
    with _refusals():
        if opens_new_session(s.kennedy, data):
            accept_session(KENNEDY, "kennedy", s.secrets, data, Drbg("fuzz accept"))
        else:
            session_decrypt(s.kennedy, data, Drbg("fuzz decrypt"))
    with _refusals():
        if not opens_new_session(s.khrushchev, data):
            session_decrypt(s.khrushchev, data, Drbg("fuzz decrypt"))


def identity(data: bytes) -> None:
    _canonical(IdentityPublic.from_bytes, IdentityPublic.to_bytes)(data)


def prekey_bundle(data: bytes) -> None:
    _canonical(PrekeyBundle.from_bytes, PrekeyBundle.to_bytes)(data)


def _written(prekey: SignedPrekey | OneTimePrekey | KemPrekey) -> bytes:
    writer = Writer()
    prekey.write(writer)
    return bytes(writer)


def _prekey(
    read: Callable[[Reader], SignedPrekey | OneTimePrekey | KemPrekey],
) -> Callable[[bytes], None]:
    """An uploaded prekey as the relay checks it: parsed, then verified against the uploader."""

    def run(data: bytes) -> None:
        prekey = _decoded(_strict(read), data)
        if prekey is None:
            return
        assert _written(prekey) == data, "decoded prekey re-encodes differently"
        if not isinstance(prekey, OneTimePrekey):
            with _refusals():
                prekey.verify(KENNEDY.public)

    return run


def otr_message(data: bytes) -> None:
    """An off-the-record message out of a drop: parsed, then checked and decrypted."""
    _canonical(DataMessage.from_bytes, DataMessage.to_bytes)(data)
    _, _, opener, _ = seeds.otr_pair()
    with _refusals():
        otr.decrypt(opener, data)
    with _refusals():
        otr.tag_verifies(bytes(32), data)


def _receipt(data: bytes) -> None:
    _canonical(NotaryReceipt.from_bytes, NotaryReceipt.to_bytes)(data)
    receipt = _decoded(NotaryReceipt.from_bytes, data)
    if receipt is not None:
        with _refusals():
            receipt.verify(NOTARY.public)


def _sealed_proposal(data: bytes) -> None:
    _canonical(SealedProposal.from_bytes, SealedProposal.to_bytes)(data)
    sealed = _decoded(SealedProposal.from_bytes, data)
    if sealed is not None:
        with _refusals():
            sealed.verify(KHRUSHCHEV.public)
        assert len(sealed.commitment) == 32


def _statement(data: bytes) -> None:
    _canonical(SignedStatement.from_bytes, SignedStatement.to_bytes)(data)
    signed = _decoded(SignedStatement.from_bytes, data)
    if signed is not None:
        with _refusals():
            signed.verify(KENNEDY.public)


def relay_proof(data: bytes) -> None:
    """A registration or login proof as the relay checks it.

    Layout of the fuzz input (not a protocol format): identity (128) ‖ signature (64) ‖ u8 form
    (even: registration, odd: login) ‖ u8 n ‖ n bytes (invite or challenge) ‖ the name. Text is
    decoded with `surrogateescape`, so names with lone surrogates reach the core as well.
    """
    reader = Reader(data)
    try:
        identity_raw, signature = reader.fixed(128), reader.fixed(64)
        form, middle = reader.u8(), reader.var8()
    except BackchannelError:
        return
    name = reader.rest().decode("utf-8", "surrogateescape")
    who = _decoded(IdentityPublic.from_bytes, identity_raw)
    if who is None:
        return
    with _refusals():
        if form % 2 == 0:
            invite = middle.decode("utf-8", "surrogateescape")
            verify_registration(who, signature, RELAY_ID, invite, name)
        else:
            verify_login(who, signature, RELAY_ID, middle, name)


def keystore(data: bytes) -> None:
    """A keystore file as the CLI opens it: asked whether it needs a passphrase, then opened
    (with one only when its scrypt parameters are cheap: the check of the cost is fuzzed, the
    cost itself is not)."""
    protected = _decoded(is_protected, data)
    if protected is None:
        return
    if not protected:
        stored = _decoded(lambda raw: open_sealed(raw, None), data)
        if stored is not None:
            assert seal(stored, None) == data, "an unprotected keystore re-encodes differently"
        return
    with _refusals():
        open_sealed(data, None)
    if len(data) > 8 and data[6] <= 8 and data[7] * data[8] <= 8:
        plaintext = _decoded(lambda raw: open_sealed(raw, seeds.PASSPHRASE), data)
        if plaintext is not None and len(plaintext) == 96:
            with _refusals():  # what `profile.unlock` does next
                IdentityKeyPair.from_private_bytes(plaintext[:64])


def export(data: bytes) -> None:
    """`backchannel verify-record FILE`: the file parsed, then every record checked offline."""
    parsed = _decoded(parse_export, data)
    if parsed is None:
        return
    with _refusals():
        verify_export(parsed, T0, None)
    with _refusals():
        verify_export(parsed, T0, NOTARY.public.raw)


def full_export(data: bytes) -> None:
    """`backchannel verify-record FILE` on a full export (`export --all`): the limits, the
    document, then every item checked, with the file's keys and with keys the reviewer trusts."""
    parsed = _decoded(lambda raw: parse_bundle(load_json(raw)), data)
    if parsed is None:
        return
    for notary, control in ((None, None), (NOTARY.public.raw, seeds.CONTROL.public.raw)):
        with _refusals():
            verdicts = verify_bundle(parsed, T0, notary, control)
            assert len(verdicts) == len(parsed.items), "an item without a verdict"


def scenario(data: bytes) -> None:
    """`backchannel-relay exercise load FILE`: the relay reads the file as UTF-8 first."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # refused by the caller before parsing
    try:
        parsed = parse_scenario(text)
    except BackchannelError:
        return
    names = [parsed.name, *(role.name for role in parsed.roles)]
    assert all(NAME_PATTERN.fullmatch(name) for name in names), "a name is not a name"
    for at in (parsed.start_ms, *(inject.at_ms for inject in parsed.injects)):
        scenario_time_text(at, parsed.offset_minutes)  # every time it accepts can be shown


@functools.cache
def _profile_dir() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="backchannel-fuzz-profile-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def profile(data: bytes) -> None:
    """The CLI's `profile.json`, the one file a profile reads unauthenticated besides the
    keystore: a damaged one is a `CliError` (one readable line), never a traceback."""
    (_profile_dir() / PROFILE_FILE).write_bytes(data)
    with contextlib.suppress(CliError):
        read_info(_profile_dir())


# --- local state: sealed by the CLI's vault, decoded after it authenticates ---------------------


def identity_private(data: bytes) -> None:
    _canonical(IdentityKeyPair.from_private_bytes, IdentityKeyPair.private_bytes)(data)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("envelope", envelope, seeds.envelopes),
        Target("sealed_envelope", sealed_envelope, seeds.sealed_envelopes),
        Target("content.letter", content, seeds.content_letters),
        Target("content.receipt", content, seeds.content_receipts),
        Target("content.proposal", content, seeds.content_proposals),
        Target("content.acknowledgement", content, seeds.content_acknowledgements),
        Target("content.off_the_record", content, seeds.content_otr),
        Target("content.introduction", content, seeds.content_introductions),
        Target("content.forwarded", content, seeds.content_forwards),
        Target("content.exchange_release", content, seeds.content_releases),
        Target("content.forward_consent", content, seeds.content_consents),
        Target("initial_header", initial_header, seeds.initial_headers),
        Target("session_message", session_message, seeds.session_messages),
        Target("identity", identity, seeds.identities),
        Target("prekey_bundle", prekey_bundle, seeds.bundles),
        Target("prekey.signed", _prekey(SignedPrekey.read), seeds.signed_prekeys),
        Target("prekey.one_time", _prekey(OneTimePrekey.read), seeds.one_time_prekeys),
        Target("prekey.kem", _prekey(KemPrekey.read), seeds.kem_prekeys),
        Target("otr_message", otr_message, seeds.otr_messages),
        Target(
            "notary_entry",
            _canonical(NotaryEntry.from_bytes, NotaryEntry.to_bytes),
            seeds.notary_entries,
        ),
        Target(
            "notary_link",
            _canonical(NotaryLink.from_bytes, NotaryLink.to_bytes),
            seeds.notary_links,
        ),
        Target("notary_receipt", _receipt, seeds.notary_receipts),
        Target("proposal", _canonical(Proposal.from_bytes, Proposal.canonical), seeds.proposals),
        Target("sealed_proposal", _sealed_proposal, seeds.sealed_proposals),
        Target("signed_statement", _statement, seeds.statements),
        Target("relay_proof", relay_proof, seeds.relay_proofs),
        Target("keystore", keystore, seeds.keystores),
        Target("export", export, seeds.exports),
        Target("full_export", full_export, seeds.full_exports),
        Target("scenario", scenario, seeds.scenarios),
        Target("cli.profile", profile, seeds.profiles),
        Target(
            "state.ratchet",
            _stable(RatchetState.from_bytes, RatchetState.to_bytes),
            seeds.ratchet_states,
        ),
        Target(
            "state.session", _stable(Session.from_bytes, Session.to_bytes), seeds.session_states
        ),
        Target(
            "state.prekey_secrets",
            _stable(PrekeySecrets.from_bytes, PrekeySecrets.to_bytes),
            seeds.prekey_secrets,
        ),
        Target(
            "state.otr_channel",
            _stable(OtrChannel.from_bytes, OtrChannel.to_bytes),
            seeds.otr_states,
        ),
        Target("state.identity_private", identity_private, seeds.identity_privates),
    ]
}

_SCENARIO = seeds.scenarios()[0]

REGRESSIONS: dict[str, list[bytes]] = {
    # verify_login / verify_registration raised the encoder's ValueError (the relay: a 500)
    "relay_proof": [
        seeds.relay_proof(bytes(64), 1, b"", b"kennedy"),  # a challenge of the wrong size
        seeds.relay_proof(bytes(64), 0, b"invite", b"\xed\xa0\x80"),  # a lone surrogate
        seeds.relay_proof(bytes(64), 0, b"invite", "é".encode() * 128),  # over 255 bytes
    ],
    # unlock() handed pyca a nonce under 8 bytes: ValueError
    "content.proposal": [seeds.timed_content(b"abc"), seeds.timed_content(b"")],
    "scenario": [
        b"x = " + b"[" * 5_000 + b"]" * 5_000,  # tomllib's RecursionError
        _SCENARIO.replace(b"direct = [", b"direct = [[[1], [2]], ", 1),  # unhashable: TypeError
        # a start in year 1 at +05:00 is year 0 in UTC: scenario_time_text raised ValueError
        _SCENARIO.replace(b"1962-10-22T08:00:00-04:00", b"0001-01-01T00:00:00+05:00", 1),
        _SCENARIO.replace(b'name = "cuba-1962"', b'name = "cuba-1962\\n"', 1),  # `$` matched
    ],
    "export": [
        b"[" * 100_000,  # json's RecursionError (the CLI caught ValueError only)
        seeds.condition_chain(1_100),  # _conditions_first recursed once per condition
    ],
    "cli.profile": [b"[" * 100_000],  # json's RecursionError
}
"""Inputs that crashed a decoder before it was fixed, by target (each also an `@example`)."""
