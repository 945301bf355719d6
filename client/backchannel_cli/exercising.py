"""The participant's view of its exercise: brief, scenario clock, channels, injects (PRODUCT.md §7).

The relay says which exercise a profile plays in (`GET /v1/exercise`); this module keeps the
last answer (sealed, so scenario time and channels show offline too), routes a message through
the mediator the scenario names when there is no direct channel (blind forwarding), refuses one
to a role the scenario gives no channel to before anything is stored, and turns control's
injects into messages once their signature checks against the control key pinned on first use.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from backchannel import channels
from backchannel.control_copy import parse_public, seal
from backchannel.errors import BackchannelError
from backchannel.exercise import (
    Clock,
    Communique,
    Inject,
    Route,
    inject_body,
    scenario_time_text,
    sign_communique,
    verify_communique,
    verify_inject,
)
from backchannel.identity import IdentityPublic
from backchannel.keys import SigningPublicKey

from .errors import CliError, RelayRefusedError, RelayUnreachableError
from .localstore import Contact, Message
from .relay import RelayRequestError, b64, unb64

if TYPE_CHECKING:
    from .participant_api import ParticipantApi as Participant

CLASS_OF = {"otr": "off_the_record", "inject": "inject", "communique": "communique"}
"""A message kind's channel class (PROTOCOL.md §16.1); every other kind is `record`: signed and
attributable. An inject is control's own message, in no participant's class."""
EXERCISE_SECRET = "exercise"
CONTROL_SECRET = "control_key"


class Exercise:
    """Held by `Participant.exercise`; `view` is None outside an exercise."""

    def __init__(self, participant: Participant) -> None:
        self.participant = participant
        self.view: dict[str, Any] | None = self._stored()
        """The relay's last answer (read here, outside any transaction, so rendering a
        message inside one never opens a second)."""
        self._fetched = False

    async def refresh(self) -> dict[str, Any] | None:
        """Ask the relay (once per command unless asked again); offline, the last answer."""
        participant = self.participant
        view: dict[str, Any] | None
        try:
            view = await participant.authed(
                lambda: participant.relay.request("GET", "/v1/exercise")
            )
        except RelayRefusedError as exc:
            error = exc.error
            if not (isinstance(error, RelayRequestError) and error.code == "no_exercise"):
                raise
            view = None
        except RelayUnreachableError:
            self.view, self._fetched = self._stored(), True
            return self.view
        with participant.store.transaction() as db:
            if view is None:
                participant.store.delete_secret(db, EXERCISE_SECRET)
            else:
                participant.store.put_secret(db, EXERCISE_SECRET, json.dumps(view).encode())
        self.view, self._fetched = view, True
        return view

    async def ensure(self) -> dict[str, Any] | None:
        return self.view if self._fetched else await self.refresh()

    def _stored(self) -> dict[str, Any] | None:
        with self.participant.store.transaction() as db:
            raw = self.participant.store.get_secret(db, EXERCISE_SECRET)
        view: dict[str, Any] | None = json.loads(raw) if raw else None
        return view

    # --- channels -------------------------------------------------------------------------------

    async def via(self, to: str) -> str | None:
        """The mediator a message to `to` goes through, None for a direct one; a CliError when
        the scenario gives no channel to `to` at all."""
        route = self.route(await self.ensure(), to)
        if not route.direct and route.via is None:
            raise CliError(route.reason)
        return route.via

    def direct(self, peer: str) -> bool:
        """Whether the exercise (as last heard) lets us write to `peer` directly; True outside
        an exercise. For sealed-sender traffic, which the relay cannot check (PROTOCOL.md §16.1)."""
        return self.route(self.view, peer).direct

    def route(self, view: dict[str, Any] | None, to: str) -> Route:
        """How we reach `to` by the relay's `view`: the rule is the core's (`channels.reach`)."""
        me = self.participant.name
        if view is None:
            return channels.reach(None, me, to)
        roles = frozenset(str(role["name"]) for role in view["roles"])
        held = {peer: _route(channel) for peer, channel in view["channels"].items()}
        return channels.reach(channels.View(view["exercise"], roles, held), me, to)

    def control_sees(self, peer: str, channel_class: str) -> str:
        """What exercise control sees of `channel_class` between us and `peer` (PROTOCOL.md
        §16.1), by the exercise view as last heard. Outside an exercise, or for a relay that
        does not say: what the relay itself learns (a letter's envelope; a deniable message's
        existence), so the user is never told less than is true."""
        fallback = "existence" if channel_class == "off_the_record" else "envelope"
        if channel_class == "inject":
            return "content"  # control wrote it
        view = self.view
        sees = (view or {}).get("control_sees")
        if not sees:
            return fallback
        chosen = sees["peers"].get(peer) or sees["classes"]
        return str(chosen.get(channel_class, fallback))

    def letters(self, peer: str) -> str:
        """The class of our signed letters with `peer`: record or confidential (the scenario's
        `letters`, PROTOCOL.md §16.1); record outside an exercise."""
        channel = (self.view or {}).get("channels", {}).get(peer) or {}
        return str(channel.get("letters", "record"))

    async def letter_report(self, to: str, message_id: bytes, content: bytes) -> bytes | None:
        """What control is to be told of a letter, as much as its class lets control see
        (PROTOCOL.md §16.11), as the JSON body of its report, queued with the letter: with
        `content`, a copy sealed to the control encryption key, which must carry the signature
        of the control key pinned on first use. None for `nothing`, outside an exercise, or to
        someone outside it. Built from the exercise view as last heard, so offline too."""
        view = await self.ensure()
        if view is None or to not in {r["name"] for r in view["roles"]}:
            return None
        await self.via(to)  # the policy's refusal first: no channel, nothing to report
        channel_class = self.letters(to)
        sees = self.control_sees(to, channel_class)
        if sees == "nothing":
            return None
        body: dict[str, Any] = {"to": to, "message_id": b64(message_id)}
        if sees == "content":
            published = view.get("control_key") or {}
            try:
                public = parse_public(unb64(published["x25519"]), unb64(published["mlkem"]))
                public.verify(await self._control_key(), view["exercise"],
                              unb64(published["signature"]))  # fmt: skip
            except (BackchannelError, KeyError, TypeError, ValueError):
                raise CliError(
                    "the relay's control encryption key is missing or not signed by the "
                    "pinned control key: the letter is not sent",
                    "bad_control_key",
                ) from None
            body["copy"] = b64(seal(public, message_id, content))
        return json.dumps(body).encode()

    async def post_report(self, report: bytes) -> None:
        """Post a queued report (`letter_report`); the relay keeps a report sent again once."""
        participant = self.participant
        body = json.loads(report)
        await participant.authed(
            lambda: participant.relay.request("POST", "/v1/exercise/traffic", body)
        )

    async def report_channel(self, peer: str) -> None:
        """Tell control an off-the-record channel to `peer` is being opened, where the
        scenario lets it count them (`existence`): the relay keeps a count, never the pair."""
        if await self.ensure() is None or self.control_sees(peer, "off_the_record") != "existence":
            return
        participant = self.participant
        body = {"to": peer, "class": "off_the_record"}
        await participant.authed(
            lambda: participant.relay.request("POST", "/v1/exercise/traffic", body)
        )

    def describe(self, peer: str, kind: str, direction: str, verified: str) -> dict[str, Any]:
        """The class, control_sees, what is proven and what is only claimed of one message.

        Proven: whose identity key signed it (None when nothing checks, or deniable), whether
        it is deniable, the mediator it came through (the scenario's route to `peer`). Claimed:
        whom the signer speaks for, its role's title, which no key proves."""
        channel_class = self.letters(peer) if kind == "letter" else CLASS_OF.get(kind, "record")
        deniable = channel_class == "off_the_record"
        signer: str | None = None
        if kind == "inject":
            signer = "control" if verified == "signed by control" else None
        elif deniable:
            signer = None
        elif direction == "out":
            signer = self.participant.name
        elif verified in ("signed", "signed (key not pinned)") or verified.startswith("signed;"):
            signer = peer
        elif verified.startswith("signed by "):
            signer = verified.removeprefix("signed by ").split(";")[0].strip() or None
        view = self.view or {}
        channel = view.get("channels", {}).get(peer) or {}
        carried = not channel.get("direct", True) and channel_class not in ("inject", "communique")
        via = channel.get("via") if carried else None
        speaker = peer if direction == "in" else self.participant.name
        titles = {r["name"]: r["title"] for r in view.get("roles", [])}
        return {
            "class": channel_class,
            "control_sees": self.control_sees(peer, channel_class),
            "proven": {"signed_by": signer, "deniable": deniable, "via": via},
            "claimed": {"speaks_for": titles.get(speaker)},
        }

    # --- the clock ------------------------------------------------------------------------------

    def scenario_at(self, wall_ms: int) -> tuple[int, int] | None:
        """(scenario ms, UTC offset minutes) of a wall time, by the clock as last heard from
        the relay; recorded with a message when it is stored, never recomputed later."""
        view = self.view
        if view is None:
            return None
        clock = Clock.from_json(view["clock"])
        return clock.now(wall_ms), int(view["clock"]["utc_offset_minutes"])

    # --- injects --------------------------------------------------------------------------------

    async def take_injects(self) -> int:
        """Store the injects due by the relay's answer of this command (`ensure`: a caller that
        runs for long refreshes first) that are not stored yet; -> how many were new."""
        view = await self.ensure()
        if view is None:
            return 0
        fresh = self._take_communiques(view)
        if not view["injects"]:
            return fresh
        key = await self._control_key()
        store = self.participant.store
        with store.transaction() as db:
            for raw in view["injects"]:
                inject = Inject(
                    raw["number"], raw["at"], tuple(raw["to"]), raw["title"], raw["text"]
                )
                ident = hashlib.sha256(
                    f"inject {view['exercise']} {inject.number}".encode()
                ).hexdigest()[:32]
                if db.get(Message, ident) is not None:
                    continue
                try:
                    verify_inject(key, view["exercise"], inject, unb64(raw["signature"]))
                    verified = "signed by control"
                    body = inject_body(view["exercise"], inject)  # kept for export --all
                    store.keep_signed(db, ident, key.raw, body, unb64(raw["signature"]))
                except (BackchannelError, ValueError):
                    verified = "BAD SIGNATURE"
                when = scenario_time_text(inject.at_ms, view["clock"]["utc_offset_minutes"])
                store.add_message(
                    db, f"{inject.title} (scenario time {when})\n{inject.text}", id=ident,
                    direction="in", peer="control", kind="inject", sent_at=now_ms(),
                    stored_at=now_ms(), status="delivered", verified=verified,
                    in_reply_to=None, scenario_at=inject.at_ms,
                    scenario_offset=view["clock"]["utc_offset_minutes"],
                )  # fmt: skip
                fresh += 1
        return fresh

    def _take_communiques(self, view: dict[str, Any]) -> int:
        """Store the exercise's communiqués not stored yet (our own too, as sent); -> how many.
        The signature is checked against the author's pinned key where we have one, else the
        key the relay gives with it, and the message says which."""
        store, fresh, me = self.participant.store, 0, self.participant.name
        with store.transaction() as db:
            for raw in view.get("communiques", []):
                ident = hashlib.sha256(
                    f"communique {view['exercise']} {raw['number']}".encode()
                ).hexdigest()[:32]
                if db.get(Message, ident) is not None:
                    continue
                author = str(raw["author"])
                statement = Communique(view["exercise"], author, raw["at"], raw["text"])
                contact = db.get(Contact, author)
                pinned = contact is not None and contact.changed_identity is None
                try:
                    if author == me:
                        identity = self.participant.me.identity.public
                    elif pinned:
                        assert contact is not None
                        identity = IdentityPublic.from_bytes(contact.identity)
                    else:
                        identity = IdentityPublic.from_bytes(unb64(raw["identity"]))
                    verify_communique(identity.signing, statement, unb64(raw["signature"]))
                    verified = "signed" if author == me or pinned else "signed (key not pinned)"
                    signature = unb64(raw["signature"])  # kept for export --all (§14.8)
                    store.keep_signed(db, ident, identity.signing.raw, statement.body(), signature)
                except (BackchannelError, ValueError, TypeError):
                    verified = "BAD SIGNATURE"
                mine = author == me
                store.add_message(
                    db, statement.text, id=ident, direction="out" if mine else "in",
                    peer="all" if mine else author, kind="communique", sent_at=statement.at_ms,
                    stored_at=now_ms(), status="sent" if mine else "delivered",
                    verified=verified, in_reply_to=None, shown=mine,
                )  # fmt: skip
                fresh += 0 if mine else 1
        return fresh

    async def communique(self, text: str) -> dict[str, Any]:
        """Sign `text` as a communiqué and hand it to the relay for every role (and control)."""
        participant = self.participant
        view = await self.refresh()
        if view is None:
            raise CliError("a communiqué goes to the roles of an exercise, and this profile has "
                           "none", "no_exercise")  # fmt: skip
        statement = Communique(view["exercise"], participant.name, now_ms(), text)
        try:
            statement.check()
        except BackchannelError as exc:
            raise CliError(str(exc), "invalid_communique") from None
        signature = sign_communique(participant.me.identity.signing, statement)
        body = {"at": statement.at_ms, "text": text, "signature": b64(signature)}
        answer = await participant.authed(
            lambda: participant.relay.request("POST", "/v1/exercise/communiques", body)
        )
        await self.refresh()
        await self.take_injects()
        return {
            "number": answer["number"], "exercise": view["exercise"], "from": "me",
            "to": "all", "kind": "communique", "text": text, "sent_at": statement.at_ms,
            "class": "communique", "control_sees": self.control_sees("all", "communique"),
        }  # fmt: skip

    async def _control_key(self) -> SigningPublicKey:
        """The relay's control key, pinned on first use like the notary's."""
        participant = self.participant
        with participant.store.transaction() as db:
            pinned = participant.store.get_secret(db, CONTROL_SECRET)
        if pinned is None:
            info = await participant._call(participant.relay.info())
            try:
                pinned = unb64(info["control_key"])
            except (KeyError, TypeError, ValueError):
                raise CliError("the relay publishes no control key (/v1/info)") from None
            with participant.store.transaction() as db:
                participant.store.put_secret(db, CONTROL_SECRET, pinned)
        return SigningPublicKey.from_bytes(pinned)


def _route(channel: dict[str, Any]) -> Route:
    """A channel as the relay's view gives it (`{"direct": ..., "via": ...}`)."""
    via = channel.get("via")
    return Route(bool(channel["direct"]), None if via is None else str(via))


def now_ms() -> int:
    return int(time.time() * 1000)
