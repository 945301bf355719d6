"""Exercises on the relay: loading a scenario, its clock, its channel policy, its injects.

The scenario's rules are the core's (`backchannel.exercise`); this module keeps them in the
database and applies them. The policy is enforced here for identified traffic (a direct envelope
between roles the scenario does not connect is refused, and a forwarded one must go through the
mediator the scenario names), for everything the relay itself hands from one participant to
another (notary entries and content keys, prekey bundles), and for opening drops; clients
enforce it for sealed-sender traffic, whose set-up is identified traffic and so passes here
first. Injects are released by the scenario clock and signed with the relay's control key when
read.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError

from backchannel.control_copy import (
    CONTROL_KEY_SECRET_SIZE,
    ControlCopyError,
    ControlKeyPair,
    open_letter,
)
from backchannel.envelope import Envelope, Route
from backchannel.errors import BackchannelError
from backchannel.exercise import (
    MAX_COMMUNIQUES,
    Clock,
    Communique,
    Scenario,
    Visibility,
    parse_scenario,
    sign_inject,
    verify_communique,
)
from backchannel.exercise import Route as PolicyRoute
from backchannel.identity import IdentityPublic
from backchannel.keys import SigningKeyPair

from .errors import BadRequest, Conflict, Forbidden, NotFound
from .models import (
    CommuniqueRow,
    ControlCountRow,
    ControlTrafficRow,
    ExerciseRoleRow,
    ExerciseRow,
    Invite,
    Participant,
)
from .schedules import msel
from .store import ParticipantInfo, Store, add_invite

COMMUNIQUE_SKEW_MS = 10 * 60 * 1000
"""How far a communiqué's signing time may be from the relay's clock: no back-dating."""
ROLE_CACHE_SECONDS = 1.0
"""How stale this process's view of which names are roles may be (a scenario loaded by the
command line while the relay runs is enforced within this long)."""


@dataclass(frozen=True, slots=True)
class Loaded:
    scenario: Scenario
    invites: list[tuple[str, str]]
    """(role name, invite code) for each role no participant has registered yet."""
    bound: list[str]
    """The roles whose names were registered already: those participants now play them."""
    clock: dict[str, Any]
    """The clock as `status` shows it (with the scenario time now)."""
    expires_at: int
    """When the invites expire (Unix seconds)."""
    again: bool
    """The exercise was loaded before: its clock is unchanged and its invites are new ones."""


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


class Exercises:
    def __init__(self, store: Store, control_key: SigningKeyPair) -> None:
        self.store = store
        self.control_key = control_key
        self._roles: tuple[float, dict[str, str]] = (0.0, {})
        self._scenarios: dict[str, Scenario] = {}
        self._box: ControlKeyPair | None = None

    async def control_box(self) -> ControlKeyPair:
        """The control encryption key (PROTOCOL.md §16.11): made once per relay and kept like
        the control signing key; senders seal control copies to it."""
        if self._box is None:
            secret, _ = await self.store.meta_secret("control_box_key", CONTROL_KEY_SECRET_SIZE)
            self._box = ControlKeyPair.from_secret(secret)
        return self._box

    # --- control's side -------------------------------------------------------------------------

    async def load(self, source: str, invite_ttl: int) -> Loaded:
        """Create the exercise, its roles and an invite for each role nobody has registered
        yet, in one transaction: on any refusal nothing is created.

        A role whose name is registered already is bound to that participant (the order of the
        README: invites by hand, then the scenario); its kind must be the participant's role,
        or the load is refused naming both. Loading the same scenario again keeps the exercise
        and its clock and prints the roles still open, each with a new invite: the earlier
        unused invites for those names are revoked (only their hashes are kept, so they cannot
        be shown again), and every open role has exactly one invite that works, the last one
        printed.
        """
        scenario = _parse(source)
        names = [r.name for r in scenario.roles]
        expires_at = self.store.now() + invite_ttl
        async with self.store.write() as session:
            row = await session.get(ExerciseRow, scenario.name)
            if row is not None and _parse(row.source) != scenario:
                raise Conflict(
                    f"an exercise named {scenario.name!r} is loaded already, from another "
                    "scenario; load this one under another [exercise] name",
                    code="exercise_exists",
                )
            elsewhere = (
                await session.execute(
                    select(ExerciseRoleRow.name, ExerciseRoleRow.exercise).where(
                        ExerciseRoleRow.name.in_(names), ExerciseRoleRow.exercise != scenario.name
                    )
                )
            ).first()
            if elsewhere is not None:
                raise Conflict(
                    f"the role {elsewhere[0]!r} belongs to the exercise {elsewhere[1]!r} already",
                    code="role_taken",
                )
            found = await session.execute(
                select(Participant.name, Participant.role).where(Participant.name.in_(names))
            )
            registered: dict[str, str] = {name: kind for name, kind in found}
            for role in scenario.roles:
                kind = registered.get(role.name)
                if kind is not None and kind != role.kind:
                    raise Conflict(
                        f"{role.name} is registered as {_article(kind)}, but the scenario makes "
                        f"{role.name} {_article(role.kind)}; change that role's kind or name in "
                        "the scenario",
                        code="role_conflict",
                    )
            if row is None:
                now_ms = self.store.now_ms()
                clock = Clock.start(scenario, now_ms)
                session.add(
                    ExerciseRow(name=scenario.name, source=source, clock=_dump(clock),
                                loaded_at=now_ms)
                )  # fmt: skip
                await session.flush()
                session.add_all(ExerciseRoleRow(name=n, exercise=scenario.name) for n in names)
                try:
                    await session.flush()
                except IntegrityError:  # loaded by another process meanwhile
                    raise Conflict("a role belongs to another exercise already",
                                   code="role_taken") from None  # fmt: skip
            else:
                clock = Clock.from_json(_load(row.clock))
            open_roles = [r for r in scenario.roles if r.name not in registered]
            await session.execute(
                delete(Invite).where(
                    Invite.name.in_([r.name for r in open_roles]), Invite.used_at.is_(None)
                )
            )
            invites = [
                (r.name, add_invite(session, r.name, r.kind, expires_at)) for r in open_roles
            ]
        bound = [n for n in names if n in registered]
        view = _clock_json(scenario, clock, self.store.now_ms())
        return Loaded(scenario, invites, bound, view, expires_at, again=row is not None)

    async def names(self) -> list[str]:
        async with self.store.read() as session:
            return list(await session.scalars(select(ExerciseRow.name).order_by(ExerciseRow.name)))

    async def pick(self, name: str | None) -> str:
        """The exercise `name`, or the only one loaded."""
        names = await self.names()
        if name is not None:
            if name not in names:
                raise NotFound(f"no exercise named {name!r} is loaded", code="unknown_exercise")
            return name
        if len(names) != 1:
            raise BadRequest(
                "no exercise is loaded" if not names
                else f"several exercises are loaded ({', '.join(names)}); name one",
                code="which_exercise",
            )  # fmt: skip
        return names[0]

    async def clock(self, name: str) -> Clock:
        async with self.store.read() as session:
            row = await session.get(ExerciseRow, name)
        if row is None:
            raise NotFound(f"no exercise named {name!r} is loaded", code="unknown_exercise")
        return Clock.from_json(_load(row.clock))

    async def set_clock(self, name: str, change: str, value: float | int | None = None) -> Clock:
        """`pause`, `resume`, `set` (scenario ms) or `speed` (factor), as one transaction."""
        now = self.store.now_ms()
        async with self.store.write() as session:
            row = await session.get(ExerciseRow, name)
            if row is None:
                raise NotFound(f"no exercise named {name!r} is loaded", code="unknown_exercise")
            clock = Clock.from_json(_load(row.clock))
            try:
                if change == "pause":
                    clock = clock.pause(now)
                elif change == "resume":
                    clock = clock.resume(now)
                elif change == "set" and value is not None:
                    clock = clock.set(int(value), now)
                elif change == "speed" and value is not None:
                    clock = clock.with_speed(float(value), now)
                else:
                    raise BadRequest(f"unknown clock change {change!r}", code="invalid_field")
            except BackchannelError as exc:
                raise BadRequest(str(exc), code=exc.code) from None
            row.clock = _dump(clock)
        return clock

    async def status(self, name: str) -> dict[str, Any]:
        scenario = await self.scenario(name)
        clock = await self.clock(name)
        now = self.store.now_ms()
        scenario_now = clock.now(now)
        async with self.store.read() as session:
            registered = set(
                await session.scalars(
                    select(Participant.name).where(
                        Participant.name.in_([r.name for r in scenario.roles])
                    )
                )
            )
        return {
            "exercise": scenario.name,
            "title": scenario.title,
            "clock": _clock_json(scenario, clock, now),
            "control_sees": (scenario.visibility or Visibility({}, {})).to_json(),
            "communiques": [
                {k: v for k, v in c.items() if k in ("number", "author", "at", "text")}
                for c in await self.communiques(name)
            ],
            "roles": [
                {
                    "name": r.name,
                    "kind": r.kind,
                    "title": r.title,
                    "registered": r.name in registered,
                }
                for r in scenario.roles
            ],
            "injects": [
                {
                    "number": e.inject.number,
                    "at": e.inject.at_ms,
                    "to": list(e.inject.to),
                    "title": e.inject.title,
                    "delivered": e.delivered(scenario_now),
                    "status": e.state(scenario_now),
                    "due_at_wall": (
                        clock.wall_time_of(e.inject.at_ms, now)
                        if e.status != "skipped" else None
                    ),
                }
                for e in (await msel(self, name)).entries
            ],
        }

    # --- participants' side ---------------------------------------------------------------------

    async def scenario(self, name: str) -> Scenario:
        if name not in self._scenarios:
            async with self.store.read() as session:
                row = await session.get(ExerciseRow, name)
            if row is None:
                raise NotFound(f"no exercise named {name!r} is loaded", code="unknown_exercise")
            self._scenarios[name] = _parse(row.source)
        return self._scenarios[name]

    async def role_map(self) -> dict[str, str]:
        """Role name -> exercise, at most `ROLE_CACHE_SECONDS` old."""
        fetched_at, roles = self._roles
        if time.monotonic() - fetched_at > ROLE_CACHE_SECONDS:
            async with self.store.read() as session:
                rows = await session.execute(select(ExerciseRoleRow.name, ExerciseRoleRow.exercise))
                roles = dict(rows.tuples().all())
            self._roles = (time.monotonic(), roles)
        return roles

    async def view(self, name: str) -> dict[str, Any]:
        """What a role sees of its exercise: brief, clock, channels, and the injects due."""
        exercise = (await self.role_map()).get(name)
        if exercise is None:
            raise NotFound(f"{name} has no role in an exercise on this relay", code="no_exercise")
        scenario = await self.scenario(exercise)
        clock = await self.clock(exercise)
        role = scenario.role(name)
        assert role is not None
        now = self.store.now_ms()
        policy = scenario.policy
        others = [r.name for r in scenario.roles if r.name != name]
        schedule = await msel(self, exercise)
        return {
            "exercise": scenario.name,
            "title": scenario.title,
            "brief": scenario.brief,
            "role": {
                "name": role.name,
                "kind": role.kind,
                "title": role.title,
                "brief": role.brief,
            },
            "roles": [{"name": r.name, "kind": r.kind, "title": r.title} for r in scenario.roles],
            "clock": _clock_json(scenario, clock, now),
            "control_key": await self._published_key(scenario.name),
            "channels": {
                other: {
                    "direct": route.direct,
                    "via": route.via,
                    "letters": scenario.letters(name, other),
                }
                for other in others
                if (route := policy.route(name, other)).direct or route.via
            },
            "control_sees": {
                "classes": (scenario.visibility or Visibility({}, {})).to_json()["classes"],
                "peers": {
                    other: scenario.control_sees(name, other)
                    for other in others
                    if (route := policy.route(name, other)).direct or route.via
                },
            },
            "communiques": await self.communiques(scenario.name),
            "injects": [
                {
                    "number": i.number,
                    "at": i.at_ms,
                    "to": list(i.to),
                    "title": i.title,
                    "text": i.text,
                    "signature": _b64(sign_inject(self.control_key, scenario.name, i)),
                }
                for i in schedule.due(role, clock.now(now))  # as control runs it: `msel`
            ],
        }

    async def _published_key(self, exercise: str) -> dict[str, str]:
        public = (await self.control_box()).public
        return {"x25519": _b64(public.dh.raw), "mlkem": _b64(public.kem.raw),
                "signature": _b64(public.sign(self.control_key, exercise))}  # fmt: skip

    async def report(self, sender: ParticipantInfo, to: str, message_id: bytes | None,
                     copy: bytes | None) -> dict[str, str]:  # fmt: skip
        """Keep what control may see of one letter from `sender` to `to`, and no more: the
        class and `control_sees` are the scenario's for the pair, never the sender's word.
        `content`: the row and its sealed copy (required); `envelope`: the row; `existence`:
        the class's count goes up; `nothing`: nothing. A copy control may not read is refused.
        No `message_id`: an off-the-record channel `sender` opens to `to`, at most counted."""
        roles = await self.role_map()
        exercise = roles.get(sender.name)
        if exercise is None:
            raise NotFound(f"{sender.name} has no role in an exercise on this relay",
                           code="no_exercise")  # fmt: skip
        if roles.get(to) != exercise or to == sender.name:
            raise BadRequest(f"{to!r} is no other role of your exercise", code="unknown_role")
        scenario = await self.scenario(exercise)
        role = scenario.role(sender.name)
        if role is None or role.kind == "observer":
            raise Forbidden("an observer sends nothing, letters included", code="role_forbids")
        otr = message_id is None
        channel_class = "off_the_record" if otr else scenario.letters(sender.name, to)
        sees = scenario.control_sees(sender.name, to)[channel_class]
        if sees == "content" and copy is None:
            raise BadRequest(f"control sees the content of {channel_class} letters to {to}: "
                             "send the control copy", code="copy_required")  # fmt: skip
        if sees != "content" and copy is not None:
            raise BadRequest(f"control sees only {sees} of {channel_class} letters to {to}: "
                             "send no copy", code="copy_refused")  # fmt: skip
        told = {"class": channel_class, "control_sees": sees}
        if sees == "nothing":
            return told
        now = self.store.now_ms()
        for _attempt in range(5):  # two first letters at once both insert the count: one retries
            try:
                async with self.store.write() as session:
                    if sees == "existence":
                        row = await session.get(ControlCountRow, (exercise, channel_class))
                        if row is None:
                            session.add(
                                ControlCountRow(
                                    exercise=exercise, channel_class=channel_class, count=1
                                )
                            )
                        else:
                            row.count += 1
                    elif message_id is not None and await session.scalar(
                        select(ControlTrafficRow.id).where(
                            ControlTrafficRow.exercise == exercise,
                            ControlTrafficRow.sender == sender.name,
                            ControlTrafficRow.message_id == message_id,
                        )
                    ) is None:  # a report sent again (its answer lost) is kept once
                        session.add(ControlTrafficRow(
                            exercise=exercise, channel_class=channel_class, sender=sender.name,
                            recipient=to, at=now, message_id=message_id, copy=copy,
                        ))  # fmt: skip
                return told
            except IntegrityError:
                continue
        raise Conflict("too many letters at once; send it again", code="busy")

    async def traffic(
        self, exercise: str, party: str | None = None, newest: int | None = None
    ) -> dict[str, Any]:
        """What control may see of the exercise's letters (`exercise traffic`): each class's
        `control_sees` with the rows and counts kept for it, each copy opened and its
        signature checked against its author's identity key. With `party`, only the letters
        to or from it; with `newest`, only the newest that many (in order)."""
        scenario = await self.scenario(exercise)
        box = await self.control_box()
        query = select(ControlTrafficRow).where(ControlTrafficRow.exercise == exercise)
        if party is not None:
            query = query.where(
                or_(ControlTrafficRow.sender == party, ControlTrafficRow.recipient == party)
            )
        async with self.store.read() as session:
            if newest is None:
                rows = list(await session.scalars(query.order_by(ControlTrafficRow.id)))
            else:
                rows = list(await session.scalars(
                    query.order_by(ControlTrafficRow.id.desc()).limit(newest)
                ))[::-1]  # fmt: skip
            counts = {r.channel_class: r.count for r in await session.scalars(
                select(ControlCountRow).where(ControlCountRow.exercise == exercise)
            )}  # fmt: skip
            found = await session.execute(
                select(Participant.name, Participant.identity)
                .where(Participant.name.in_({r.sender for r in rows}))
            )  # fmt: skip
            keys: dict[str, bytes] = {name: key for name, key in found.all()}
        letters: list[dict[str, Any]] = []
        for r in rows:
            entry: dict[str, Any] = {"class": r.channel_class, "from": r.sender,
                                     "to": r.recipient, "at": r.at}  # fmt: skip
            if r.copy is not None:
                entry["message_id"] = r.message_id.hex()
                try:
                    if r.sender not in keys:
                        raise ControlCopyError(f"{r.sender} is no longer registered")
                    letter = open_letter(
                        box, r.message_id, r.copy, IdentityPublic.from_bytes(keys[r.sender])
                    )
                    entry |= {"text": letter.text, "sent_at": letter.sent_at_ms,
                              "verified": "signed"}  # fmt: skip
                except BackchannelError as exc:
                    entry |= {"text": None, "verified": f"unreadable: {exc}"}
            letters.append(entry)
        classes = (scenario.visibility or Visibility({}, {})).to_json()
        return {"exercise": exercise, "control_sees": classes, "letters": letters,
                "counts": counts}  # fmt: skip

    async def communique(self, author: ParticipantInfo, at: int, text: str, sig: bytes) -> int:
        """Keep a communiqué for every role of the author's exercise; -> its number. Observers
        send nothing; the signature must be the author's; at most `MAX_COMMUNIQUES`."""
        exercise = (await self.role_map()).get(author.name)
        if exercise is None:
            raise NotFound(f"{author.name} has no role in an exercise on this relay",
                           code="no_exercise")  # fmt: skip
        scenario = await self.scenario(exercise)
        role = scenario.role(author.name)
        if role is None or role.kind == "observer":
            raise Forbidden("an observer sends nothing, communiqués included", code="role_forbids")
        now = self.store.now_ms()
        if abs(at - now) > COMMUNIQUE_SKEW_MS:
            raise BadRequest("field 'at' must be the time of signing, within 10 minutes of the "
                             "relay's clock", code="invalid_field")  # fmt: skip
        statement = Communique(exercise, author.name, at, text)
        try:
            statement.check()
            verify_communique(IdentityPublic.from_bytes(author.identity).signing, statement, sig)
        except BackchannelError as exc:
            raise BadRequest(f"the communiqué: {exc}", code="invalid_communique") from None
        for _attempt in range(5):  # two at once may take the same number: the later retries
            try:
                async with self.store.write() as session:
                    count = len(list(await session.scalars(
                        select(CommuniqueRow.number).where(CommuniqueRow.exercise == exercise)
                    )))  # fmt: skip
                    if count >= MAX_COMMUNIQUES:
                        raise Forbidden(
                            f"the exercise {exercise} holds {MAX_COMMUNIQUES} communiqués, "
                            "its most", code="communiques_full",
                        )  # fmt: skip
                    session.add(CommuniqueRow(
                        exercise=exercise, number=count + 1, author=author.name, at=at,
                        text=text, signature=sig, received_at=now,
                    ))  # fmt: skip
                return count + 1
            except IntegrityError:
                continue
        raise Conflict("too many communiqués at once; send it again", code="busy")

    async def communiques(self, exercise: str) -> list[dict[str, Any]]:
        """Every communiqué of the exercise, in order, with its author's identity key."""
        async with self.store.read() as session:
            rows = list(await session.scalars(
                select(CommuniqueRow).where(CommuniqueRow.exercise == exercise)
                .order_by(CommuniqueRow.number)
            ))  # fmt: skip
            found = await session.execute(
                select(Participant.name, Participant.identity)
                .where(Participant.name.in_({r.author for r in rows}))
            )  # fmt: skip
            keys: dict[str, bytes] = {name: key for name, key in found.all()}
        return [
            {"number": r.number, "author": r.author, "at": r.at, "text": r.text,
             "signature": _b64(r.signature),
             "identity": _b64(keys[r.author]) if r.author in keys else None}
            for r in rows
        ]  # fmt: skip

    async def check(self, envelopes: Sequence[Envelope]) -> None:
        """Refuse (403 `policy_forbids`) what the exercises' policies do not allow."""
        roles = await self.role_map()
        if not roles:
            return
        for index, envelope in enumerate(envelopes):
            assert envelope.sender is not None
            if envelope.route == Route.DIRECT:
                await self._allow(roles, index, envelope.sender, envelope.recipient)
                continue
            try:
                inner = Envelope.from_bytes(envelope.ciphertext)
            except BackchannelError as exc:
                raise BadRequest(f"envelopes[{index}]: the forwarded envelope: {exc}",
                                 code="invalid_envelope") from None  # fmt: skip
            if inner.route != Route.DIRECT or inner.sender is None:
                raise BadRequest(f"envelopes[{index}]: a forwarded envelope is a direct one",
                                 code="invalid_envelope")  # fmt: skip
            if inner.sender == envelope.sender:  # its author hands it to the carrier
                carrier = envelope.recipient
            elif inner.recipient == envelope.recipient:  # the carrier hands it on
                carrier = envelope.sender
            else:
                raise BadRequest(
                    f"envelopes[{index}]: a forwarded envelope comes from its author or goes "
                    "to its recipient", code="invalid_envelope",
                )  # fmt: skip
            await self._allow(roles, index, envelope.sender, envelope.recipient)
            await self._allow(roles, index, inner.sender, inner.recipient, carrier)

    async def may_write(
        self,
        sender: str,
        recipients: Iterable[str],
        what: str,
        via: str | None = None,
        advise: bool = False,
    ) -> None:
        """Refuse (403 `policy_forbids`, naming the pair) unless `sender` may write to each of
        `recipients` directly, by the rule for a direct letter, or, given `via`, the policy
        routes `sender` to them through exactly that mediator, to whom `sender` may write
        directly. For what the relay itself holds for them: a notary entry, a content key (no
        `via`). What passes through a mediator reaches them from the mediator; the relay shows
        it to them only as a link (`Notary.log`). `advise`: the refusal names the mediator to
        give as `via`. Writing to oneself reaches nobody and passes."""
        roles = await self.role_map()
        if not roles:
            return
        for recipient in recipients:
            if recipient == sender:
                continue
            route = await self._route(roles, sender, recipient)
            if route is None or route.direct:
                continue
            if via is not None and route.via == via:
                carrier = await self._route(roles, sender, via)
                if carrier is None or carrier.direct:
                    continue
            advice = ""
            if advise and route.via is not None:
                advice = f", or its mediator as 'via': {route.via} (--via {route.via})"
            elif via is not None:
                advice = f", or the pair's own mediator ({via} is not it)"
            raise Forbidden(f"{route.reason}; {what} needs a direct channel{advice}",
                            code="policy_forbids")  # fmt: skip

    async def direct(self, sender: str, recipient: str) -> bool:
        """Whether `sender` may write to `recipient` directly (so always to oneself, and outside
        every exercise): whether the relay may show `recipient` what `sender` notarised."""
        if sender == recipient:
            return True
        roles = await self.role_map()
        if not roles:
            return True
        route = await self._route(roles, sender, recipient)
        return route is None or route.direct

    async def may_reach(self, sender: str, recipient: str, what: str) -> None:
        """Refuse (403 `policy_forbids`) unless `sender` may write to `recipient` at all,
        directly or through the scenario's mediator (whose carried envelope is encrypted to
        `recipient`, so needs `recipient`'s prekeys just the same)."""
        roles = await self.role_map()
        if not roles:
            return
        route = await self._route(roles, sender, recipient)
        if route is not None and not route.direct and route.via is None:
            raise Forbidden(f"{route.reason}; {what}", code="policy_forbids")

    async def has_direct_channel(self, name: str) -> bool:
        """Whether `name` may write directly to anyone (always, outside every exercise): what an
        off-the-record channel needs, whose drops the relay cannot tie to a pair."""
        exercise = (await self.role_map()).get(name)
        if exercise is None:
            return True
        scenario = await self.scenario(exercise)
        return any(
            scenario.policy.route(name, other.name).direct
            for other in scenario.roles
            if other.name != name
        )

    async def _route(
        self, roles: dict[str, str], sender: str, recipient: str
    ) -> PolicyRoute | None:
        """How the policy lets `sender` reach `recipient`; None when neither is a role."""
        mine, theirs = roles.get(sender), roles.get(recipient)
        if mine is None and theirs is None:
            return None
        if mine != theirs or mine is None:
            return PolicyRoute(False, reason=f"{sender} and {recipient} are not roles of one "
                               "exercise")  # fmt: skip
        return (await self.scenario(mine)).policy.route(sender, recipient)

    async def _allow(
        self, roles: dict[str, str], index: int, sender: str, recipient: str,
        carrier: str | None = None,
    ) -> None:  # fmt: skip
        route = await self._route(roles, sender, recipient)
        if route is None or route.direct or (carrier is not None and route.via == carrier):
            return
        advice = f"; send it through {route.via}" if route.via and carrier is None else ""
        raise Forbidden(f"envelopes[{index}]: {route.reason}{advice}", code="policy_forbids")


def _parse(source: str) -> Scenario:
    try:
        return parse_scenario(source)
    except BackchannelError as exc:
        raise BadRequest(str(exc), code=exc.code) from None


def _dump(clock: Clock) -> str:
    return json.dumps(clock.to_json())


def _load(raw: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(raw)
    return loaded


def _clock_json(scenario: Scenario, clock: Clock, wall_ms: int) -> dict[str, Any]:
    return {
        **clock.to_json(),
        "scenario_now": clock.now(wall_ms),
        "wall_now": wall_ms,
        "utc_offset_minutes": scenario.offset_minutes,
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
