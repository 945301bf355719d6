"""Where a command meets the protocol core, the local store and the relay.

Every operation follows one rule: what is received is stored (with the ratchet state that
decrypted it, in one transaction) before it is acknowledged to the relay, and what is sent is
stored (with the ratchet state that encrypted it) before it goes out, so a crash at any point
loses nothing and a retry resends the same envelope, which the relay de-duplicates.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from sqlalchemy import delete, select

from backchannel import arrival, outbox, receipts, ticks
from backchannel.arrival import Record, Unopened
from backchannel.content import (
    MAX_RECEIPT_IDS,
    Letter,
    LetterAcknowledgement,
    ProposalContent,
    Receipt,
    ReceiptType,
    SignedAcknowledgement,
    SignedLetter,
    StatementContent,
    letter_digest,
    sign_acknowledgement,
    sign_letter,
)
from backchannel.envelope import Envelope, Route
from backchannel.errors import BackchannelError, IdentityMismatchError
from backchannel.exercise import scenario_time_text
from backchannel.identity import IdentityPublic, format_fingerprint, safety_number
from backchannel.mediation import Forwarded, ReleasedOffer, SignedConsent, SignedIntroduction
from backchannel.otr import OtrControl
from backchannel.prekeys import KemPrekey, OneTimePrekey, PrekeyBundle, PrekeySecrets
from backchannel.session import (
    Session,
    accept_session,
    opens_new_session,
    parse_message,
    session_decrypt,
    session_encrypt,
    start_session,
)

from .errors import CliError, RelayRefusedError, RelayUnreachableError
from .exercising import Exercise
from .hints import name_taken, unknown_name, unknown_participant
from .ids import Found, Kind, resolve
from .localstore import (
    Contact,
    LetterSignature,
    LocalStore,
    Message,
    OwedReceipt,
    Processed,
    ProposalRow,
    SealedReceipt,
)
from .mediator import Mediation
from .negotiation import Negotiation
from .offrecord import OffTheRecord
from .participant_api import Flushed
from .profile import Unlocked
from .relay import (
    GOING_AWAY,
    SLOW_DOWN_TOTAL_MAX,
    RelayClient,
    RelayRequestError,
    RelayUnreachable,
    ack_on_socket,
    b64,
    slow_down_notice,
    unb64,
)
from .shown import Shown

PREKEYS_SECRET = "prekeys"
TOKEN_SECRET = "relay_token"
ONE_TIME_PREKEYS = 100
KEM_ONE_TIME_PREKEYS = 20
TOP_UP_BELOW = 10
DEFAULT_EXPIRY = 7 * 24 * 3600
OPENED = receipts.OPENED_KIND
"""`OwedReceipt.kind` beside the receipt types: a shown proposal owes its "opened" statement."""
TOKEN_MARGIN = 60
EXPIRY_MARGIN = ticks.ENVELOPE_MARGIN_S
"""Passed to `ticks.undeliverable` (tests move it to make an hour pass)."""
SEND_BATCH = outbox.SEND_BATCH
SEND_BYTES = outbox.SEND_BYTES
"""Passed to `outbox.plan` (tests make requests smaller)."""
RECONNECT_FIRST = 0.5
WATCHING = "Watching for new messages; press Ctrl-C to stop."
RECONNECT_MAX = 15.0
REVEAL_POLL = 5.0
KEEPER_REVEAL_POLL = 1.0
"""The agent's keeper looks for a newly arrived timed proposal this often (a local query)."""
"""While watching: how often to look for timed proposals newly arrived (seconds)."""
DROP_POLL = 1.0
"""While watching: how often to look in the drops of open off-the-record channels (seconds)."""
INJECT_POLL_ROUNDS = 2
"""While watching: look for control's injects every this many drop polls."""


def now_ms() -> int:
    return int(time.time() * 1000)


def _show_any(show: Callable[[list[Any]], None], batch: list[Any]) -> None:
    """`show` a batch unless it is empty (a watch prints nothing for nothing)."""
    if batch:
        show(batch)


def refused(exc: RelayRequestError) -> RelayRefusedError:
    """The relay's own words, its code, and how long it asked us to wait."""
    wait = f"; retry in {max(1, round(exc.retry_after))} s" if exc.retry_after else ""
    return RelayRefusedError(f"relay refused: {exc.message} ({exc.code}{wait})", exc)


def _status(exc: RelayRefusedError) -> int | None:
    """The HTTP status of a refusal, for `outbox.permanent` (None: no answer from the relay)."""
    error = exc.error
    return error.status if isinstance(error, RelayRequestError) else None


def _receipts_view(message: Message) -> receipts.Stored:
    """What the receipts' rules (`backchannel/receipts.py`) read of a stored message."""
    return receipts.Stored(message.direction, message.kind, message.peer, message.status)


class NoSessionError(CliError):
    """A message continues a session this profile does not hold (never had, or forgot with an
    off-the-record channel whose set-up alone had made it)."""

    def __init__(self, sender: str) -> None:
        super().__init__(f"it continues a session with {sender} that this profile does not have")
        self.sender = sender


class KeyChangedError(CliError):
    """A participant's identity key differs from the one pinned: refused until re-verified."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"{name}'s identity key has changed; compare safety numbers and run "
            f"`backchannel verify {name}` before writing to or reading from them"
        )
        self.name = name


@dataclass(frozen=True, slots=True)
class Outcome:
    """What receiving one envelope asks of the caller."""

    negotiation: bool = False
    """A proposal or a statement about one arrived: there may be work to catch up on."""
    offrecord: bool = False
    """An off-the-record channel's set-up or close arrived: there may be an answer to send."""
    held_from: str | None = None
    """Set when the envelope comes from a changed identity: it is not acknowledged, so it stays
    on the relay until the user re-verifies the sender (or it expires)."""

    @classmethod
    def of(cls, decided: arrival.Arrival, sender: str) -> Outcome:
        return cls(decided.negotiation, decided.offrecord, sender if decided.held else None)


@dataclass(frozen=True, slots=True)
class Synced:
    held: dict[str, int]
    """Envelopes left on the relay per sender whose identity key changed."""


class Participant:
    """One unlocked profile, its local store and its relay connection."""

    def __init__(self, unlocked: Unlocked) -> None:
        self.me = unlocked
        self.name = unlocked.info.name
        self.store = LocalStore(unlocked.state_path, unlocked.data_key)
        self.relay = RelayClient(
            unlocked.info.relay, patience=SLOW_DOWN_TOTAL_MAX, on_slow_down=slow_down_notice
        )
        self.negotiation = Negotiation(self)
        self.offrecord = OffTheRecord(self)
        self.exercise = Exercise(self)
        self.mediation = Mediation(self)
        self.store.scenario_clock = self.exercise.scenario_at
        self.hold_exchanges = False
        """A mediator's choice: leave simultaneous exchanges for `exchange release`."""
        self.read_receipts = True
        """Whether showing a letter owes its sender a read receipt (`--no-read-receipts`)."""
        self.notes: list[str] = []

    async def close(self) -> None:
        await self.relay.close()
        self.store.close()

    def take_notes(self) -> list[str]:
        """What catching up met (proposals, off-the-record channels), to tell the user once."""
        notes, self.notes = self.notes, []
        return notes + self.negotiation.take_notes() + self.offrecord.take_notes()

    # --- identity and registration ----------------------------------------------------------

    def create_prekeys(self) -> None:
        identity = self.me.identity
        secrets, _ = PrekeySecrets().add_signed_prekey(identity)
        secrets, _ = secrets.add_one_time_prekeys(ONE_TIME_PREKEYS)
        secrets, _ = secrets.add_kem_prekeys(identity, 1, last_resort=True)
        secrets, _ = secrets.add_kem_prekeys(identity, KEM_ONE_TIME_PREKEYS)
        with self.store.transaction() as db:
            self.store.put_secret(db, PREKEYS_SECRET, secrets.to_bytes())

    def _prekeys(self, db: Any) -> PrekeySecrets:
        raw = self.store.get_secret(db, PREKEYS_SECRET)
        if raw is None:
            raise CliError("this profile has no prekeys; it was not created by `backchannel init`")
        return PrekeySecrets.from_bytes(raw)

    async def register(self, invite: str) -> dict[str, Any]:
        with self.store.transaction() as db:
            published = self._prekeys(db).published(self.me.identity)
        result = await self._call(
            self.relay.register(
                self.me.identity,
                self.name,
                invite,
                published.signed,
                published.kem_last_resort,
                published.one_time,
                published.kem_one_time,
            )
        )
        await self.login()
        return dict(result)

    async def login(self) -> None:
        """Reuse the stored session token while it is valid; otherwise prove our key afresh."""
        with self.store.transaction() as db:
            stored = self.store.get_secret(db, TOKEN_SECRET)
        if stored is not None:
            expires_at = int.from_bytes(stored[:8], "big")
            if expires_at > time.time() + TOKEN_MARGIN:
                self.relay.token = b64(stored[8:])
                return
        try:
            token = await self.relay.login(self.me.identity, self.name)
        except RelayRequestError as exc:
            if exc.code == "unknown_participant":
                raise CliError(
                    f"{self.name} is not registered at {self.relay.base_url}; "
                    "run `backchannel register INVITE`",
                    "not_registered",
                ) from None
            if exc.code == "bad_proof":
                raise name_taken(self.name, self.relay.base_url) from None
            raise refused(exc) from None
        except RelayUnreachable as exc:
            raise RelayUnreachableError(str(exc)) from None
        expires_at = int(time.time()) + 3600
        with self.store.transaction() as db:
            self.store.put_secret(db, TOKEN_SECRET, expires_at.to_bytes(8, "big") + unb64(token))

    async def logout(self) -> bool:
        """Delete the stored session token and revoke it at the relay; -> whether there was
        one still valid. It is deleted here even when the relay cannot be reached (then the
        error says so, and the token lapses by itself within the hour)."""
        with self.store.transaction() as db:
            stored = self.store.get_secret(db, TOKEN_SECRET)
            self.store.delete_secret(db, TOKEN_SECRET)
        if stored is None or int.from_bytes(stored[:8], "big") <= time.time():
            return False
        self.relay.token = b64(stored[8:])
        try:
            await self.relay.logout()
        except RelayUnreachable as exc:
            raise RelayUnreachableError(
                f"{exc}; the session token is deleted from this profile but not revoked (it "
                "lapses by itself within the hour)"
            ) from None
        except RelayRequestError as exc:
            if exc.status != 401:  # 401: the relay no longer knows it, which is the point
                raise refused(exc) from None
        return True

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except RelayUnreachable as exc:
            raise RelayUnreachableError(str(exc)) from None
        except RelayRequestError as exc:
            raise refused(exc) from None

    async def authed(self, awaitable_factory: Callable[[], Any]) -> Any:
        """Run a relay call, logging in again once if the token was refused."""
        await self.login()
        try:
            return await awaitable_factory()
        except RelayUnreachable as exc:
            raise RelayUnreachableError(str(exc)) from None
        except RelayRequestError as exc:
            if exc.status != 401:
                raise refused(exc) from None
        with self.store.transaction() as db:
            self.store.delete_secret(db, TOKEN_SECRET)
        await self.login()
        return await self._call(awaitable_factory())

    # --- directory, pinning, verification ---------------------------------------------------

    async def directory(self) -> list[dict[str, Any]]:
        entries = await self.authed(self.relay.directory)
        listing = []
        with self.store.transaction() as db:
            for entry in entries:
                contact = self._pin(db, entry["name"], entry["role"], unb64(entry["identity"]))
                listing.append(
                    {
                        "name": entry["name"],
                        "role": entry["role"],
                        "fingerprint": entry["fingerprint"],
                        "verified": contact.verified and contact.changed_identity is None,
                        "key_changed": contact.changed_identity is not None,
                        "me": entry["name"] == self.name,
                    }
                )
        return listing

    def _pin(self, db: Any, name: str, role: str, identity: bytes) -> Contact:
        """Trust on first use; a different key later is recorded and refused until re-verified."""
        contact: Contact | None = db.get(Contact, name)
        if contact is None:
            contact = Contact(name=name, role=role, identity=identity, verified=False)
            db.add(contact)
        elif contact.identity != identity:
            contact.changed_identity = identity
        return contact

    async def contact(self, name: str) -> Contact:
        with self.store.transaction() as db:
            contact: Contact | None = db.get(Contact, name)
        if contact is None:
            try:
                entry = await self.authed(
                    lambda: self.relay.request("GET", f"/v1/directory/{name}")
                )
            except RelayRefusedError as exc:
                if exc.code != "unknown_participant":
                    raise
                raise await unknown_participant(self, name) from None
            with self.store.transaction() as db:
                contact = self._pin(db, entry["name"], entry["role"], unb64(entry["identity"]))
        if contact.changed_identity is not None:
            raise KeyChangedError(name)
        return contact

    async def safety_number(self, name: str) -> tuple[str, Contact]:
        if name == self.name:
            raise CliError("a safety number is between you and someone else")
        listing = await self.directory()
        with self.store.transaction() as db:
            contact = db.get(Contact, name)
        if contact is None:
            raise unknown_name(name, [e["name"] for e in listing if not e["me"]])
        current = contact.changed_identity or contact.identity
        number = safety_number(
            self.me.identity.public, self.name, IdentityPublic.from_bytes(current), name
        )
        return number, contact

    def mark_verified(self, name: str, compared: bytes) -> None:
        """Accept the key the user compared (`compared`): a changed key replaces the pinned one.

        If another key turned up since the safety number was shown (the directory or a message
        in another process), nothing is accepted: the user compared a number for another key.
        """
        with self.store.transaction() as db:
            contact = db.get(Contact, name)
            if contact is None:
                raise CliError(f"no participant named {name!r}")
            if (contact.changed_identity or contact.identity) != compared:
                raise CliError(
                    f"{name}'s identity key changed again while you compared; "
                    f"run `backchannel verify {name}` again"
                )
            if contact.changed_identity is not None:
                contact.identity = contact.changed_identity
                contact.changed_identity = None
                self.store.drop_session(db, name)
            contact.verified = True

    # --- sending ------------------------------------------------------------------------------

    async def send_letter(self, to: str, text: str, in_reply_to: str | None = None) -> Shown:
        if to == self.name:
            raise CliError("you cannot write a letter to yourself")
        contact = await self.contact(to)
        peer = IdentityPublic.from_bytes(contact.identity)
        message_id = os.urandom(16)
        reply = bytes.fromhex(in_reply_to) if in_reply_to else None
        letter = Letter(
            message_id,
            self.name,
            self.me.identity.public.keys,
            to,
            peer.keys,
            now_ms(),
            text,
            reply,
        )
        try:  # before the bundle is fetched: a letter that cannot be sent costs no prekey
            signed = sign_letter(self.me.identity, letter)
            content = signed.to_content()
        except ValueError as exc:
            raise CliError(str(exc)) from None

        def keep_signature(db: Any) -> None:  # so `export --all` can prove it (§14.8)
            db.add(LetterSignature(id=message_id.hex(), signature=signed.signature,
                                   peer_keys=peer.keys))  # fmt: skip

        await self.queue(
            to,
            peer,
            content,
            message_id,
            text,
            kind="letter",
            sent_at=letter.sent_at_ms,
            in_reply_to=in_reply_to,
            digest=letter_digest(letter).hex(),
            report=await self.exercise.letter_report(to, message_id, content),
            also=keep_signature,
        )
        await self.flush_outbox(mine=[message_id.hex()], what="the letter")
        return self.show(message_id.hex())

    async def queue(
        self,
        to: str,
        peer: IdentityPublic,
        content: bytes,
        message_id: bytes,
        text: str,
        *,
        kind: str,
        sent_at: int,
        in_reply_to: str | None = None,
        also: Callable[[Any], None] | None = None,
        subject: str | None = None,
        digest: str | None = None,
        report: bytes | None = None,
    ) -> str:
        """Encrypt `content` to `to` and store it in the outbox (with `also(db)`, and with the
        `report` to control it owes, atomically); -> its message id.

        One transaction reads the newest ratchet state, encrypts, and stores the successor with
        the message: stored before it leaves, so a crash loses nothing. The caller flushes."""
        via = await self._route(to)
        bundle = await self._bundle_unless_session(to, peer)
        with self.store.transaction() as db:
            envelope = self._seal(db, to, bundle, content, message_id, via)
            self.store.add_message(
                db,
                text,
                id=message_id.hex(),
                direction="out",
                peer=to,
                kind=kind,
                sent_at=sent_at,
                stored_at=now_ms(),
                status="pending",
                verified="signed",
                in_reply_to=in_reply_to,
                envelope=envelope,
                shown=True,
                subject=subject,
                digest=digest,
                report=report,
            )
            if also is not None:
                also(db)
        return message_id.hex()

    async def _bundle_unless_session(self, to: str, peer: IdentityPublic) -> PrekeyBundle | None:
        with self.store.transaction() as db:
            if self.store.get_session_state(db, to) is not None:
                return None
        return await self._bundle(to, peer)

    async def _route(self, to: str) -> str | None:
        """The mediator that carries what goes to `to`, if the exercise says so."""
        via = await self.exercise.via(to)
        if via is not None:
            self.notes.append(
                f"{to} is reached through {via}, whose client carries it unread (blind forwarding)"
            )
        return via

    def _seal(
        self,
        db: Any,
        to: str,
        bundle: PrekeyBundle | None,
        content: bytes,
        message_id: bytes,
        via: str | None = None,
    ) -> bytes:
        """Encrypt `content` in the session with `to` (or a new one from `bundle`), store the
        successor state, and return the envelope: addressed to `to`, or with `via`, to that
        mediator with the envelope for `to` inside (PROTOCOL.md §16.4)."""
        state = self.store.get_session_state(db, to)
        if state is not None:
            session = Session.from_bytes(state)
        elif bundle is not None:
            session = start_session(self.me.identity, self.name, bundle, to)
        else:
            raise CliError(f"the session with {to} was reset meanwhile; try again")
        session, wire = session_encrypt(session, content)
        self.store.put_session_state(db, to, session.to_bytes())
        expires_at = int(time.time()) + DEFAULT_EXPIRY
        inner = Envelope(to, self.name, message_id, Route.DIRECT, expires_at, wire).to_bytes()
        if via is None:
            return inner
        return Envelope(via, self.name, message_id, Route.FORWARD, expires_at, inner).to_bytes()

    async def send_unrecorded(self, to: str, content: bytes) -> None:
        """Send `content` in the session with `to` (opened if need be), keeping nothing but the
        ratchet state: for an off-the-record channel's set-up and close."""
        contact = await self.contact(to)
        via = await self._route(to)
        bundle = await self._bundle_unless_session(to, IdentityPublic.from_bytes(contact.identity))
        with self.store.transaction() as db:
            envelope = self._seal(db, to, bundle, content, os.urandom(16), via)
        await self.authed(lambda: self.relay.send([envelope]))

    async def _bundle(self, to: str, peer: IdentityPublic) -> PrekeyBundle:
        bundle_raw, _ = await self.authed(lambda: self.relay.fetch_bundle(to))
        try:
            bundle = PrekeyBundle.from_bytes(bundle_raw)
        except BackchannelError as exc:
            raise CliError(f"{to}'s prekey bundle is invalid: {exc}") from None
        if bundle.identity.keys != peer.keys:
            raise CliError(f"the relay's prekey bundle for {to} has another identity key")
        return bundle

    def owe_read(self, db: Any, message_ids: Sequence[str]) -> None:
        """Mark these shown letters read and owe their senders a read receipt, and these shown
        proposals their "opened" statement, in `db`'s transaction (the one that marks them
        shown, or the one after), so a crash before they go leaves them owed."""
        for message_id in message_ids:
            message = db.get(Message, message_id)
            if message is None:
                continue
            showing = receipts.on_showing(_receipts_view(message))
            if showing.status != message.status:
                message.status = showing.status
            if showing.owed is not None:
                kind = OPENED if showing.owed == receipts.Owed.OPENED else int(ReceiptType.READ)
                db.merge(OwedReceipt(kind=kind, message_id=message.id, peer=message.peer))

    async def send_receipts(self) -> None:
        """Seal what is owed (one receipt per peer and kind, split when it would name more
        messages than one may), then send every sealed receipt; state owed "opened" statements.

        Receipts never stand in the user's way: a transient failure leaves them for the next
        command, quietly; one the relay refuses for good (an observer's, say) is dropped."""
        with self.store.transaction() as db:
            owed = list(db.scalars(select(OwedReceipt).order_by(
                OwedReceipt.peer, OwedReceipt.kind, OwedReceipt.message_id)))  # fmt: skip
        debts = [(row.peer, row.kind, row.message_id) for row in owed]
        for peer, kind, due in receipts.seal_plan(debts, MAX_RECEIPT_IDS):
            ids = list(due)
            if kind == OPENED:
                await self.negotiation.opened(ids)  # stored before it goes: struck off after
                with self.store.transaction() as db:
                    db.execute(delete(OwedReceipt).where(
                        OwedReceipt.kind == OPENED, OwedReceipt.message_id.in_(ids)))  # fmt: skip
                continue
            try:
                via = await self.exercise.via(peer)
            except CliError:
                continue  # no channel to them (any more): nothing can carry it
            self._seal_receipt(peer, ReceiptType(kind), ids, via)
        await self._send_sealed_receipts()

    def _seal_receipt(self, peer: str, kind: ReceiptType, ids: list[str], via: str | None) -> None:
        """One transaction: strike off what is owed, seal the receipt naming it (storing the
        ratchet state), keep the envelope until the relay has it."""
        with self.store.transaction() as db:
            rows = [db.get(OwedReceipt, (int(kind), message_id)) for message_id in ids]
            owed = [row for row in rows if row is not None]  # another process may have sealed it
            for row in owed:
                db.delete(row)
            if not owed or self.store.get_session_state(db, peer) is None:
                return
            named = tuple(bytes.fromhex(row.message_id) for row in owed)
            message_id = os.urandom(16)
            content = Receipt(kind, now_ms(), named).to_content()
            envelope = self._seal(db, peer, None, content, message_id, via)
            db.add(SealedReceipt(id=message_id.hex(), peer=peer, envelope=envelope,
                                 stored_at=now_ms()))  # fmt: skip

    async def _send_sealed_receipts(self) -> None:
        now = int(time.time())
        with self.store.transaction() as db:
            pending: list[tuple[str, bytes]] = []
            for row in db.scalars(select(SealedReceipt).order_by(
                    SealedReceipt.stored_at, SealedReceipt.id)):  # fmt: skip
                if ticks.undeliverable(Envelope.from_bytes(row.envelope).expires_at, now,
                                       EXPIRY_MARGIN):  # fmt: skip
                    db.delete(row)  # the relay would refuse it
                else:
                    pending.append((row.id, row.envelope))
        outgoing = outbox.Pass.of(pending, SEND_BATCH, SEND_BYTES)
        while (batch := outgoing.next()) is not None:
            try:
                await self.authed(partial(self.relay.send, [envelope for _, envelope in batch]))
            except RelayRefusedError as exc:
                if outgoing.refusal(batch, _status(exc)).refused is None:
                    continue  # the pass stops, or tries each on its own
                # refused for good: dropped below, like one the relay took
            except RelayUnreachableError:
                return
            else:
                outgoing.taken(batch)
            with self.store.transaction() as db:
                db.execute(delete(SealedReceipt).where(
                    SealedReceipt.id.in_([message_id for message_id, _ in batch])))  # fmt: skip

    async def flush_outbox(
        self, mine: Sequence[str] = (), what: str = "the message"
    ) -> Flushed:
        """(Re)send every queued envelope the relay has not yet acknowledged receiving.

        Envelopes go in requests of bounded size (the relay caps a request's envelopes and
        bytes); one whose expiry has passed is marked failed, since the relay would refuse it.
        A permanent refusal (policy, unknown recipient, too large, bad request) marks only the
        envelope refused, with the relay's reason: a batch refused as a whole is tried one by
        one to find which. A transient failure (relay down, busy, failing) leaves the rest
        queued for the next command. Neither blocks anything else: the others still go out
        and the mailbox is still read. Both are told as notes, except for `mine` (what the
        command itself just queued), which raise: the user hears of them on the spot.
        """
        now = int(time.time())
        with self.store.transaction() as db:
            pending: list[tuple[str, bytes]] = []
            reports: dict[str, bytes] = {}
            for queued in db.query(Message).filter(
                Message.status == "pending", Message.envelope.is_not(None)
            ).order_by(Message.stored_at, Message.id):
                assert queued.envelope is not None
                if ticks.undeliverable(Envelope.from_bytes(queued.envelope).expires_at, now,
                                       EXPIRY_MARGIN):  # fmt: skip
                    queued.status, queued.envelope = "failed", None
                else:
                    pending.append((queued.id, queued.envelope))
                    if queued.report is not None:
                        reports[queued.id] = queued.report
        refusals: dict[str, str] = {}
        waiting = await self._post_reports(reports, refusals)
        if waiting is not None:  # what still owes its report waits with it
            pending = [item for item in pending if item[0] not in reports]
        pending = [item for item in pending if item[0] not in refusals]
        outgoing = outbox.Pass.of(pending, SEND_BATCH, SEND_BYTES)
        sent: set[str] = set()
        while waiting is None and (batch := outgoing.next()) is not None:
            try:
                receipts = await self.authed(
                    partial(self.relay.send, [envelope for _, envelope in batch])
                )
            except RelayRefusedError as exc:
                step = outgoing.refusal(batch, _status(exc))
                if step.stop:
                    waiting = exc
                elif step.refused is not None:
                    refusals[step.refused] = exc.message.removeprefix("relay refused: ")
                    self._mark_refused(step.refused, refusals[step.refused])
                continue
            except RelayUnreachableError as exc:
                waiting = exc
                continue
            outgoing.taken(batch)
            at = {r.get("message_id"): r.get("received_at") for r in receipts}
            with self.store.transaction() as db:
                for message_id, _ in batch:
                    message = db.get(Message, message_id)
                    if message is not None and message.status == "pending":
                        message.status = "sent"
                        message.envelope = None
                        received_at = at.get(message_id)
                        if isinstance(received_at, int):
                            self.store.stamp_relay_time(db, message_id, received_at, "out")
                    sent.add(message_id)
        flushed = Flushed(frozenset(sent), refusals, waiting.message if waiting else None)
        self._report(flushed, mine, what)
        return flushed

    async def _post_reports(
        self, reports: dict[str, bytes], refusals: dict[str, str]
    ) -> CliError | None:
        """Post the reports to control that queued letters owe, oldest first, each cleared once
        the relay has it; -> the transient failure that stopped them (the letters still owing
        wait), None when all went. A report refused for good refuses its letter: control
        would not have seen it as the class requires."""
        for message_id, report in list(reports.items()):
            try:
                await self.exercise.post_report(report)
            except RelayRefusedError as exc:
                if not outbox.permanent(_status(exc)):
                    return exc
                refusals[message_id] = exc.message.removeprefix("relay refused: ")
                self._mark_refused(message_id, refusals[message_id])  # kept for `outbox retry`
                continue
            except RelayUnreachableError as exc:
                return exc
            with self.store.transaction() as db:
                message = db.get(Message, message_id)
                if message is not None:
                    message.report = None
            del reports[message_id]  # what remains owes its report, or was refused
        return None

    def _mark_refused(self, message_id: str, reason: str) -> None:
        with self.store.transaction() as db:
            message = db.get(Message, message_id)
            if message is not None and message.status == "pending":
                message.status, message.refusal = "refused", reason

    def _report(self, flushed: Flushed, mine: Sequence[str], what: str) -> None:
        """Raise for what this command queued; tell the rest as notes."""
        for message_id in mine:
            if message_id in flushed.refused:
                raise CliError(
                    f"the relay refused {what} {message_id}: {flushed.refused[message_id]}; "
                    "it is marked refused and will not be sent again by itself "
                    "(`backchannel outbox`)"
                )
        if flushed.waiting is not None and any(m not in flushed.sent for m in mine):
            raise CliError(
                f"{flushed.waiting}; {what} is saved as {mine[0]} and goes out with your next "
                "command (`backchannel outbox` lists what waits)"
            )
        for message_id, reason in flushed.refused.items():
            if message_id not in mine:
                self.notes.append(
                    f"the relay refused your message {message_id}: {reason}; it is marked "
                    "refused and will not be sent again by itself (`backchannel outbox`)"
                )
        if flushed.waiting is not None and not mine:
            self.notes.append(
                f"queued messages wait ({flushed.waiting}); they go out with your next command"
            )

    # --- the outbox ---------------------------------------------------------------------------

    def outbox(self) -> list[Shown]:
        """What has not reached the relay: pending (queued) or refused."""
        with self.store.transaction() as db:
            rows = db.query(Message).filter(
                Message.direction == "out", Message.status.in_(("pending", "refused"))
            ).order_by(Message.stored_at, Message.id)
            return [self._shown(m) for m in rows]

    def _outbox_row(self, db: Any, ident: str) -> Message:
        found = resolve(db, ident, "message")
        message: Message = db.get(Message, found.id)
        if message.direction != "out" or message.status not in ("pending", "refused"):
            raise CliError(
                f"{message.kind} {message.id} is not in the outbox (its status is {message.status})"
            )
        return message

    async def retry(self, ident: str) -> Shown:
        """Send a refused (or queued) message again, as it was: the same envelope."""
        with self.store.transaction() as db:
            message = self._outbox_row(db, ident)
            if message.envelope is None:
                raise CliError(f"{message.kind} {message.id} has nothing left to send")
            message.status, message.refusal = "pending", None
            message_id = message.id
        await self.flush_outbox(mine=[message_id])
        return self.show(message_id)

    def cancel(self, ident: str) -> Shown:
        """Take a pending or refused message out of the outbox for good."""
        with self.store.transaction() as db:
            message = self._outbox_row(db, ident)
            message.status, message.envelope, message.report = "cancelled", None, None
            message_id = message.id
        return self.show(message_id)

    # --- receiving ----------------------------------------------------------------------------

    async def sync(self) -> Synced:
        """Send the outbox; fetch, decrypt, verify and store, then acknowledge; send receipts.

        Envelopes from a participant whose identity key changed are left on the relay. The
        outbox never stands in the way: what it cannot send is told as a note."""
        await self.exercise.refresh()  # the clock to record scenario times by, and the injects
        await self.flush_outbox()
        await self.send_receipts()  # any an earlier command left owed
        await self.negotiation.notary()  # pinned before any receipt needs checking
        held: dict[str, int] = {}
        after = 0
        while True:
            page, more = await self.authed(partial(self.relay.mailbox, after))
            if not page:
                break
            outcomes = [self.receive(item.envelope, item.received_at) for item in page]
            done = [item.id for item, o in zip(page, outcomes, strict=True) if o.held_from is None]
            if done:
                await self.authed(partial(self.relay.acknowledge, done))
            for outcome in outcomes:
                if outcome.held_from is not None:
                    held[outcome.held_from] = held.get(outcome.held_from, 0) + 1
            await self.send_receipts()  # delivery receipts, owed since each letter was stored
            after = page[-1].id
            if not more:
                break
        with self.store.transaction() as db:
            self.store.forget_expired(db, int(time.time()))
        await self.flush_outbox()  # what we carry for others (blind forwarding) goes on now
        await self.negotiation.catch_up()
        # Statements an interrupted command left (or `delivered` ones just made) are queued by
        # the catch-up: they go now, not with the next command.
        await self.flush_outbox()
        if not self.hold_exchanges:
            await self.mediation.release_ready()
        await self.offrecord.catch_up()
        await self.exercise.take_injects()
        await self.top_up_prekeys()
        return Synced(held)

    def receive(self, raw: bytes, received_at: int = 0) -> Outcome:
        """Decrypt and store one envelope in one transaction (with the ratchet state), with
        the relay's receipt time."""
        try:
            envelope = Envelope.from_bytes(raw)
        except BackchannelError:
            return Outcome()  # not ours to read; acknowledged so it does not block the mailbox
        routed = arrival.route(envelope, self.name)
        message_id = (routed.envelope or routed.carry or envelope).message_id
        with self.store.transaction() as db:
            outcome = self._receive(db, envelope, routed)
            self.store.stamp_relay_time(db, message_id.hex(), received_at, "in")
            return outcome

    def _receive(self, db: Any, outer: Envelope, routed: arrival.Routed) -> Outcome:
        """Ask `arrival` what the envelope means, between the I/O only we can do (the store,
        decrypting), and apply its decision."""
        if routed.carry is not None:
            self._carry(db, outer, routed.carry)
        envelope = routed.envelope  # through a mediator, for us: as if it came directly
        if envelope is None:
            return Outcome()  # carried on, or nothing anyone could deliver: acknowledged
        sender = envelope.sender or "?"
        envelope_id = envelope.message_id.hex()
        known = arrival.Known(
            stored=db.get(Message, envelope_id) is not None,
            processed=db.get(Processed, envelope_id) is not None,
            new_contact=db.get(Contact, sender) is None,
        )
        decided = arrival.screen(known)
        if decided is None:
            new_session = not self.store.has_session(db, sender)
            try:
                session, plaintext = self._open(db, sender, envelope.ciphertext)
            except KeyChangedError as exc:
                decided = arrival.unopened(Unopened.KEY_CHANGED, exc.message, sender, known)
            except NoSessionError as exc:
                decided = arrival.unopened(Unopened.NO_SESSION, exc.message, sender, known)
            except (BackchannelError, CliError, ValueError) as exc:
                decided = arrival.unopened(Unopened.UNREADABLE, str(exc), sender, known)
            else:
                self.store.put_session_state(db, sender, session.to_bytes())
                me = arrival.Receiver(self.name, self.me.identity.public)
                decided = arrival.read(plaintext, envelope.message_id, session.peer, me)
                decided = self._apply(db, envelope_id, sender, session.peer, decided,
                                      known.new_contact, new_session)  # fmt: skip
        self._keep(db, envelope, sender, decided)
        return Outcome.of(decided, sender)

    def _apply(
        self,
        db: Any,
        envelope_id: str,
        sender: str,
        peer: IdentityPublic,
        decided: arrival.Arrival,
        new_contact: bool,
        new_session: bool,
    ) -> arrival.Arrival:
        """Store what `decided` names; -> it, or the unreadable decision when storing it finds
        the content false (an acknowledgement of a letter never sent, an offer unnotarised)."""
        content = decided.content
        if isinstance(content, SignedLetter):
            self._store_letter(db, envelope_id, sender, peer, content, decided.verified)
        elif isinstance(content, OtrControl):
            self.offrecord.receive(db, sender, content, new_contact, new_session)
        elif isinstance(content, Receipt):
            self._apply_receipt(db, sender, content)
        try:
            if isinstance(content, SignedAcknowledgement):
                text = self._apply_acknowledgement(db, sender, peer, content)
                self._store_acknowledgement(db, envelope_id, sender, peer, content, text)
            elif isinstance(content, (SignedIntroduction, Forwarded, SignedConsent)):
                self.mediation.receive(db, envelope_id, sender, peer, content)
            elif isinstance(content, ProposalContent) and decided.record == Record.HELD_OFFER:
                self.mediation.hold(db, envelope_id, sender, content)
            elif isinstance(content, ReleasedOffer):
                self.mediation.receive_release(db, envelope_id, sender, peer, content)
            elif isinstance(content, (ProposalContent, StatementContent)):
                self.negotiation.receive(db, envelope_id, sender, peer, content)
        except BackchannelError as exc:
            return decided.failed(exc)
        return decided

    def _keep(self, db: Any, envelope: Envelope, sender: str, decided: arrival.Arrival) -> None:
        """What every decision may ask besides its own record: a failed message saying why it
        could not be read, the envelope id remembered, receipts owed, a note."""
        envelope_id = envelope.message_id.hex()
        if decided.record == Record.UNREADABLE:
            self.store.add_message(
                db,
                f"[could not be read: {decided.reason}]",
                id=envelope_id,
                direction="in",
                peer=sender,
                kind="unreadable",
                sent_at=0,
                stored_at=now_ms(),
                status="failed",
                verified="no",
                in_reply_to=None,
            )
        if decided.processed:
            db.add(Processed(id=envelope_id, expires_at=envelope.expires_at))
        for kind in decided.owed:
            db.merge(OwedReceipt(kind=kind, message_id=envelope_id, peer=sender))
        if decided.note:
            self.notes.append(decided.note)

    def _store_letter(
        self,
        db: Any,
        envelope_id: str,
        sender: str,
        peer: IdentityPublic,
        content: SignedLetter,
        verified: str,
    ) -> None:
        letter = content.letter
        self.store.add_message(
            db,
            letter.text,
            id=envelope_id,
            direction="in",
            peer=sender,
            kind="letter",
            sent_at=letter.sent_at_ms,
            stored_at=now_ms(),
            status="delivered",
            verified=verified,
            in_reply_to=letter.in_reply_to.hex() if letter.in_reply_to else None,
            digest=letter_digest(letter).hex(),
        )
        if verified == arrival.SIGNED:  # kept so `export --all` can prove it (§14.8)
            db.add(LetterSignature(id=envelope_id, signature=content.signature,
                                   peer_keys=peer.keys))  # fmt: skip

    def _store_acknowledgement(
        self,
        db: Any,
        envelope_id: str,
        sender: str,
        peer: IdentityPublic,
        content: SignedAcknowledgement,
        text: str,
    ) -> None:
        self.store.add_message(
            db,
            text,
            id=envelope_id,
            direction="in",
            peer=sender,
            kind="acknowledgement",
            sent_at=content.acknowledgement.at_ms,
            stored_at=now_ms(),
            status="delivered",
            verified="signed",
            in_reply_to=content.acknowledgement.letter_id.hex(),
        )
        canonical = content.acknowledgement.canonical()
        self.store.keep_signed(db, envelope_id, peer.signing.raw, canonical, content.signature)

    def _carry(self, db: Any, outer: Envelope, inner: Envelope) -> None:
        """Blind forwarding: hand on, unread, an envelope a party gave us for someone else.
        Stored in the outbox first (the next flush sends it), so nothing is lost."""
        if db.get(Message, inner.message_id.hex()) is not None:
            return  # carried already: a redelivery
        onward = Envelope(inner.recipient, self.name, inner.message_id, Route.FORWARD,
                          inner.expires_at, inner.to_bytes())  # fmt: skip
        self.store.add_message(
            db, f"[a sealed message from {outer.sender} to {inner.recipient}, carried unread]",
            id=inner.message_id.hex(), direction="out", peer=inner.recipient, kind="carried",
            sent_at=now_ms(), stored_at=now_ms(), status="pending", verified="unreadable",
            in_reply_to=None, envelope=onward.to_bytes(), shown=True,
        )  # fmt: skip

    def _open(self, db: Any, sender: str, wire: bytes) -> tuple[Session, bytes]:
        """Decrypt with a session we hold, or open a new one; a new key from `sender` is refused.

        The current session is tried first, then the previous ones (when both sides open a
        session at once, each side's first letters travel on its own); one that decrypts becomes
        current again, as in Signal's session records. A message that opens a new session makes
        it current and keeps the old one among the previous.

        A different identity key is recorded only once the message authenticates under it (so
        nobody can raise a false alarm with a forged header), and it is not read: the caller
        leaves it on the relay until the user compares safety numbers again.
        """
        state = self.store.get_session_state(db, sender)
        candidates: list[tuple[str | None, bytes]] = [(None, state)] if state else []
        candidates += self.store.previous_sessions(db, sender)
        failure: BackchannelError | None = None
        for key, candidate_state in candidates:
            candidate = Session.from_bytes(candidate_state)
            if opens_new_session(candidate, wire):
                continue
            try:
                opened = session_decrypt(candidate, wire)
            except BackchannelError as exc:
                failure = failure or exc
                continue
            if key is not None:  # the caller stores it as the current session
                self.store.archive_session(db, sender)
                self.store.forget_previous_session(db, key)
            return opened
        header = parse_message(wire).header
        if header is None:
            if failure is not None:
                raise failure
            raise NoSessionError(sender)
        if header.initiator_name != sender:
            raise IdentityMismatchError("the message's handshake names another sender")
        initiator = header.initiator.to_bytes()
        prekeys = self._prekeys(db)
        contact: Contact | None = db.get(Contact, sender)
        if contact is not None and initiator not in (contact.identity, contact.changed_identity):
            accept_session(self.me.identity, self.name, prekeys, wire, expected_peer=None)
            contact.changed_identity = initiator
        if contact is not None and contact.identity != initiator:
            raise KeyChangedError(sender)
        prekeys, session, plaintext = accept_session(
            self.me.identity, self.name, prekeys, wire, expected_peer=header.initiator
        )
        if contact is None:
            self._pin(db, sender, "?", initiator)
        self.store.put_secret(db, PREKEYS_SECRET, prekeys.to_bytes())
        self.store.archive_session(db, sender)
        return session, plaintext

    def _letter(self, message: Message, peer: str, peer_keys: bytes) -> Letter:
        """A stored letter's signed encoding, rebuilt (both sides can, byte for byte)."""
        mine = (self.name, self.me.identity.public.keys)
        theirs = (peer, peer_keys)
        sender, recipient = (mine, theirs) if message.direction == "out" else (theirs, mine)
        reply = bytes.fromhex(message.in_reply_to) if message.in_reply_to else None
        return Letter(
            bytes.fromhex(message.id), *sender, *recipient, message.sent_at,
            self.store.text_of(message), reply,
        )  # fmt: skip

    def _apply_acknowledgement(
        self, db: Any, sender: str, peer: IdentityPublic, signed: SignedAcknowledgement
    ) -> str:
        """Check a formal acknowledgement of one of our letters; mark the letter acknowledged."""
        signed.verify(peer, self.me.identity.public, self.name)
        ack = signed.acknowledgement
        letter_id = ack.letter_id.hex()
        message: Message | None = db.get(Message, letter_id)
        if (
            message is None
            or (message.direction, message.kind, message.peer) != ("out", "letter", sender)
            or letter_digest(self._letter(message, sender, peer.keys)) != ack.letter_digest
        ):
            raise IdentityMismatchError("it acknowledges a letter this profile did not send them")
        message.status = "acknowledged"
        return f"acknowledged your letter {letter_id[:12]} (signed)"

    async def acknowledge_letter(self, ident: str) -> Shown:
        """Send a signed acknowledgement naming a received letter's digest (PROTOCOL.md §7.4)."""
        shown = self.show(ident)
        if shown.kind != "letter" or shown.direction != "in":
            raise CliError("only a letter you received can be acknowledged")
        contact = await self.contact(shown.peer)
        peer = IdentityPublic.from_bytes(contact.identity)
        with self.store.transaction() as db:
            message = db.get(Message, shown.id)
            if message is None:
                raise CliError(f"the letter {shown.id} was deleted meanwhile")
            digest = letter_digest(self._letter(message, shown.peer, peer.keys))
        ack = LetterAcknowledgement(
            bytes.fromhex(shown.id), digest, self.name, self.me.identity.public.keys,
            shown.peer, peer.keys, now_ms(),
        )  # fmt: skip
        signed = sign_acknowledgement(self.me.identity, ack)
        content = signed.to_content()
        ack_id = os.urandom(16)

        def mark(db: Any) -> None:
            db.get(Message, shown.id).status = "acknowledged"
            self.store.keep_signed(db, ack_id.hex(), self.me.identity.public.signing.raw,
                                   ack.canonical(), signed.signature)  # fmt: skip

        queued = await self.queue(
            shown.peer, peer, content, ack_id, f"acknowledged letter {shown.id[:12]}",
            kind="acknowledgement", sent_at=ack.at_ms, in_reply_to=shown.id, also=mark,
        )  # fmt: skip
        await self.flush_outbox(mine=[queued], what="the acknowledgement")
        return self.show(shown.id)

    def _apply_receipt(self, db: Any, sender: str, receipt: Receipt) -> None:
        """Raise the status of the letters we sent `sender` that its receipt names (the rule is
        `backchannel/receipts.py`'s: never lowered, anything else ignored)."""
        for message_id in receipt.message_ids:
            message = db.get(Message, message_id.hex())
            if message is None:
                continue
            status = receipts.on_receipt(_receipts_view(message), sender, receipt.type)
            if status != message.status:
                message.status = status

    def take_unshown(self, db: Any) -> list[Shown]:
        """The received messages not yet shown, marked shown in `db`'s transaction: the caller
        shows them before that transaction commits, so a crash in between shows them again next
        time (at least once) instead of never."""
        fresh = self.store.messages(db, unshown_only=True)
        for message in fresh:
            message.shown = True
        shown = [self._shown(m) for m in fresh]
        if self.read_receipts:
            self.owe_read(db, [m.id for m in fresh])
        return shown

    def show_unshown(self, show: Callable[[list[Shown]], None]) -> list[Shown]:
        """`show` the received messages not yet shown, then commit that they were: a crash
        before `show` returned leaves them to the next run (never stored but never shown)."""
        with self.store.transaction() as db:
            fresh = self.take_unshown(db)
            show(fresh)
        return fresh

    async def send_read_receipts(self, shown: list[Shown]) -> None:
        """Tell the senders of these displayed letters that they were read, and the authors of
        displayed proposals that they were opened (a signed, notarised statement), once each:
        owed first (if showing did not owe it already), then sent with whatever else is owed."""
        with self.store.transaction() as db:
            self.owe_read(db, [m.id for m in shown])
        await self.send_receipts()

    async def watch(
        self,
        show: Callable[[list[Shown]], None],
        notice: Callable[[str], None],
        keep: bool = False,
    ) -> None:
        """Stay on the relay's WebSocket: store, acknowledge, show each arrival.

        A lost connection is retried with growing pauses; the relay then sends again everything
        not acknowledged, and what was stored already is recognised, so nothing shows twice.
        Off-the-record messages are looked for in their drops every second (`keep`: a copy).
        """
        timers = [
            asyncio.create_task(self._reveal_when_due(show, notice)),
            asyncio.create_task(self._drops(show, notice, keep)),
        ]
        try:
            await self._watch(show, notice)
        finally:
            for timer in timers:
                timer.cancel()

    async def _drops(
        self, show: Callable[[list[Shown]], None], notice: Callable[[str], None], keep: bool
    ) -> None:
        def show_any(batch: list[Shown]) -> None:
            if batch:
                show(batch)

        rounds = 0
        while True:
            await asyncio.sleep(DROP_POLL)
            rounds += 1
            try:
                await self.offrecord.catch_up()
                await self.offrecord.receive_all(show_any, keep)
                if not self.hold_exchanges:
                    await self.mediation.release_ready()
                if rounds % INJECT_POLL_ROUNDS == 0:
                    await self.exercise.refresh()  # the clock, and injects newly due
                    if await self.exercise.take_injects():
                        self.show_unshown(show_any)
            except CliError as exc:
                notice(f"Note: {exc.message}")
            for note in self.take_notes():
                notice(f"Note: {note}")

    async def keep(
        self, notice: Callable[[str], None], arrived: Callable[[], None], poll: float
    ) -> None:
        """The agent's work while nobody types: the live connection stores and acknowledges
        each arrival and sends its delivery receipt (shown later, by `inbox`); every `poll`
        seconds it releases a mediator's exchanges, takes injects, sends what is queued and
        tops up prekeys; a timed proposal opens when its reveal time comes. Off-the-record
        messages stay in their drops until `inbox` shows them: nothing of them is kept to be
        shown later."""

        async def rounds() -> None:
            while True:
                await asyncio.sleep(poll)
                try:
                    await self.flush_outbox()
                    await self.send_receipts()
                    await self.negotiation.catch_up()
                    if not self.hold_exchanges:
                        await self.mediation.release_ready()
                    await self.exercise.refresh()
                    await self.exercise.take_injects()
                    await self.top_up_prekeys()
                except CliError as exc:
                    notice(f"Note: {exc.message}")
                for note in self.take_notes():
                    notice(f"Note: {note}")
                arrived()

        try:  # what waits on the relay, with the notary pinned before any proposal arrives
            await self.sync()
        except CliError as exc:
            notice(f"Note: {exc.message}")
        arrived()
        timers = [
            asyncio.create_task(rounds()),
            asyncio.create_task(self._reveal_when_due(None, notice, arrived, KEEPER_REVEAL_POLL)),
        ]
        try:
            await self._watch(None, notice, arrived)
        finally:
            for timer in timers:
                timer.cancel()

    async def _reveal_when_due(
        self,
        show: Callable[[list[Shown]], None] | None,
        notice: Callable[[str], None],
        arrived: Callable[[], None] = lambda: None,
        poll: float = REVEAL_POLL,
    ) -> None:
        """While watching, open each timed proposal when its reveal time comes (and `show` it;
        None: leave it to `inbox`, as the agent does). One that arrives meanwhile is seen at
        the next `poll`."""
        tried: int | None = None
        while True:
            due = self.negotiation.next_reveal()
            # Nothing timed, or the due one did not open (retried at the next poll).
            stale = due is None or due == tried
            wait = poll if stale or due is None else (due - now_ms()) / 1000 + 0.05
            await asyncio.sleep(min(max(wait, 0.05), poll))
            if due is None or due > now_ms():
                continue
            tried = due
            try:
                await self.negotiation.catch_up()
            except CliError as exc:
                notice(f"Note: {exc.message}")
                await asyncio.sleep(RECONNECT_FIRST)
            for note in self.take_notes():
                notice(f"Note: {note}")
            if show is not None and self.show_unshown(partial(_show_any, show)):
                await self.send_receipts()
            arrived()

    async def _watch(
        self,
        show: Callable[[list[Shown]], None] | None,
        notice: Callable[[str], None],
        arrived: Callable[[], None] = lambda: None,
    ) -> None:
        """The live connection: store and acknowledge each arrival, then `show` what is new
        (None: leave it unshown for `inbox`, as the agent does) and tell `arrived`."""
        delay = RECONNECT_FIRST
        refused_token = False
        opened = 0
        down = False  # said once per outage; the retries are quiet until the socket opens again

        def on_open() -> None:
            nonlocal opened, down
            opened, down = opened + 1, False
            notice(WATCHING if opened == 1 else "Reconnected.")

        while True:
            connected_at = time.monotonic()
            try:
                await self.login()
                await self.negotiation.notary()  # pinned before a proposal can arrive
                async for pushed, socket in self.relay.live(on_open):
                    refused_token = False
                    outcome = self.receive(pushed.envelope, pushed.received_at)
                    if outcome.held_from is not None:
                        notice(
                            f"Warning: {KeyChangedError(outcome.held_from).message}; "
                            "their message stays on the relay until then"
                        )
                        continue
                    await ack_on_socket(socket, [pushed.id])
                    if outcome.negotiation:
                        await self.negotiation.catch_up()
                    if outcome.offrecord:
                        await self.offrecord.catch_up()
                    for note in self.take_notes():
                        notice(f"Note: {note}")
                    if show is not None:
                        self.show_unshown(partial(_show_any, show))
                    await self.send_receipts()  # delivered, and read if shown (owed on storing)
                    arrived()
                reason = (
                    f"the relay at {self.relay.base_url} is shutting down"
                    if self.relay.close_code == GOING_AWAY
                    else "the relay closed the connection"
                )
            except (RelayUnreachable, RelayUnreachableError) as exc:
                reason = str(exc.message if isinstance(exc, CliError) else exc)
            except RelayRequestError as exc:
                if exc.status != 401 or refused_token:
                    raise refused(exc) from None
                refused_token = True  # the relay forgot our session token: log in afresh once
                with self.store.transaction() as db:
                    self.store.delete_secret(db, TOKEN_SECRET)
                continue
            if time.monotonic() - connected_at > RECONNECT_MAX:
                delay = RECONNECT_FIRST
            if not down:
                notice(f"{reason}; reconnecting in the background (Ctrl-C to stop)")
                down = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def top_up_prekeys(self) -> None:
        counts = await self.authed(self.relay.prekey_counts)
        if counts.get("draining"):
            self.notes.append(
                "Your one-time prekeys are being used up fast "
                f"({counts.get('taken_last_hour', '?')} taken in the last hour): someone may be "
                "fetching your prekey bundle over and over to push new sessions onto your "
                "last-resort keys. The relay limits how many anyone may take, and they are "
                "topped up as they run low; tell exercise control if this goes on."
            )
        need_one_time = counts["one_time_prekeys"] < TOP_UP_BELOW
        need_kem = counts["kem_prekeys"] < TOP_UP_BELOW
        if not (need_one_time or need_kem):
            return
        with self.store.transaction() as db:
            secrets = self._prekeys(db)
            one_time: list[OneTimePrekey] = []
            kem: list[KemPrekey] = []
            if need_one_time:
                secrets, one_time = secrets.add_one_time_prekeys(ONE_TIME_PREKEYS)
            if need_kem:
                secrets, kem = secrets.add_kem_prekeys(self.me.identity, KEM_ONE_TIME_PREKEYS)
            self.store.put_secret(db, PREKEYS_SECRET, secrets.to_bytes())
        await self.authed(lambda: self.relay.upload_prekeys(one_time, kem))

    # --- showing ------------------------------------------------------------------------------

    def _shown(self, message: Message) -> Shown:
        def scenario(ms: int | None) -> str | None:
            if ms is None or message.scenario_offset is None:
                return None
            return scenario_time_text(ms, message.scenario_offset)

        return Shown(
            message.id,
            message.direction,
            message.peer,
            message.kind,
            self.store.text_of(message),
            message.sent_at,
            message.status,
            message.verified,
            message.in_reply_to,
            scenario(message.scenario_at),
            message.relay_at,
            scenario(message.relay_scenario_at),
            message.refusal,
            message.subject,
            channel=self.exercise.describe(
                message.peer, message.kind, message.direction, message.verified
            ),
        )

    def show(self, message_id: str) -> Shown:
        """One message by its id (the ID rule of `ids.py`); it counts as shown from now on."""
        with self.store.transaction() as db:
            message = db.get(Message, resolve(db, message_id, "message").id)
            assert message is not None  # resolved inside this transaction
            message.shown = True
            return self._shown(message)

    def find(self, ident: str, *kinds: Kind) -> Found:
        """What `ident` names among `kinds` (the ID rule of `ids.py`)."""
        with self.store.transaction() as db:
            return resolve(db, ident, *kinds)

    def reply_target(self, ident: str) -> str:
        """The message id a letter answers: a message's, or the one that carried a proposal."""
        with self.store.transaction() as db:
            found = resolve(db, ident, "message", "proposal", what="message")
            if found.kind == "proposal":
                row = db.get(ProposalRow, found.id)
                assert row is not None
                return row.message_id
            return found.id

    def thread(self, message_id: str) -> list[Shown]:
        """The conversation a message belongs to, in order: what it answers and what answers
        it (`in_reply_to`, followed both ways), and everything about the same proposal or
        original (`subject`). Bounded by the profile's size, cycles included."""
        with self.store.transaction() as db:
            rows = list(self.store.messages(db))
            by_id = {m.id: m for m in rows}
            start = by_id.get(message_id)
            if start is None:
                return []
            subjects = {s for s in (start.subject, start.id, start.digest) if s}
            linked = {m.id for m in rows if m.subject in subjects or m.digest in subjects}
            linked.add(start.id)
            while True:  # the closure of replies, up and down
                grown = set(linked)
                for m in rows:
                    if m.in_reply_to in linked or (m.id in linked and m.in_reply_to in by_id):
                        grown.add(m.id)
                        if m.in_reply_to in by_id:
                            grown.add(m.in_reply_to)
                if grown == linked:
                    break
                linked = grown
            return [self._shown(m) for m in rows if m.id in linked]

    def history(
        self,
        peer: str | None = None,
        kinds: Sequence[str] = (),
        since: int | None = None,
        until: int | None = None,
    ) -> list[Shown]:
        """Every message held, sent and received, in the order it was stored, filtered by
        peer, kind and a time range (ms, on `sent_at`). Nothing is marked shown."""
        with self.store.transaction() as db:
            query = select(Message).order_by(Message.stored_at, Message.id)
            if peer is not None:
                query = query.where(Message.peer == peer)
            if kinds:
                query = query.where(Message.kind.in_(list(kinds)))
            if since is not None:
                query = query.where(Message.sent_at >= since)
            if until is not None:
                query = query.where(Message.sent_at <= until)
            found = [self._shown(m) for m in db.scalars(query)]
        if not any(m.kind in ("proposal", "statement") and m.subject for m in found):
            return found
        agreements = {v["id"]: v["agreement"] for v in self.negotiation.views()}
        return [
            replace(m, agreement=agreements.get(m.subject or ""))
            if m.kind in ("proposal", "statement")
            else m
            for m in found
        ]

    def fingerprint(self) -> str:
        return format_fingerprint(self.me.identity.public.fingerprint())
