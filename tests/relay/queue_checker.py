"""Scoring a crash-loop history as Jepsen's queue checker scores one: a pure function of what the
clients saw (what they sent, the receipts they got, what they read and when the acknowledgements
they made landed), so that it can be tested on made-up histories and trusted on real ones.

Times are the clients' own logical clock (one counter in the harness's process): a read counts
from when it was *issued* (a poll's request, a WebSocket's connect), an acknowledgement from when
its answer arrived, so a read that was on its way while an acknowledgement landed is not taken
for a resurrection.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Read:
    message_id: bytes
    relay_id: int
    issued_at: int
    """The clock when the read that returned it was issued (before its answer)."""


@dataclass(frozen=True, slots=True)
class Landed:
    relay_ids: tuple[int, ...]
    at: int
    """The clock when the relay's answer to the acknowledgement arrived: durably deleted."""


@dataclass
class History:
    attempted: set[bytes] = field(default_factory=set)
    """Every message id put on the wire at least once (receipted or not)."""
    receipts: list[tuple[bytes, int]] = field(default_factory=list)
    """(message id, relay id) for each receipt, a retry's `duplicate: true` ones included."""
    reads: list[Read] = field(default_factory=list)
    landed: list[Landed] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Score:
    attempted: int
    receipted: int
    read: int
    """Distinct message ids read."""
    reads: int
    """Every read, redeliveries included."""
    lost: int
    """Receipted, never read."""
    duplicated: int
    """Read again (under any relay id) by a read issued after an acknowledgement of it landed:
    what the recipient's de-duplication by message id would not have caught."""
    unexpected: int
    """Read, never sent."""
    stored_twice: int
    """Message ids the relay gave two relay ids (in receipts or in reads)."""
    resurrected: int
    """Relay ids read by a read issued after their acknowledgement landed."""
    redelivered: int
    """Reads of a relay id already read, its acknowledgement not yet landed: at-least-once
    delivery doing its job (reported, not a failure)."""
    examples: dict[str, list[str]]

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.duplicated or self.unexpected or self.stored_twice or self.resurrected
        )

    def summary(self) -> str:
        return (
            f"attempted {self.attempted}, receipted {self.receipted}, read {self.read} "
            f"({self.reads} reads); lost {self.lost}, duplicated {self.duplicated}, "
            f"unexpected {self.unexpected}, stored twice {self.stored_twice}, "
            f"resurrected {self.resurrected}; redelivered before ack {self.redelivered}"
        )


def score(history: History, examples: int = 5) -> Score:
    relay_ids: dict[bytes, set[int]] = {}
    for message_id, relay_id in history.receipts:
        relay_ids.setdefault(message_id, set()).add(relay_id)
    receipted = set(relay_ids)
    for read in history.reads:
        relay_ids.setdefault(read.message_id, set()).add(read.relay_id)
    message_of = {rid: mid for mid, rids in relay_ids.items() for rid in rids}

    deleted_at: dict[int, int] = {}
    for landed in history.landed:
        for relay_id in landed.relay_ids:
            deleted_at[relay_id] = min(landed.at, deleted_at.get(relay_id, landed.at))
    message_deleted_at: dict[bytes, int] = {}
    for relay_id, at in deleted_at.items():
        carried = message_of.get(relay_id)
        if carried is not None:
            message_deleted_at[carried] = min(at, message_deleted_at.get(carried, at))

    read_ids: set[bytes] = set()
    read_relay_ids: set[int] = set()
    duplicated: set[bytes] = set()
    resurrected: set[int] = set()
    redelivered = 0
    for read in sorted(history.reads, key=lambda r: r.issued_at):
        read_ids.add(read.message_id)
        if read.relay_id in deleted_at and read.issued_at > deleted_at[read.relay_id]:
            resurrected.add(read.relay_id)
        elif read.relay_id in read_relay_ids:
            redelivered += 1
        acknowledged = message_deleted_at.get(read.message_id)
        if acknowledged is not None and read.issued_at > acknowledged:
            duplicated.add(read.message_id)
        read_relay_ids.add(read.relay_id)

    lost = receipted - read_ids
    unexpected = read_ids - history.attempted
    stored_twice = {mid for mid, rids in relay_ids.items() if len(rids) > 1}
    found = {
        "lost": [m.hex() for m in sorted(lost)[:examples]],
        "duplicated": [m.hex() for m in sorted(duplicated)[:examples]],
        "unexpected": [m.hex() for m in sorted(unexpected)[:examples]],
        "stored_twice": [m.hex() for m in sorted(stored_twice)[:examples]],
        "resurrected": [str(r) for r in sorted(resurrected)[:examples]],
    }
    return Score(
        attempted=len(history.attempted),
        receipted=len(receipted),
        read=len(read_ids),
        reads=len(history.reads),
        lost=len(lost),
        duplicated=len(duplicated),
        unexpected=len(unexpected),
        stored_twice=len(stored_twice),
        resurrected=len(resurrected),
        redelivered=redelivered,
        examples={kind: shown for kind, shown in found.items() if shown},
    )
