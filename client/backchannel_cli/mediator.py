"""Mediation on the participant's side: introductions and shuttle forwarding (PRODUCT.md §6).

A mediator introduces two parties (each gets the other's identity key, signed by the mediator,
and checks it against the key it holds or pins it), forwards a letter or proposal verbatim (the
author's signature travels with it, so the recipient knows who wrote it), or re-words it as its
own (`--as-own`: the recipient sees the mediator's text, and only the mediator's profile keeps
the link to the original). Blind forwarding, where the mediator carries what it cannot read,
is in `service.py` (`_carry`), since it happens below the content.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from backchannel.content import SignedLetter
from backchannel.errors import BackchannelError
from backchannel.identity import IdentityPublic, format_fingerprint
from backchannel.mediation import Forwarded, Introduction, SignedIntroduction, sign_introduction
from backchannel.proposals import Party

from .errors import CliError
from .localstore import Contact, ForwardLink, LetterSignature, Message, ProposalRow
from .render import when

if TYPE_CHECKING:
    from .service import Participant


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
            await self.p.queue(
                to, peer, signed.to_content(), message_id,
                f"introduced {subject} (fingerprint {fingerprint}) to {to}",
                kind="introduction", sent_at=introduction.at_ms,
            )  # fmt: skip
            sent.append({"to": to, "introduces": subject, "fingerprint": fingerprint,
                         "id": message_id.hex()})  # fmt: skip
        await self.p.flush_outbox()
        return sent

    def receive(
        self,
        db: Any,
        envelope_id: str,
        sender: str,
        peer: IdentityPublic,
        content: SignedIntroduction | Forwarded,
    ) -> None:
        """Check and store an introduction or a forwarded message (raises if it is forged)."""
        if isinstance(content, SignedIntroduction):
            text, verified = self._introduction(db, sender, peer, content)
            kind, at = "introduction", content.introduction.at_ms
        else:
            text, verified = self._forwarded(db, sender, content)
            kind, at = "forwarded", now_ms()
        self.p.store.add_message(
            db, text, id=envelope_id, direction="in", peer=sender, kind=kind, sent_at=at,
            stored_at=now_ms(), status="delivered", verified=verified, in_reply_to=None,
        )  # fmt: skip

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
        text = (
            f"{sender} introduces {subject}, fingerprint {fingerprint}: {verdict}. You may "
            f"write to {subject} directly: `backchannel send {subject}` or "
            f"`backchannel otr open {subject}`."
        )
        return text, verified

    def _forwarded(self, db: Any, sender: str, forwarded: Forwarded) -> tuple[str, str]:
        author = forwarded.author()
        try:
            forwarded.verify_author()
            verified = f"signed by {author.name}"
        except BackchannelError:
            verified = "BAD SIGNATURE"
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
            content = Forwarded(letter=letter).to_content()
            original, author = letter.letter.message_id.hex(), letter.letter.sender
        else:
            assert proposal is not None
            content = proposal.to_content()
            assert proposal.sealed is not None
            original, author = proposal.sealed.digest.hex(), proposal.sealed.proposal.author.name
        contact = await self.p.contact(to)
        message_id = os.urandom(16)
        await self.p.queue(
            to, IdentityPublic.from_bytes(contact.identity), content, message_id,
            f"forwarded verbatim: {author}'s message {original[:12]}", kind="forwarded",
            sent_at=now_ms(),
        )  # fmt: skip
        await self.p.flush_outbox()
        return {"id": message_id.hex(), "to": to, "original": original, "author": author,
                "verbatim": True}  # fmt: skip

    def _original(self, ident: str) -> tuple[SignedLetter | None, Forwarded | None]:
        with self.p.store.transaction() as db:
            message = db.get(Message, ident) or _unique(
                [m for m in self.p.store.messages(db) if m.id.startswith(ident)]
            )
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
            row: ProposalRow = self.p.negotiation._find(db, ident)
            record = self.p.negotiation._record(db, row)
            if record is None:
                raise CliError("this proposal is still sealed until its reveal time")
            return None, Forwarded(sealed=record.sealed, receipt=record.receipt)

    async def _as_own(
        self, letter: SignedLetter | None, proposal: Forwarded | None, to: str, text: str | None
    ) -> dict[str, Any]:
        if letter is not None:
            if not text or not text.strip():
                raise CliError("--as-own needs the re-worded text (--text or standard input)")
            shown = await self.p.send_letter(to, text)
            new, original = shown.id, letter.letter.message_id.hex()
        else:
            assert proposal is not None and proposal.sealed is not None
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


def _unique(matches: list[Message]) -> Message | None:
    return matches[0] if len(matches) == 1 else None
