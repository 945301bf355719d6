"""The inject schedule (MSEL) as control runs it: the scenario's injects plus control's actions.

A scenario fixes its injects; during the exercise control releases one early, skips one, edits
one's title, text or time, or adds one. The schedule is a pure function of the scenario's
injects and the ordered list of those actions, so every relay process (and the command line)
that reads the same actions from the store computes the same schedule, and the log of actions
is the whole history. An action that no longer applies when replayed (two controllers released
the same inject at once) is ignored: the first one wins.

Numbers never change: an edited inject keeps its number, an added one takes the highest + 1. A
released inject is delivered at the scenario time of its release; a skipped one never.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .errors import LocalProtocolError
from .exercise import ALL, GROUPS, MAX_TIME_MS, MIN_TIME_MS, Inject, Role

MAX_ADDED = 500
"""Injects control may add to one exercise: the schedule is read on every participant's view."""
MAX_TITLE_BYTES = 200
MAX_TEXT_BYTES = 20_000
"""The scenario's own limits on an inject's title and text (`exercise._injects`)."""
MAX_TO = 64
"""Addresses in one inject's `to`."""
STATUSES = ("scheduled", "released", "skipped")
INJECT_ACTIONS = ("release", "skip", "edit", "add")


class MselError(LocalProtocolError):
    """An action the schedule does not allow; `code` says why (`inject_done`, ...)."""

    code = "invalid_inject"

    def __init__(self, message: str, code: str = "invalid_inject") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Release:
    number: int
    at_ms: int
    """The scenario time of the release: when it is delivered."""
    by: str
    wall_ms: int


@dataclass(frozen=True, slots=True)
class Skip:
    number: int
    by: str
    wall_ms: int


@dataclass(frozen=True, slots=True)
class Edit:
    number: int
    by: str
    wall_ms: int
    title: str | None = None
    text: str | None = None
    at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Add:
    number: int
    """The number it was given (highest + 1 when it was added)."""
    at_ms: int
    to: tuple[str, ...]
    title: str
    text: str
    by: str
    wall_ms: int


Action = Release | Skip | Edit | Add


@dataclass(frozen=True, slots=True)
class Entry:
    """One inject of the schedule as it stands."""

    inject: Inject
    """As delivered and signed: its effective time, its edited title and text."""
    status: str
    """`scheduled`, `released` (by hand, or by the clock: see `delivered`) or `skipped`."""
    released_at: int | None = None
    """Wall ms of a release by hand."""
    by: str | None = None
    """Who released, skipped or added it."""
    edited_by: str | None = None
    added: bool = False

    def state(self, scenario_ms: int) -> str:
        """The status at a scenario time: a scheduled inject whose time has come is released."""
        if self.status == "scheduled" and self.inject.at_ms <= scenario_ms:
            return "released"
        return self.status

    def delivered(self, scenario_ms: int) -> bool:
        return self.status != "skipped" and self.inject.at_ms <= scenario_ms


@dataclass(frozen=True, slots=True)
class Msel:
    entries: tuple[Entry, ...]
    """In delivery order (effective time, then number)."""
    start_ms: int
    roles: Mapping[str, str]
    """Role name -> kind: what `to` may name."""

    def entry(self, number: int) -> Entry:
        for entry in self.entries:
            if entry.inject.number == number:
                return entry
        raise MselError(f"there is no inject {number}", code="unknown_inject")

    def next_number(self) -> int:
        return max((e.inject.number for e in self.entries), default=0) + 1

    def due(self, role: Role, scenario_ms: int) -> list[Inject]:
        """The injects `role` sees at `scenario_ms`: delivered, never skipped."""
        return [
            e.inject
            for e in self.entries
            if e.delivered(scenario_ms) and e.inject.addressed_to(role)
        ]

    def apply(self, action: Action, scenario_ms: int) -> Msel:
        """The schedule after `action`, taken at scenario time `scenario_ms`; `MselError` if
        the action does not apply (the inject is delivered or skipped, the input is bad)."""
        if isinstance(action, Add):
            if sum(e.added for e in self.entries) >= MAX_ADDED:
                raise MselError(f"an exercise holds at most {MAX_ADDED} added injects",
                                code="injects_full")  # fmt: skip
            if action.number != self.next_number():
                raise MselError(f"an added inject is number {self.next_number()}")
            inject = Inject(action.number, check_time(action.at_ms, self.start_ms),
                            check_to(action.to, self.roles), check_title(action.title),
                            check_text(action.text))  # fmt: skip
            return self._with(Entry(inject, "scheduled", by=action.by, added=True))
        entry = self.entry(action.number)
        if entry.state(scenario_ms) != "scheduled":
            raise MselError(
                f"inject {action.number} is {entry.state(scenario_ms)} already",
                code="inject_done",
            )
        if isinstance(action, Release):
            inject = replace(entry.inject, at_ms=action.at_ms)
            return self._with(replace(entry, inject=inject, status="released",
                                      released_at=action.wall_ms, by=action.by))  # fmt: skip
        if isinstance(action, Skip):
            return self._with(replace(entry, status="skipped", by=action.by))
        if action.title is None and action.text is None and action.at_ms is None:
            raise MselError("an edit changes the title, the text or the time")
        inject = entry.inject
        if action.title is not None:
            inject = replace(inject, title=check_title(action.title))
        if action.text is not None:
            inject = replace(inject, text=check_text(action.text))
        if action.at_ms is not None:
            inject = replace(inject, at_ms=check_time(action.at_ms, self.start_ms))
        return self._with(replace(entry, inject=inject, edited_by=action.by))

    def _with(self, changed: Entry) -> Msel:
        rest = [e for e in self.entries if e.inject.number != changed.inject.number]
        entries = sorted([*rest, changed], key=lambda e: (e.inject.at_ms, e.inject.number))
        return replace(self, entries=tuple(entries))


def schedule(
    injects: Sequence[Inject],
    start_ms: int,
    roles: Mapping[str, str],
    actions: Iterable[tuple[Action, int]],
) -> Msel:
    """The schedule after `actions`, each with the scenario time it was taken at, in order.
    One that does not apply (taken at once with another that won) changes nothing."""
    entries = sorted(injects, key=lambda i: (i.at_ms, i.number))
    msel = Msel(tuple(Entry(i, "scheduled") for i in entries), start_ms, dict(roles))
    for action, scenario_ms in actions:
        try:
            msel = msel.apply(action, scenario_ms)
        except MselError:
            continue
    return msel


# --- checks -------------------------------------------------------------------------------------


def check_title(value: object) -> str:
    return _text(value, "title", MAX_TITLE_BYTES)


def check_text(value: object) -> str:
    return _text(value, "text", MAX_TEXT_BYTES)


def _text(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MselError(f"an inject's {what} must be non-empty text", code="invalid_field")
    if len(value.encode("utf-8", "surrogatepass")) > limit:
        raise MselError(f"an inject's {what} is longer than {limit} bytes", code="invalid_field")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise MselError(f"an inject's {what} is not valid text", code="invalid_field")
    return value.strip()


def check_time(value: object, start_ms: int) -> int:
    """A scenario time (Unix ms) no earlier than the scenario's start."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (MIN_TIME_MS <= value < MAX_TIME_MS)
    ):
        raise MselError("an inject's time must be a scenario time between the years 2 and 9998",
                        code="invalid_field")  # fmt: skip
    if value < start_ms:
        raise MselError("an inject's time is before the scenario starts", code="invalid_field")
    return value


def check_to(value: object, roles: Mapping[str, str]) -> tuple[str, ...]:
    """Role names, `all`, or a kind's group (`exercise.GROUPS`), as in a scenario."""
    if (
        not isinstance(value, list | tuple)
        or not value
        or len(value) > MAX_TO
        or not all(isinstance(t, str) for t in value)
    ):
        raise MselError(
            f"an inject's 'to' must be a list of 1 to {MAX_TO} role names, \"all\", "
            "\"parties\", \"mediators\" or \"observers\"", code="invalid_field",
        )  # fmt: skip
    for name in value:
        if name != ALL and name not in GROUPS and name not in roles:
            raise MselError(f"an inject's 'to' names {name[:64]!r}, which is not a role",
                            code="invalid_field")  # fmt: skip
    return tuple(dict.fromkeys(value))


# --- stored form ---------------------------------------------------------------------------------


def action_kind(action: Action) -> str:
    """Its name in the control log: one of `INJECT_ACTIONS`."""
    return {Release: "release", Skip: "skip", Edit: "edit", Add: "add"}[type(action)]


def action_detail(action: Action, scenario_ms: int) -> dict[str, Any]:
    """What the control log keeps of an inject action taken at scenario time `scenario_ms`
    (its `detail`; `by` and the wall time are columns of their own)."""
    taken = {"scenario_now": scenario_ms}
    if isinstance(action, Release):
        return {"number": action.number, "at": action.at_ms, **taken}
    if isinstance(action, Skip):
        return {"number": action.number, **taken}
    if isinstance(action, Edit):
        changed = {"title": action.title, "text": action.text, "at": action.at_ms}
        return {"number": action.number, **{k: v for k, v in changed.items() if v is not None},
                **taken}  # fmt: skip
    return {"number": action.number, "at": action.at_ms, "to": list(action.to),
            "title": action.title, "text": action.text, **taken}  # fmt: skip


def action_from(
    kind: str, detail: Mapping[str, Any], by: str, wall_ms: int
) -> tuple[Action, int] | None:
    """The inject action a log entry records, with the scenario time it was taken at; None
    for another kind of action or a malformed entry (which the schedule then ignores)."""
    try:
        number, taken = detail["number"], detail["scenario_now"]
        if not isinstance(number, int) or not isinstance(taken, int):
            return None
        action: Action
        if kind == "release":
            action = Release(number, int(detail["at"]), by, wall_ms)
        elif kind == "skip":
            action = Skip(number, by, wall_ms)
        elif kind == "edit":
            at = detail.get("at")
            action = Edit(number, by, wall_ms, detail.get("title"), detail.get("text"),
                          int(at) if at is not None else None)  # fmt: skip
        elif kind == "add":
            action = Add(number, int(detail["at"]), tuple(detail["to"]), detail["title"],
                         detail["text"], by, wall_ms)  # fmt: skip
        else:
            return None
    except (KeyError, TypeError, ValueError):
        return None
    return action, taken
