"""One rule for every ID a command takes: the full ID or a unique prefix of 4 or more hex digits,
case-insensitive, looked up among everything this profile holds.

A message is known by its id (and a letter also by its digest, which acknowledgements and
consents name), a proposal by its digest (and by the id of the message that carried it), an
exchange by its id (and by either offer's digest). A command asks for the kinds it can act on;
a prefix that fits several things is refused with the list, so the user can give more digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import or_, select

from .errors import CliError
from .localstore import HeldOffer, Message, ProposalRow

Kind = Literal["message", "proposal", "exchange"]
MIN_PREFIX = 4
HEX = frozenset("0123456789abcdef")
SHOWN_MATCHES = 8
LOOKED_AT = 64
"""At most this many rows of each table are read for one prefix (a 4-digit prefix of a big
profile could fit many; the error lists a few and asks for more digits)."""
RULE = "an ID is the full ID or a unique prefix of 4 or more hex digits"


@dataclass(frozen=True, slots=True)
class Found:
    kind: Kind
    id: str
    """The full, canonical id: a message id, a proposal digest or an exchange id."""
    label: str
    """A few words to tell it apart from others in an error."""


def normalise(ident: str, what: str = "ID") -> str:
    text = ident.strip().lower()
    if len(text) < MIN_PREFIX or not set(text) <= HEX:
        raise CliError(f"{what} {ident!r}: {RULE}")
    return text


def candidates(db: Any, ident: str, kinds: tuple[Kind, ...]) -> list[Found]:
    """Everything of `kinds` whose id (or alias) starts with `ident`, one entry per thing."""
    like = ident + "%"
    found: dict[tuple[Kind, str], Found] = {}

    def add(kind: Kind, full: str, label: str) -> None:
        found.setdefault((kind, full), Found(kind, full, label))

    if "proposal" in kinds:
        proposals = select(ProposalRow).where(
            or_(ProposalRow.digest.like(like), ProposalRow.message_id.like(like))
        )
        for row in db.scalars(proposals.limit(LOOKED_AT)):
            add("proposal", row.digest, f"proposal {_arrow(row)}")
    if "message" in kinds:
        messages = select(Message).where(or_(Message.id.like(like), Message.digest.like(like)))
        for message in db.scalars(messages.limit(LOOKED_AT)):
            if "proposal" in kinds and message.kind == "proposal":
                proposal = db.scalar(
                    select(ProposalRow).where(ProposalRow.message_id == message.id)
                )
                if proposal is not None:  # the message that carried it: the proposal itself
                    add("proposal", proposal.digest, f"proposal {_arrow(message)}")
                    continue
            add("message", message.id, f"{message.kind} {_arrow(message)}")
    if "exchange" in kinds:
        offers = select(HeldOffer).where(
            or_(HeldOffer.exchange.like(like), HeldOffer.digest.like(like))
        )
        for offer in db.scalars(offers.limit(LOOKED_AT)):
            add("exchange", offer.exchange, f"exchange of {offer.author} and {offer.addressee}")
    return list(found.values())


def resolve(db: Any, ident: str, *kinds: Kind, what: str | None = None) -> Found:
    """The one thing of `kinds` that `ident` names; a CliError naming the rule, or the
    candidates when there are several."""
    noun = what or " or ".join(kinds)
    text = normalise(ident, noun)
    matches = candidates(db, text, kinds)
    exact = [m for m in matches if m.id == text]
    if len(exact) == 1:
        return exact[0]
    if not matches:
        raise CliError(f"no {noun} with id {ident!r} here ({RULE})")
    if len(matches) > 1:
        listed = ", ".join(f"{m.id[:12]} ({m.label})" for m in matches[:SHOWN_MATCHES])
        more = f" and {len(matches) - SHOWN_MATCHES} more" if len(matches) > SHOWN_MATCHES else ""
        raise CliError(f"{ident!r} fits {len(matches)} IDs: {listed}{more}; give more digits")
    return matches[0]


def _arrow(row: Message | ProposalRow) -> str:
    return f"from {row.peer}" if row.direction == "in" else f"to {row.peer}"
