"""Mediation on the participant's side: introductions and shuttle forwarding (PRODUCT.md §6).

A mediator introduces two parties (each gets the other's identity key, signed by the mediator,
and checks it against the key it holds or pins it), forwards a letter or proposal verbatim (the
author's signature travels with it, so the recipient knows who wrote it) once its author has
sent a signed consent (`backchannel consent`, or `send --may-forward`), or re-words it as its
own (`--as-own`: the recipient sees the mediator's text, and only the mediator's profile keeps
the link to the original). Blind forwarding, where the mediator carries what it cannot read,
is in `service.py` (`_carry`), since it happens below the content.
"""

from __future__ import annotations

import os
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from backchannel import ticks
from backchannel.content import ProposalContent, SignedLetter, letter_digest
from backchannel.encoding import Reader
from backchannel.errors import BackchannelError, IdentityMismatchError
from backchannel.identity import IdentityPublic, format_fingerprint
from backchannel.mediation import (
    ANYONE,
    ForwardConsent,
    Forwarded,
    Introduction,
    ReleasedOffer,
    SignedConsent,
    SignedIntroduction,
    read_consent,
    sign_consent,
    sign_introduction,
    sign_release,
)
from backchannel.proposals import NotaryReceipt, Party, SealedProposal
from backchannel.records import ProposalRecord

from .errors import CliError
from .ids import resolve
from .localstore import (
    Contact,
    ForwardConsentRow,
    ForwardLink,
    HeldOffer,
    LetterSignature,
    Message,
    ProposalRow,
)
from .participant_api import ParticipantApi
from .render import when

if TYPE_CHECKING:
    from .exercising import Exercise
    from .negotiation import Negotiation


class Participant(ParticipantApi, Protocol):
    """What mediation needs of the participant: the exercise's rules and its proposals too."""

    exercise: Exercise
    negotiation: Negotiation


NOT_YOURS = "consent is given for a letter you sent, or a proposal you made, to a mediator"


def now_ms() -> int:
    return int(time.time() * 1000)


class Mediation:
    """Held by `Participant.mediation`."""

    def __init__(self, participant: Participant) -> None:
        self.p = participant

    # --- introductions --------------------------------------------------------------------------

    async def introduce(self, a: str, b: str) -> list[dict[str, Any]]:
        me = self.p.name
        if a == b or me in (a, b):
            raise CliError("an introduction is of two other participants to each other")
        contacts = {name: await self.p.contact(name) for name in (a, b)}
        sent = []
        for to, subject in ((a, b), (b, a)):
            peer = IdentityPublic.from_bytes(contacts[to].identity)
            identity = IdentityPublic.from_bytes(contacts[subject].identity)
            introduction = Introduction(
                Party.of(me, self.p.me.identity.public), Party(to, peer.keys), subject,
                identity.to_bytes(), now_ms(),
            )  # fmt: skip
            signed = sign_introduction(self.p.me.identity, introduction)
            fingerprint = format_fingerprint(identity.fingerprint())
            message_id = os.urandom(16)
            keep = partial(self.p.store.keep_signed, ident=message_id.hex(),
                           signer_key=self.p.me.identity.public.signing.raw,
                           signed=introduction.canonical(), signature=signed.signature)  # fmt: skip
            await self.p.queue(
                to, peer, signed.to_content(), message_id,
                f"introduced {subject} (fingerprint {fingerprint}) to {to}",
                kind="introduction", sent_at=introduction.at_ms, also=keep,
            )  # fmt: skip
            sent.append({"to": to, "introduces": subject, "fingerprint": fingerprint,
                         "id": message_id.hex()})  # fmt: skip
        await self.p.flush_outbox(mine=[item["id"] for item in sent], what="the introduction")
        return sent

    def receive(
        self,
        db: Any,
        envelope_id: str,
        sender: str,
        peer: IdentityPublic,
        content: SignedIntroduction | Forwarded | SignedConsent,
    ) -> None:
        """Check and store an introduction, a forwarded message or an author's consent to
        forwarding (raises if it is forged)."""
        if isinstance(content, SignedIntroduction):
            text, verified = self._introduction(db, sender, peer, content)
            kind, at = "introduction", content.introduction.at_ms
        elif isinstance(content, SignedConsent):
            text, verified = self._consent_received(db, sender, peer, content), "signed"
            kind, at = "consent", content.consent.at_ms
        else:
            text, verified = self._forwarded(db, sender, peer, content)
            kind, at = "forwarded", now_ms()
        self.p.store.add_message(
            db, text, id=envelope_id, direction="in", peer=sender, kind=kind, sent_at=at,
            stored_at=now_ms(), status="delivered", verified=verified, in_reply_to=None,
        )  # fmt: skip
        # Kept for `export --all` (PROTOCOL.md §14.8); a consent is the mediator's, not a record.
        if isinstance(content, SignedIntroduction):
            intro = content.introduction.canonical()
            self.p.store.keep_signed(db, envelope_id, peer.signing.raw, intro, content.signature)
        elif isinstance(content, Forwarded):
            self.p.store.keep_signed(db, envelope_id, content.author().keys[:32],
                                     content.to_content(), b"")  # fmt: skip

    def _introduction(
        self, db: Any, sender: str, peer: IdentityPublic, signed: SignedIntroduction
    ) -> tuple[str, str]:
        signed.verify(peer, self.p.me.identity.public, self.p.name)
        intro = signed.introduction
        identity = IdentityPublic.from_bytes(intro.subject_identity)
        fingerprint = format_fingerprint(identity.fingerprint())
        subject = intro.subject
        contact: Contact | None = db.get(Contact, subject)
        verified = f"signed by {sender}"
        if contact is None:
            self.p._pin(db, subject, "?", identity.to_bytes())
            verdict = (
                "you held no key for them, so it is pinned from this introduction; compare "
                f"safety numbers with `backchannel verify {subject}` when you can"
            )
        elif (contact.changed_identity or contact.identity) == identity.to_bytes():
            verdict = "it matches the key you hold" + (
                " (and verified)" if contact.verified else ""
            )
        else:
            verdict = "it DIFFERS from the key you hold for them: one of the two is not theirs"
            verified += "; KEY DIFFERS"
        if self.p.exercise.direct(subject):
            then = (
                f"You may write to {subject} directly: `backchannel send {subject}` or "
                f"`backchannel otr open {subject}`."
            )
        else:
            then = "The exercise still routes what you write to them through a mediator."
        text = f"{sender} introduces {subject}, fingerprint {fingerprint}: {verdict}. {then}"
        return text, verified

    def _forwarded(
        self, db: Any, sender: str, peer: IdentityPublic, forwarded: Forwarded
    ) -> tuple[str, str]:
        author = forwarded.author()
        try:
            forwarded.verify_author()
            verified = f"signed by {author.name}"
        except BackchannelError:
            verified = "BAD SIGNATURE"
        try:
            forwarded.verify_consent(Party(sender, peer.keys), self.p.name)
        except BackchannelError:
            verified += f"; NO CONSENT from {author.name} to forward it"
        contact: Contact | None = db.get(Contact, author.name)
        if contact is None:
            key = f"you hold no key for {author.name} to compare"
        elif IdentityPublic.from_bytes(contact.identity).keys == author.keys:
            key = f"the key matches the one you hold for {author.name}"
        else:
            key = f"the key DIFFERS from the one you hold for {author.name}"
            verified += "; KEY DIFFERS"
        if forwarded.letter is not None:
            letter = forwarded.letter.letter
            head = (
                f"[{author.name}'s letter to {letter.recipient} of {when(letter.sent_at_ms)}, "
                f"forwarded verbatim by {sender}; {key}]"
            )
            return f"{head}\n{letter.text}", verified
        assert forwarded.sealed is not None and forwarded.receipt is not None
        notary = self.p.negotiation._pinned(db)
        if notary is None:
            raise BackchannelError("the relay's notary key is not pinned yet")
        notary.check(forwarded.receipt)
        proposal = forwarded.sealed.proposal
        to = ", ".join(p.name for p in proposal.addressees)
        terms = "\n".join(f"  {i}. {t}" for i, t in enumerate(proposal.terms, 1))
        head = (
            f"[{author.name}'s proposal to {to}, notarised as entry "
            f"{forwarded.receipt.entry.seq}; forwarded verbatim by {sender}; {key}]"
        )
        return f"{head}\n{proposal.title}\n{terms}", verified

    # --- shuttle --------------------------------------------------------------------------------

    async def forward(self, ident: str, to: str, as_own: bool, text: str | None) -> dict[str, Any]:
        """Forward a received letter or a proposal to `to`: verbatim, or re-worded as ours."""
        if to == self.p.name:
            raise CliError("you cannot forward to yourself")
        letter, proposal = self._original(ident)
        if as_own:
            return await self._as_own(letter, proposal, to, text)
        if text is not None:
            raise CliError("--text re-words a message: use it with --as-own")
        if letter is not None:
            subject = letter_digest(letter.letter)
            original, author = letter.letter.message_id.hex(), letter.letter.sender
        else:
            assert proposal is not None
            subject = proposal.sealed.digest
            original, author = subject.hex(), proposal.sealed.proposal.author.name
        consent = self._consent(subject, to)
        if consent is None:
            raise CliError(
                f"{author} has not consented to {to} being given this message verbatim: ask "
                f"them to run `backchannel consent {original[:12]} --to {to}` (or --anyone), or "
                "pass it on in your own words with --as-own"
            )
        if letter is not None:
            forwarded = Forwarded(consent, letter=letter)
        else:
            assert proposal is not None
            forwarded = Forwarded(consent, sealed=proposal.sealed, receipt=proposal.receipt)
        content = forwarded.to_content()
        contact = await self.p.contact(to)
        message_id = os.urandom(16)
        await self.p.queue(
            to, IdentityPublic.from_bytes(contact.identity), content, message_id,
            f"forwarded verbatim: {author}'s message {original[:12]}", kind="forwarded",
            sent_at=now_ms(), subject=original,
        )  # fmt: skip
        await self.p.flush_outbox(mine=[message_id.hex()], what="the forward")
        return {"id": message_id.hex(), "to": to, "original": original, "author": author,
                "verbatim": True}  # fmt: skip

    def _original(self, ident: str) -> tuple[SignedLetter | None, ProposalRecord | None]:
        with self.p.store.transaction() as db:
            found = resolve(db, ident, "message", "proposal")
            message = db.get(Message, found.id) if found.kind == "message" else None
            if message is not None:
                if (message.kind, message.direction) != ("letter", "in"):
                    raise CliError("only a letter you received, or a proposal, is forwarded")
                signature = db.get(LetterSignature, message.id)
                contact = db.get(Contact, message.peer)
                if signature is None or contact is None:
                    raise CliError(
                        "this letter's signature was not kept (it did not verify, or it came "
                        "before this version), so it cannot be forwarded verbatim"
                    )
                keys = IdentityPublic.from_bytes(contact.identity).keys
                rebuilt = self.p._letter(message, message.peer, keys)
                return SignedLetter(rebuilt, signature.signature), None
            row: ProposalRow = self.p.negotiation._find(db, found.id)
            record = self.p.negotiation._record(db, row)
            if record is None:
                raise CliError("this proposal is still sealed until its reveal time")
            return None, record

    def _consent(self, subject: bytes, to: str) -> SignedConsent | None:
        with self.p.store.transaction() as db:
            for row in (db.get(ForwardConsentRow, (subject.hex(), name)) for name in (to, ANYONE)):
                if row is not None:
                    return read_consent(Reader(row.signed, "consent"))
        return None

    # --- consent --------------------------------------------------------------------------------

    async def consent(self, ident: str, to: str) -> dict[str, Any]:
        """As the author of a letter or proposal sent to a mediator: let it pass the message on
        verbatim, to `to` (or ANYONE)."""
        with self.p.store.transaction() as db:
            found = resolve(db, ident, "message", "proposal")
            message = db.get(Message, found.id) if found.kind == "message" else None
            if message is not None:
                if (message.kind, message.direction) != ("letter", "out"):
                    raise CliError(NOT_YOURS)
                mediator, original = message.peer, message.id
            else:
                row: ProposalRow = self.p.negotiation._find(db, found.id)
                record = self.p.negotiation._record(db, row)
                if record is None or record.sealed.proposal.author.name != self.p.name:
                    raise CliError(NOT_YOURS)
                addressees = record.sealed.proposal.addressees
                if len(addressees) != 1:
                    raise CliError("this proposal has several addressees; none is its mediator")
                mediator, original = addressees[0].name, row.digest
            contact: Contact | None = db.get(Contact, mediator)
            if contact is None:
                raise CliError(f"no key is pinned for {mediator}")
            peer = IdentityPublic.from_bytes(contact.identity)
            if message is not None:
                subject = letter_digest(self.p._letter(message, mediator, peer.keys))
            else:
                subject = bytes.fromhex(original)
        if to == mediator:
            raise CliError(f"{mediator} has the message already; name whom they may pass it to")
        consent = ForwardConsent(self._me(), Party.of(mediator, peer), subject, to, now_ms())
        signed = sign_consent(self.p.me.identity, consent)
        whom = to or "anyone they choose"
        queued = await self.p.queue(
            mediator, peer, signed.to_content(), os.urandom(16),
            f"consent: {mediator} may forward {original[:12]} verbatim to {whom}",
            kind="consent", sent_at=now_ms(), subject=original,
        )  # fmt: skip
        await self.p.flush_outbox(mine=[queued], what="the consent")
        return {"original": original, "mediator": mediator, "to": to or None}

    def _consent_received(
        self, db: Any, sender: str, peer: IdentityPublic, signed: SignedConsent
    ) -> str:
        """Keep an author's consent to our forwarding one of their messages (raises if forged)."""
        signed.verify_as_mediator(peer, self._me())
        consent = signed.consent
        db.merge(ForwardConsentRow(subject=consent.subject.hex(), to=consent.to, author=sender,
                                   signed=signed.encoded()))  # fmt: skip
        whom = consent.to or "anyone you choose"
        return (
            f"{sender} consents to your forwarding their message {consent.subject.hex()[:12]} "
            f"verbatim to {whom}."
        )

    def _me(self) -> Party:
        return Party.of(self.p.name, self.p.me.identity.public)

    async def _as_own(
        self,
        letter: SignedLetter | None,
        proposal: ProposalRecord | None,
        to: str,
        text: str | None,
    ) -> dict[str, Any]:
        if letter is not None:
            if not text or not text.strip():
                raise CliError("--as-own needs the re-worded text (--text or standard input)")
            shown = await self.p.send_letter(to, text)
            new, original = shown.id, letter.letter.message_id.hex()
        else:
            assert proposal is not None
            offer = proposal.sealed.proposal
            title = text.strip() if text and text.strip() else offer.title
            made = await self.p.negotiation.propose(to, title, offer.terms,
                                                    expires_at_ms=offer.expires_at_ms)  # fmt: skip
            new, original = str(made["id"]), proposal.sealed.digest.hex()
        with self.p.store.transaction() as db:
            db.merge(ForwardLink(id=new, original=original))
        return {"id": new, "to": to, "original": original, "verbatim": False,
                "link": "kept in your profile only"}  # fmt: skip

    def link(self, ident: str) -> str | None:
        """The original a message of ours re-words, if we sent it `--as-own`."""
        with self.p.store.transaction() as db:
            row = db.get(ForwardLink, ident)
            return row.original if row else None

    # --- simultaneous exchange (the mediator's side) ----------------------------------------------

    def hold(self, db: Any, envelope_id: str, sender: str, content: ProposalContent) -> None:
        """Keep one side's offer (checked: author's signature, notary receipt, its sender)
        until the other side's is in; it joins the open exchange between the two, if any."""
        sealed = content.sealed
        assert sealed is not None
        notary = self.p.negotiation._pinned(db)
        if notary is None:
            raise BackchannelError("the relay's notary key is not pinned yet")
        ProposalRecord(sealed, content.receipt).check(notary.key)
        proposal = sealed.proposal
        if proposal.author.name != sender or len(proposal.addressees) != 1:
            raise BackchannelError("a simultaneous offer comes from its author, to one addressee")
        digest = sealed.digest.hex()
        if db.get(HeldOffer, digest) is not None:
            return
        author, addressee = proposal.author.name, proposal.addressees[0].name
        open_rows = self._open_rows(db, author, addressee)
        exchange_id = proposal.exchange_id
        assert exchange_id is not None  # a simultaneous offer has one (Proposal checks)
        exchange = open_rows[0].exchange if open_rows else exchange_id.hex()
        db.add(
            HeldOffer(
                digest=digest, exchange=exchange, author=author, addressee=addressee,
                seq=content.receipt.entry.seq, receipt=content.receipt.to_bytes(),
                sealed=self.p.store.vault.seal(f"held:{digest}", sealed.to_bytes()),
            )
        )  # fmt: skip
        self.p.store.add_message(
            db, f"[held for the simultaneous exchange {exchange[:12]}: {author}'s sealed offer "
            f"to {addressee}]\n{proposal.title}", id=envelope_id, direction="in", peer=sender,
            kind="held offer", sent_at=proposal.created_at_ms, stored_at=now_ms(),
            status="held", verified="signed", in_reply_to=None,
        )  # fmt: skip

    def _open_rows(self, db: Any, one: str, other: str) -> list[HeldOffer]:
        rows = db.query(HeldOffer).filter(HeldOffer.released_at == 0).order_by(HeldOffer.seq)
        return [r for r in rows if {r.author, r.addressee} == {one, other}]

    def exchanges(self) -> list[dict[str, Any]]:
        """Every exchange we mediate, with its offers (which we may read)."""
        return [entry for entry, _ in self._exchanges()]

    def _exchanges(self) -> list[tuple[dict[str, Any], ticks.Exchange]]:
        """Each exchange as shown, and as `ticks` decides about it."""
        with self.p.store.transaction() as db:
            rows = list(db.query(HeldOffer).order_by(HeldOffer.seq))
            found: dict[str, dict[str, Any]] = {}
            unreleased: set[str] = set()  # half released (a crash between the two sides)
            for row in rows:
                sealed = SealedProposal.from_bytes(
                    self.p.store.vault.open(f"held:{row.digest}", row.sealed)
                )
                entry = found.setdefault(
                    row.exchange,
                    {"id": row.exchange, "sides": sorted({row.author, row.addressee}),
                     "released_at": row.released_at, "offers": []},
                )  # fmt: skip
                entry["released_at"] = max(entry["released_at"], row.released_at)
                if not row.released_at:
                    unreleased.add(row.exchange)
                entry["offers"].append(
                    {"id": row.digest, "from": row.author, "to": row.addressee,
                     "notary_seq": row.seq, "title": sealed.proposal.title,
                     "terms": list(sealed.proposal.terms)}
                )  # fmt: skip
        decided = []
        for entry in found.values():
            authors = frozenset(o["from"] for o in entry["offers"])
            held = ticks.Exchange(entry["id"], tuple(entry["sides"]), authors,
                                  entry["id"] in unreleased)  # fmt: skip
            entry["status"] = ticks.exchange_status(held)
            decided.append((entry, held))
        return decided

    async def release_ready(self) -> list[str]:
        """Release every exchange whose two offers are in (the default, as the client runs)."""
        due = ticks.releases_due(held for _, held in self._exchanges())
        return [await self.release(ident) for ident in due]

    async def release(self, ident: str) -> str:
        """Send each side the other's offer, with the notary receipts of both and our signed
        statement that both were committed before either was revealed. -> the exchange id."""
        with self.p.store.transaction() as db:
            held = resolve(db, ident, "exchange", what="exchange or offer held here").id
        entry = next(e for e in self.exchanges() if e["id"] == held)
        if entry["status"] == ticks.RELEASED:
            raise CliError(f"the exchange {entry['id'][:12]} was released already")
        if entry["status"] != ticks.READY:
            raise CliError(
                f"the exchange {entry['id'][:12]} is {entry['status']}: it is released once "
                "both offers are in"
            )
        chosen = self._valid_offers(entry)
        me = Party.of(self.p.name, self.p.me.identity.public)
        # Resumed after a crash between the two sides: the side already sent is not sent again,
        # and the other gets the same release time.
        exchange_id, released_at = bytes.fromhex(entry["id"]), entry["released_at"] or now_ms()
        released: list[str] = []
        sent_already: set[str] = set()
        with self.p.store.transaction() as db:
            offers = {}
            for author, digest in chosen.items():
                row = db.get(HeldOffer, digest)
                assert row is not None
                if row.released_at:
                    sent_already.add(author)
                sealed = SealedProposal.from_bytes(
                    self.p.store.vault.open(f"held:{digest}", row.sealed)
                )
                offers[author] = (sealed, NotaryReceipt.from_bytes(row.receipt))
        (first, (first_offer, first_receipt)), (second, (second_offer, second_receipt)) = (
            offers.items()
        )
        sides = [
            (to, offer, receipt, own, author)
            for to, offer, receipt, own, author in (
                (second, first_offer, first_receipt, second_receipt, first),
                (first, second_offer, second_receipt, first_receipt, second),
            )
            if author not in sent_already
        ]
        for index, (to, offer, receipt, own, author) in enumerate(sides):
            release = sign_release(
                self.p.me.identity,
                ReleasedOffer(exchange_id, me, offer, receipt, own, released_at),
            )
            contact = await self.p.contact(to)

            def mark(db: Any, author: str = author, last: bool = index == len(sides) - 1) -> None:
                """With the release queued: its offer is sent; after the last, every offer of
                the exchange is closed (a late one included), in the same transaction."""
                for row in db.query(HeldOffer).filter(HeldOffer.exchange == entry["id"]):
                    if last or row.digest == chosen[author]:
                        row.released_at = released_at

            released.append(await self.p.queue(
                to, IdentityPublic.from_bytes(contact.identity), release.to_content(),
                os.urandom(16),
                f"released {offer.proposal.author.name}'s offer to {to} "
                f"(exchange {entry['id'][:12]})", kind="exchange", sent_at=released_at,
                also=mark, subject=entry["id"],
            ))  # fmt: skip
        await self.p.flush_outbox(mine=released, what="the release")
        return str(entry["id"])

    def _valid_offers(self, entry: dict[str, Any]) -> dict[str, str]:
        """Per side, the offer that stands: its latest made before the other side's first
        commitment was notarised (a side may revise its offer until then, never after)."""
        offers = entry["offers"]
        chosen = {}
        for author in {o["from"] for o in offers}:
            mine = [o for o in offers if o["from"] == author]
            others_first = min(o["notary_seq"] for o in offers if o["from"] != author)
            before = [o for o in mine if o["notary_seq"] < others_first]
            chosen[author] = (before[-1] if before else mine[0])["id"]
            late = [o["id"][:12] for o in mine if o["id"] != chosen[author]
                    and o["notary_seq"] > others_first]  # fmt: skip
            if late:
                self.p.notes.append(
                    f"{author}'s later offer {', '.join(late)} came after the other side's "
                    "commitment was notarised: it does not replace the first"
                )
        return chosen

    def receive_release(
        self, db: Any, envelope_id: str, sender: str, peer: IdentityPublic, release: ReleasedOffer
    ) -> None:
        """The other side's offer, released by the mediator: checked, then kept as a proposal
        from its author (which we may accept)."""
        notary = self.p.negotiation._pinned(db)
        if notary is None:
            raise BackchannelError("the relay's notary key is not pinned yet")
        if release.mediator.name != sender:
            raise IdentityMismatchError("the release names another mediator than its sender")
        release.verify(peer, notary.key)
        own = (
            db.query(ProposalRow)
            .filter(
                ProposalRow.commitment == release.own_receipt.entry.subject.hex(),
                ProposalRow.direction == "out",
            )
            .first()
        )
        if own is None:
            raise BackchannelError("the release names an offer of ours that we did not make")
        author = release.sealed.proposal.author
        content = ProposalContent(release.receipt, release.sealed.digest, release.sealed)
        self.p.negotiation.receive(
            db, envelope_id, author.name, None, content, author=author,
            note=(
                f"released by {sender} in a simultaneous exchange: both offers were notarised "
                f"(entries {release.receipt.entry.seq} and {release.own_receipt.entry.seq}) "
                f"before {when(release.released_at_ms)}"
            ),
        )  # fmt: skip
