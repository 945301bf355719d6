"""Errors that say what to do next: a name close to the one mistyped, a name another key holds."""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches
from typing import TYPE_CHECKING

from .errors import CliError

if TYPE_CHECKING:
    from .participant_api import ParticipantApi as Participant

SUGGESTIONS = 3


def unknown_name(name: str, known: Iterable[str]) -> CliError:
    """`no participant named 'castro'; did you mean 'castro-1'?` (the directory's names)."""
    close = get_close_matches(name, sorted(set(known)), n=SUGGESTIONS, cutoff=0.6)
    if close:
        names = " or ".join(repr(n) for n in close)
        return CliError(
            f"no participant named {name!r}; did you mean {names}?", "unknown_participant"
        )
    return CliError(
        f"no participant named {name!r} (`backchannel directory` lists them)", "unknown_participant"
    )


async def unknown_participant(participant: Participant, name: str) -> CliError:
    """`unknown_name` against the relay's directory, or without suggestions if it cannot be read."""
    try:
        entries = await participant.authed(participant.relay.directory)
    except CliError:
        entries = []
    return unknown_name(name, (e["name"] for e in entries if e["name"] != participant.name))


def name_taken(name: str, relay: str) -> CliError:
    """This profile's key is not the one registered under its name (a profile created again)."""
    return CliError(
        f"the name {name} is already registered at {relay} with another identity key (this "
        "profile was created anew, or another one holds the name); ask exercise control for an "
        "invite under another name, or use the profile that registered it",
        "name_taken",
    )
