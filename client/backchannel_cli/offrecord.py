"""Off-the-record channels on the participant's side (PRODUCT.md §3, PROTOCOL.md §15).

The channel is agreed inside the session with the peer (an offer, an answer, each carrying its
sender's delivery token); its messages then go to the peer's drop with no sender and no login,
and come from our own drop with the read key only we hold.

Nothing of a channel is written where it could be read back as a record: its state (chains,
tokens, read key, the peer's name) is one sealed secret under a key that names nobody (an HMAC
of the peer's name under the profile's data key), deleted on `otr close`, on the peer's close
and at expiry (SQLite's `secure_delete` zeroes it in the file). Messages are shown and
forgotten; `--keep` alone stores a copy, marked unverifiable. When the channel ends, the contact
row and the session its set-up alone made go too, so that a profile that never corresponded
with the peer on the record keeps nothing that names them (PROTOCOL.md §15.4).

Each received message is shown, then the channel state that read it is stored, then it is
acknowledged: a crash in between shows it again rather than losing it.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from backchannel import otr, ticks
from backchannel.agreements import ClauseForm, OffRecordClause
from backchannel.drops import (
    SealedEnvelope,
    drop_address,
    drop_expiry,
    new_read_key,
    read_hash,
    sealed_expiry,
)
from backchannel.encoding import Reader
from backchannel.errors import BackchannelError, DuplicateMessageError, InvalidFieldError
from backchannel.identity import IdentityPublic
from backchannel.keys import DHKeyPair
from backchannel.otr import OtrChannel, OtrControl, OtrForm, Role
from backchannel.proposals import Party, Proposal

from .errors import CliError, RelayRefusedError
from .localstore import Contact, Message, Secret
from .participant_api import ParticipantApi
from .relay import PushedEnvelope, RelayRequestError, RelayUnreachable
from .render import amount, when
from .shown import Shown

if TYPE_CHECKING:
    from .exercising import Exercise


class Participant(ParticipantApi, Protocol):
    """What off-the-record channels need of the participant: the exercise's rules as well."""

    exercise: Exercise

PREFIX = "otr:"
CLOSING = "otr-closing"
"""Read keys of our drops still to close and closes still to tell (a peer's name and the
channel id), sealed like every secret, until the relay could be reached."""
DEFAULT_TTL_MS = 3600 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Channel:
    """One side of a channel as this profile keeps it (sealed as one secret)."""

    peer: str
    role: Role
    channel_id: bytes
    expires_at_ms: int
    my_token: bytes
    my_read_key: bytes
    peer_token: bytes | None = None
    """None until the answer arrives (the opener's side)."""
    state: OtrChannel | None = None
    offer: bytes | None = None
    """The opener's offer and ephemeral private key, until the answer arrives."""
    ephemeral: bytes | None = None
    drop_open: bool = False
    control_due: bytes | None = None
    """An offer or answer to send once our drop is open."""
    outbox: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(message id, sealed envelope) stored before sending, until the relay has them."""
    drop_expires_at: int = 0
    """Our drop's expiry (s), drawn once (`drop_expiry`) so a retried opening asks the same."""
    new_contact: bool = False
    clauses: list[tuple[bytes, str]] = field(default_factory=list)
    """Proposals made in the channel (canonical bytes) and their state (`CLAUSE_STATES`):
    understood clauses, which live as long as the channel and go with it (PRODUCT.md §4)."""
    new_session: bool = False
    """Whether the channel's set-up made this profile's contact row and session with the peer:
    then they go when the channel ends, unless an identified exchange needs them by then."""

    @property
    def ready(self) -> bool:
        return self.state is not None and self.peer_token is not None

    def to_bytes(self) -> bytes:
        def hexed(value: bytes | None) -> str | None:
            return None if value is None else value.hex()

        return json.dumps(
            {
                "peer": self.peer,
                "role": int(self.role),
                "channel_id": self.channel_id.hex(),
                "expires_at_ms": self.expires_at_ms,
                "my_token": self.my_token.hex(),
                "my_read_key": self.my_read_key.hex(),
                "peer_token": hexed(self.peer_token),
                "state": hexed(self.state.to_bytes() if self.state else None),
                "offer": hexed(self.offer),
                "ephemeral": hexed(self.ephemeral),
                "drop_open": self.drop_open,
                "control_due": hexed(self.control_due),
                "outbox": [[i.hex(), e.hex()] for i, e in self.outbox],
                "drop_expires_at": self.drop_expires_at,
                "new_contact": self.new_contact,
                "new_session": self.new_session,
                "clauses": [[c.hex(), a] for c, a in self.clauses],
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Channel:
        raw = json.loads(data)

        def unhexed(key: str) -> bytes | None:
            value = raw[key]
            return None if value is None else bytes.fromhex(value)

        state = unhexed("state")
        return cls(
            raw["peer"],
            Role(raw["role"]),
            bytes.fromhex(raw["channel_id"]),
            raw["expires_at_ms"],
            bytes.fromhex(raw["my_token"]),
            bytes.fromhex(raw["my_read_key"]),
            unhexed("peer_token"),
            OtrChannel.from_bytes(state) if state else None,
            unhexed("offer"),
            unhexed("ephemeral"),
            raw["drop_open"],
            unhexed("control_due"),
            [(bytes.fromhex(i), bytes.fromhex(e)) for i, e in raw["outbox"]],
            int(raw.get("drop_expires_at", 0)),
            bool(raw.get("new_contact", False)),
            [(bytes.fromhex(c), _clause_state(a)) for c, a in raw.get("clauses", [])],
            bool(raw.get("new_session", False)),
        )


@dataclass
class Closing:
    drops: list[bytes] = field(default_factory=list)
    tell: list[tuple[str, bytes]] = field(default_factory=list)
    forget: list[tuple[str, bool, bool]] = field(default_factory=list)
    """(peer, its contact row, its sessions): what ended channels made, to delete once the
    peer has been told (a close travels in the session) and no channel with them is open."""

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "drops": [k.hex() for k in self.drops],
                "tell": [[p, c.hex()] for p, c in self.tell],
                "forget": [list(entry) for entry in self.forget],
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> Closing:
        if data is None:
            return cls()
        raw = json.loads(data)
        return cls(
            [bytes.fromhex(k) for k in raw["drops"]],
            [(p, bytes.fromhex(c)) for p, c in raw["tell"]],
            [(str(p), bool(c), bool(s)) for p, c, s in raw.get("forget", [])],
        )


@dataclass(frozen=True, slots=True)
class _Arrival:
    peer: str
    channel_id: bytes
    page: list[PushedEnvelope]


class OffTheRecord:
    """One participant's off-the-record channels (held by `Participant.offrecord`)."""

    def __init__(self, participant: Participant) -> None:
        self.participant = participant
        self.store = participant.store
        self.notes: list[str] = []
        self.given_up: dict[str, RelayRefusedError] = {}
        """Channels whose set-up the relay refused this run, by peer: `open` says why."""

    def take_notes(self) -> list[str]:
        notes, self.notes = self.notes, []
        return notes

    # --- the sealed records ---------------------------------------------------------------------

    def _key(self, peer: str) -> str:
        mac = hmac.new(self.participant.me.data_key, b"otr channel " + peer.encode(), "sha256")
        return PREFIX + mac.hexdigest()[:32]

    def load(self, db: Any, peer: str) -> Channel | None:
        raw = self.store.get_secret(db, self._key(peer))
        return Channel.from_bytes(raw) if raw is not None else None

    def save(self, db: Any, channel: Channel) -> None:
        self.store.put_secret(db, self._key(channel.peer), channel.to_bytes())

    def _wipe(self, db: Any, channel: Channel, tell: bool = False, forget: bool = True) -> None:
        """Forget the channel; its drop, the peer (with `tell`) and, with `forget`, what its
        set-up made of the peer here (contact row, sessions) are seen to later."""
        self.store.delete_secret(db, self._key(channel.peer))
        closing = Closing.from_bytes(self.store.get_secret(db, CLOSING))
        if channel.drop_open:
            closing.drops.append(channel.my_read_key)
        if tell:
            closing.tell.append((channel.peer, channel.channel_id))
        if forget and (channel.new_contact or channel.new_session):
            closing.forget.append((channel.peer, channel.new_contact, channel.new_session))
        self.store.put_secret(db, CLOSING, closing.to_bytes())

    def channels(self, db: Any) -> list[Channel]:
        keys = [row.key for row in db.query(Secret).filter(Secret.key.startswith(PREFIX))]
        held = [self.store.get_secret(db, key) for key in keys]
        return sorted((Channel.from_bytes(raw) for raw in held if raw), key=lambda c: c.peer)

    def listing(self) -> list[dict[str, Any]]:
        with self.store.transaction() as db:
            self._expire(db)
            return [
                {
                    "with": c.peer,
                    "opened_by": "me" if c.role == Role.OPENER else c.peer,
                    "status": "open" if c.ready else "waiting for the answer",
                    "expires_at": c.expires_at_ms,
                }
                for c in self.channels(db)
            ]

    def _expire(self, db: Any) -> None:
        for channel in self.channels(db):
            if ticks.channel_expired(channel.expires_at_ms, now_ms()):
                self._wipe(db, channel)
                self.notes.append(f"the off-the-record channel with {channel.peer} has expired")

    # --- opening, answering, closing ------------------------------------------------------------

    async def open(self, peer: str, ttl_ms: int, unit: str = "s") -> dict[str, Any]:
        """`unit`: the one the user gave the TTL in, for stating the relay's cap in it."""
        participant = self.participant
        if peer == participant.name:
            raise CliError("an off-the-record channel is between you and someone else")
        with self.store.transaction() as db:
            new_contact = db.get(Contact, peer) is None
            new_session = not self.store.has_session(db, peer)
        await participant.contact(peer)
        try:
            return await self._open(peer, ttl_ms, unit, new_contact, new_session)
        except Exception:  # refused: what the attempt made of the peer goes again
            if new_contact or new_session:
                with self.store.transaction() as db:
                    if self.load(db, peer) is None:
                        self._forget_now(db, peer, new_contact, new_session)
                self.store.truncate_wal()
            raise

    async def _open(
        self, peer: str, ttl_ms: int, unit: str, new_contact: bool, new_session: bool
    ) -> dict[str, Any]:
        participant = self.participant
        if await participant.exercise.via(peer) is not None:  # raises if there is no channel
            raise CliError(
                f"the exercise lets you reach {peer} only through a mediator; an off-the-record "
                "channel needs a direct one"
            )
        info = await participant._call(participant.relay.info())
        cap = int(info["limits"].get("max_drop_ttl_seconds", 0))
        if ttl_ms > cap * 1000:
            raise CliError(
                "--ttl: this relay keeps an off-the-record channel for at most "
                f"{amount(cap, unit)}",
                "ttl_too_long",
            )
        await participant.exercise.report_channel(peer)  # a count at most (PROTOCOL.md §16.11)
        with self.store.transaction() as db:
            self._expire(db)
            existing = self.load(db, peer)
            if existing is not None:
                raise CliError(
                    f"an off-the-record channel with {peer} is open until "
                    f"{when(existing.expires_at_ms)}; close it first (`backchannel otr close "
                    f"{peer}`)"
                )
            now = now_ms()
            control, ephemeral = otr.offer(now + ttl_ms)
            channel = Channel(
                peer, Role.OPENER, control.channel_id, control.expires_at_ms, control.token,
                new_read_key(), offer=control.to_content(), ephemeral=ephemeral.private_bytes(),
                control_due=control.to_content(),
                drop_expires_at=drop_expiry(control.expires_at_ms, now),
                new_contact=new_contact, new_session=new_session,
            )  # fmt: skip
            self.save(db, channel)
        await self.catch_up()
        refusal = self.given_up.pop(peer, None)
        if refusal is not None:  # the relay refused to open our drop (our role, say)
            raise refusal
        await self.participant.exercise.ensure()  # what control sees, as the relay says now
        return {
            "with": peer,
            "status": "waiting for the answer",
            "expires_at": channel.expires_at_ms,
            "class": "off_the_record",
            "control_sees": self.participant.exercise.control_sees(peer, "off_the_record"),
        }

    def receive(
        self,
        db: Any,
        sender: str,
        control: OtrControl,
        new_contact: bool = False,
        new_session: bool = False,
    ) -> None:
        """A set-up or close from `sender`, inside the transaction that decrypted it (which
        tells whether decrypting it made the contact row or the session with `sender`: if no
        channel stands on them afterwards, they go again)."""
        self._control(db, sender, control, new_contact, new_session)
        if (new_contact or new_session) and self.load(db, sender) is None:
            self._forget_later(db, sender, new_contact, new_session)

    def _control(
        self, db: Any, sender: str, control: OtrControl, new_contact: bool, new_session: bool
    ) -> None:
        channel = self.load(db, sender)
        same = channel is not None and channel.channel_id == control.channel_id
        if control.form == OtrForm.CLOSE:
            if channel is not None and same:
                self._wipe(db, channel)
                self.notes.append(f"{sender} closed the off-the-record channel")
            return
        if control.form == OtrForm.ACCEPT:
            if channel is None or not same or channel.state is not None:
                return  # a repeat, or the answer to a channel since closed
            assert channel.offer is not None and channel.ephemeral is not None
            offered = otr.OtrControl.read(_after_kind(channel.offer))
            ephemeral = DHKeyPair.from_private_bytes(channel.ephemeral)
            channel.state = otr.complete(offered, ephemeral, control)
            channel.peer_token, channel.offer, channel.ephemeral = control.token, None, None
            self.save(db, channel)
            self.notes.append(f"{sender} joined your off-the-record channel")
            return
        if same:
            return  # the offer again
        if (
            channel is not None
            and channel.role == Role.OPENER
            and channel.state is None
            and channel.channel_id < control.channel_id
        ):
            return  # both opened at once: the lower channel id stands, and they answer ours
        if not self.participant.exercise.direct(sender):
            self.notes.append(
                f"{sender} offered an off-the-record channel, which the exercise does not allow "
                "between you (no direct channel); it was declined"
            )
            return
        now = now_ms()
        try:
            answer, state = otr.accept(control, now)
        except BackchannelError:
            self.notes.append(f"{sender}'s offer of an off-the-record channel had expired")
            return
        if channel is not None:  # replaced: what the old one made goes when this one ends
            self._wipe(db, channel, forget=False)
            new_contact = new_contact or channel.new_contact
            new_session = new_session or channel.new_session
        mine = Channel(
            sender, Role.RESPONDER, control.channel_id, control.expires_at_ms, answer.token,
            new_read_key(), control.token, state, control_due=answer.to_content(),
            drop_expires_at=drop_expiry(control.expires_at_ms, now),
            new_contact=new_contact, new_session=new_session,
        )  # fmt: skip
        self.save(db, mine)
        self.notes.append(
            f"{sender} opened an off-the-record channel with you until "
            f"{when(control.expires_at_ms)}; answer with `backchannel otr send {sender}`"
        )

    async def close(self, peer: str) -> None:
        with self.store.transaction() as db:
            channel = self.load(db, peer)
            if channel is None:
                raise CliError(f"no off-the-record channel with {peer} is open")
            self._wipe(db, channel, tell=True)
        await self.catch_up()

    async def catch_up(self) -> None:
        """Finish what set-up and tear-down left: open our drops, send answers and closes,
        send stored messages, close old drops. What fails is retried by the next command."""
        participant, relay = self.participant, self.participant.relay
        with self.store.transaction() as db:
            self._expire(db)
            channels = self.channels(db)
            closing = Closing.from_bytes(self.store.get_secret(db, CLOSING))
        for channel in channels:
            try:
                await self._set_up(channel)
            except RelayRefusedError as exc:  # it would be refused again: give the channel up
                with self.store.transaction() as db:
                    if (current := self.load(db, channel.peer)) is not None:
                        self._wipe(db, current)
                self.given_up[channel.peer] = exc
                self.notes.append(
                    f"the off-the-record channel with {channel.peer} was given up: {exc.message}"
                )
        for peer, channel_id in closing.tell:
            close = OtrControl(OtrForm.CLOSE, channel_id).to_content()
            await participant.send_unrecorded(peer, close)
            self._forget_closing(tell=(peer, channel_id))
        for read_key in closing.drops:
            try:
                await participant._call(relay.drop_close(read_key))
            except RelayRefusedError as exc:
                if _code(exc) != "unknown_drop":  # gone already (expired): nothing left to do
                    raise
            self._forget_closing(drop=read_key)
        self._forget_peers()

    async def _set_up(self, channel: Channel) -> None:
        participant = self.participant
        if not channel.drop_open:
            create = partial(
                participant.relay.create_drop,
                drop_address(channel.my_token),
                read_hash(channel.my_read_key),
                channel.drop_expires_at or drop_expiry(channel.expires_at_ms, now_ms()),
            )
            await participant.authed(create)
            self._update(channel.peer, channel.channel_id, drop_open=True)
        if channel.control_due is not None:
            await participant.send_unrecorded(channel.peer, channel.control_due)
            self._update(channel.peer, channel.channel_id, control_due=None)
        if channel.ready:
            await self._flush(channel)

    def _update(self, peer: str, channel_id: bytes, **changes: Any) -> None:
        with self.store.transaction() as db:
            channel = self.load(db, peer)
            if channel is not None and channel.channel_id == channel_id:
                self.save(db, replace(channel, **changes))

    def _forget_closing(
        self, drop: bytes | None = None, tell: tuple[str, bytes] | None = None
    ) -> None:
        with self.store.transaction() as db:
            closing = Closing.from_bytes(self.store.get_secret(db, CLOSING))
            closing.drops = [k for k in closing.drops if k != drop]
            closing.tell = [t for t in closing.tell if t != tell]
            self._put_closing(db, closing)

    def _put_closing(self, db: Any, closing: Closing) -> None:
        if closing.drops or closing.tell or closing.forget:
            self.store.put_secret(db, CLOSING, closing.to_bytes())
        else:
            self.store.delete_secret(db, CLOSING)

    # --- forgetting the peer --------------------------------------------------------------------

    def _forget_later(self, db: Any, peer: str, contact: bool, sessions: bool) -> None:
        closing = Closing.from_bytes(self.store.get_secret(db, CLOSING))
        closing.forget.append((peer, contact, sessions))
        self._put_closing(db, closing)

    def _forget_peers(self) -> None:
        """Delete what ended channels alone made of their peers (once told, and while no new
        channel with them is open), then clear the write-ahead log of the deleted rows."""
        with self.store.transaction() as db:
            closing = Closing.from_bytes(self.store.get_secret(db, CLOSING))
            if not closing.forget:
                return
            waiting = {peer for peer, _ in closing.tell}
            kept: list[tuple[str, bool, bool]] = []
            for peer, contact, sessions in closing.forget:
                if peer in waiting or self.load(db, peer) is not None:
                    kept.append((peer, contact, sessions))
                else:
                    self._forget_now(db, peer, contact, sessions)
            closing.forget = kept
            self._put_closing(db, closing)
        self.store.truncate_wal()

    def _forget_now(self, db: Any, peer: str, contact: bool, sessions: bool) -> None:
        """The sessions go unless an identified exchange uses them (a rule both sides apply
        alike, so neither keeps a session the other dropped); the contact row goes unless
        anything else here names the peer, or the user verified them."""
        if sessions and self.store.on_record_with(db, peer, kept_otr=False):
            sessions = False
        if contact:
            row: Contact | None = db.get(Contact, peer)
            if row is None or row.verified or self.store.on_record_with(db, peer):
                contact = False
        self.store.forget_peer(db, peer, contact, sessions)

    # --- messages -------------------------------------------------------------------------------

    async def send(
        self, peer: str, text: str, keep: bool, clause: OffRecordClause | None = None
    ) -> Shown:
        """Send `text`, or `clause` (then `text` is what we show and `--keep` stores)."""
        channel = await self._ready(peer)
        if clause is None and text.startswith("\x00"):
            raise CliError("an off-the-record message does not start with a NUL character")
        plaintext = text.encode("utf-8") if clause is None else clause.to_plaintext()
        if len(plaintext) > otr.MAX_TEXT_BYTES:
            raise CliError(f"an off-the-record message holds at most {otr.MAX_TEXT_BYTES} bytes")
        message_id = os.urandom(16)
        with self.store.transaction() as db:
            current = self.load(db, peer)
            if current is None or current.channel_id != channel.channel_id:
                raise CliError(f"the off-the-record channel with {peer} was closed meanwhile")
            assert current.state is not None
            if clause is not None:
                current.clauses = _with_clause(current.clauses, clause, self.participant.name)
            state, message = otr.encrypt(current.state, plaintext)
            expires = sealed_expiry(current.expires_at_ms)  # the relay takes the drop's
            sealed = SealedEnvelope(message_id, expires, message).to_bytes()
            current.state = state
            current.outbox.append((message_id, sealed))
            self.save(db, current)
            if keep:
                self._keep(db, message_id, "out", peer, text)
        await self._flush(current)
        return self._shown(message_id, "out", peer, text, "kept" if keep else "sent")

    async def _ready(self, peer: str) -> Channel:
        await self.catch_up()
        for attempt in range(2):
            with self.store.transaction() as db:
                channel = self.load(db, peer)
            if channel is None:
                raise CliError(
                    f"no off-the-record channel with {peer} is open; open one with "
                    f"`backchannel otr open {peer}`"
                )
            if channel.ready:
                return channel
            if attempt == 0:
                await self.participant.sync()  # their answer may be waiting
        raise CliError(
            f"{peer} has not answered the off-the-record channel yet (their client answers "
            "when they next run `backchannel inbox`); try again then"
        )

    async def _flush(self, channel: Channel) -> None:
        """Hand the stored messages of `channel` to the peer's drop, without logging in."""
        assert channel.peer_token is not None
        for message_id, sealed in list(channel.outbox):
            try:
                await self.participant._call(
                    self.participant.relay.drop_send(channel.peer_token, sealed)
                )
            except RelayRefusedError as exc:
                if _code(exc) != "bad_delivery_token":
                    raise
                with self.store.transaction() as db:
                    self._wipe(db, channel)
                raise RelayRefusedError(
                    f"{channel.peer}'s side of the off-the-record channel is closed or expired; "
                    "the message was not delivered",
                    exc.error,
                ) from None
            with self.store.transaction() as db:
                current = self.load(db, channel.peer)
                if current is not None and current.channel_id == channel.channel_id:
                    current.outbox = [(i, e) for i, e in current.outbox if i != message_id]
                    self.save(db, current)

    async def receive_all(
        self, show: Callable[[list[Shown]], None], keep: bool, unshown: bool = False
    ) -> None:
        """Fetch every open channel's drop; show what arrived (`show` is called once, inside
        the transaction that then stores the channel states); acknowledge it. `unshown`: the
        stored messages not yet shown come first in that batch, marked shown in the same
        transaction, so a crash before `show` returned (in the drops' network reads, say)
        leaves them unshown for the next run."""
        relay = self.participant.relay
        with self.store.transaction() as db:
            self._expire(db)
            ready = [c for c in self.channels(db) if c.ready and c.drop_open]
        arrivals: list[_Arrival] = []
        for channel in ready:
            try:
                fetched = relay.drop_fetch(channel.my_read_key, limit=500)
                page, _, _ = await self.participant._call(fetched)
            except RelayRefusedError as exc:
                if _code(exc) != "unknown_drop":
                    raise
                with self.store.transaction() as db:  # the relay swept it: expired
                    current = self.load(db, channel.peer)
                    if current is not None and current.channel_id == channel.channel_id:
                        self._wipe(db, replace(current, drop_open=False))
                self.notes.append(f"the off-the-record channel with {channel.peer} has expired")
                continue
            if page:
                arrivals.append(_Arrival(channel.peer, channel.channel_id, page))
        shown: list[Shown] = []
        done: list[tuple[bytes, list[int]]] = []
        with self.store.transaction() as db:
            if unshown:
                shown.extend(self.participant.take_unshown(db))
            for arrival in arrivals:
                held = self.load(db, arrival.peer)
                if held is None or held.state is None or held.channel_id != arrival.channel_id:
                    continue  # closed or replaced meanwhile: what it held is unreadable now
                state = held.state
                clauses = list(held.clauses)
                for item in arrival.page:
                    try:
                        sealed = SealedEnvelope.from_bytes(item.envelope)
                        state, plaintext, _ = otr.decrypt(state, sealed.message)
                        clause = OffRecordClause.from_plaintext(plaintext)
                        if clause is None:
                            text = plaintext.decode("utf-8")
                        else:
                            clauses, text = self._received(db, arrival.peer, clauses, clause)
                    except DuplicateMessageError:
                        continue  # read before a crash kept it from being acknowledged
                    except (BackchannelError, UnicodeDecodeError) as exc:
                        self.notes.append(
                            f"an off-the-record message to you did not authenticate ({exc}); "
                            "it was dropped"
                        )
                        continue
                    if keep:
                        self._keep(db, sealed.message_id, "in", arrival.peer, text)
                    shown.append(self._shown(sealed.message_id, "in", arrival.peer, text))
                self.save(db, replace(held, state=state, clauses=clauses))
                done.append((held.my_read_key, [item.id for item in arrival.page]))
            show(shown)
        for read_key, ids in done:
            with contextlib.suppress(RelayRequestError, RelayUnreachable):
                await relay.drop_ack(read_key, ids)  # else next time, where it reads as a repeat

    # --- clauses: proposals made and accepted off the record ------------------------------------

    def _received(
        self, db: Any, peer: str, clauses: list[tuple[bytes, str]], clause: OffRecordClause
    ) -> tuple[list[tuple[bytes, str]], str]:
        """A clause from `peer`: checked to be theirs and to us, then held with the channel."""
        if clause.form == ClauseForm.PROPOSE:
            assert clause.proposal is not None
            proposal = clause.proposal
            contact: Contact | None = db.get(Contact, peer)
            me = Party.of(self.participant.name, self.participant.me.identity.public)
            theirs = (
                contact is not None
                and proposal.author.keys == IdentityPublic.from_bytes(contact.identity).keys
            )
            if proposal.author.name != peer or not theirs or proposal.addressees != (me,):
                raise InvalidFieldError(
                    "an off-the-record proposal names another author or other addressees "
                    "than the channel's two sides"
                )
            updated = _with_clause(clauses, clause, peer)
            digest = proposal.digest().hex()
            terms = "".join(f"\n{i}. {t}" for i, t in enumerate(proposal.terms, 1))
            return updated, (
                f"Off the record (deniable; at most understood, never bound): {proposal.title}"
                f"{terms}\n(clause {digest[:12]}: `backchannel otr accept {peer} {digest[:12]}`)"
            )
        before = {Proposal.from_bytes(raw).digest(): state for raw, state in clauses}
        updated = _with_clause(clauses, clause, peer)
        if clause.form == ClauseForm.ACCEPT and before.get(clause.digest) == WITHDRAWN:
            return (
                updated,
                (  # it crossed our withdrawal, which wins on both sides
                    f"accepted off the record your clause {clause.digest.hex()[:12]} after you "
                    "withdrew it: it stays withdrawn"
                ),
            )
        if clause.form == ClauseForm.WITHDRAW:
            return updated, (
                f"withdrew off the record the clause {clause.digest.hex()[:12]}: it is no longer "
                "offered or understood, and what counted on it is void"
            )
        return updated, (
            f"accepted off the record your clause {clause.digest.hex()[:12]}: it is understood, "
            "and no record holds it"
        )

    def clauses(self) -> list[tuple[str, Proposal, str]]:
        """Every clause held in an open channel: (peer, proposal, state)."""
        with self.store.transaction() as db:
            self._expire(db)
            return [
                (channel.peer, Proposal.from_bytes(raw), state)
                for channel in self.channels(db)
                for raw, state in channel.clauses
            ]

    def find_clause(self, ident: str) -> tuple[str, Proposal, str] | None:
        """The clause whose digest starts with `ident` (at least 8 hex digits), if one."""
        ident = ident.lower()
        if len(ident) < 8:
            return None
        found = [c for c in self.clauses() if c[1].digest().hex().startswith(ident)]
        if len(found) > 1:
            raise CliError(f"{ident} names more than one off-the-record clause; give more digits")
        return found[0] if found else None

    async def propose(self, peer: str, title: str, terms: list[str]) -> dict[str, Any]:
        """Make a proposal inside the channel with `peer`: unsigned, never notarised."""
        await self._ready(peer)
        contact = await self.participant.contact(peer)
        me = self.participant.me.identity.public
        proposal = Proposal(
            os.urandom(16), Party.of(self.participant.name, me),
            (Party(peer, IdentityPublic.from_bytes(contact.identity).keys),), title,
            tuple(terms), now_ms(),
        )  # fmt: skip
        try:
            proposal.canonical()
        except ValueError as exc:
            raise CliError(str(exc)) from None
        clause = OffRecordClause(ClauseForm.PROPOSE, proposal)
        await self.send(peer, f"proposed off the record: {title}", False, clause)
        return clause_view(peer, proposal, OPENED, self.participant.name)

    async def accept(self, peer: str, ident: str) -> dict[str, Any]:
        found = self.find_clause(ident)
        if found is None or found[0] != peer:
            raise CliError(f"no off-the-record clause {ident} in the channel with {peer}")
        _, proposal, state = found
        if proposal.author.name != peer:
            raise CliError("you accept a clause made to you, not your own")
        if state != OPENED:
            raise CliError(f"clause {ident} is {state}: there is nothing to accept")
        clause = OffRecordClause(ClauseForm.ACCEPT, digest=proposal.digest())
        await self.send(peer, f"accepted off the record: {proposal.title}", False, clause)
        return clause_view(peer, proposal, ACCEPTED, self.participant.name)

    async def withdraw(self, peer: str, ident: str) -> dict[str, Any]:
        """Take back our own clause, offered or understood: what counted on it becomes void."""
        found = self.find_clause(ident)
        if found is None or found[0] != peer:
            raise CliError(f"no off-the-record clause {ident} in the channel with {peer}")
        _, proposal, state = found
        if proposal.author.name != self.participant.name:
            raise CliError("you withdraw a clause of your own, not one made to you")
        if state == WITHDRAWN:
            raise CliError(f"clause {ident} is already withdrawn")
        clause = OffRecordClause(ClauseForm.WITHDRAW, digest=proposal.digest())
        await self.send(peer, f"withdrew off the record: {proposal.title}", False, clause)
        return clause_view(peer, proposal, WITHDRAWN, self.participant.name)

    def _keep(self, db: Any, message_id: bytes, direction: str, peer: str, text: str) -> None:
        """The explicit local copy (`--keep`): marked unverifiable, for that is what it is."""
        if db.get(Message, message_id.hex()) is not None:
            return  # shown again after a crash: kept already
        self.store.add_message(
            db, text, id=message_id.hex(), direction=direction, peer=peer, kind="otr",
            sent_at=now_ms(), stored_at=now_ms(), status="kept", verified="unverifiable",
            in_reply_to=None, shown=True,
        )  # fmt: skip

    def _shown(
        self, message_id: bytes, direction: str, peer: str, text: str, status: str = "delivered"
    ) -> Shown:
        channel = self.participant.exercise.describe(peer, "otr", direction, "deniable")
        return Shown(
            message_id.hex(), direction, peer, "otr", text, now_ms(), status, "deniable", None,
            channel=channel,
        )  # fmt: skip


MAX_CLAUSES = 32
"""Clauses one channel holds: a limit on what a peer can make us keep."""


OPENED, ACCEPTED, WITHDRAWN = "opened", "accepted", "withdrawn"
CLAUSE_STATES = (OPENED, ACCEPTED, WITHDRAWN)


def _clause_state(stored: object) -> str:
    """A clause's stored state (a bool before withdrawal existed: accepted or not)."""
    if isinstance(stored, str) and stored in CLAUSE_STATES:
        return stored
    return ACCEPTED if stored is True else OPENED


def _with_clause(
    clauses: list[tuple[bytes, str]], clause: OffRecordClause, actor: str
) -> list[tuple[bytes, str]]:
    """The channel's clauses after `clause` by `actor`: a new offer; the acceptance of an open
    one by its only addressee; or its withdrawal by its author, which wins over an acceptance
    that crossed it (both sides end withdrawn). Anything else is refused."""
    if clause.form == ClauseForm.PROPOSE:
        assert clause.proposal is not None
        if len(clauses) >= MAX_CLAUSES:
            raise InvalidFieldError(f"a channel holds at most {MAX_CLAUSES} clauses")
        return [*clauses, (clause.proposal.canonical(), OPENED)]
    updated = []
    matched = False
    for raw, state in clauses:
        proposal = Proposal.from_bytes(raw)
        if proposal.digest() == clause.digest:
            mine = proposal.author.name == actor
            if clause.form == ClauseForm.WITHDRAW and state != WITHDRAWN:
                if not mine:
                    raise InvalidFieldError("a clause is withdrawn by its author")
                state, matched = WITHDRAWN, True
            elif clause.form == ClauseForm.ACCEPT and state != ACCEPTED:
                if mine:
                    raise InvalidFieldError("a clause is accepted by its addressee")
                state, matched = (WITHDRAWN if state == WITHDRAWN else ACCEPTED), True
        updated.append((raw, state))
    if not matched:
        what = "withdrawal" if clause.form == ClauseForm.WITHDRAW else "acceptance"
        raise InvalidFieldError(f"the {what} names no open clause of this channel")
    return updated


def clause_view(peer: str, proposal: Proposal, state: str, me: str) -> dict[str, Any]:
    """An off-the-record clause as `proposals` lists it: no notary, no signature."""
    digest = proposal.digest().hex()
    return {
        "id": digest,
        "digest": digest,
        "off_record": True,
        "from": proposal.author.name,
        "to": [a.name for a in proposal.addressees],
        "direction": "out" if proposal.author.name == me else "in",
        "title": proposal.title,
        "terms": list(proposal.terms),
        "status": state,
        "agreement": "understood" if state == ACCEPTED else "none",
        "agreement_note": "deniable: no notary entry, no signature; no record can prove it",
        "signature": "none (deniable)",
        "notary": None,
        "relay": None,
        "with": peer,
        "conditions": [],
        "allow_understood": [],
        "answers": None,
        "expires_at": None,
        "reveal_at": None,
        "history": [],
    }


def _after_kind(content: bytes) -> Reader:
    return Reader(content[1:], "off-the-record offer")


def _code(exc: RelayRefusedError) -> str:
    return exc.error.code if isinstance(exc.error, RelayRequestError) else ""
