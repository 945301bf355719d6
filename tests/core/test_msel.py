"""The inject schedule (MSEL) as a pure function of the scenario's injects and control's actions:
numbers stay, added injects take the highest + 1, a released inject is delivered from its
release on, a skipped one never, an edited one as edited, and a replayed log that holds an
action which no longer applies (two controllers at once) gives the schedule without it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backchannel.exercise import Inject, Role
from backchannel.msel import (
    MAX_ADDED,
    Action,
    Add,
    Edit,
    Msel,
    MselError,
    Release,
    Skip,
    action_detail,
    action_from,
    action_kind,
    schedule,
)

START = 0
ROLES = {"a": "party", "b": "party", "m": "mediator", "o": "observer"}
PLAYERS = [Role(n, k, n, n) for n, k in ROLES.items()]
TO = st.lists(st.sampled_from(["a", "b", "m", "o", "all", "parties", "observers"]),
              min_size=1, max_size=3)  # fmt: skip
TIME = st.integers(0, 10_000)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
               max_size=20).filter(str.strip)  # fmt: skip


@st.composite
def scenario_injects(draw: st.DrawFn) -> list[Inject]:
    times = sorted(draw(st.lists(TIME, max_size=6)))
    return [Inject(n, t, tuple(draw(TO)), f"title {n}", f"text {n}")
            for n, t in enumerate(times, 1)]  # fmt: skip


@st.composite
def actions(draw: st.DrawFn, count: int) -> list[tuple[Action, int]]:
    """Actions on numbers 1..count+3 (some unknown, some repeated), each with its time."""
    found: list[tuple[Action, int]] = []
    for wall in range(draw(st.integers(0, 12))):
        number = draw(st.integers(1, count + 3))
        now = draw(TIME)
        kind = draw(st.sampled_from(["release", "skip", "edit", "add"]))
        by = draw(st.sampled_from(["ann", "bo"]))
        action: Action
        if kind == "release":
            action = Release(number, now, by, wall)
        elif kind == "skip":
            action = Skip(number, by, wall)
        elif kind == "edit":
            action = Edit(number, by, wall, draw(st.none() | TEXT), draw(st.none() | TEXT),
                          draw(st.none() | TIME))  # fmt: skip
        else:
            action = Add(number, draw(TIME), tuple(draw(TO)), draw(TEXT), draw(TEXT), by, wall)
        found.append((action, now))
    return found


def fold(injects: list[Inject], taken: list[tuple[Action, int]]) -> tuple[Msel, list[bool]]:
    """Apply one by one as the relay does; -> the schedule and which actions applied."""
    msel = schedule(injects, START, ROLES, [])
    applied = []
    for action, now in taken:
        try:
            msel = msel.apply(action, now)
            applied.append(True)
        except MselError:
            applied.append(False)
    return msel, applied


@given(scenario_injects().flatmap(lambda i: st.tuples(st.just(i), actions(len(i)))))
def test_replay_equals_applying_in_turn(drawn: tuple[list[Inject], list[Any]]) -> None:
    injects, taken = drawn
    folded, applied = fold(injects, taken)
    assert schedule(injects, START, ROLES, taken) == folded
    # The log as stored and read back gives the same schedule.
    stored = [action_from(action_kind(a), action_detail(a, now), a.by, a.wall_ms)
              for a, now in taken]  # fmt: skip
    assert schedule(injects, START, ROLES, [s for s in stored if s is not None]) == folded
    # Every action that applied once does not apply twice (released, skipped: done).
    for (action, now), ok in zip(taken, applied, strict=True):
        if ok and isinstance(action, Release | Skip):
            with pytest.raises(MselError):
                folded.apply(action, now)


@given(scenario_injects().flatmap(lambda i: st.tuples(st.just(i), actions(len(i)))))
def test_numbers_stay_and_added_ones_come_after(drawn: tuple[list[Inject], list[Any]]) -> None:
    injects, taken = drawn
    msel, applied = fold(injects, taken)
    numbers = sorted(e.inject.number for e in msel.entries)
    assert numbers == list(range(1, len(numbers) + 1))
    assert {i.number for i in injects} <= set(numbers)
    added = [a for (a, _), ok in zip(taken, applied, strict=True) if ok and isinstance(a, Add)]
    assert [a.number for a in added] == list(range(len(injects) + 1, len(numbers) + 1))
    assert [(e.inject.at_ms, e.inject.number) for e in msel.entries] == sorted(
        (e.inject.at_ms, e.inject.number) for e in msel.entries
    )


@given(scenario_injects().flatmap(lambda i: st.tuples(st.just(i), actions(len(i)))), TIME)
def test_released_at_once_skipped_never(drawn: tuple[list[Inject], list[Any]], t: int) -> None:
    injects, taken = drawn
    msel, _ = fold(injects, taken)
    for role in PLAYERS:
        due = msel.due(role, t)
        numbers = [i.number for i in due]
        assert len(numbers) == len(set(numbers))
        for entry in msel.entries:
            shown = entry.inject.number in numbers
            if entry.status == "skipped" or not entry.inject.addressed_to(role):
                assert not shown
            else:
                assert shown == (entry.inject.at_ms <= t)
            if shown:  # delivered as the schedule holds it: edited title and text, its time
                assert entry.inject in due
        for entry in msel.entries:
            if entry.status == "released":
                assert entry.released_at is not None and entry.by is not None
                assert entry.state(t) == "released"


def test_a_release_delivers_at_the_time_it_was_made() -> None:
    injects = [Inject(1, 5_000, ("all",), "t", "x")]
    msel = schedule(injects, START, ROLES, [(Release(1, 100, "ann", 9), 100)])
    (entry,) = msel.entries
    assert (entry.inject.at_ms, entry.status, entry.by, entry.released_at) == (
        100,
        "released",
        "ann",
        9,
    )
    assert msel.due(PLAYERS[0], 99) == [] and msel.due(PLAYERS[0], 100) == [entry.inject]
    # Delivered by the clock already: nothing more to release, skip or edit.
    late = schedule(injects, START, ROLES, [])
    for action in (Release(1, 6_000, "bo", 1), Skip(1, "bo", 1), Edit(1, "bo", 1, "new")):
        with pytest.raises(MselError) as refused:
            late.apply(action, 6_000)
        assert refused.value.code == "inject_done"
    with pytest.raises(MselError) as unknown:
        late.apply(Skip(9, "bo", 1), 0)
    assert unknown.value.code == "unknown_inject"


@pytest.mark.parametrize(
    "add",
    [
        Add(1, 10, ("nobody",), "t", "x", "ann", 0),
        Add(1, 10, (), "t", "x", "ann", 0),
        Add(1, -1, ("all",), "t", "x", "ann", 0),
        Add(1, 10, ("all",), "t" * 201, "x", "ann", 0),
        Add(1, 10, ("all",), "t", "x" * 20_001, "ann", 0),
        Add(1, 10, ("all",), "t", "  ", "ann", 0),
        Add(2, 10, ("all",), "t", "x", "ann", 0),  # not the next number
    ],
)
def test_an_added_inject_is_checked_like_the_scenario(add: Add) -> None:
    with pytest.raises(MselError):
        schedule([], START, ROLES, []).apply(add, 0)


def test_at_most_so_many_added() -> None:
    msel = schedule([], START, ROLES, [])
    for number in range(1, MAX_ADDED + 1):
        msel = msel.apply(Add(number, 10, ("all",), "t", "x", "ann", 0), 0)
    with pytest.raises(MselError) as full:
        msel.apply(Add(MAX_ADDED + 1, 10, ("all",), "t", "x", "ann", 0), 0)
    assert full.value.code == "injects_full"
