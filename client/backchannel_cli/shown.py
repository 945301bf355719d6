"""A message as the user sees it: made by the service and the feature modules, shown by the CLI.

Kept apart from `service.py` so a feature module (off the record, say) can make one without
importing the service that imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Shown:
    """A message as the user sees it (rendered by `render.py`)."""

    id: str
    direction: str
    peer: str
    kind: str
    text: str
    sent_at: int
    status: str
    verified: str
    in_reply_to: str | None
    scenario_time: str | None = None
    """In an exercise: the scenario time when it was sent, as recorded when it was stored."""
    relay_at: int | None = None
    """When the relay received it (its receipt)."""
    relay_scenario_time: str | None = None
    refusal: str | None = None
    """Status `refused`: the relay's reason."""
    subject: str | None = None
    """The proposal or original message it is about, beyond `in_reply_to`."""
    agreement: str | None = None
    """A proposal or a statement about one: bound, void, pending, understood or none."""
    channel: dict[str, Any] | None = None
    """`Exercise.describe`: class, control_sees, proven, claimed."""

    def _unknown_channel(self) -> dict[str, Any]:
        """Without an exercise's word: what the relay itself learns, nothing proven."""
        otr = self.kind == "otr"
        return {
            "class": "off_the_record" if otr else "record",
            "control_sees": "existence" if otr else "envelope",
            "proven": None,
            "claimed": None,
        }

    def as_json(self) -> dict[str, Any]:
        """Times in ms since the epoch (`emit_json` adds their ISO 8601 siblings)."""
        sender = self.peer if self.direction == "in" else "me"
        recipient = "me" if self.direction == "in" else self.peer
        return {
            "id": self.id,
            "from": sender,
            "to": recipient,
            "direction": self.direction,
            "kind": self.kind,
            "text": self.text,
            "sent_at": self.sent_at,
            "status": self.status,
            "verified": self.verified,
            "in_reply_to": self.in_reply_to,
            "subject": self.subject,
            "agreement": self.agreement,
            # What exercise control can learn of it (PRODUCT.md §3, PROTOCOL.md §16.1), and
            # what is proven of its author apart from what is only claimed.
            **(self.channel or self._unknown_channel()),
            "scenario_time": self.scenario_time,
            "relay_received_at": self.relay_at,
            "relay_scenario_time": self.relay_scenario_time,
            "refusal": self.refusal,
        }
