"""What the terminal interface shows, worked out from the CLI's JSON answers (no I/O, no UI).

Off-the-record messages are never stored by the CLI (unless `--keep`), so `inbox` hands each one
over exactly once: `OffTheRecordMemory` keeps them in this process only, bounded, and nowhere
else (no file, no log), gone when the TUI quits or the channel closes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

OTR_PER_PEER = 200
"""Off-the-record messages remembered per peer (the oldest forgotten first)."""
OTR_PEERS = 64
"""Peers whose off-the-record messages are remembered at once."""
CONTROL = "control"
OFF_THE_RECORD = "OFF THE RECORD"

Message = dict[str, Any]


class OffTheRecordMemory:
    """Off-the-record messages seen in this session, in memory only."""

    def __init__(self) -> None:
        self._by_peer: dict[str, deque[Message]] = {}

    def add(self, message: Message) -> None:
        peer = peer_of(message)
        if peer not in self._by_peer:
            if len(self._by_peer) >= OTR_PEERS:
                del self._by_peer[next(iter(self._by_peer))]
            self._by_peer[peer] = deque(maxlen=OTR_PER_PEER)
        known = self._by_peer[peer]
        if all(m["id"] != message["id"] for m in known):
            known.append(message)

    def of(self, peer: str) -> list[Message]:
        return list(self._by_peer.get(peer, ()))

    def forget(self, peer: str) -> None:
        self._by_peer.pop(peer, None)

    def peers(self) -> list[str]:
        return list(self._by_peer)


@dataclass
class Snapshot:
    """Everything the screens show, as the last refresh found it."""

    me: str = ""
    role: str = ""
    directory: list[dict[str, Any]] = field(default_factory=list)
    history: list[Message] = field(default_factory=list)
    proposals: list[dict[str, Any]] = field(default_factory=list)
    exercise: dict[str, Any] | None = None
    otr_channels: list[dict[str, Any]] = field(default_factory=list)
    exchanges: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_mediator(self) -> bool:
        return self.role == "mediator"


@dataclass(frozen=True)
class Conversation:
    peer: str
    unread: int
    last_line: str
    last_at: int
    off_the_record: str | None
    """None, or what to say of the open off-the-record channel (`OFF THE RECORD ...`)."""


def peer_of(message: Message) -> str:
    return str(message["from"] if message["to"] == "me" else message["to"])


def is_unread(message: Message) -> bool:
    """An incoming letter not yet read: stored (`delivered`) but never displayed."""
    return bool(
        message["to"] == "me" and message["kind"] == "letter" and message["status"] == "delivered"
    )


def first_line(text: str, width: int = 60) -> str:
    line = (str(text).splitlines() or [""])[0]
    return line if len(line) <= width else line[: width - 1] + "…"


def otr_marker(snapshot: Snapshot, peer: str, short: bool = False) -> str | None:
    """`OFF THE RECORD until 14:05; control sees existence` for a channel with `peer` (open or
    offered), else None; `short` for the conversations list: `OFF THE RECORD (control: existence)`.
    """
    for channel in snapshot.otr_channels:
        if channel.get("with") == peer:
            sees = control_sees(snapshot, peer, "off_the_record")
            status = "" if channel.get("status") == "open" else f" ({channel.get('status')})"
            if short:
                return OFF_THE_RECORD + (f" (control: {sees})" if sees else status)
            until = _clock_text(channel.get("expires_at"))
            return f"{OFF_THE_RECORD}{status} until {until}" + (
                f"; control sees {sees}" if sees else ""
            )
    return None


def control_sees(snapshot: Snapshot, peer: str, kind: str) -> str | None:
    """What exercise control sees of `kind` (a channel class) with `peer`, if in an exercise."""
    if snapshot.exercise is None:
        return None
    sees = snapshot.exercise.get("control_sees") or {}
    by_peer = (sees.get("peers") or {}).get(peer) or sees.get("classes") or {}
    value = by_peer.get(kind)
    return None if value is None else str(value)


def conversations(snapshot: Snapshot, memory: OffTheRecordMemory) -> list[Conversation]:
    """One per peer: from the directory, the history and the off-the-record channels; the most
    recent first, then by name. Injects from control are a conversation too."""
    peers: dict[str, list[Message]] = {}
    for entry in snapshot.directory:
        if not entry.get("me"):
            peers.setdefault(str(entry["name"]), [])
    for message in snapshot.history:
        peers.setdefault(peer_of(message), []).append(message)
    for channel in snapshot.otr_channels:
        peers.setdefault(str(channel["with"]), [])
    for peer in memory.peers():
        peers.setdefault(peer, [])
    found = []
    for peer, messages in peers.items():
        everything = sorted([*messages, *memory.of(peer)], key=lambda m: m.get("sent_at") or 0)
        last = everything[-1] if everything else None
        found.append(
            Conversation(
                peer=peer,
                unread=sum(is_unread(m) for m in messages),
                last_line=(
                    ("<- " if last["to"] == "me" else "-> ") + first_line(last["text"], 40)
                    if last is not None
                    else ""
                ),
                last_at=int(last.get("sent_at") or 0) if last is not None else 0,
                off_the_record=otr_marker(snapshot, peer, short=True),
            )
        )
    found.sort(key=lambda c: (-c.last_at, c.peer))
    return found


def thread(snapshot: Snapshot, memory: OffTheRecordMemory, peer: str) -> list[Message]:
    """Every message with `peer`, stored or remembered off the record, in the order sent."""
    stored = [m for m in snapshot.history if peer_of(m) == peer]
    return sorted([*stored, *memory.of(peer)], key=lambda m: m.get("sent_at") or 0)


def message_summary(message: Message) -> str:
    """One line: direction, kind, status, verification, threading and the start of the text."""
    arrow = "<-" if message["to"] == "me" else "->"
    when = message.get("scenario_time") or _clock_text(message.get("sent_at"))
    otr = f"{OFF_THE_RECORD} " if message["kind"] == "otr" else ""
    reply = f" re {message['in_reply_to'][:8]}" if message.get("in_reply_to") else ""
    return (
        f"{arrow} {when} {otr}{message['kind']} ({message['status']}; {message['verified']})"
        f"{reply}: {first_line(message['text'], 40)}"
    )


def message_detail(message: Message) -> str:
    """The whole message with what is proven, what control sees, and what it answers."""
    lines = [
        f"[{message['id'][:12]}] {message['kind']} "
        + (f"from {message['from']}" if message["to"] == "me" else f"to {message['to']}")
        + f", {_clock_text(message.get('sent_at'))}"
        + (f" [scenario {message['scenario_time']}]" if message.get("scenario_time") else ""),
        f"status: {message['status']}; signature: {message['verified']}"
        + (
            f"; [{str(message['class']).replace('_', ' ')}; control sees {message['control_sees']}]"
            if message.get("class")
            else ""
        ),
    ]
    if message["kind"] == "otr":
        lines.append(
            f"{OFF_THE_RECORD}: deniable, kept only in this window's memory, never on disk"
        )
    proven = message.get("proven") or {}
    if proven.get("signed_by"):
        lines.append(f"proven: {proven['signed_by']}'s key signed it")
    elif proven.get("deniable"):
        lines.append("proven: nothing a third party could check (deniable)")
    if proven.get("via"):
        lines.append(f"came through {proven['via']}")
    if message.get("in_reply_to"):
        lines.append(f"in reply to {message['in_reply_to'][:12]}")
    if message.get("refusal"):
        lines.append(f"REFUSED by the relay: {message['refusal']}")
    lines.append(str(message["text"]))
    return "\n".join(lines)


def scenario_deadline(at_ms: int | None, exercise: dict[str, Any] | None) -> str:
    """A wall-clock deadline read on the scenario clock (where it would stand then), if any."""
    if not at_ms:
        return "-"
    if exercise is None or "clock" not in exercise:
        return _clock_text(at_ms, with_date=True)
    clock = exercise["clock"]
    offset = int(clock.get("utc_offset_minutes", 0))
    scenario_now = int(clock["scenario_at"])
    if clock.get("paused"):
        return f"{_clock_text(at_ms, with_date=True)} (clock paused)"
    scenario_at = scenario_now + int((at_ms - int(clock["wall_at"])) * float(clock["speed"]))
    moment = datetime.fromtimestamp(scenario_at / 1000, timezone(timedelta(minutes=offset)))
    return f"{moment:%m-%d %H:%M} scen."


def proposal_summary(view: dict[str, Any], exercise: dict[str, Any] | None) -> list[str]:
    """The proposals board's cells: id, parties, title, state, deadline."""
    title = view["title"] if view["title"] is not None else "(sealed)"
    state = str(view["status"]).upper()
    if view.get("agreement") not in (None, "none"):
        state += f" {str(view['agreement']).upper()}"
    incoming = view.get("direction") == "in"
    return [
        view["id"][:6],
        f"from {view['from']}" if incoming else f"to {','.join(view['to'])}",
        first_line(title, 20),
        state,
        scenario_deadline(view.get("expires_at"), exercise),
    ]


def proposal_detail(view: dict[str, Any], exercise: dict[str, Any] | None) -> str:
    lines = [
        f"[{view['id'][:12]}] from {view['from']} to {', '.join(view['to'])}: "
        f"{view['title'] if view['title'] is not None else '(sealed)'}",
        f"status {view['status']}; signature {view['signature']}; "
        f"expires {scenario_deadline(view.get('expires_at'), exercise)}",
    ]
    if view.get("agreement_note"):
        lines.append(f"{view['agreement']}: {view['agreement_note']}")
    lines += [f"  {i}. {term}" for i, term in enumerate(view.get("terms") or [], 1)]
    if view.get("conditions"):
        lines.append("only together with: " + ", ".join(c[:12] for c in view["conditions"]))
    if view.get("answers"):
        lines.append(f"counters {view['answers'][:12]}")
    for item in view.get("history") or []:
        lines.append(f"  #{item['seq']} {item['kind']} by {item['by']}")
    return "\n".join(lines)


def exercise_text(exercise: dict[str, Any] | None) -> str:
    if exercise is None:
        return "This profile has no role in an exercise on its relay."
    clock = exercise.get("clock", {})
    state = "paused" if clock.get("paused") else f"running at {clock.get('speed', 1):g}x"
    role = exercise.get("role", {})
    return "\n".join(
        [
            f"{exercise.get('title')} ({exercise.get('exercise')})",
            f"Scenario time: {clock.get('scenario_time')} ({state})",
            f"You are {role.get('name')}, {role.get('title')} ({role.get('kind')}).",
            str(role.get("brief", "")),
            str(exercise.get("brief", "")),
        ]
    )


def channel_rows(exercise: dict[str, Any] | None) -> list[list[str]]:
    """Peer, how one writes to them, the letters' class, and what control sees of each class."""
    if exercise is None:
        return []
    sees = exercise.get("control_sees") or {}
    rows = []
    for name, channel in sorted((exercise.get("channels") or {}).items()):
        by_class = (sees.get("peers") or {}).get(name) or sees.get("classes") or {}
        letters = str(channel.get("letters", "record"))
        rows.append(
            [
                name,
                "direct" if channel.get("direct") else f"via {channel.get('via')}",
                letters,
                str(by_class.get(letters, "?")),
                str(by_class.get("off_the_record", "?")),
            ]
        )
    return rows


def inject_lines(snapshot: Snapshot) -> list[str]:
    """Injects received (signed by control), oldest first, then those the exercise lists."""
    received = [m for m in snapshot.history if m["kind"] == "inject"]
    lines = []
    for m in received:
        head, *rest = str(m["text"]).splitlines() or [""]
        lines.append(f"{m.get('scenario_time') or _clock_text(m.get('sent_at'))}  {head}")
        lines += [f"    {line}" for line in rest]
    if not lines and snapshot.exercise is not None:
        for inject in snapshot.exercise.get("injects") or []:
            lines.append(f"{inject.get('scenario_time')}  {inject.get('title', '')}")
    return lines


def _clock_text(ms: Any, with_date: bool = False) -> str:
    if not isinstance(ms, int) or ms <= 0:
        return "?"
    moment = datetime.fromtimestamp(ms / 1000, UTC).astimezone()
    return moment.strftime("%m-%d %H:%M" if with_date else "%H:%M:%S")
