"""An observer's read-only view of the exercise as one named party sees it (PRODUCT.md §7).

Control grants it (`backchannel-relay exercise observe OBSERVER --as PARTY`); the grant lives in
`relay_meta` (no migration), keyed by a hash of the observer's name so any name fits the key.
The view is control's own record of that party's letters (PROTOCOL.md §16.11), so it never
shows more than control may see of them, class by class and pair by pair: the text where the
class gives control the content, who wrote to whom and when where it gives the envelope.
Counts (`existence`) are kept per exercise, not per party, and off-the-record traffic names no
one: neither is in the view.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .errors import BadRequest, Forbidden, NotFound
from .exercises import Exercises

MAX_SHOWN = 1_000
"""At most this many letters (the newest) are in one view."""


def _key(observer: str) -> str:
    return "observe:" + hashlib.sha256(observer.encode("utf-8")).hexdigest()[:40]


async def grant(exercises: Exercises, exercise: str, observer: str, party: str) -> dict[str, str]:
    """Let `observer` (an observer of `exercise`) see what control sees of `party`'s traffic."""
    scenario = await exercises.scenario(exercise)
    who, seen = scenario.role(observer), scenario.role(party)
    if who is None or who.kind != "observer":
        raise BadRequest(f"{observer} is not an observer of the exercise {exercise}",
                         code="not_observer")  # fmt: skip
    if seen is None or seen.kind == "observer":
        raise BadRequest(f"{party} is not a party or mediator of the exercise {exercise}",
                         code="invalid_field")  # fmt: skip
    grant = {"observer": observer, "exercise": exercise, "party": party}
    await exercises.store.set_meta(_key(observer), json.dumps(grant).encode())
    return grant


async def revoke(exercises: Exercises, exercise: str, observer: str) -> bool:
    """End `observer`'s view; -> whether there was one."""
    found = await _grant(exercises, observer)
    if found is None or found["exercise"] != exercise:
        return False
    await exercises.store.set_meta(_key(observer), b"")
    return True


async def _grant(exercises: Exercises, observer: str) -> dict[str, str] | None:
    raw = await exercises.store.get_meta(_key(observer))
    if not raw:
        return None
    loaded: dict[str, str] = json.loads(raw)
    return loaded if loaded.get("observer") == observer else None


async def view(exercises: Exercises, observer: str) -> dict[str, Any]:
    """What `observer` may see of its party's letters (403 without a grant): the newest
    `MAX_SHOWN`, oldest first."""
    exercise = (await exercises.role_map()).get(observer)
    if exercise is None:
        raise NotFound(f"{observer} has no role in an exercise on this relay", code="no_exercise")
    scenario = await exercises.scenario(exercise)
    role = scenario.role(observer)
    found = await _grant(exercises, observer)
    if role is None or role.kind != "observer" or found is None or found["exercise"] != exercise:
        raise Forbidden("exercise control has given you no view of a party "
                        "(backchannel-relay exercise observe)", code="no_view")  # fmt: skip
    party = found["party"]
    seen = await exercises.traffic(exercise, party=party, newest=MAX_SHOWN + 1)
    letters = seen["letters"]
    return {
        "exercise": exercise,
        "party": party,
        "control_sees": seen["control_sees"],
        "letters": letters[-MAX_SHOWN:],
        "truncated": len(letters) > MAX_SHOWN,
    }
