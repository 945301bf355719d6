"""How receipts move the status of our own letters, and what showing a message owes its sender.

A letter we sent climbs `pending < sent < delivered < read < acknowledged` (PROTOCOL.md §7.2):
the relay's receipt makes it sent, its recipient's delivery and read receipts deliver and read
it, their signed acknowledgement (§7.4) acknowledges it. Receipts cross the relay in any order
and may come twice, so a letter's status is the highest any of them proved: one never lowers
it, and the order they arrive in never changes where it ends. Only the peer a letter went to
can move it; a receipt naming anything else is ignored. What we owe others goes out as few
receipts as may carry it (`seal_plan`). Like `arrival`, this module decides and the client
applies: it reads the stored message, asks, and writes the answer back in the transaction that
holds the receipt.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from .content import MAX_RECEIPT_IDS, ReceiptType

PENDING, SENT, DELIVERED, READ, ACKNOWLEDGED = (
    "pending",
    "sent",
    "delivered",
    "read",
    "acknowledged",
)
PROGRESS = (PENDING, SENT, DELIVERED, READ, ACKNOWLEDGED)
"""An outgoing letter's statuses, lowest first. Any other (`failed`: expired in the outbox,
`refused`: by the relay) ranks below them all: a receipt proves the letter arrived after all."""

PROVES = {ReceiptType.DELIVERED: DELIVERED, ReceiptType.READ: READ}
"""The status each kind of receipt proves."""

OPENED_KIND = 0
"""The kind of what is owed beside the receipt types: a shown proposal owes its "opened"
statement (`Owed.OPENED`), a letter a receipt of its `ReceiptType`."""


class Owed(Enum):
    """What showing a received message owes its sender."""

    READ_RECEIPT = "read receipt"
    """A letter, shown for the first time: it is marked read and its sender told."""
    OPENED = "opened"
    """A proposal: its author is owed the signed, notarised statement that it was opened."""


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored message, as far as receipts go."""

    direction: str
    """"out" for what we sent, "in" for what we received."""
    kind: str
    """"letter", "proposal", ... as stored."""
    peer: str
    """Whom it went to, or came from."""
    status: str


@dataclass(frozen=True, slots=True)
class Showing:
    """What showing a message for the first time does: its new status, and what it owes."""

    status: str
    owed: Owed | None = None


def rank(status: str) -> int:
    """A status's place in `PROGRESS` (-1 for one outside it)."""
    return PROGRESS.index(status) if status in PROGRESS else -1


def raised(status: str, proven: str) -> str:
    """The higher of a letter's status and the one just proven: it never goes down."""
    return proven if rank(proven) > rank(status) else status


def on_receipt(message: Stored, sender: str, kind: ReceiptType) -> str:
    """The status of `message` once `sender`'s receipt of `kind` naming it is applied; its
    status unchanged unless it is a letter we sent to `sender`."""
    if (message.direction, message.kind, message.peer) != ("out", "letter", sender):
        return message.status
    return raised(message.status, PROVES[kind])


def on_showing(message: Stored) -> Showing:
    """What showing a received message owes: a letter shown for the first time (still
    `delivered`) its read receipt, a proposal its "opened" statement, anything else nothing.
    Showing one again is harmless: the client owes once per message and kind, and states a
    proposal opened once."""
    if message.direction != "in":
        return Showing(message.status)
    if message.kind == "letter" and message.status == DELIVERED:
        return Showing(READ, Owed.READ_RECEIPT)
    if message.kind == "proposal":
        return Showing(message.status, Owed.OPENED)
    return Showing(message.status)


def seal_plan(
    owed: Iterable[tuple[str, int, str]], limit: int = MAX_RECEIPT_IDS
) -> list[tuple[str, int, tuple[str, ...]]]:
    """What is owed, as (peer, kind, message id), in what goes out: one receipt (or one round
    of "opened" statements) per peer and kind, split where it would name more than `limit`
    messages, which no receipt may. Sorted by peer, kind and id, so the same debts in any
    order give the same plan; a debt named twice is paid once."""
    groups: dict[tuple[str, int], set[str]] = {}
    for peer, kind, message_id in owed:
        groups.setdefault((peer, kind), set()).add(message_id)
    plan: list[tuple[str, int, tuple[str, ...]]] = []
    for (peer, kind), ids in sorted(groups.items()):
        ordered = sorted(ids)
        for start in range(0, len(ordered), limit):
            plan.append((peer, kind, tuple(ordered[start : start + limit])))
    return plan
