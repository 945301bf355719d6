"""Which queued envelopes go to the relay, in which requests, and what a refusal means.

A command's fourth kind of decision, beside arrivals, receipts and clock ticks: sending what
waits. The queued envelopes (letters and everything else we sealed, or sealed receipts) go
oldest first, in requests bounded in count and bytes, since the relay caps both. A refusal is
transient (the relay is down, busy, failing, or our token expired: it may pass later) or
permanent (a 4xx the relay means: policy, unknown recipient, too large). A transient one ends
the pass and keeps every envelope not yet taken for the next command; a permanent one refuses
exactly one envelope, so a request refused as a whole is tried again one envelope at a time, in
the same order, to find which. Like `arrival` and `ticks`, this module only decides: the client
reads its queue, sends each request `Pass` hands it, and applies the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SEND_BATCH = 100
SEND_BYTES = 4 * 1024 * 1024
"""Per request: well inside the relay's defaults (256 envelopes, 8 MiB of JSON and base64)."""

TRANSIENT_STATUSES = frozenset({401, 408, 425, 429})
"""Refusals that may pass later (with 5xx): everything else 4xx is the relay's final word."""

Item = tuple[str, bytes]
"""A queued envelope: its id, and its bytes as they go on the wire."""
Batch = tuple[Item, ...]
"""The envelopes of one request."""


def plan(pending: Sequence[Item], count: int = SEND_BATCH, size: int = SEND_BYTES) -> list[Batch]:
    """`pending` in requests of at most `count` envelopes and `size` bytes (one larger than
    `size` goes alone: the relay says whether it takes it), in order."""
    batches: list[list[Item]] = []
    used = 0
    for item in pending:
        if not batches or len(batches[-1]) >= count or used + len(item[1]) > size:
            batches.append([])
            used = 0
        batches[-1].append(item)
        used += len(item[1])
    return [tuple(batch) for batch in batches]


def permanent(status: int | None) -> bool:
    """Whether a refusal with this HTTP status is the relay's final word; None (no answer at
    all: the relay unreachable) is transient."""
    return status is not None and 400 <= status < 500 and status not in TRANSIENT_STATUSES


@dataclass(frozen=True, slots=True)
class Next:
    """What a refused request leads to."""

    retry: tuple[Batch, ...] = ()
    """Requests to send next, before the rest: a refused request's envelopes one by one."""
    refused: str | None = None
    """The one envelope the relay refused for good: marked refused (a receipt: dropped)."""
    stop: bool = False
    """A transient refusal: this pass ends, and what was not taken stays queued."""


def on_refusal(batch: Batch, status: int | None) -> Next:
    """What the relay refusing `batch` with `status` (None: unreachable) means."""
    if not permanent(status):
        return Next(stop=True)
    if len(batch) > 1:  # which one? each on its own, in the same order
        return Next(retry=tuple((item,) for item in batch))
    return Next(refused=batch[0][0] if batch else None)


@dataclass(slots=True)
class Pass:
    """One pass over the outbox: hands out the requests to send, takes what became of each.

    Every envelope ends in exactly one of `sent`, `refused` or `kept` (not taken: the pass
    stopped first), and envelopes are handed out in the order they were queued."""

    queue: list[Batch]
    sent: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    stopped: bool = False

    @classmethod
    def of(cls, pending: Sequence[Item], count: int = SEND_BATCH, size: int = SEND_BYTES) -> Pass:
        return cls(plan(pending, count, size))

    def next(self) -> Batch | None:
        """The next request to send, None when the pass is over."""
        if self.stopped or not self.queue:
            return None
        return self.queue.pop(0)

    def taken(self, batch: Batch) -> None:
        """The relay has every envelope of `batch`."""
        self.sent.extend(message_id for message_id, _ in batch)

    def refusal(self, batch: Batch, status: int | None) -> Next:
        """The relay refused `batch` with `status` (None: unreachable); -> what it means."""
        step = on_refusal(batch, status)
        self.queue[:0] = step.retry
        if step.refused is not None:
            self.refused.append(step.refused)
        if step.stop:
            self.stopped = True
            self.queue.insert(0, batch)
        return step

    @property
    def kept(self) -> list[str]:
        """What stays queued: not taken by the relay, not refused for good."""
        return [message_id for batch in self.queue for message_id, _ in batch]
