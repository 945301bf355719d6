"""What is due when time passes, decided from what the participant holds.

Besides arrivals and commands, a participant's third kind of event is the clock: every command,
a watching `inbox` and the agent's keeper (every few seconds) tick, and each tick asks the same
questions. Which timed proposals may now be opened, and when the next one opens? Which received
proposals still owe our "delivered" statement? Which simultaneous exchanges we mediate have both
offers in and are due for release? Which queued envelopes and sealed receipts expired before the
relay took them? Which remembered envelope ids may be forgotten? Which off-the-record channels
have expired? Like `arrival` and `receipts`, this module only answers, from plain values (times
in ms, envelope expiries in Unix seconds as on the wire); the client reads its store, asks, and
applies the answer. Rules the core had already stay where they are and are used here: a
proposal's expiry (`Proposal.expired`, replayed into its `Status`) and an off-the-record
channel's (`OtrChannel.expired`). Injects are due by the exercise's clock on the relay, which
runs `exercise.due` (through `msel`) and hands each role only what is due.

Every answer about time is monotone: what a tick at t finds due is due at any t' >= t, and the
same holdings at the same time give the same answer. Once applied, what was due is no longer
held as it was (opened, released, marked failed, forgotten, wiped), so it is never due twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .proposals import FINAL, Status

ENVELOPE_MARGIN_S = 60
"""An envelope that expires within this is not sent: the relay refuses one at or past its
expiry, and a clock a little behind the relay's would otherwise retry it in vain."""

RELEASED, READY = "released", "ready"
"""A mediated exchange's states besides "waiting for <side>"."""


# --- timed proposals ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Locked:
    """A timed proposal held sealed until its reveal time."""

    digest: str
    reveal_at_ms: int


def reveals_due(held: Iterable[Locked], now_ms: int) -> tuple[str, ...]:
    """The timed proposals whose reveal time has come, earliest first (then by digest)."""
    due = sorted((p.reveal_at_ms, p.digest) for p in held if p.reveal_at_ms <= now_ms)
    return tuple(digest for _, digest in due)


def next_reveal(held: Iterable[Locked]) -> int | None:
    """When the next of the held timed proposals opens (ms), if any."""
    return min((p.reveal_at_ms for p in held), default=None)


@dataclass(frozen=True, slots=True)
class Received:
    """A proposal received, as far as our "delivered" statement goes."""

    digest: str
    stated: bool
    """We made our "delivered" statement about it already."""
    status: Status | None = None
    """Its status now, replayed by the core (`ProposalRecord.replay`), expiry included; None
    when `stated` (a replay costs, and nothing is owed then whatever it is)."""


def deliveries_due(received: Iterable[Received]) -> tuple[str, ...]:
    """The proposals owed our "delivered" statement: not stated yet, and still answerable (a
    decided or expired proposal is owed nothing)."""
    return tuple(
        sorted(
            r.digest
            for r in received
            if not r.stated
            and r.status is not None
            and r.status not in FINAL
            and r.status != Status.EXPIRED
        )
    )


# --- simultaneous exchanges we mediate ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exchange:
    """One simultaneous exchange we mediate, as its held offers stand."""

    id: str
    sides: tuple[str, ...]
    """Its two parties."""
    authors: frozenset[str]
    """The sides whose offer is held."""
    unreleased: bool
    """Some offer of it is not released yet (none held counts as released: nothing is left)."""


def exchange_status(exchange: Exchange) -> str:
    """`RELEASED`, `READY` (both offers in, not released) or "waiting for <the other side>"."""
    if not exchange.unreleased:
        return RELEASED
    if len(exchange.authors) == 2:
        return READY
    missing = [side for side in exchange.sides if side not in exchange.authors]
    return f"waiting for {', '.join(missing) or 'the other side'}"


def releases_due(exchanges: Iterable[Exchange]) -> tuple[str, ...]:
    """The exchanges to release (when the mediator releases by default, as the client runs)."""
    return tuple(sorted(e.id for e in exchanges if exchange_status(e) == READY))


# --- envelopes ----------------------------------------------------------------------------------


def undeliverable(expires_at_s: int, now_s: int, margin_s: int = ENVELOPE_MARGIN_S) -> bool:
    """Whether a queued envelope (or a sealed receipt) expired before the relay took it: it is
    not sent, a letter is marked failed and a receipt dropped."""
    return expires_at_s <= now_s + margin_s


def forget_before(now_s: int) -> int:
    """Processed envelope ids (receipts, controls) whose envelope expires before this (Unix s)
    may be forgotten: the relay's sweeper deletes an envelope at its expiry, so no redelivery
    of theirs needs recognising any more."""
    return now_s


def forgettable(expires_at_s: int, now_s: int) -> bool:
    return expires_at_s < forget_before(now_s)


# --- off the record -----------------------------------------------------------------------------


def channel_expired(expires_at_ms: int, now_ms: int) -> bool:
    """Whether an off-the-record channel (or the offer of one) has expired: from its expiry on,
    as `OtrChannel.expired` decides for an open channel's state."""
    return now_ms >= expires_at_ms
