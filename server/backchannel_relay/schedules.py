"""Each exercise's inject schedule, computed from the control actions logged for it.

Both `exercises` (a status and a role's view show the injects due) and `control` (which changes
the schedule) read it, so it lives below both. It is replayed from `control_actions`
(`backchannel.msel`), so every relay process sharing a database computes the same one; the copy a
process keeps is checked against the newest inject action in the store on every read.
"""

from __future__ import annotations

import json
import weakref
from collections import OrderedDict
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backchannel.exercise import Scenario
from backchannel.msel import INJECT_ACTIONS, Msel, action_from, schedule

from .models import ControlActionRow
from .store import Store

MAX_CACHED = 64
"""Schedules a process keeps (one per exercise), each checked against the store when read."""


class Scenarios(Protocol):
    """What a schedule needs of `exercises.Exercises`, named by shape (that module imports this)."""

    store: Store

    async def scenario(self, name: str) -> Scenario: ...


Kept = OrderedDict[str, tuple[tuple[int, int], Msel]]
_schedules: weakref.WeakKeyDictionary[Scenarios, Kept] = weakref.WeakKeyDictionary()
"""Per `Exercises` (one per relay process or command): exercise -> (the newest inject action's
id and their count, the schedule they make)."""


def row_detail(row: ControlActionRow) -> dict[str, Any]:
    """A logged action's detail (`{}` when it is not a JSON object)."""
    try:
        loaded = json.loads(row.detail)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


async def _inject_rows(session: AsyncSession, exercise: str) -> list[ControlActionRow]:
    return list(await session.scalars(
        select(ControlActionRow).where(
            ControlActionRow.exercise == exercise, ControlActionRow.action.in_(INJECT_ACTIONS)
        ).order_by(ControlActionRow.id)
    ))  # fmt: skip


async def schedule_in(exercises: Scenarios, session: AsyncSession, name: str) -> Msel:
    """The schedule as the store holds it now (in `session`'s transaction)."""
    scenario = await exercises.scenario(name)
    mark = (await session.execute(
        select(func.max(ControlActionRow.id), func.count(ControlActionRow.id)).where(
            ControlActionRow.exercise == name, ControlActionRow.action.in_(INJECT_ACTIONS)
        )
    )).one()  # fmt: skip
    version = (int(mark[0] or 0), int(mark[1] or 0))
    kept = _schedules.setdefault(exercises, OrderedDict())
    cached = kept.get(name)
    if cached is not None and cached[0] == version:
        kept.move_to_end(name)
        return cached[1]
    replayed = []
    for row in await _inject_rows(session, name):
        found = action_from(row.action, row_detail(row), row.by, row.at)
        if found is not None:
            replayed.append(found)
    roles = {r.name: r.kind for r in scenario.roles}
    msel = schedule(scenario.injects, scenario.start_ms, roles, replayed)
    kept[name] = (version, msel)
    while len(kept) > MAX_CACHED:
        kept.popitem(last=False)
    return msel


async def msel(exercises: Scenarios, name: str) -> Msel:
    """The exercise's inject schedule now."""
    async with exercises.store.read() as session:
        return await schedule_in(exercises, session, name)
