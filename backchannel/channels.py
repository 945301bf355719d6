"""Which way a message to someone takes in an exercise: directly, through a mediator, or none.

The relay decides each role's channels from the scenario's policy (`exercise.Policy.route`) and
gives the role only its own (`GET /v1/exercise`: its roles, and a channel, direct or through a
mediator, to each role it may write to). Before anything is stored or sealed, the participant
asks the same question of that view, as last heard (so offline too): a message to a role with
no channel is refused on the spot, one that must go through a mediator is sealed for blind
forwarding. Anyone outside the exercise (or any message outside one) is not the exercise's to
route: it goes directly, and the relay has the last word.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from .exercise import Route


@dataclass(frozen=True, slots=True)
class View:
    """What the relay told a role of its exercise's channels."""

    exercise: str
    roles: Collection[str]
    """Every role's name, ours included."""
    channels: Mapping[str, Route]
    """Our channel to each role we may write to (direct, or `via` a mediator)."""


def reach(view: View | None, me: str, to: str) -> Route:
    """How `me` reaches `to` by `view` (None: outside any exercise)."""
    if view is None or to not in view.roles:
        return Route(True)
    channel = view.channels.get(to)
    if channel is not None and channel.direct:
        return Route(True)
    if channel is not None and channel.via is not None:
        return Route(False, channel.via, f"{me} reaches {to} only through {channel.via}")
    return Route(False, reason=f"the exercise {view.exercise} gives {me} no channel to {to}")
