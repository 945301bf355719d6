"""Exercises: a scenario's roles, channel policy, clock and injects (PRODUCT.md §7).

A scenario is a TOML document (schema in PROTOCOL.md §16). Parsing checks every field and names
the one at fault, so control learns of a typo before the exercise, not during it. The clock maps
wall time to scenario time (a start, a speed, pauses); the policy says which pairs may write to
each other directly and which only through which mediator; injects are control's timed messages,
signed with the relay's control key. All of it is pure: the relay and the CLI keep the state.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from . import labels
from .encoding import Writer
from .errors import LocalProtocolError
from .keys import SigningKeyPair, SigningPublicKey

SCHEMA = 1
KINDS = ("party", "mediator", "observer")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
MAX_SPEED = 10_000.0
ALL = "all"
GROUPS = {"parties": "party", "mediators": "mediator", "observers": "observer"}
"""Addresses an inject's `to` may hold besides role names and `all`: every role of a kind."""
MIN_TIME_MS = -62_104_060_800_000
"""0002-01-01T00:00Z and 9999-01-01T00:00Z: a scenario time in this range can be shown in
any UTC offset (which Python bounds at ±24 h) without leaving the years 1 to 9999."""
MAX_TIME_MS = 253_370_764_800_000


CLASSES = ("record", "confidential", "off_the_record", "communique")
"""The four channel classes (PROTOCOL.md §16.1): a signed letter, a letter whose visibility to
control the scenario sets, a deniable one, and a signed statement to every role."""
SEES = ("content", "envelope", "existence", "nothing")
"""What control may see of a class, most first: the text, who wrote to whom and when, counts."""
ALLOWED_SEES: Mapping[str, tuple[str, ...]] = {
    "record": ("content", "envelope", "existence", "nothing"),
    "confidential": ("content", "envelope", "existence", "nothing"),
    "off_the_record": ("existence", "nothing"),
    "communique": ("content",),
}
"""`content` for record and confidential: the sender's client seals a control copy of each letter
to the control key (`control_copy`, PROTOCOL.md §16.11). Off the record never shows who spoke; a
communiqué is public to every role, control included."""
LETTER_CLASSES = ("record", "confidential")
"""The class of the signed letters between two roles: `letters` in `[channels]` or a pair. A
property of the pair, not of each letter, so both ends know it without anything on the wire."""
DEFAULT_SEES: Mapping[str, str] = {
    "record": "envelope",
    "confidential": "existence",
    "off_the_record": "existence",
    "communique": "content",
}


class ScenarioError(LocalProtocolError):
    """A scenario file that does not follow the schema; the message names the field."""

    code = "invalid_scenario"


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    kind: str
    title: str
    brief: str


@dataclass(frozen=True, slots=True)
class Inject:
    number: int
    """1, 2, ... in scenario-time order."""
    at_ms: int
    """Scenario time (Unix milliseconds) at which it is delivered."""
    to: tuple[str, ...]
    """Role names, `all`, or a kind's group (`GROUPS`: `observers` ...)."""
    title: str
    text: str

    def addressed_to(self, role: Role) -> bool:
        return any(
            to in (ALL, role.name) or GROUPS.get(to) == role.kind for to in self.to
        )


@dataclass(frozen=True, slots=True)
class Route:
    """How `sender` may reach `recipient`: directly, through `via`, or not at all (`reason`)."""

    direct: bool
    via: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Policy:
    kinds: Mapping[str, str]
    direct: frozenset[frozenset[str]]
    via: Mapping[frozenset[str], str]

    def route(self, sender: str, recipient: str) -> Route:
        """Parties write directly only where a pair is listed; everyone may write to a
        mediator and a mediator to everyone; observers read injects and write to no one."""
        kinds = (self.kinds.get(sender), self.kinds.get(recipient))
        if None in kinds:
            return Route(False, reason="only roles of the same exercise write to each other")
        if "observer" in kinds:
            return Route(False, reason="observers neither write nor are written to")
        if "mediator" in kinds or frozenset((sender, recipient)) in self.direct:
            return Route(True)
        mediator = self.via.get(frozenset((sender, recipient)))
        if mediator is not None:
            return Route(False, mediator, f"{sender} reaches {recipient} only through {mediator}")
        return Route(False, reason=f"the exercise gives {sender} no channel to {recipient}")

    def to_json(self) -> dict[str, Any]:
        return {
            "kinds": dict(self.kinds),
            "direct": sorted(sorted(pair) for pair in self.direct),
            "via": sorted([*sorted(pair), m] for pair, m in self.via.items()),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Policy:
        return cls(
            dict(raw["kinds"]),
            frozenset(frozenset(pair) for pair in raw["direct"]),
            {frozenset(entry[:2]): entry[2] for entry in raw["via"]},
        )


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    brief: str
    start_ms: int
    speed: float
    roles: tuple[Role, ...]
    policy: Policy
    injects: tuple[Inject, ...]
    offset_minutes: int = 0
    """The UTC offset of `clock.start`: scenario times are shown in that zone."""
    visibility: Visibility | None = None
    """What control sees of each class (`[channels]`); None: the defaults."""

    def role(self, name: str) -> Role | None:
        return next((r for r in self.roles if r.name == name), None)

    def control_sees(self, first: str, second: str) -> dict[str, str]:
        return (self.visibility or Visibility({}, {})).between(first, second)

    def letters(self, first: str, second: str) -> str:
        """The class of the signed letters between these two roles: record or confidential."""
        return (self.visibility or Visibility({}, {})).letters_between(first, second)


@dataclass(frozen=True, slots=True)
class Visibility:
    """`[channels]`: per class what control sees, and pairs that differ from it."""

    classes: Mapping[str, str]
    pairs: Mapping[frozenset[str], Mapping[str, str]]
    letters: str = "record"
    pair_letters: Mapping[frozenset[str], str] = field(default_factory=dict)

    def letters_between(self, first: str, second: str) -> str:
        return self.pair_letters.get(frozenset((first, second)), self.letters)

    def between(self, first: str, second: str) -> dict[str, str]:
        """Class -> control_sees for letters between these two roles (either way)."""
        chosen = {**DEFAULT_SEES, **self.classes}
        return {**chosen, **self.pairs.get(frozenset((first, second)), {})}

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": {**DEFAULT_SEES, **self.classes},
            "letters": self.letters,
            "pairs": sorted(
                (
                    {
                        "between": sorted(pair),
                        **dict(sees),
                        **(
                            {"letters": self.pair_letters[pair]}
                            if pair in self.pair_letters
                            else {}
                        ),
                    }
                    for pair, sees in self.pairs.items()
                ),
                key=lambda entry: entry["between"],
            ),
        }


# --- parsing ------------------------------------------------------------------------------------


def parse_scenario(text: str) -> Scenario:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"the scenario is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ScenarioError("the scenario nests arrays or tables too deeply") from None
    if raw.get("schema") != SCHEMA:
        raise ScenarioError(f"'schema' must be {SCHEMA}")
    exercise = _table(raw, "exercise")
    name = _name(exercise.get("name"), "exercise.name")
    clock = _table(raw, "clock")
    start_ms = _time(clock.get("start"), "clock.start")
    speed = clock.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0 < speed <= MAX_SPEED:
        raise ScenarioError(f"'clock.speed' must be a number above 0 and at most {MAX_SPEED:g}")
    roles = _roles(raw.get("roles"))
    kinds = {role.name: role.kind for role in roles}
    policy = _policy(raw.get("policy", {}), kinds)
    injects = _injects(raw.get("injects", []), kinds, start_ms)
    visibility = _visibility(raw.get("channels", {}), kinds)
    start = clock.get("start")
    offset = start.utcoffset() if isinstance(start, datetime) else None
    if isinstance(start, str):
        offset = datetime.fromisoformat(start).utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    return Scenario(
        name, _text(exercise.get("title"), "exercise.title", 200),
        _text(exercise.get("brief"), "exercise.brief", 20_000), start_ms, float(speed),
        roles, policy, injects, minutes, visibility,
    )  # fmt: skip


def _table(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    if not isinstance(value, dict):
        raise ScenarioError(f"the scenario needs a [{key}] table")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):  # `$` allows "\n"
        raise ScenarioError(
            f"'{where}' must be 1 to 64 lower-case letters, digits and hyphens, got {value!r}"
        )
    return value


def _text(value: Any, where: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(f"'{where}' must be non-empty text")
    if len(value.encode()) > limit:
        raise ScenarioError(f"'{where}' is longer than {limit} bytes")
    return value.strip()


def _time(value: Any, where: str) -> int:
    moment: datetime | None = value if isinstance(value, datetime) else None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is None:
        raise ScenarioError(
            f"'{where}' must be a time with its UTC offset, like 1962-10-22T08:00:00-04:00"
        )
    ms = int(moment.timestamp() * 1000)
    if not MIN_TIME_MS <= ms < MAX_TIME_MS:
        raise ScenarioError(f"'{where}' must be between the years 2 and 9998 (UTC)")
    return ms


def _roles(raw: Any) -> tuple[Role, ...]:
    if not isinstance(raw, list) or not raw:
        raise ScenarioError("the scenario needs at least one [[roles]] entry")
    roles: list[Role] = []
    for index, entry in enumerate(raw):
        where = f"roles[{index}]"
        if not isinstance(entry, dict):
            raise ScenarioError(f"'{where}' must be a table")
        name = _name(entry.get("name"), f"{where}.name")
        if name == ALL or name in GROUPS:  # `send all`, an inject's `to = ["observers"]`
            raise ScenarioError(
                f"'{where}.name': {name!r} addresses a group of roles; name the role otherwise"
            )
        if any(r.name == name for r in roles):
            raise ScenarioError(f"'{where}.name': the role {name!r} is listed twice")
        kind = entry.get("kind")
        if kind not in KINDS:
            raise ScenarioError(f"'{where}.kind' must be one of {', '.join(KINDS)}")
        title = _text(entry.get("title"), f"{where}.title", 200)
        roles.append(Role(name, kind, title, _text(entry.get("brief"), f"{where}.brief", 20_000)))
    return tuple(roles)


def _pair(value: Any, where: str, kinds: Mapping[str, str]) -> frozenset[str]:
    if not isinstance(value, list) or len(value) != 2 or value[0] == value[1]:
        raise ScenarioError(f"'{where}' must name two different roles")
    if not all(isinstance(name, str) for name in value):  # a list or table is not hashable
        raise ScenarioError(f"'{where}' must name two roles, as strings")
    for name in value:
        if name not in kinds:
            raise ScenarioError(f"'{where}' names {name!r}, which is not a role")
    return frozenset(value)


def _policy(raw: Any, kinds: Mapping[str, str]) -> Policy:
    if not isinstance(raw, dict):
        raise ScenarioError("'policy' must be a table")
    direct_raw = raw.get("direct", [])
    if not isinstance(direct_raw, list):
        raise ScenarioError("'policy.direct' must be a list of pairs")
    direct = frozenset(
        _pair(pair, f"policy.direct[{i}]", kinds) for i, pair in enumerate(direct_raw)
    )
    via: dict[frozenset[str], str] = {}
    via_raw = raw.get("via", [])
    if not isinstance(via_raw, list):
        raise ScenarioError("'policy.via' must be a list of tables")
    for index, entry in enumerate(via_raw):
        where = f"policy.via[{index}]"
        if not isinstance(entry, dict):
            raise ScenarioError(f"'{where}' must be a table")
        pair = _pair(entry.get("between"), f"{where}.between", kinds)
        mediator = entry.get("mediator")
        if not isinstance(mediator, str) or kinds.get(mediator) != "mediator":
            raise ScenarioError(f"'{where}.mediator' must name a role of kind mediator")
        if pair in direct:
            raise ScenarioError(f"'{where}' lists a pair that policy.direct already lets write")
        via[pair] = mediator
    return Policy(dict(kinds), direct, via)


def _sees(raw: Mapping[str, Any], where: str) -> dict[str, str]:
    """The class keys of one `[channels]` table or pair, each checked against what it allows."""
    found: dict[str, str] = {}
    for key, value in raw.items():
        if key == "between" and where != "channels":
            continue
        if key == "pairs" and where == "channels":
            continue
        if key == "letters":
            if value not in LETTER_CLASSES:
                raise ScenarioError(f"'{where}.letters' must be record or confidential")
            continue
        if key not in CLASSES:
            raise ScenarioError(f"'{where}.{key}' is not a class (one of {', '.join(CLASSES)})")
        if value not in ALLOWED_SEES[key]:
            raise ScenarioError(
                f"'{where}.{key}' must be one of {', '.join(ALLOWED_SEES[key])}, got {value!r}"
            )
        found[key] = value
    return found


def _visibility(raw: Any, kinds: Mapping[str, str]) -> Visibility:
    if not isinstance(raw, dict):
        raise ScenarioError("'channels' must be a table")
    classes = _sees(raw, "channels")
    pairs_raw = raw.get("pairs", [])
    if not isinstance(pairs_raw, list) or len(pairs_raw) > 10_000:
        raise ScenarioError("'channels.pairs' must be a list of at most 10000 tables")
    pairs: dict[frozenset[str], dict[str, str]] = {}
    pair_letters: dict[frozenset[str], str] = {}
    for index, entry in enumerate(pairs_raw):
        where = f"channels.pairs[{index}]"
        if not isinstance(entry, dict):
            raise ScenarioError(f"'{where}' must be a table")
        pair = _pair(entry.get("between"), f"{where}.between", kinds)
        if pair in pairs:
            raise ScenarioError(f"'{where}.between': this pair is listed twice")
        pairs[pair] = _sees(entry, where)
        if "letters" in entry:
            pair_letters[pair] = entry["letters"]
    return Visibility(classes, pairs, raw.get("letters", "record"), pair_letters)


def _injects(raw: Any, kinds: Mapping[str, str], start_ms: int) -> tuple[Inject, ...]:
    if not isinstance(raw, list):
        raise ScenarioError("'injects' must be a list of [[injects]] tables")
    found: list[tuple[int, tuple[str, ...], str, str]] = []
    for index, entry in enumerate(raw):
        where = f"injects[{index}]"
        if not isinstance(entry, dict):
            raise ScenarioError(f"'{where}' must be a table")
        at = _time(entry.get("at"), f"{where}.at")
        if at < start_ms:
            raise ScenarioError(f"'{where}.at' is before the scenario starts")
        to = entry.get("to")
        if not isinstance(to, list) or not to or not all(isinstance(t, str) for t in to):
            raise ScenarioError(
                f"'{where}.to' must be a list of role names, \"all\", \"parties\", "
                "\"mediators\" or \"observers\""
            )
        for name in to:
            if name != ALL and name not in GROUPS and name not in kinds:
                raise ScenarioError(f"'{where}.to' names {name!r}, which is not a role")
        title = _text(entry.get("title"), f"{where}.title", 200)
        found.append((at, tuple(to), title, _text(entry.get("text"), f"{where}.text", 20_000)))
    found.sort(key=lambda item: item[0])
    return tuple(Inject(i, *item) for i, item in enumerate(found, 1))


# --- the clock ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Clock:
    """Scenario time = `anchor_ms` + (wall time - `wall_ms`) * `speed`, frozen while paused."""

    anchor_ms: int
    wall_ms: int
    speed: float
    paused: bool

    @classmethod
    def start(cls, scenario: Scenario, wall_ms: int) -> Clock:
        """A new exercise's clock: at the scenario's start, paused until control resumes it."""
        return cls(scenario.start_ms, wall_ms, scenario.speed, True)

    def now(self, wall_ms: int) -> int:
        if self.paused:
            return self.anchor_ms
        return self.anchor_ms + int((wall_ms - self.wall_ms) * self.speed)

    def pause(self, wall_ms: int) -> Clock:
        return Clock(self.now(wall_ms), wall_ms, self.speed, True)

    def resume(self, wall_ms: int) -> Clock:
        return Clock(self.now(wall_ms), wall_ms, self.speed, False)

    def set(self, scenario_ms: int, wall_ms: int) -> Clock:
        return replace(self, anchor_ms=scenario_ms, wall_ms=wall_ms)

    def with_speed(self, speed: float, wall_ms: int) -> Clock:
        if not 0 < speed <= MAX_SPEED:
            raise ScenarioError(f"the speed must be above 0 and at most {MAX_SPEED:g}")
        return Clock(self.now(wall_ms), wall_ms, speed, self.paused)

    def wall_time_of(self, scenario_ms: int, wall_ms: int) -> int | None:
        """When (wall time) the clock reaches `scenario_ms`; None while paused before it."""
        now = self.now(wall_ms)
        if scenario_ms <= now:
            return wall_ms
        if self.paused:
            return None
        return wall_ms + int((scenario_ms - now) / self.speed) + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "anchor_ms": self.anchor_ms,
            "wall_ms": self.wall_ms,
            "speed": self.speed,
            "paused": self.paused,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Clock:
        return cls(int(raw["anchor_ms"]), int(raw["wall_ms"]), float(raw["speed"]),
                   bool(raw["paused"]))  # fmt: skip


# --- signed injects -----------------------------------------------------------------------------


def inject_body(exercise: str, inject: Inject) -> bytes:
    """`name exercise ‖ u32 number ‖ i64 at (scenario Unix ms) ‖ u8 n ‖ n names of recipients
    ‖ var16 title ‖ var32 text` (PROTOCOL.md §16.3)."""
    writer = Writer().var8(exercise.encode()).u32(inject.number).i64(inject.at_ms)
    writer.u8(len(inject.to))
    for name in inject.to:
        writer.var8(name.encode())
    return bytes(writer.var16(inject.title.encode()).var32(inject.text.encode()))


def sign_inject(key: SigningKeyPair, exercise: str, inject: Inject) -> bytes:
    return key.sign(labels.signing_input(labels.SIG_INJECT, inject_body(exercise, inject)))


def verify_inject(key: SigningPublicKey, exercise: str, inject: Inject, signature: bytes) -> None:
    """Raise `SignatureError` unless control's key signed this inject."""
    key.verify(signature, labels.signing_input(labels.SIG_INJECT, inject_body(exercise, inject)))


MAX_COMMUNIQUE_BYTES = 8_000
MAX_COMMUNIQUES = 100
"""Per exercise: each is shown to every role on every refresh, so they are few and short."""


@dataclass(frozen=True, slots=True)
class Communique:
    """A signed public statement by `author` to every role of `exercise` (PROTOCOL.md §16.9)."""

    exercise: str
    author: str
    at_ms: int
    """When the author signed it (its wall clock, Unix ms); the relay refuses one far off."""
    text: str

    def body(self) -> bytes:
        """`var8 exercise ‖ var8 author ‖ i64 at ‖ var32 text`."""
        writer = Writer().var8(self.exercise.encode()).var8(self.author.encode()).i64(self.at_ms)
        return bytes(writer.var32(self.text.encode()))

    def check(self) -> None:
        """Raise `ScenarioError` for an empty or too long text."""
        if not self.text.strip():
            raise ScenarioError("a communiqué needs a text")
        if len(self.text.encode()) > MAX_COMMUNIQUE_BYTES:
            raise ScenarioError(f"a communiqué holds at most {MAX_COMMUNIQUE_BYTES} bytes")


def sign_communique(key: SigningKeyPair, communique: Communique) -> bytes:
    """Signed with the author's identity key: attributable to anyone, like a letter."""
    return key.sign(labels.signing_input(labels.SIG_COMMUNIQUE, communique.body()))


def verify_communique(key: SigningPublicKey, communique: Communique, signature: bytes) -> None:
    """Raise `SignatureError` unless `key` signed this communiqué."""
    key.verify(signature, labels.signing_input(labels.SIG_COMMUNIQUE, communique.body()))


def scenario_time_text(ms: int, offset_minutes: int) -> str:
    """`1962-10-22 19:00 -04:00`: a scenario time in the scenario's own zone."""
    moment = datetime.fromtimestamp(ms / 1000, timezone(timedelta(minutes=offset_minutes)))
    sign, minutes = ("-", -offset_minutes) if offset_minutes < 0 else ("+", offset_minutes)
    return f"{moment:%Y-%m-%d %H:%M} {sign}{minutes // 60:02d}:{minutes % 60:02d}"


def due(injects: Sequence[Inject], role: Role, scenario_ms: int) -> list[Inject]:
    """The injects for `role` whose scenario time has come."""
    return [i for i in injects if i.addressed_to(role) and i.at_ms <= scenario_ms]
