"""Where a command meets the protocol core, the local store and the relay.

Every operation follows one rule: what is received is stored (with the ratchet state that
decrypted it, in one transaction) before it is acknowledged to the relay, and what is sent is
stored (with the ratchet state that encrypted it) before it goes out, so a crash at any point
loses nothing and a retry resends the same envelope, which the relay de-duplicates.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from backchannel.content import (
    Letter,
    Receipt,
    ReceiptType,
    SignedLetter,
    decode_content,
    sign_letter,
)
from backchannel.envelope import Envelope, Route
from backchannel.errors import BackchannelError, IdentityMismatchError
from backchannel.identity import IdentityPublic, format_fingerprint, safety_number
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

from .errors import CliError
from .localstore import Contact, LocalStore, Message
from .profile import Unlocked
from .relay import RelayClient, RelayRequestError, RelayUnreachable, ack_on_socket, b64, unb64

PREKEYS_SECRET = "prekeys"
TOKEN_SECRET = "relay_token"
ONE_TIME_PREKEYS = 100
KEM_ONE_TIME_PREKEYS = 20
TOP_UP_BELOW = 10
DEFAULT_EXPIRY = 7 * 24 * 3600
TOKEN_MARGIN = 60


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Shown:
    """A message as the user sees it (rendered by `render.py`)."""

    id: str
    direction: str
    peer: str
    kind: str
    text: str
    sent_at: int
    status: str
    verified: str
    in_reply_to: str | None

    def as_json(self) -> dict[str, Any]:
        sender = self.peer if self.direction == "in" else "me"
        recipient = "me" if self.direction == "in" else self.peer
        return {
            "id": self.id,
            "from": sender,
            "to": recipient,
            "kind": self.kind,
            "text": self.text,
            "sent_at": self.sent_at,
            "status": self.status,
            "verified": self.verified,
            "in_reply_to": self.in_reply_to,
        }


class Participant:
    """One unlocked profile, its local store and its relay connection."""

    def __init__(self, unlocked: Unlocked) -> None:
        self.me = unlocked
        self.name = unlocked.info.name
        self.store = LocalStore(unlocked.state_path, unlocked.data_key)
        self.relay = RelayClient(unlocked.info.relay)

    async def close(self) -> None:
        await self.relay.close()
        self.store.close()

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
                    "run `backchannel register INVITE`"
                ) from None
            raise CliError(f"relay refused: {exc.message} ({exc.code})") from None
        except RelayUnreachable as exc:
            raise CliError(str(exc)) from None
        expires_at = int(time.time()) + 3600
        with self.store.transaction() as db:
            self.store.put_secret(db, TOKEN_SECRET, expires_at.to_bytes(8, "big") + unb64(token))

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except RelayUnreachable as exc:
            raise CliError(str(exc)) from None
        except RelayRequestError as exc:
            raise CliError(f"relay refused: {exc.message} ({exc.code})") from None

    async def authed(self, awaitable_factory: Callable[[], Any]) -> Any:
        """Run a relay call, logging in again once if the token was refused."""
        await self.login()
        try:
            return await awaitable_factory()
        except RelayUnreachable as exc:
            raise CliError(str(exc)) from None
        except RelayRequestError as exc:
            if exc.status != 401:
                raise CliError(f"relay refused: {exc.message} ({exc.code})") from None
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
            entry = await self.authed(lambda: self.relay.request("GET", f"/v1/directory/{name}"))
            with self.store.transaction() as db:
                contact = self._pin(db, entry["name"], entry["role"], unb64(entry["identity"]))
        if contact.changed_identity is not None:
            raise CliError(
                f"{name}'s identity key has changed; compare safety numbers and run "
                f"`backchannel verify {name}` before writing to or reading from them"
            )
        return contact

    async def safety_number(self, name: str) -> tuple[str, Contact]:
        await self.directory()
        with self.store.transaction() as db:
            contact = db.get(Contact, name)
        if contact is None:
            raise CliError(f"no participant named {name!r}")
        current = contact.changed_identity or contact.identity
        number = safety_number(
            self.me.identity.public, self.name, IdentityPublic.from_bytes(current), name
        )
        return number, contact

    def mark_verified(self, name: str) -> None:
        """Accept the key the user compared: a changed key replaces the pinned one."""
        with self.store.transaction() as db:
            contact = db.get(Contact, name)
            if contact is None:
                raise CliError(f"no participant named {name!r}")
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
        with self.store.transaction() as db:
            state = self.store.get_session_state(db, to)
        if state is None:
            bundle_raw, _ = await self.authed(lambda: self.relay.fetch_bundle(to))
            try:
                bundle = PrekeyBundle.from_bytes(bundle_raw)
            except BackchannelError as exc:
                raise CliError(f"{to}'s prekey bundle is invalid: {exc}") from None
            if bundle.identity.keys != peer.keys:
                raise CliError(f"the relay's prekey bundle for {to} has another identity key")
            session = start_session(self.me.identity, self.name, bundle, to)
        else:
            session = Session.from_bytes(state)
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
        try:
            content = sign_letter(self.me.identity, letter).to_content()
        except ValueError as exc:
            raise CliError(str(exc)) from None
        session, wire = session_encrypt(session, content)
        envelope = Envelope(
            to, self.name, message_id, Route.DIRECT, int(time.time()) + DEFAULT_EXPIRY, wire
        ).to_bytes()
        with self.store.transaction() as db:  # stored before it leaves: a crash loses nothing
            self.store.put_session_state(db, to, session.to_bytes())
            self.store.add_message(
                db,
                text,
                id=message_id.hex(),
                direction="out",
                peer=to,
                kind="letter",
                sent_at=letter.sent_at_ms,
                stored_at=now_ms(),
                status="pending",
                verified="signed",
                in_reply_to=in_reply_to,
                envelope=envelope,
                shown=True,
            )
        await self.flush_outbox()
        return self.show(message_id.hex())

    async def send_receipt(self, to: str, receipt: Receipt) -> None:
        with self.store.transaction() as db:
            state = self.store.get_session_state(db, to)
            if state is None:
                return
            session, wire = session_encrypt(Session.from_bytes(state), receipt.to_content())
            self.store.put_session_state(db, to, session.to_bytes())
        envelope = Envelope(
            to, self.name, os.urandom(16), Route.DIRECT, int(time.time()) + DEFAULT_EXPIRY, wire
        ).to_bytes()
        await self.authed(lambda: self.relay.send([envelope]))

    async def flush_outbox(self) -> int:
        """(Re)send every stored envelope the relay has not yet acknowledged receiving."""
        with self.store.transaction() as db:
            pending = [
                (m.id, m.envelope)
                for m in db.query(Message).filter(
                    Message.status == "pending", Message.envelope.is_not(None)
                )
            ]
        if not pending:
            return 0
        receipts = await self.authed(lambda: self.relay.send([e for _, e in pending if e]))
        with self.store.transaction() as db:
            for (message_id, _), _receipt in zip(pending, receipts, strict=True):
                message = db.get(Message, message_id)
                if message is not None and message.status == "pending":
                    message.status = "sent"
                    message.envelope = None
        return len(pending)

    # --- receiving ----------------------------------------------------------------------------

    async def fetch(self) -> list[Shown]:
        """Fetch, decrypt, verify, store, then acknowledge; returns messages not yet shown."""
        await self.flush_outbox()
        after = 0
        while True:
            page, more = await self.authed(partial(self.relay.mailbox, after))
            if not page:
                break
            done = [self.receive(item.envelope) for item in page]
            receipts_due = [d for d in done if d is not None]
            ids = [item.id for item in page]
            await self.authed(partial(self.relay.acknowledge, ids))
            for peer, message_id in receipts_due:
                await self.send_receipt(
                    peer, Receipt(ReceiptType.DELIVERED, now_ms(), (message_id,))
                )
            after = page[-1].id
            if not more:
                break
        await self.top_up_prekeys()
        return self.take_unshown()

    def receive(self, raw: bytes) -> tuple[str, bytes] | None:
        """Decrypt and store one envelope; -> (peer, message id) when a delivery receipt is due."""
        try:
            envelope = Envelope.from_bytes(raw)
        except BackchannelError:
            return None  # not ours to read; acknowledged so it does not block the mailbox
        sender = envelope.sender or "?"
        with self.store.transaction() as db:
            if db.get(Message, envelope.message_id.hex()) is not None:
                return None  # a redelivery: already stored
            try:
                session, plaintext = self._open(db, sender, envelope.ciphertext)
                content = decode_content(plaintext)
            except (BackchannelError, CliError) as exc:
                self.store.add_message(
                    db,
                    f"[could not be read: {exc}]",
                    id=envelope.message_id.hex(),
                    direction="in",
                    peer=sender,
                    kind="unreadable",
                    sent_at=0,
                    stored_at=now_ms(),
                    status="failed",
                    verified="no",
                    in_reply_to=None,
                )
                return None
            self.store.put_session_state(db, sender, session.to_bytes())
            if isinstance(content, Receipt):
                self._apply_receipt(db, sender, content)
                return None
            if not isinstance(content, SignedLetter):
                return None
            letter = content.letter
            try:
                content.verify(session.peer, self.me.identity.public, self.name)
                verified = "signed"
            except BackchannelError:
                verified = "BAD SIGNATURE"
            self.store.add_message(
                db,
                letter.text,
                id=letter.message_id.hex(),
                direction="in",
                peer=sender,
                kind="letter",
                sent_at=letter.sent_at_ms,
                stored_at=now_ms(),
                status="delivered",
                verified=verified,
                in_reply_to=letter.in_reply_to.hex() if letter.in_reply_to else None,
            )
            return sender, letter.message_id

    def _open(self, db: Any, sender: str, wire: bytes) -> tuple[Session, bytes]:
        contact = db.get(Contact, sender)
        if contact is not None and contact.changed_identity is not None:
            raise CliError(
                f"{sender}'s identity key has changed; run `backchannel verify {sender}`"
            )
        state = self.store.get_session_state(db, sender)
        session = Session.from_bytes(state) if state else None
        if session is not None and not opens_new_session(session, wire):
            return session_decrypt(session, wire)
        header = parse_message(wire).header
        assert header is not None
        if header.initiator_name != sender:
            raise IdentityMismatchError("the message's handshake names another sender")
        if contact is None:
            contact = self._pin(db, sender, "?", header.initiator.to_bytes())
        elif contact.identity != header.initiator.to_bytes():
            contact.changed_identity = header.initiator.to_bytes()
            raise CliError(
                f"{sender}'s identity key has changed; run `backchannel verify {sender}`"
            )
        prekeys, session, plaintext = accept_session(
            self.me.identity,
            self.name,
            self._prekeys(db),
            wire,
            expected_peer=IdentityPublic.from_bytes(contact.identity),
        )
        self.store.put_secret(db, PREKEYS_SECRET, prekeys.to_bytes())
        return session, plaintext

    def _apply_receipt(self, db: Any, sender: str, receipt: Receipt) -> None:
        rank = {"pending": 0, "sent": 1, "delivered": 2, "read": 3}
        new_status = "read" if receipt.type == ReceiptType.READ else "delivered"
        for message_id in receipt.message_ids:
            message = db.get(Message, message_id.hex())
            if message is None or message.direction != "out" or message.peer != sender:
                continue
            if rank.get(new_status, 0) > rank.get(message.status, 0):
                message.status = new_status

    def take_unshown(self) -> list[Shown]:
        with self.store.transaction() as db:
            fresh = self.store.messages(db, unshown_only=True)
            for message in fresh:
                message.shown = True
            shown = [self._shown(m) for m in fresh]
        return shown

    async def send_read_receipts(self, shown: list[Shown]) -> None:
        by_peer: dict[str, list[bytes]] = {}
        for message in shown:
            if message.kind == "letter" and message.direction == "in":
                by_peer.setdefault(message.peer, []).append(bytes.fromhex(message.id))
        for peer, ids in by_peer.items():
            await self.send_receipt(peer, Receipt(ReceiptType.READ, now_ms(), tuple(ids)))

    async def watch(self, show: Callable[[list[Shown]], None], read_receipts: bool) -> None:
        """Stay on the relay's WebSocket: store, acknowledge, show each arrival."""
        await self.login()
        try:
            async for pushed, socket in self.relay.live():
                due = self.receive(pushed.envelope)
                await ack_on_socket(socket, [pushed.id])
                if due is not None:
                    peer, message_id = due
                    await self.send_receipt(
                        peer, Receipt(ReceiptType.DELIVERED, now_ms(), (message_id,))
                    )
                fresh = self.take_unshown()
                if fresh:
                    show(fresh)
                    if read_receipts:
                        await self.send_read_receipts(fresh)
        except RelayUnreachable as exc:
            raise CliError(str(exc)) from None
        except RelayRequestError as exc:
            raise CliError(f"relay refused: {exc.message} ({exc.code})") from None

    async def top_up_prekeys(self) -> None:
        counts = await self.authed(self.relay.prekey_counts)
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
        )

    def show(self, message_id: str) -> Shown:
        with self.store.transaction() as db:
            message = db.get(Message, message_id)
            if message is None:
                matches = [m for m in self.store.messages(db) if m.id.startswith(message_id)]
                if len(matches) != 1:
                    raise CliError(f"no message with id {message_id!r}")
                message = matches[0]
            return self._shown(message)

    def fingerprint(self) -> str:
        return format_fingerprint(self.me.identity.public.fingerprint())
