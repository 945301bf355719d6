"""Exercise control's changes and views, shared by the HTTP API (`control_api.py`) and the
command line (`backchannel-relay exercise ...`): the page and the CLI are views of these.

Every change is recorded in `control_actions` (who, when, what) in the transaction that makes
it, and the injects' schedule is computed from that log (`backchannel.msel`), so several
controllers, on several relay processes sharing a database, see the same schedule and each
other's actions. Nothing here is cached that another process could change: the schedule a
process keeps is checked against the newest inject action in the store on every read.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backchannel.errors import BackchannelError
from backchannel.exercise import MAX_TIME_MS, MIN_TIME_MS, Clock, scenario_time_text
from backchannel.msel import (
    Action,
    Add,
    Edit,
    MselError,
    Release,
    Skip,
    action_detail,
    action_kind,
)
from backchannel.proposals import EntryKind

from .errors import BadRequest, Conflict, NotFound, RelayError
from .exercises import Exercises, _clock_json
from .models import (
    CommuniqueRow,
    ControlActionRow,
    ControlCountRow,
    ControlTrafficRow,
    EnvelopeRow,
    ExerciseRow,
    Invite,
    NotaryAddresseeRow,
    NotaryEntryRow,
    Participant,
)
from .schedules import msel, row_detail, schedule_in
from .store import Store, add_invite

MAX_ACTIONS = 20_000
"""Control actions one exercise keeps; then 409 `actions_full` (a day of clicks is far less)."""
MAX_DETAIL_BYTES = 20 * 1024
NEWEST_ACTIONS = 50
"""Actions `state` shows, newest first."""
NEWEST_LETTERS = 200
NEWEST_DEADLINES = 200
CLOCK_CHANGES = ("pause", "resume", "set", "speed")


# --- the schedule (kept in `schedules.py`, below `exercises` too) -------------------------------


def inject_json(entry: Any, scenario_ms: int, offset_minutes: int) -> dict[str, Any]:
    inject = entry.inject
    return {
        "number": inject.number,
        "at": inject.at_ms,
        "scenario_time": scenario_time_text(inject.at_ms, offset_minutes),
        "to": list(inject.to),
        "title": inject.title,
        "text": inject.text,
        "status": entry.state(scenario_ms),
        "released_at": entry.released_at,
        "by": entry.by,
        "edited_by": entry.edited_by,
        "added": entry.added,
    }


# --- recording ----------------------------------------------------------------------------------


async def _locked(session: AsyncSession, name: str) -> ExerciseRow:
    """The exercise's row, locked until the transaction ends (PostgreSQL: `FOR UPDATE`; SQLite
    serialises writers anyway): two controllers' changes to one exercise go one after the
    other, so the second sees the first's."""
    row = await session.get(ExerciseRow, name, with_for_update=True)
    if row is None:
        raise NotFound(f"no exercise named {name!r} is loaded", code="unknown_exercise")
    return row


async def _record(
    session: AsyncSession, exercise: str, by: str, action: str, detail: dict[str, Any], now: int
) -> ControlActionRow:
    text = json.dumps(detail, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode()) > MAX_DETAIL_BYTES:
        raise BadRequest(f"this change is larger than {MAX_DETAIL_BYTES} bytes as recorded; "
                         "shorten the text", code="too_large")  # fmt: skip
    count = await session.scalar(
        select(func.count(ControlActionRow.id)).where(ControlActionRow.exercise == exercise)
    )
    if (count or 0) >= MAX_ACTIONS:
        raise Conflict(f"the exercise {exercise} has recorded {MAX_ACTIONS} control actions, "
                       "its most", code="actions_full")  # fmt: skip
    row = ControlActionRow(exercise=exercise, at=now, by=by, action=action, detail=text)
    session.add(row)
    await session.flush()
    return row


def action_json(row: ControlActionRow) -> dict[str, Any]:
    return {"id": row.id, "at": row.at, "by": row.by, "action": row.action,
            "detail": row_detail(row)}  # fmt: skip


# --- changes ------------------------------------------------------------------------------------


async def change_clock(
    exercises: Exercises, name: str, change: str, value: float | int | None, by: str
) -> dict[str, Any]:
    """`pause`, `resume`, `set` (scenario ms) or `speed`, through `Exercises.set_clock`, then
    recorded; -> the clock as `state` shows it."""
    if change not in CLOCK_CHANGES:
        raise BadRequest(f"the clock change is one of {', '.join(CLOCK_CHANGES)}",
                         code="invalid_field")  # fmt: skip
    if change == "set" and (value is None or not MIN_TIME_MS <= value < MAX_TIME_MS):
        raise BadRequest("the time must be between the years 2 and 9998", code="invalid_field")
    async with exercises.store.read() as session:  # refuse before changing when the log is full
        count = await session.scalar(
            select(func.count(ControlActionRow.id)).where(ControlActionRow.exercise == name)
        )
    if (count or 0) >= MAX_ACTIONS:
        raise Conflict(f"the exercise {name} has recorded {MAX_ACTIONS} control actions, "
                       "its most", code="actions_full")  # fmt: skip
    clock = await exercises.set_clock(name, change, value)
    now = exercises.store.now_ms()
    detail: dict[str, Any] = {"change": change, **clock.to_json(), "scenario_now": clock.now(now)}
    if value is not None:
        detail["value"] = value
    async with exercises.store.write() as session:
        await _record(session, name, by, "clock", detail, now)
    return clock_view(exercises, await exercises.scenario(name), clock, now)


def clock_view(exercises: Exercises, scenario: Any, clock: Clock, now: int) -> dict[str, Any]:
    view = _clock_json(scenario, clock, now)
    view["scenario_time"] = scenario_time_text(view["scenario_now"], scenario.offset_minutes)
    return view


async def _inject_change(exercises: Exercises, name: str, by: str, make: Any) -> dict[str, Any]:
    """Apply the action `make(schedule, scenario_now, wall_now)` builds, under the exercise's
    lock, and record it; -> the inject as it now stands."""
    scenario = await exercises.scenario(name)
    async with exercises.store.write() as session:
        row = await _locked(session, name)
        now = exercises.store.now_ms()
        scenario_now = Clock.from_json(json.loads(row.clock)).now(now)
        current = await schedule_in(exercises, session, name)
        action: Action = make(current, scenario_now, now)
        try:
            changed = current.apply(action, scenario_now)
        except MselError as exc:
            raise _refusal(exc) from None
        await _record(session, name, by, action_kind(action),
                      action_detail(action, scenario_now), now)  # fmt: skip
    entry = changed.entry(action.number)
    return inject_json(entry, scenario_now, scenario.offset_minutes)


def _refusal(exc: BackchannelError) -> RelayError:
    if exc.code == "inject_done":
        return Conflict(str(exc), code=exc.code)
    if exc.code == "unknown_inject":
        return NotFound(str(exc), code=exc.code)
    if exc.code == "injects_full":
        return Conflict(str(exc), code=exc.code)
    return BadRequest(str(exc), code=exc.code)


async def release(exercises: Exercises, name: str, number: int, by: str) -> dict[str, Any]:
    """Deliver a scheduled inject now: at the current scenario time, signed as such."""
    return await _inject_change(
        exercises, name, by, lambda _m, scenario_now, now: Release(number, scenario_now, by, now)
    )


async def skip(exercises: Exercises, name: str, number: int, by: str) -> dict[str, Any]:
    """Never deliver a scheduled inject."""
    return await _inject_change(exercises, name, by, lambda _m, _s, now: Skip(number, by, now))


async def edit(
    exercises: Exercises, name: str, number: int, by: str,
    title: str | None = None, text: str | None = None, at: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Change a scheduled inject's title, text or scenario time (its number stays)."""
    return await _inject_change(
        exercises, name, by, lambda _m, _s, now: Edit(number, by, now, title, text, at)
    )


async def add(
    exercises: Exercises, name: str, by: str, at: int, to: list[str], title: str, text: str
) -> dict[str, Any]:
    """A new inject, numbered after the highest."""
    return await _inject_change(
        exercises, name, by,
        lambda m, _s, now: Add(m.next_number(), at, tuple(to), title, text, by, now),
    )  # fmt: skip


async def invite(
    exercises: Exercises, name: str, role_name: str, by: str, ttl: int
) -> dict[str, Any]:
    """A fresh invite for a role nobody has registered; its earlier unused ones stop working.
    The log records that an invite was issued, never its code."""
    scenario = await exercises.scenario(name)
    role = scenario.role(role_name)
    if role is None:
        raise NotFound(f"{role_name[:64]!r} is no role of the exercise {name}",
                       code="unknown_role")  # fmt: skip
    expires_at = exercises.store.now() + ttl
    async with exercises.store.write() as session:
        await _locked(session, name)
        taken = await session.scalar(select(Participant.id).where(Participant.name == role.name))
        if taken is not None:
            raise Conflict(f"{role.name} is registered already", code="registered")
        await session.execute(
            delete(Invite).where(Invite.name == role.name, Invite.used_at.is_(None))
        )
        code = add_invite(session, role.name, role.kind, expires_at)
        await _record(session, name, by, "invite", {"role": role.name, "expires_at": expires_at},
                      exercises.store.now_ms())  # fmt: skip
    return {"exercise": name, "role": role.name, "invite": code, "expires_at": expires_at}


# --- views --------------------------------------------------------------------------------------


async def actions(exercises: Exercises, name: str, newest: int | None = None) -> list[Any]:
    """The log, oldest first (with `newest`, only the newest that many)."""
    await exercises.scenario(name)
    query = select(ControlActionRow).where(ControlActionRow.exercise == name)
    async with exercises.store.read() as session:
        if newest is None:
            rows = list(await session.scalars(query.order_by(ControlActionRow.id)))
        else:
            rows = list(await session.scalars(
                query.order_by(ControlActionRow.id.desc()).limit(newest)
            ))[::-1]  # fmt: skip
    return [action_json(r) for r in rows]


async def version(exercises: Exercises, name: str) -> int:
    """A sum of counters that only grow, so it grows whenever the page must redraw: the newest
    action's id, the registered roles, the traffic rows and counts, the communiqués. The clock's
    own ticking the page computes itself."""
    scenario = await exercises.scenario(name)
    async with exercises.store.read() as session:
        counters = [
            await session.scalar(
                select(func.max(ControlActionRow.id)).where(ControlActionRow.exercise == name)
            ),
            await session.scalar(
                select(func.count(Participant.id)).where(
                    Participant.name.in_([r.name for r in scenario.roles])
                )
            ),
            await session.scalar(
                select(func.max(ControlTrafficRow.id)).where(ControlTrafficRow.exercise == name)
            ),
            await session.scalar(
                select(func.sum(ControlCountRow.count)).where(ControlCountRow.exercise == name)
            ),
            await session.scalar(
                select(func.count()).select_from(CommuniqueRow).where(
                    CommuniqueRow.exercise == name
                )
            ),
        ]
    return sum(int(c or 0) for c in counters)


async def roles(exercises: Exercises, name: str) -> list[dict[str, Any]]:
    scenario = await exercises.scenario(name)
    names = [r.name for r in scenario.roles]
    now = exercises.store.now()
    async with exercises.store.read() as session:
        found = await session.execute(
            select(Participant.name, Participant.registered_at).where(Participant.name.in_(names))
        )
        registered = {n: at for n, at in found.all()}
        invited = set(await session.scalars(
            select(Invite.name).where(
                Invite.name.in_(names), Invite.used_at.is_(None), Invite.expires_at >= now
            )
        ))  # fmt: skip
    return [
        {
            "name": r.name,
            "kind": r.kind,
            "title": r.title,
            "registered": r.name in registered,
            "registered_at": registered[r.name] * 1000 if r.name in registered else None,
            "invite_open": r.name not in registered and r.name in invited,
        }
        for r in scenario.roles
    ]


async def injects(exercises: Exercises, name: str) -> list[dict[str, Any]]:
    """The schedule as control sees it, in delivery order."""
    scenario = await exercises.scenario(name)
    clock = await exercises.clock(name)
    scenario_now = clock.now(exercises.store.now_ms())
    current = await msel(exercises, name)
    return [inject_json(e, scenario_now, scenario.offset_minutes) for e in current.entries]


async def deadlines(exercises: Exercises, name: str) -> list[dict[str, Any]]:
    """Proposals of the exercise's roles still open with an expiry (the newest
    `NEWEST_DEADLINES`), each naming only the addressees whose pair's letter class shows
    control the envelope or more; one that would name none is left out. `via` names the
    mediator of a mediated one: a simultaneous exchange's offers are such (the relay cannot
    tell an exchange offer from another mediated proposal: their reveal mode is sealed). The
    deadline in scenario time is where the clock will be at the wall-time expiry at the
    current speed (a pause or a set moves it)."""
    scenario = await exercises.scenario(name)
    clock = await exercises.clock(name)
    now = exercises.store.now_ms()
    scenario_now = clock.now(now)
    async with exercises.store.read() as session:
        found = await session.execute(
            select(Participant.id, Participant.name).where(
                Participant.name.in_([r.name for r in scenario.roles])
            )
        )
        names: dict[int, str] = {k: v for k, v in found.all()}
        if not names:
            return []
        open_ = list(await session.scalars(
            select(NotaryEntryRow).where(
                NotaryEntryRow.kind == EntryKind.COMMITMENT,
                NotaryEntryRow.submitter_id.in_(list(names)),
                NotaryEntryRow.expires_at_ms > now,
            ).order_by(NotaryEntryRow.seq.desc()).limit(NEWEST_DEADLINES)
        ))  # fmt: skip
        subjects = [row.subject for row in open_]
        decided = set(await session.scalars(
            select(NotaryEntryRow.subject).where(
                NotaryEntryRow.subject.in_(subjects),
                NotaryEntryRow.kind.in_([EntryKind.ACCEPTANCE, EntryKind.WITHDRAWAL]),
            )
        ))  # fmt: skip
        addressed: dict[bytes, list[int]] = {}
        for subject, who in await session.execute(
            select(NotaryAddresseeRow.subject, NotaryAddresseeRow.participant_id).where(
                NotaryAddresseeRow.subject.in_(subjects)
            )
        ):
            addressed.setdefault(subject, []).append(who)
    shown = []
    for row in open_:
        author = names[row.submitter_id]
        if row.subject in decided:
            continue
        to = sorted(
            names[who]
            for who in addressed.get(row.subject, [])
            if who in names and _sees_pair(scenario, author, names[who])
        )
        if not to:
            continue
        deadline = scenario_now + int((row.expires_at_ms - now) * clock.speed)
        shown.append({
            "kind": "proposal", "id": row.subject.hex(), "from": author, "to": to,
            "via": names.get(row.mediator_id) if row.mediator_id is not None else None,
            "deadline": deadline, "deadline_wall": row.expires_at_ms,
            "scenario_time": scenario_time_text(deadline, scenario.offset_minutes),
        })  # fmt: skip
    return shown


def _sees_pair(scenario: Any, author: str, addressee: str) -> bool:
    """Whether control sees who writes to whom between these two: the envelope or more of the
    pair's letter class (a proposal is a signed letter between them)."""
    sees = scenario.control_sees(author, addressee).get(scenario.letters(author, addressee))
    return sees in ("envelope", "content")


async def state(exercises: Exercises, name: str) -> dict[str, Any]:
    """Everything the control page shows but the relay's health (the API adds it)."""
    scenario = await exercises.scenario(name)
    clock = await exercises.clock(name)
    now = exercises.store.now_ms()
    newest = await actions(exercises, name, NEWEST_ACTIONS)
    return {
        "exercise": scenario.name,
        "title": scenario.title,
        "version": await version(exercises, name),
        "roles": await roles(exercises, name),
        "clock": clock_view(exercises, scenario, clock, now),
        "injects": await injects(exercises, name),
        "traffic": await exercises.traffic(name, newest=NEWEST_LETTERS),
        "deadlines": await deadlines(exercises, name),
        "actions": newest[::-1],
    }


async def store_health(store: Store, data_dir: Path) -> dict[str, Any]:
    """Envelopes waiting and the disk free under a SQLite store (None on PostgreSQL, whose
    disk is the database server's): what any process on the store can measure."""
    async with store.read() as session:
        queued = await session.scalar(select(func.count()).select_from(EnvelopeRow))
    disk: int | None = None
    kind = store.engine.dialect.name
    if kind == "sqlite":
        try:
            disk = (await asyncio.to_thread(shutil.disk_usage, data_dir)).free
        except OSError:
            disk = None
    return {"queued_envelopes": int(queued or 0), "disk_free_bytes": disk, "store": kind}
